#!/usr/bin/env bash
# Benchmark: durable writes on the production shape. Three nats-server nodes (pinned version)
# clustered on loopback with sync_interval: always, the stream at three replicas, one registry
# and one gateway (release builds) given the three URLs; corral-load --durable prints, in the same
# run, the floor (one create's event: publish-with-ack to an R3 stream expecting its subject
# empty) and Create, Update and Get against it, then which node each service is connected to and
# which node leads each stream (both are chosen at random, and they move the figures). Extra
# arguments go to corral-load.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p corral-registry -p corral-gateway -p corral-load
nats_bin="$(scripts/ensure-nats-server.sh)"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client_ports=() cluster_ports=() http_ports=()
for i in 1 2 3; do client_ports+=("$(free_port)"); cluster_ports+=("$(free_port)"); http_ports+=("$(free_port)"); done
urls=""
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do [ "$i" = "$j" ] || routes+="${routes:+, }\"nats://127.0.0.1:${cluster_ports[$j]}\""; done
  mkdir -p "$work/n$i"
  cat >"$work/n$i.conf" <<CONF
server_name: nats-$((i + 1))
listen: "127.0.0.1:${client_ports[$i]}"
http: "127.0.0.1:${http_ports[$i]}"
jetstream { store_dir: "$work/n$i", sync_interval: always }
cluster { name: corral-bench, listen: "127.0.0.1:${cluster_ports[$i]}", routes: [ $routes ] }
CONF
  "$nats_bin" -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
  pids+=($!)
  nats_pids+=($!)
  urls+="${urls:+,}nats://127.0.0.1:${client_ports[$i]}"
done
for i in 0 1 2; do
  for _ in $(seq 100); do grep -q "Server is ready" "$work/n$i.log" && break; sleep 0.1; done
  grep -q "Server is ready" "$work/n$i.log" || { echo "nats-server n$i did not start:" >&2; tail -5 "$work/n$i.log" >&2; exit 1; }
done
nats_version="$("$nats_bin" --version | awk '{print $2}')"

export CORRAL_SEAL_KEY="$(head -c 32 /dev/urandom | base64)"
export RUST_LOG=warn
export CORRAL_OPS_LISTEN=127.0.0.1:0
export CORRAL_STREAM_REPLICAS=3
export CORRAL_ADMIN_PASSWORD="bench-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
target/release/corral-registry --nats-url "$urls" --data-dir "$work/registry" >"$work/registry.out" 2>"$work/registry.err" &
registry_pid=$!
pids+=($registry_pid)
for _ in $(seq 1200); do grep -q "registry ready" "$work/registry.out" && break; sleep 0.1; done
grep -q "registry ready" "$work/registry.out" || { echo "the registry did not start:" >&2; tail -5 "$work/registry.err" >&2; exit 1; }
target/release/corral-gateway --nats-url "$urls" --listen 127.0.0.1:0 --disable-auth >"$work/gateway.out" 2>"$work/gateway.err" &
gw_pid=$!
pids+=($gw_pid)
for _ in $(seq 1200); do grep -q "listening on" "$work/gateway.out" && break; sleep 0.1; done
gw="$(sed -n 's/.*listening on //p' "$work/gateway.out" | head -1)"
echo "three nats-server $nats_version nodes (sync_interval: always) on $urls; gateway on $gw; $(nproc) cores"
target/release/corral-load --durable --gateway "$gw" --nats-url "$urls" \
  --cpu-of "nats-1=${nats_pids[0]}" --cpu-of "nats-2=${nats_pids[1]}" --cpu-of "nats-3=${nats_pids[2]}" \
  --cpu-of "registry=$registry_pid" --cpu-of "gateway=$gw_pid" "$@"
python3 - "${http_ports[@]}" <<'PY'
import json, sys, urllib.request
get = lambda port, path: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5))
on, leaders = [], {}
for i, port in enumerate(sys.argv[1:]):
    on += [f"{c.get('name', '?')} on nats-{i + 1}" for c in get(port, "/connz")["connections"] if c.get("name") != "corral-load"]
    for account in get(port, "/jsz?accounts=true&streams=true").get("account_details", []):
        for st in account.get("stream_detail", []):
            leaders[st["name"]] = st.get("cluster", {}).get("leader", "?")
print("topology: " + ", ".join(on) + "; " + ", ".join(f"{n} led by {l}" for n, l in sorted(leaders.items())))
PY
