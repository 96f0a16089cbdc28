#!/usr/bin/env bash
# Instructions a gateway spends per REST Get, with authentication off and on, counted by
# valgrind's callgrind: the same count for the same binaries and requests whatever else the
# machine is doing, where wall-clock comparisons on two shared cores move by tens of percent.
# Starts a private nats-server (pinned version, loopback, temporary store), one registry and two
# gateways under callgrind, registers 50 clusters, then counts only the measured Gets.
# Usage: scripts/bench-instructions.sh [GETS]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
gets="${1:-1000}"
for tool in valgrind callgrind_control curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Debian: apt-get install valgrind curl)" >&2; exit 1; }
done
nats_bin="$(scripts/ensure-nats-server.sh)"
cargo build --release --locked -p corral-registry -p corral-gateway
work="$(mktemp -d)"
pids=()
# The gateways start in a subshell (to return their address), so their pids come from files.
cleanup() {
  for p in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in $(cat "$work"/*.pid 2>/dev/null); do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$nats_bin" -js -a 127.0.0.1 -p -1 -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done
port="$(grep -o 'client connections on 127.0.0.1:[0-9]*' "$work/nats.log" | head -1 | sed 's/.*://')"
nats_url="nats://127.0.0.1:$port"

export CORRAL_SEAL_KEY="$(head -c 32 /dev/urandom | base64)"
export RUST_LOG=warn
export CORRAL_ADMIN_PASSWORD="bench-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
target/release/corral-registry --nats-url "$nats_url" --data-dir "$work/registry" >"$work/registry.out" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -q "registry ready" "$work/registry.out" && break; sleep 0.1; done

# $1: a name for the files; the rest: the gateway's own arguments. Prints the listening address.
start_gateway() {
  local name="$1"; shift
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name" \
    target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  echo $! >"$work/$name.pid"
  for _ in $(seq 600); do grep -q "listening on" "$work/$name.out" && break; sleep 0.2; done
  sed -n 's/^listening on //p' "$work/$name.out" | head -1
}
plain="$(start_gateway plain --disable-auth)"
auth="$(start_gateway auth)"
[ -n "$plain" ] && [ -n "$auth" ] || { echo "a gateway did not start" >&2; exit 1; }

for i in $(seq 50); do
  curl -sf -o /dev/null -X POST "http://$plain/api/v1/clusters" -H 'content-type: application/json' \
    -d "{\"server\":\"https://bench-$i.example.com\",\"name\":\"bench-$i\"}"
done
token="$(curl -sf -X POST "http://$auth/api/v1/session" \
  -d "{\"username\":\"admin\",\"password\":\"$CORRAL_ADMIN_PASSWORD\"}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
[ -n "$token" ] || { echo "login failed" >&2; exit 1; }
# The token goes in a header file, not on the command line where other users could read it.
printf 'Authorization: Bearer %s\n' "$token" >"$work/auth.header"
chmod 600 "$work/auth.header"

echo "nats-server $("$nats_bin" --version | awk '{print $2}'); $gets REST Gets per gateway, one connection, one at a time"
declare -A per_get
for name in plain auth; do
  address="${!name}"
  # One curl run, one kept-alive connection, for every Get.
  for i in $(seq "$gets"); do
    echo "url = \"http://$address/api/v1/clusters/https%3A%2F%2Fbench-$(( i % 50 + 1 )).example.com\""
    echo "output = /dev/null"
  done >"$work/$name.curl"
  pid="$(cat "$work/$name.pid")"
  curl -sf -H @"$work/auth.header" -K "$work/$name.curl"  # warm-up, not counted
  callgrind_control -z "$pid" >/dev/null 2>&1
  curl -sf -H @"$work/auth.header" -K "$work/$name.curl"
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 50); do ls "$work"/callgrind.$name.* >/dev/null 2>&1 && break; sleep 0.1; done
  total="$(grep -h '^summary:' "$work"/callgrind.$name.* | awk '{s += $2} END {print s}')"
  per_get[$name]=$(( total / gets ))
  printf '%-28s %10d instructions per Get\n' "Get, authentication $([ "$name" = auth ] && echo on || echo off)" "${per_get[$name]}"
done
awk -v p="${per_get[plain]}" -v a="${per_get[auth]}" \
  'BEGIN { printf "authentication + RBAC: %+d instructions per Get (%+.1f%%)\n", a - p, (a - p) * 100 / p }'
