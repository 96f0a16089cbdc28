#!/usr/bin/env bash
# Benchmark of the all-in-one binary on a private nats-server (pinned version, loopback,
# temporary store): the gateway and the registry in one process, so no NATS request between
# them; authentication, the health probe and cache syncing off, as the services are in bench.sh.
# Extra arguments go to corral-load (e.g. --concurrency 64 --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral -p corral-load
start_registry=0
source scripts/bench-common.sh
target/release/corral --nats-url "$nats_url" --listen 127.0.0.1:0 --data-dir "$work/corral" --disable-auth \
  --probe-interval-seconds 0 --cache-check-seconds 0 >"$work/corral.out" 2>"$work/corral.err" &
corral_pid=$!
pids+=($corral_pid)
addr="$(wait_listening "$work/corral.out")"
[ -n "$addr" ] || { echo "corral did not start:" >&2; tail -5 "$work/corral.err" >&2; exit 1; }
echo "nats-server $nats_version on $nats_url; corral (all in one) on $addr; $(nproc) cores"
target/release/corral-load --gateway "$addr" --nats-url "$nats_url" \
  --cpu-of "nats-server=$nats_pid" --cpu-of "corral=$corral_pid" "$@"
