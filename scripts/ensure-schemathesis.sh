#!/usr/bin/env bash
# Installs the pinned schemathesis (PyPI) into its own virtual environment under .tools/ unless
# that version is already there, and prints the path of its command. The OpenAPI fuzz test runs it.
set -euo pipefail
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.tools/schemathesis-$SCHEMATHESIS_VERSION"
bin="$venv/bin/schemathesis"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "$bin"; exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
  else
    echo "need python3 with venv to install schemathesis==$SCHEMATHESIS_VERSION" >&2; exit 1
  fi
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
"$bin" --version >&2
echo "$bin"
