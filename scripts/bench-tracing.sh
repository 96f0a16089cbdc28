#!/usr/bin/env bash
# What tracing costs: two deployments side by side, each a release gateway and registry on its
# own private nats-server (pinned version, loopback, temporary store), one exporting no spans and
# one sampling every trace (OTEL_TRACES_SAMPLER=always_on) and exporting it over OTLP/gRPC to a
# receiver on loopback (corral-load --otlp-sink, which counts what it gets). corral-load then
# measures Create and Get through both gateways, in turns, and prints each turn's difference.
# Extra arguments go to corral-load (e.g. --concurrency 64 --seconds 3 --creates-per-turn 3000).
# OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, if set, choose the traced deployment's sampler
# instead (e.g. parentbased_traceidratio and 0.1); the other deployment never sees them.
set -euo pipefail
sampler="${OTEL_TRACES_SAMPLER:-always_on}" sampler_arg="${OTEL_TRACES_SAMPLER_ARG:-}"
unset OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG OTEL_EXPORTER_OTLP_ENDPOINT
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
source scripts/bench-common.sh
target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 --disable-auth >"$work/gateway.out" 2>"$work/gateway.err" &
gw_pid=$!
pids+=($gw_pid)
plain="$(wait_listening "$work/gateway.out")"

# The traced deployment, on a nats-server of its own (a registry in the other's queue group
# would answer the other's commands).
start_otlp_sink
start_nats nats-traced
traced_url=$started_url
nats_traced_pid=$started_pid
export_env=(env OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink" OTEL_TRACES_SAMPLER="$sampler")
[ -z "$sampler_arg" ] || export_env+=(OTEL_TRACES_SAMPLER_ARG="$sampler_arg")
"${export_env[@]}" target/release/corral-registry --nats-url "$traced_url" --data-dir "$work/registry-traced" \
  >"$work/registry-traced.out" 2>"$work/registry-traced.err" &
registry_traced_pid=$!
pids+=($registry_traced_pid)
for _ in $(seq 1200); do grep -q "registry ready" "$work/registry-traced.out" && break; sleep 0.1; done
"${export_env[@]}" target/release/corral-gateway --nats-url "$traced_url" --listen 127.0.0.1:0 --disable-auth \
  >"$work/gateway-traced.out" 2>"$work/gateway-traced.err" &
gw_traced_pid=$!
pids+=($gw_traced_pid)
traced="$(wait_listening "$work/gateway-traced.out")"
[ -n "$plain" ] && [ -n "$traced" ] || { echo "a gateway did not start" >&2; exit 1; }
echo "nats-server $nats_version; gateway $plain (no tracing), gateway $traced (traces sampled by $sampler${sampler_arg:+ $sampler_arg}, exported to $sink); $(nproc) cores"
# The CPU each process spends per operation, the receiver's too (a collector runs elsewhere in
# production; here it takes a share of the same two cores).
target/release/corral-load --gateway "$plain" --traced-gateway "$traced" --nats-url "$nats_url" \
  --cpu-of "nats-server=$nats_pid" --cpu-of "registry=$registry_pid" --cpu-of "gateway=$gw_pid" \
  --cpu-of "nats-traced=$nats_traced_pid" --cpu-of "registry-traced=$registry_traced_pid" \
  --cpu-of "gateway-traced=$gw_traced_pid" --cpu-of "otlp-receiver=$sink_pid" "$@"
stop_otlp_sink
print_sink_spans
echo "otlp sink: $sink_spans spans received"
[ "$sink_spans" -gt 0 ] || { echo "no span reached the receiver: the comparison is void" >&2; exit 1; }
