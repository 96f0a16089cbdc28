#!/usr/bin/env bash
# Benchmark: a release build of the gateway and registry as separate processes on a private
# nats-server (pinned version, loopback, temporary store), driven by corral-load over gRPC.
# Extra arguments go to corral-load (e.g. --concurrency 64 --seconds 5 --list-sizes 1000,10000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
source scripts/bench-common.sh
# The deployment the figures are for: one registry, one gateway (authentication off).
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway.out" 2>"$work/gateway.err" &
gw_pid=$!
pids+=($gw_pid)
gw="$(wait_listening "$work/gateway.out")"
echo "nats-server $nats_version on $nats_url; gateway on $gw; $(nproc) cores"
target/release/corral-load --gateway "$gw" --nats-url "$nats_url" \
  --cpu-of "nats-server=$nats_pid" --cpu-of "registry=$registry_pid" --cpu-of "gateway=$gw_pid" "$@"

# Then what authentication + RBAC add to each request: Get through a gateway with authentication
# on and one without, in turns, on the clusters registered above. Both start only now and alike:
# every replica follows the log, so they would take their share of the cores above, and a gateway
# that went through the writes above would not be comparable with one that did not.
kill "$gw_pid" 2>/dev/null || true
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway-plain.out" 2>"$work/gateway-plain.err" &
gw_plain_pid=$!
pids+=($gw_plain_pid)
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 >"$work/gateway-auth.out" 2>"$work/gateway-auth.err" &
gw_auth_pid=$!
pids+=($gw_auth_pid)
gw_plain="$(wait_listening "$work/gateway-plain.out")"
gw_auth="$(wait_listening "$work/gateway-auth.out")"
echo "authentication comparison: gateways on $gw_plain (authentication off) and $gw_auth (on)"
CORRAL_LOAD_PASSWORD="$CORRAL_ADMIN_PASSWORD" \
  target/release/corral-load --auth-only --gateway "$gw_plain" --auth-gateway "$gw_auth" --nats-url "$nats_url" \
  --cpu-of "nats-server=$nats_pid" --cpu-of "registry=$registry_pid" \
  --cpu-of "gateway=$gw_plain_pid" --cpu-of "gateway-auth=$gw_auth_pid" "$@"
