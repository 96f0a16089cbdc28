#!/usr/bin/env bash
# Builds the release binaries and, from scratch around them (no image is pulled), two images:
#   corral:<version>, corral:dev             every service binary; the command picks the role
#   corral-nats:<version>, corral-nats:dev   the pinned nats-server (scripts/ensure-nats-server.sh)
# each with the shared libraries its binaries load, a non-root user (65532), CA certificates and
# corral-healthcheck for container health checks. Then makes the secrets docker-compose.yml
# mounts (scripts/compose-secrets.sh; existing ones are kept) and prints the images' sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! engine="$(docker info --format '{{.ServerVersion}}' 2>&1)"; then
  echo "build-image.sh: no Docker engine answers (docker info: ${engine##*$'\n'})" >&2
  exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
services=(corral corral-gateway corral-registry corral-health-probe corral-cache-invalidation corral-auth-rotation)
packages=()
for p in "${services[@]}" corral-healthcheck; do packages+=(-p "$p"); done
cargo build --release --locked "${packages[@]}"

# stage CONTEXT OWNED BINARY...: CONTEXT/root gets the binaries under usr/local/bin (without
# debug sections), every library they load at the path the loader looks for it, the users and
# the CA certificates; CONTEXT/owned the folder OWNED, empty, for the image's user to write in.
stage() {
  local context="$1" owned="$2"; shift 2
  local root="$context/root"
  rm -rf "$context" && mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$context/owned/$owned"
  local bin lib
  for bin in "$@"; do
    cp "$bin" "$root/usr/local/bin/" && strip --strip-debug "$root/usr/local/bin/$(basename "$bin")"
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
      mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
    done
  done
  printf 'root:x:0:0:root:/:/sbin/nologin\ncorral:x:65532:65532:corral:/var/lib/corral:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\ncorral:x:65532:\n' > "$root/etc/group"
  # Service names (nats-1, corral-nats-0.corral-nats-headless) are resolved by glibc: files, then DNS.
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

release=target/release
corral_bins=()
for s in "${services[@]}" corral-healthcheck; do corral_bins+=("$release/$s"); done
stage target/image/corral var/lib/corral "${corral_bins[@]}"
docker build --quiet -f docker/corral.Dockerfile -t "corral:$version" -t corral:dev target/image/corral >/dev/null

nats_bin="$(scripts/ensure-nats-server.sh)"
nats_version="$("$nats_bin" --version | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')"
stage target/image/nats data "$nats_bin" "$release/corral-healthcheck"
docker build --quiet -f docker/nats.Dockerfile -t "corral-nats:$nats_version" -t corral-nats:dev target/image/nats >/dev/null

scripts/compose-secrets.sh
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^corral(-nats)?:' | sort
