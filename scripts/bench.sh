#!/usr/bin/env bash
# Benchmark: a release build of the gateway and registry as separate processes on a private
# nats-server (pinned version, loopback, temporary store), driven by corral-load over gRPC.
# Extra arguments go to corral-load (e.g. --concurrency 64 --seconds 5 --list-sizes 1000,10000).
set -euo pipefail
cd "$(dirname "$0")/.."
nats_bin="$(scripts/ensure-nats-server.sh)"
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$nats_bin" -js -a 127.0.0.1 -p -1 -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done
port="$(grep -o 'client connections on 127.0.0.1:[0-9]*' "$work/nats.log" | head -1 | sed 's/.*://')"
nats_url="nats://127.0.0.1:$port"

export CORRAL_SEAL_KEY="$(head -c 32 /dev/urandom | base64)"
export RUST_LOG=warn
target/release/corral-registry --nats-url "$nats_url" --data-dir "$work/registry" >"$work/registry.out" 2>"$work/registry.err" &
pids+=($!)
for _ in $(seq 300); do grep -q "registry ready" "$work/registry.out" && break; sleep 0.1; done
export CORRAL_ADMIN_PASSWORD="bench-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
wait_listening() { for _ in $(seq 300); do grep -q "listening on" "$1" && break; sleep 0.1; done; sed -n 's/^listening on //p' "$1" | head -1; }
# The deployment the figures are for: one registry, one gateway (authentication off).
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway.out" 2>"$work/gateway.err" &
gw_pid=$!
pids+=($gw_pid)
gw="$(wait_listening "$work/gateway.out")"
echo "nats-server $("$nats_bin" --version | awk '{print $2}') on $nats_url; gateway on $gw; $(nproc) cores"
target/release/corral-load --gateway "$gw" --nats-url "$nats_url" "$@"

# Then what authentication + RBAC add to each request: Get through a gateway with authentication
# on and one without, in turns, on the clusters registered above. Both start only now and alike:
# every replica follows the log, so they would take their share of the cores above, and a gateway
# that went through the writes above would not be comparable with one that did not.
kill "$gw_pid" 2>/dev/null || true
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway-plain.out" 2>"$work/gateway-plain.err" &
pids+=($!)
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 >"$work/gateway-auth.out" 2>"$work/gateway-auth.err" &
pids+=($!)
gw_plain="$(wait_listening "$work/gateway-plain.out")"
gw_auth="$(wait_listening "$work/gateway-auth.out")"
echo "authentication comparison: gateways on $gw_plain (authentication off) and $gw_auth (on)"
CORRAL_LOAD_PASSWORD="$CORRAL_ADMIN_PASSWORD" \
  target/release/corral-load --auth-only --gateway "$gw_plain" --auth-gateway "$gw_auth" --nats-url "$nats_url" "$@"
