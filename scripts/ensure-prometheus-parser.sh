#!/usr/bin/env bash
# Installs the pinned prometheus_client (PyPI: Prometheus' own Python client, whose OpenMetrics
# parser is strict) under .tools/ unless it is already there, and prints the path of the Python
# that has it. The metrics tests parse every service's /metrics with it.
set -euo pipefail
PROMETHEUS_CLIENT_VERSION="${PROMETHEUS_CLIENT_VERSION:-0.26.0}"
venv="$("$(dirname "$0")/ensure-pypi.sh" prometheus_client "$PROMETHEUS_CLIENT_VERSION")"
echo "$venv/bin/python"
