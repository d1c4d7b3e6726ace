#!/usr/bin/env bash
# Data-plane test peers and tools (issue 4): wireguard-go and wg for interop, iperf3 for
# traffic, socat/curl for probing. Idempotent; run by tests/testbed/setup.sh with CACHE and BIN.
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
BIN=${BIN:-$CACHE/bin}
mkdir -p "$BIN"
log() { printf '[setup 20-dataplane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

packages=(wireguard-go wireguard-tools iperf3 socat curl nftables iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tests find their tools in $BIN; link the system ones there so one place answers.
for tool in wireguard-go wg iperf3 socat curl; do
  path=$(command -v "$tool")
  [[ -e $BIN/$tool ]] || ln -sf "$path" "$BIN/$tool"
done
log "data-plane tools ready"
