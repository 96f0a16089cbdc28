#!/usr/bin/env bash
# Installs the pinned kubernetes-validate (PyPI; it bundles the Kubernetes schemas, so it checks
# manifests offline and, with --strict, refuses unknown keys) under .tools/ unless it is already
# there, and prints the path of the Python that has it (and PyYAML). The k8s/ tests use it.
set -euo pipefail
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
venv="$("$(dirname "$0")/ensure-pypi.sh" kubernetes-validate "$KUBERNETES_VALIDATE_VERSION")"
echo "$venv/bin/python"
