#!/usr/bin/env bash
# What tracing costs: two deployments side by side, each a release gateway and registry on its
# own private nats-server (pinned version, loopback, temporary store), one exporting no spans and
# one sampling every trace (OTEL_TRACES_SAMPLER=always_on) and exporting it over OTLP/gRPC to a
# receiver on loopback (corral-load --otlp-sink, which counts what it gets). corral-load then
# measures Create and Get through both gateways, in turns, and prints each turn's difference.
# Extra arguments go to corral-load (e.g. --concurrency 64 --seconds 3 --creates-per-turn 3000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
source scripts/bench-common.sh
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway.out" 2>"$work/gateway.err" &
pids+=($!)
plain="$(wait_listening "$work/gateway.out")"

# The traced deployment, on a nats-server of its own (a registry in the other's queue group
# would answer the other's commands).
target/release/corral-load --otlp-sink 127.0.0.1:0 >"$work/sink.out" 2>"$work/sink.err" &
sink_pid=$!
pids+=($sink_pid)
sink="$(wait_listening "$work/sink.out")"
"$nats_bin" -js -a 127.0.0.1 -p -1 -sd "$work/nats-traced" >"$work/nats-traced.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats-traced.log" && break; sleep 0.1; done
traced_url="nats://127.0.0.1:$(grep -o 'client connections on 127.0.0.1:[0-9]*' "$work/nats-traced.log" | head -1 | sed 's/.*://')"
export_env=(env OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink" OTEL_TRACES_SAMPLER=always_on)
"${export_env[@]}" target/release/corral-registry --nats-url "$traced_url" --data-dir "$work/registry-traced" \
  >"$work/registry-traced.out" 2>"$work/registry-traced.err" &
pids+=($!)
for _ in $(seq 1200); do grep -q "registry ready" "$work/registry-traced.out" && break; sleep 0.1; done
"${export_env[@]}" target/release/corral-gateway --nats-url "$traced_url" --listen 127.0.0.1:0 --disable-auth \
  >"$work/gateway-traced.out" 2>"$work/gateway-traced.err" &
pids+=($!)
traced="$(wait_listening "$work/gateway-traced.out")"
echo "nats-server $nats_version; gateway $plain (no tracing), gateway $traced (every trace exported to $sink); $(nproc) cores"
target/release/corral-load --gateway "$plain" --traced-gateway "$traced" --nats-url "$nats_url" "$@"
kill "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
cat "$work/sink.out" | tail -1
