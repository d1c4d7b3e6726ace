#!/usr/bin/env bash
# cargo-deny for the test command's licence, ban and source checks (deny.toml; issue 24):
# built once from crates.io with its own lock file into $BIN (cargo install --locked), then
# only its version stamp is checked. Idempotent; run by tests/testbed/setup.sh with CACHE and
# BIN.
set -euo pipefail

CACHE=${CACHE:-/var/cache/tunnel}
BIN=${BIN:-$CACHE/bin}
CARGO_DENY_VERSION=${CARGO_DENY_VERSION:-0.20.2}
log() { printf '[setup 40-cargo-deny %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -x $BIN/cargo-deny && "$(cat "$BIN/.cargo-deny.version" 2>/dev/null)" == "$CARGO_DENY_VERSION" ]]; then
  exit 0
fi
if [[ -x $BIN/cargo-deny ]] && "$BIN/cargo-deny" --version | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "$CARGO_DENY_VERSION" >"$BIN/.cargo-deny.version"
  exit 0
fi
log "cargo install cargo-deny $CARGO_DENY_VERSION (a few minutes, cached afterwards)"
CARGO_TARGET_DIR=$CACHE/target-cargo-deny cargo install --quiet --locked --version "$CARGO_DENY_VERSION" \
  --root "$CACHE" cargo-deny
rm -rf "$CACHE/target-cargo-deny"
echo "$CARGO_DENY_VERSION" >"$BIN/.cargo-deny.version"
log "cargo-deny $CARGO_DENY_VERSION ready"
