#!/usr/bin/env bash
# The Gateway API CRDs, Standard channel (issue 19): copied from the Go module
# sigs.k8s.io/gateway-api at the pinned version (its zip has them under config/crd/standard/)
# into $CACHE/gateway-api/standard/ (the version in $CACHE/gateway-api/.version), which the tests
# apply to their API server (testbed::tools::gateway_api_crds). Idempotent: only the version
# stamp is checked once there; run by tests/testbed/setup.sh with CACHE and GATEWAY_API_VERSION
# (pinned there).
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
DEST=$CACHE/gateway-api/standard
STAMP=$CACHE/gateway-api/.version
log() { printf '[setup 50-gateway-api %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -d $DEST && "$(cat "$STAMP" 2>/dev/null)" == "$GATEWAY_API_VERSION" ]]; then
  exit 0
fi
log "fetching sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION (Standard-channel CRDs)"
dir=$(cd /tmp && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
  sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
src=$dir/config/crd/standard
if [[ ! -f $src/gateway.networking.k8s.io_referencegrants.yaml ]]; then
  echo "no Standard-channel ReferenceGrant CRD in $src" >&2
  exit 1
fi
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
cp "$src"/*.yaml "$DEST.tmp/"
chmod -R u+w "$DEST.tmp"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$GATEWAY_API_VERSION" >"$STAMP"
log "Gateway API $GATEWAY_API_VERSION CRDs in $DEST"
