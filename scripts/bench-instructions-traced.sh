#!/usr/bin/env bash
# What tracing costs a create, in instructions: two deployments, each a registry and a gateway
# under valgrind's callgrind on a private nats-server of its own (pinned version, loopback,
# temporary store), one exporting no spans and one sampling every trace and exporting it over
# OTLP/gRPC to a receiver on loopback (`corral-load --otlp-sink`, its spans sent within 200 ms so
# that the count includes their export). Each gets as many REST creates, one at a time over one
# connection, after as many not counted; prints each process's instructions per create and the
# spans the receiver got, by service and name.
# OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, if set, choose the traced deployment's sampler
# instead (always_off counts what a trace that is not sampled still costs: its spans in `tracing`
# and the trace context in every message); the other deployment never sees them.
# Usage: scripts/bench-instructions-traced.sh [CREATES]   (default 300)
set -euo pipefail
sampler="${OTEL_TRACES_SAMPLER:-always_on}" sampler_arg="${OTEL_TRACES_SAMPLER_ARG:-}"
unset OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG OTEL_EXPORTER_OTLP_ENDPOINT
cd "$(dirname "$0")/.."
creates="${1:-300}"
for tool in valgrind callgrind_control curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Debian: apt-get install valgrind curl)" >&2; exit 1; }
done
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
start_registry=0
source scripts/bench-common.sh
start_otlp_sink

# $1: plain or traced. Starts its nats-server, registry and gateway; sets registry_of[$1],
# gateway_of[$1] (pids) and address_of[$1].
declare -A registry_of gateway_of address_of
start_deployment() {
  local name="$1" env_cmd=(env)
  if [ "$name" = traced ]; then
    env_cmd+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink" OTEL_TRACES_SAMPLER="$sampler" OTEL_BSP_SCHEDULE_DELAY=200)
    [ -z "$sampler_arg" ] || env_cmd+=(OTEL_TRACES_SAMPLER_ARG="$sampler_arg")
  fi
  start_nats "nats-$name"
  # --fair-sched: with valgrind's default scheduler a spinning thread can starve the others.
  "${env_cmd[@]}" valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/callgrind.registry-$name" \
    target/release/corral-registry --nats-url "$started_url" --data-dir "$work/registry-$name" \
    >"$work/registry-$name.out" 2>"$work/registry-$name.err" &
  registry_of[$name]=$!
  pids+=($!)
  for _ in $(seq 1200); do grep -q "registry ready" "$work/registry-$name.out" && break; sleep 0.1; done
  grep -q "registry ready" "$work/registry-$name.out" || { echo "the $name registry did not start" >&2; exit 1; }
  "${env_cmd[@]}" valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/callgrind.gateway-$name" \
    target/release/corral-gateway --nats-url "$started_url" --listen 127.0.0.1:0 --disable-auth \
    >"$work/gateway-$name.out" 2>"$work/gateway-$name.err" &
  gateway_of[$name]=$!
  pids+=($!)
  address_of[$name]="$(wait_listening "$work/gateway-$name.out")"
  [ -n "${address_of[$name]}" ] || { echo "the $name gateway did not start" >&2; exit 1; }
}
start_deployment plain
start_deployment traced

# Instructions of the callgrind files $work/callgrind.$1.*, summed over threads.
summed() { grep -h '^summary:' "$work"/callgrind."$1".* | awk '{s += $2} END {print s}'; }
echo "nats-server $nats_version; $creates REST creates per deployment, one connection, one at a time; traces sampled by $sampler${sampler_arg:+ $sampler_arg}"
for name in plain traced; do
  address="${address_of[$name]}"
  write_creates "$address" 1 "$creates" >"$work/warm-up-$name.curl"
  write_creates "$address" $(( creates + 1 )) $(( 2 * creates )) >"$work/creates-$name.curl"
  curl -sf -K "$work/warm-up-$name.curl"
  sleep 2  # the warm-up's events applied and its spans sent before the count starts
  callgrind_control -z "${registry_of[$name]}" >/dev/null 2>&1
  callgrind_control -z "${gateway_of[$name]}" >/dev/null 2>&1
  curl -sf -K "$work/creates-$name.curl"
  sleep 2  # what the creates set off (projections, the public stream, the spans' export) counts
  callgrind_control -d "${registry_of[$name]}" >/dev/null 2>&1
  callgrind_control -d "${gateway_of[$name]}" >/dev/null 2>&1
  for process in registry gateway; do
    for _ in $(seq 600); do ls "$work"/callgrind."$process-$name".* >/dev/null 2>&1 && break; sleep 0.1; done
  done
  sleep 1
  printf '%-8s registry %10d, gateway %10d instructions per create\n' "$name" \
    $(( $(summed "registry-$name") / creates )) $(( $(summed "gateway-$name") / creates ))
done
stop_otlp_sink
print_sink_spans
echo "otlp sink: $sink_spans spans received"
# Every trace sampled: each create's spans must have reached the receiver for the count to include
# their export.
if [ "$sampler" = always_on ]; then
  [ "$sink_spans" -ge $(( 2 * creates )) ] || { echo "only $sink_spans spans reached the receiver: the traced count is void" >&2; exit 1; }
fi
