#!/usr/bin/env bash
# Instructions a gateway spends per REST Get, with authentication off and on and with every trace
# exported (to a receiver on loopback, `corral-load --otlp-sink`), and the registry per create,
# counted by valgrind's callgrind: the same count for the same binaries and requests whatever else
# the machine is doing, where wall-clock comparisons on two shared cores move by tens of percent.
# Starts a private nats-server (pinned version, loopback, temporary store), and a registry and
# three gateways under callgrind; registers 50 clusters, counts the measured Gets, then the
# registry's share of as many creates (each after as many calls not counted).
# Usage: scripts/bench-instructions.sh [CALLS]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
gets="${1:-1000}"
for tool in valgrind callgrind_control curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Debian: apt-get install valgrind curl)" >&2; exit 1; }
done
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
callgrind_registry=1
source scripts/bench-common.sh

# $1: a name for the files; the rest: the gateway's own arguments.
declare -A gateway_pid
start_gateway() {
  local name="$1"; shift
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/callgrind.$name" \
    target/release/corral-gateway --nats-url "$nats_url" --listen 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  gateway_pid[$name]=$!
}
start_otlp_sink
start_gateway plain --disable-auth
start_gateway auth
# Its spans sent within 200 ms of ending (not the default 5 s), so the count below includes
# their export.
export OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink" OTEL_TRACES_SAMPLER=always_on OTEL_BSP_SCHEDULE_DELAY=200
start_gateway traced --disable-auth
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_TRACES_SAMPLER OTEL_BSP_SCHEDULE_DELAY
plain="$(wait_listening "$work/plain.out")"
auth="$(wait_listening "$work/auth.out")"
traced="$(wait_listening "$work/traced.out")"
[ -n "$plain" ] && [ -n "$auth" ] && [ -n "$traced" ] || { echo "a gateway did not start" >&2; exit 1; }

for i in $(seq 50); do
  curl -sf -o /dev/null -X POST "http://$plain/api/v1/clusters" -H 'content-type: application/json' \
    -d "{\"server\":\"https://bench-$i.example.com\",\"name\":\"bench-$i\"}"
done
# The password and the token go in files, not on command lines where other users could read them.
(umask 077; printf '{"username":"admin","password":"%s"}' "$CORRAL_ADMIN_PASSWORD" >"$work/login.json")
token="$(curl -sf -X POST "http://$auth/api/v1/session" -d @"$work/login.json" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
[ -n "$token" ] || { echo "login failed" >&2; exit 1; }
(umask 077; printf 'Authorization: Bearer %s\n' "$token" >"$work/auth.header")

# Instructions process $2 spends while curl runs the config $3 (with the rest of the arguments),
# summed over its threads, into the callgrind files $work/callgrind.$1.*.
count_instructions() {
  local name="$1" pid="$2" config="$3"; shift 3
  sleep 1  # what came before (a warm-up's spans sent) is not counted
  callgrind_control -z "$pid" >/dev/null 2>&1
  curl -sf "$@" -K "$config"
  sleep 1  # what the calls set off (a projection applying its events) is counted too
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 600); do ls "$work"/callgrind."$name".* >/dev/null 2>&1 && break; sleep 0.1; done
  grep -h '^summary:' "$work"/callgrind."$name".* | awk '{s += $2} END {print s}'
}

echo "nats-server $nats_version; $gets REST Gets per gateway, one connection, one at a time"
declare -A per_get
for name in plain auth traced; do
  address="${!name}"
  # One curl run, one kept-alive connection, for every Get.
  for i in $(seq "$gets"); do
    echo "url = \"http://$address/api/v1/clusters/https%3A%2F%2Fbench-$(( i % 50 + 1 )).example.com\""
    echo "output = /dev/null"
  done >"$work/$name.curl"
  curl -sf -H @"$work/auth.header" -K "$work/$name.curl"  # warm-up, not counted
  total="$(count_instructions "$name" "${gateway_pid[$name]}" "$work/$name.curl" -H @"$work/auth.header")"
  per_get[$name]=$(( total / gets ))
  case "$name" in
    plain) what="Get, authentication off" ;;
    auth) what="Get, authentication on" ;;
    traced) what="Get, every trace exported" ;;
  esac
  printf '%-28s %10d instructions per Get\n' "$what" "${per_get[$name]}"
done
# The traced count stands only if the spans reached the receiver: one per Get, warm-up and counted.
stop_otlp_sink
[ "$sink_spans" -ge $(( 2 * gets )) ] || { echo "only $sink_spans spans reached the receiver: the traced count is void" >&2; exit 1; }
awk -v p="${per_get[plain]}" -v a="${per_get[auth]}" -v t="${per_get[traced]}" 'BEGIN {
  printf "authentication + RBAC: %+d instructions per Get (%+.1f%%)\n", a - p, (a - p) * 100 / p
  printf "tracing, every span exported: %+d instructions per Get (%+.1f%%)\n", t - p, (t - p) * 100 / p
}'

# The registry's share of a create: REST creates through the gateway without authentication, one
# at a time over one connection; the registry decides, appends the name claim and the cluster
# event, and applies both to its projection.
echo "$gets REST creates through the gateway without authentication, one connection, one at a time"
write_creates "$plain" 1 "$gets" >"$work/warm-up-creates.curl"
write_creates "$plain" $(( gets + 1 )) $(( 2 * gets )) >"$work/creates.curl"
curl -sf -K "$work/warm-up-creates.curl"
sleep 1  # the warm-up's events applied before the count starts
total="$(count_instructions registry "$registry_pid" "$work/creates.curl")"
printf '%-28s %10d instructions per create\n' "Create, registry" $(( total / gets ))
