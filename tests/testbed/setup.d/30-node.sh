#!/usr/bin/env bash
# The single-node cluster of the test bed (issue 13, docs/testing.md "The node"): containerd,
# runc, the CNI plugins, iptables and conntrack from Debian; kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy, kubectl and a version-stamped kube-apiserver built from the same
# wrapper module as the test bed's API server; Prometheus built from its Go module with only
# the Kubernetes service discovery (Debian's package is built without it). Idempotent; run by tests/testbed/setup.sh with
# CACHE, BIN and K8S_VERSION. Everything lands in $CACHE/node (bin/ has a .version stamp).
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
K8S_VERSION=${K8S_VERSION:-v1.34.4}
NODE=$CACHE/node
mkdir -p "$NODE/bin" "$NODE/src"
log() { printf '[setup 30-node %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

packages=(containerd runc containernetworking-plugins iptables conntrack ethtool)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The binaries, stamped with their version: an unstamped build reports v0.0.0-master, which
# `kubectl version` cannot parse and which charts' kubeVersion constraints reject.
binaries=(kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler kubectl)
stamp="$K8S_VERSION ${binaries[*]}"
if [[ "$(cat "$NODE/bin/.version" 2>/dev/null)" != "$stamp" ]]; then
  src=$CACHE/src/kubernetes-$K8S_VERSION
  [[ -f $src/go.mod ]] || { log "missing $src: setup.sh builds it first"; exit 1; }
  d=$NODE/src/kubernetes-$K8S_VERSION
  if [[ ! -f $d/.tidy ]]; then
    rm -rf "$d"; mkdir -p "$d"
    cp "$src/go.mod" "$src/go.sum" "$d/"
    cat >"$d/tools.go" <<'GO'
package main

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
GO
    (cd "$d" && go mod tidy >/dev/null 2>&1)
    touch "$d/.tidy"
  fi
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "building ${binaries[*]} $K8S_VERSION (cached afterwards)"
  start=$SECONDS
  pkgs=()
  for b in "${binaries[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  rm -rf "$NODE/bin.tmp"; mkdir -p "$NODE/bin.tmp"
  (cd "$d" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$NODE/bin.tmp/" "${pkgs[@]}")
  for b in "${binaries[@]}"; do mv "$NODE/bin.tmp/$b" "$NODE/bin/$b"; done
  rmdir "$NODE/bin.tmp"
  echo "$stamp" >"$NODE/bin/.version"
  log "built in $((SECONDS - start)) s"
fi
log "node binaries ready in $NODE/bin"
