#!/usr/bin/env bash
# Makes the secrets docker-compose.yml mounts, in .secrets/ (never in the compose file): the sealing
# key, the admin's first password, a NATS password per kind of service, and the NATS servers'
# users (nats/authorization.conf with those passwords filled in). What exists is kept, so running
# it again changes no secret; the servers' file is rendered again, in case authorization.conf
# changed. The folder is its owner's only; the files in it are readable by the containers' user
# (docker-compose mounts them as they are on the host).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.secrets
mkdir -p "$dir" && chmod 0700 "$dir"
random() { head -c "$1" /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
keep() { # keep NAME BYTES: creates $dir/NAME with random bytes unless it is there
  [ -s "$dir/$1" ] || { random "$2" > "$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"; }
  chmod 0644 "$dir/$1"
}
[ -s "$dir/seal-key" ] || { head -c 32 /dev/urandom | base64 > "$dir/seal-key.tmp" && mv "$dir/seal-key.tmp" "$dir/seal-key"; }
chmod 0644 "$dir/seal-key"
keep admin-password 18
kinds=(registry gateway health-probe cache-invalidation auth-rotation admin)
rules=()
for kind in "${kinds[@]}"; do
  keep "nats-$kind-password" 24
  var="CORRAL_NATS_PASSWORD_$(echo "$kind" | tr 'a-z-' 'A-Z_')"
  rules+=(-e "s/\\\$$var\\b/\"$(cat "$dir/nats-$kind-password")\"/g")
done
sed "${rules[@]}" nats/authorization.conf > "$dir/nats-authorization.conf.tmp"
if grep -q '\$CORRAL_NATS_PASSWORD' "$dir/nats-authorization.conf.tmp"; then
  echo "compose-secrets.sh: nats/authorization.conf names a password this script does not make" >&2
  rm -f "$dir/nats-authorization.conf.tmp"; exit 1
fi
mv "$dir/nats-authorization.conf.tmp" "$dir/nats-authorization.conf"
chmod 0644 "$dir/nats-authorization.conf"
echo "secrets in $dir/ (the admin's first password: $dir/admin-password)"
