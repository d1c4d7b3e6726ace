#!/usr/bin/env bash
# DNS publishing (issue 20): an unmodified external-dns, built from its Go module
# sigs.k8s.io/external-dns at the version pinned in setup.sh, into $BIN/external-dns, with its
# DNSEndpoint CRD (from the same module's source) in $CACHE/external-dns/; and Knot DNS from
# Debian (knotd, knotc, kdig) as the RFC2136 server it updates (testbed::external_dns).
# Idempotent: the packages are checked with dpkg, the build by its version stamp.
# Also the Experimental-channel TCPRoute and UDPRoute CRDs (below). Run by
# tests/testbed/setup.sh with CACHE, BIN, EXTERNAL_DNS_VERSION and GATEWAY_API_VERSION.
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
BIN=${BIN:-$CACHE/bin}
EXTERNAL_DNS_VERSION=${EXTERNAL_DNS_VERSION:-v0.22.0}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
# Dependencies of that version the Go module proxy does not serve ("module version not
# available"), as "module version" of the nearest one it does.
EXTERNAL_DNS_REPLACE=(
  "github.com/exoscale/egoscale/v3 v3.1.50"
  "github.com/openshift/api v0.0.0-20260709102940-580f1c1ba691"
)
PACKAGES=(knot knot-dnsutils)
DEST=$CACHE/external-dns
log() { printf '[setup 60-external-dns %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---- Knot DNS (server and kdig) from Debian ----------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The tests run their own knotd on a loopback port; the packaged service is not wanted.
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now knot.service >/dev/null 2>&1 || true
  fi
fi

# ---- external-dns from its Go module ---------------------------------------------------------
build_external_dns() (
  log "building sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION (a few minutes, cached afterwards)"
  start=$SECONDS
  # Its module graph (every provider's SDK) is large and needed once: a private module and build
  # cache under $TMPDIR, removed afterwards, leave only the binary and the CRD behind.
  work=$(mktemp -d "${TMPDIR:-/tmp}/external-dns-build.XXXXXX")
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  export GOMODCACHE=$work/mod GOCACHE=$work/cache GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
  # A wrapper module whose main is upstream's main.go, word for word (it only calls
  # controller.Execute), so the build can replace the few dependency versions the module proxy
  # does not serve with the nearest it does (same major version; providers the tests never use).
  mkdir -p "$work/src"
  {
    echo "module testbed/external-dns"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//')"
    echo
    echo "require sigs.k8s.io/external-dns $EXTERNAL_DNS_VERSION"
    echo
    for r in "${EXTERNAL_DNS_REPLACE[@]}"; do echo "replace ${r%% *} => ${r%% *} ${r##* }"; done
  } >"$work/src/go.mod"
  printf '%s\n' 'package main' '' 'import (' '	_ "k8s.io/client-go/plugin/pkg/client/auth"' \
    '	"sigs.k8s.io/external-dns/controller"' ')' '' 'func main() {' '	controller.Execute()' '}' >"$work/src/main.go"
  cd "$work/src"
  go mod tidy >/dev/null
  upstream=$(go list -m -f '{{.Dir}}' sigs.k8s.io/external-dns)
  if ! diff -q <(grep -v '^//\|^$' "$upstream/main.go" | sed '/^\/\*/,/\*\//d') <(grep -v '^$' main.go) >/dev/null; then
    echo "upstream main.go of external-dns $EXTERNAL_DNS_VERSION differs from the wrapper's:" >&2
    cat "$upstream/main.go" >&2
    exit 1
  fi
  crd=$upstream/config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml
  if [[ ! -f $crd ]]; then
    echo "no DNSEndpoint CRD at $crd" >&2
    exit 1
  fi
  go build -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/external-dns/pkg/apis/externaldns.Version=$EXTERNAL_DNS_VERSION" \
    -o "$BIN/external-dns.tmp" .
  mkdir -p "$DEST"
  cp "$crd" "$DEST/dnsendpoints.externaldns.k8s.io.yaml.tmp"
  chmod 644 "$DEST/dnsendpoints.externaldns.k8s.io.yaml.tmp"
  mv "$DEST/dnsendpoints.externaldns.k8s.io.yaml.tmp" "$DEST/dnsendpoints.externaldns.k8s.io.yaml"
  mv "$BIN/external-dns.tmp" "$BIN/external-dns"
  echo "$EXTERNAL_DNS_VERSION" >"$BIN/.external-dns.version"
  log "external-dns $EXTERNAL_DNS_VERSION built in $((SECONDS - start)) s (peak build space $(du -sh "$work" | cut -f1)); CRD in $DEST"
)
if [[ ! -x $BIN/external-dns || ! -f $DEST/dnsendpoints.externaldns.k8s.io.yaml ||
  "$(cat "$BIN/.external-dns.version" 2>/dev/null)" != "$EXTERNAL_DNS_VERSION" ]]; then
  build_external_dns
fi

# ---- TCPRoute and UDPRoute CRDs that also serve v1alpha2 ---------------------------------------
# external-dns's gateway-tcproute and gateway-udproute sources read v1alpha2, which the Standard
# channel (setup.d/50-gateway-api.sh) no longer serves; the Experimental channel of the same
# Gateway API version serves v1 and v1alpha2 (testbed::external_dns installs these for them).
EXPERIMENTAL=$DEST/gateway-experimental
if [[ ! -f $EXPERIMENTAL/gateway.networking.k8s.io_udproutes.yaml ||
  "$(cat "$EXPERIMENTAL/.version" 2>/dev/null)" != "$GATEWAY_API_VERSION" ]]; then
  dir=$(cd /tmp && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$EXPERIMENTAL.tmp"
  mkdir -p "$EXPERIMENTAL.tmp"
  for kind in tcproutes udproutes; do
    cp "$dir/config/crd/experimental/gateway.networking.k8s.io_$kind.yaml" "$EXPERIMENTAL.tmp/"
  done
  chmod -R u+w "$EXPERIMENTAL.tmp"
  echo "$GATEWAY_API_VERSION" >"$EXPERIMENTAL.tmp/.version"
  rm -rf "$EXPERIMENTAL"
  mv "$EXPERIMENTAL.tmp" "$EXPERIMENTAL"
  log "Gateway API $GATEWAY_API_VERSION Experimental TCPRoute and UDPRoute CRDs in $EXPERIMENTAL"
fi
