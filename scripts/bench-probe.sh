#!/usr/bin/env bash
# Health-probe benchmark: release builds of corral-probe-bench, the registry and the health probe
# on a private nats-server (pinned version, loopback, temporary store), with fake Kubernetes API
# servers in a process of their own.
# Extra arguments go to corral-probe-bench (e.g. --clusters 1000,10000 --replicas 2).
set -euo pipefail
cd "$(dirname "$0")/.."
CORRAL_NATS_SERVER="$(scripts/ensure-nats-server.sh)"
export CORRAL_NATS_SERVER
export RUST_LOG="${RUST_LOG:-warn}"
export CORRAL_OPS_LISTEN=127.0.0.1:0
cargo build --release --locked -p corral-probe-bench -p corral-registry -p corral-health-probe
echo "$(nproc) cores"
target/release/corral-probe-bench "$@"
