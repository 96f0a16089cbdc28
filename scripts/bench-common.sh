# Sourced by the benchmarks after their build: a private nats-server (pinned version, loopback,
# temporary store) and, unless start_registry=0, one registry, with the environment the services
# read. Everything started into $pids is stopped when the script exits.
nats_bin="$(scripts/ensure-nats-server.sh)"
work="$(mktemp -d)"
pids=()
# CORRAL_BENCH_KEEP=1 keeps the folder (logs, callgrind files) and says where it is.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ "${CORRAL_BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# start_nats NAME: a nats-server with its store in $work/NAME, its output in $work/NAME.log; sets
# started_pid and started_url.
start_nats() {
  "$nats_bin" -js -a 127.0.0.1 -p -1 -sd "$work/$1" >"$work/$1.log" 2>&1 &
  started_pid=$!
  pids+=($started_pid)
  for _ in $(seq 100); do grep -q "Server is ready" "$work/$1.log" && break; sleep 0.1; done
  grep -q "Server is ready" "$work/$1.log" || { echo "nats-server $1 did not start:" >&2; tail -5 "$work/$1.log" >&2; exit 1; }
  started_url="nats://127.0.0.1:$(grep -o 'client connections on 127.0.0.1:[0-9]*' "$work/$1.log" | head -1 | sed 's/.*://')"
}
start_nats nats
nats_pid=$started_pid
nats_url=$started_url
nats_version="$("$nats_bin" --version | awk '{print $2}')"

export CORRAL_SEAL_KEY="$(head -c 32 /dev/urandom | base64)"
export RUST_LOG=warn
# Each process's operations listener on a port of its own (the gateway's default is 8083).
export CORRAL_OPS_LISTEN=127.0.0.1:0
export CORRAL_ADMIN_PASSWORD="bench-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
if [ "${start_registry:-1}" = 1 ]; then
  # With callgrind_registry=1 the registry runs under callgrind, its counts in $work/callgrind.registry.*.
  # (--fair-sched: with valgrind's default scheduler a spinning thread can starve the others for
  # minutes, and the registry's NATS requests time out before it is ready.)
  registry_cmd=(target/release/corral-registry)
  if [ "${callgrind_registry:-0}" = 1 ]; then
    registry_cmd=(valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/callgrind.registry" "${registry_cmd[@]}")
  fi
  "${registry_cmd[@]}" --nats-url "$nats_url" --data-dir "$work/registry" >"$work/registry.out" 2>"$work/registry.err" &
  registry_pid=$!
  pids+=($registry_pid)
  for _ in $(seq 1200); do grep -q "registry ready" "$work/registry.out" && break; sleep 0.1; done
  grep -q "registry ready" "$work/registry.out" || { echo "the registry did not start:" >&2; tail -5 "$work/registry.err" >&2; exit 1; }
fi

# The address a gateway writing its output to $1 listens on, once it does (up to 2 minutes: a
# gateway under valgrind starts slowly).
wait_listening() { for _ in $(seq 1200); do grep -q "listening on" "$1" && break; sleep 0.1; done; sed -n 's/.*listening on //p' "$1" | head -1; }

# The benchmarks' OTLP receiver (`corral-load --otlp-sink`), its output in $work/sink.out; sets
# sink (its address) and sink_pid.
start_otlp_sink() {
  target/release/corral-load --otlp-sink 127.0.0.1:0 >"$work/sink.out" 2>"$work/sink.err" &
  sink_pid=$!
  pids+=($sink_pid)
  sink="$(wait_listening "$work/sink.out")"
  [ -n "$sink" ] || { echo "the OTLP receiver did not start:" >&2; cat "$work/sink.err" >&2; exit 1; }
}
# Stops the receiver; sets sink_spans to how many spans it got (its lines by service and span
# name stay in $work/sink.out).
stop_otlp_sink() {
  kill "$sink_pid"
  wait "$sink_pid" 2>/dev/null || true
  sink_spans="$(sed -n 's/^otlp sink: \([0-9]*\) spans received/\1/p' "$work/sink.out")"
  sink_spans="${sink_spans:-0}"
}
# The receiver's spans by service and span name.
print_sink_spans() { grep "^otlp sink: .* spans named " "$work/sink.out" || true; }

# curl's config for REST creates $2..$3 (each its own server and name) through the gateway at $1.
write_creates() {
  for i in $(seq "$2" "$3"); do
    echo "url = \"http://$1/api/v1/clusters\""
    echo "data = \"{\\\"server\\\":\\\"https://create-$i.example.com\\\",\\\"name\\\":\\\"create-$i\\\"}\""
    echo 'header = "content-type: application/json"'
    echo "output = /dev/null"
    if [ "$i" -lt "$3" ]; then echo next; fi
  done
}
