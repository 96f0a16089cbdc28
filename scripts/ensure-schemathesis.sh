#!/usr/bin/env bash
# Installs the pinned schemathesis (PyPI) under .tools/ unless that version is already there, and
# prints the path of its command. The OpenAPI fuzz test runs it.
set -euo pipefail
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
venv="$("$(dirname "$0")/ensure-pypi.sh" schemathesis "$SCHEMATHESIS_VERSION")"
echo "$venv/bin/schemathesis"
