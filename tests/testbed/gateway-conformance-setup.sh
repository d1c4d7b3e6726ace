#!/usr/bin/env bash
# The Gateway API conformance suite (issue 19; docs/testing.md "Gateway API conformance"), built
# offline into $CACHE/gateway-api/conformance/:
#   conformance.test  `go test -c` of sigs.k8s.io/gateway-api/conformance (conformance_test.go),
#                     built with the module's own go.mod/go.sum: the module's `replace
#                     sigs.k8s.io/gateway-api => ../` is honoured by laying the two modules out
#                     as in the upstream repository (src/ = gateway-api, src/conformance/ = the
#                     conformance module), both at $GATEWAY_API_VERSION;
#   echo-basic        the suite's echo backend (conformance/echo-basic), static;
#   coredns           github.com/coredns/coredns@$COREDNS_VERSION, static (the base manifests'
#                     DNS server).
# testbed::gateway_conformance writes them into the images the suite's manifests name. Idempotent:
# the stamp $CACHE/gateway-api/conformance/.version is checked once everything is there; run by
# tests/gateway-conformance.sh (not by tests/testbed/setup.sh: CI does not run the suite) with
# CACHE and GATEWAY_API_VERSION (pinned in setup.sh).
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
# The CoreDNS the suite's base manifests run (registry.k8s.io/coredns/coredns:v1.12.2).
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.2}
OUT=$CACHE/gateway-api/conformance
STAMP=$OUT/.version
want="gateway-api $GATEWAY_API_VERSION coredns $COREDNS_VERSION"
log() { printf '[gateway-conformance-setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ "$(cat "$STAMP" 2>/dev/null)" == "$want" && -x $OUT/conformance.test && -x $OUT/echo-basic && -x $OUT/coredns ]]; then
  exit 0
fi
start=$SECONDS
mkdir -p "$OUT"
# moddir MODULE@VERSION: downloads (once, into the Go module cache) and prints its directory.
moddir() { (cd /tmp && go mod download -json "$1") | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }

log "fetching sigs.k8s.io/gateway-api and its conformance module at $GATEWAY_API_VERSION"
root=$(moddir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
conf=$(moddir "sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION")
[[ -f $conf/conformance_test.go && -f $root/go.mod ]] || { echo "no conformance module in $conf" >&2; exit 1; }
src=$OUT/src
rm -rf "$src"
mkdir -p "$src"
cp -r "$root/." "$src/"
rm -rf "$src/conformance"
cp -r "$conf" "$src/conformance"
chmod -R u+w "$src"

log "building the suite (go test -c) and echo-basic"
(cd "$src/conformance" && export GOWORK=off &&
  go mod download &&
  CGO_ENABLED=0 go test -c -trimpath -ldflags='-s -w' -o "$OUT/conformance.test.tmp" . &&
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/echo-basic.tmp" ./echo-basic)
mv "$OUT/conformance.test.tmp" "$OUT/conformance.test"
mv "$OUT/echo-basic.tmp" "$OUT/echo-basic"
log "suite and echo-basic built in $((SECONDS - start)) s"

log "fetching and building github.com/coredns/coredns@$COREDNS_VERSION"
t=$SECONDS
cdir=$(moddir "github.com/coredns/coredns@$COREDNS_VERSION")
[[ -f $cdir/coredns.go ]] || { echo "no coredns.go in $cdir" >&2; exit 1; }
# Built in place from the read-only module cache: its go.mod/go.sum as released, its plugin
# list (zplugin.go) already generated.
(cd "$cdir" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
  -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  -o "$OUT/coredns.tmp" .)
mv "$OUT/coredns.tmp" "$OUT/coredns"
log "coredns built in $((SECONDS - t)) s"

echo "$want" >"$STAMP"
log "Gateway API conformance $GATEWAY_API_VERSION ready in $OUT ($((SECONDS - start)) s)"
