#!/usr/bin/env bash
# Installs PACKAGE==VERSION (PyPI) into its own virtual environment under .tools/ unless it is
# already there, and prints the environment's folder. Used by the ensure-* scripts of the tests'
# Python tools.
set -euo pipefail
package="$1" version="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.tools/$package-$version"
if [ -x "$venv/bin/python" ] && "$venv/bin/pip" show "$package" 2>/dev/null | grep -qx "Version: $version"; then
  echo "$venv"; exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
  else
    echo "need python3 with venv to install $package==$version" >&2; exit 1
  fi
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version" >&2
echo "$venv"
