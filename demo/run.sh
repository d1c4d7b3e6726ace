#!/usr/bin/env bash
# The local demo, one command (root, Linux): sets up what it needs (the test bed's caches,
# tests/testbed/setup.sh), builds the workspace's binaries, then runs tb-demo: a single-node
# cluster, an nspawn VPS, the chart, a sample app and README Example 1, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export TUNNEL_CACHE=${TUNNEL_CACHE:-/var/cache/tunnel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TUNNEL_CACHE/target}
[[ $(id -u) == 0 ]] || { echo "demo: run as root (network namespaces, a kubelet, nspawn)" >&2; exit 1; }
start=$SECONDS
bash tests/testbed/setup.sh 2>&1 | sed 's/^/  /'
echo "[demo] set-up ready ($((SECONDS - start)) s)"
t=$SECONDS
cargo build -q -p tunnel -p uplink -p testbed --bins
echo "[demo] binaries built ($((SECONDS - t)) s)"
exec "$CARGO_TARGET_DIR/debug/tb-demo" "$PWD"
