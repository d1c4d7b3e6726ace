#!/usr/bin/env bash
# Installs/builds the reference tools for bench/run.sh, idempotently.
#   apt:    iperf3 wrk wireguard-tools nftables iproute2 python3
#   cargo:  boringtun-cli, rathole (noise only)   -> /var/cache/tunnel/bench/bin
#   go:     golang.zx2c4.com/wireguard (current)   -> /var/cache/tunnel/bench/bin/wireguard-go
#   ours:   cargo build --release -p uplink        -> <repo>/target/release/{tunnelctl,uplink}
# Re-running it does nothing that is already done. Not part of CI.
set -euo pipefail

BENCH=${BENCH_ROOT:-/var/cache/tunnel/bench}
SRC=/var/cache/tunnel/src
REPO=$(cd "$(dirname "$0")/.." && pwd)
BORINGTUN_VERSION=${BORINGTUN_VERSION:-0.7.1}
RATHOLE_VERSION=${RATHOLE_VERSION:-0.5.0}
# golang.zx2c4.com/wireguard has no tags on the module proxy; "latest" resolves to
# the newest pseudo-version, which go.mod/go.sum of the wrapper then pin.
WGGO_VERSION=${WGGO_VERSION:-latest}

log() { echo "[setup] $*" >&2; }
mkdir -p "$BENCH/bin" "$SRC"

# --- Debian packages -------------------------------------------------------------
need=()
for pair in iperf3:iperf3 wrk:wrk wg:wireguard-tools nft:nftables ip:iproute2 python3:python3; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- crates.io tools ---------------------------------------------------------------
installed() { # crate version: installed under $BENCH by cargo install
  cargo install --root "$BENCH" --list 2>/dev/null | grep -q "^$1 v$2:" && [ -x "$BENCH/bin/${3:-$1}" ]
}
if ! installed boringtun-cli "$BORINGTUN_VERSION"; then
  log "cargo install boringtun-cli $BORINGTUN_VERSION"
  cargo install --locked --root "$BENCH" --version "$BORINGTUN_VERSION" boringtun-cli
fi
if ! installed rathole "$RATHOLE_VERSION"; then
  log "cargo install rathole $RATHOLE_VERSION (server, client, noise; no TLS so no OpenSSL)"
  # Not --locked: its lock file pins time 0.3.29, which current rustc refuses (E0282).
  cargo install --root "$BENCH" --version "$RATHOLE_VERSION" \
    --no-default-features --features server,client,noise rathole
fi

# --- wireguard-go from its Go module -----------------------------------------------
WRAP=$SRC/wireguard-go-bench
if ! [ -x "$BENCH/bin/wireguard-go" ] || ! [ -f "$WRAP/go.sum" ]; then
  log "go build golang.zx2c4.com/wireguard@$WGGO_VERSION"
  mkdir -p "$WRAP"
  if ! [ -f "$WRAP/go.mod" ]; then
    cat >"$WRAP/go.mod" <<'GOMOD'
module tunnel.bench/wireguardgo

go 1.23
GOMOD
    # The module's main package lives at its root; a tools-style import pins it.
    cat >"$WRAP/tools.go" <<'GOSRC'
//go:build tools

package tools

import _ "golang.zx2c4.com/wireguard"
GOSRC
  fi
  (cd "$WRAP" && go get "golang.zx2c4.com/wireguard@$WGGO_VERSION" && go mod tidy &&
    CGO_ENABLED=0 go build -trimpath -o "$BENCH/bin/wireguard-go" golang.zx2c4.com/wireguard)
fi

# --- the HTTP server wrk measures against (bench/httpd, standard library only) ---------
if ! [ -x "$BENCH/bin/bench-httpd" ] || [ "$REPO/bench/httpd/main.go" -nt "$BENCH/bin/bench-httpd" ]; then
  log "go build bench/httpd"
  (cd "$REPO/bench/httpd" && CGO_ENABLED=0 go build -trimpath -o "$BENCH/bin/bench-httpd" .)
fi

# --- our agents ----------------------------------------------------------------------
# Best effort: the data plane is under construction; run.sh reports "not available" when
# the binaries are missing or do not start. Built in a target directory of its own (no lock
# contention with development builds) and copied, with the commit they come from, so a
# rebuild in the tree during a run cannot change what is measured.
if [ "${BENCH_SKIP_OURS:-0}" != 1 ]; then
  log "cargo build --release -p uplink (tunnelctl, uplink)"
  rm -f "$BENCH/bin/ours/tunnelctl" "$BENCH/bin/ours/uplink" "$BENCH/bin/ours/BUILD"
  if (cd "$REPO" && cargo build --release -p uplink --target-dir "$BENCH/target"); then
    mkdir -p "$BENCH/bin/ours"
    cp "$BENCH/target/release/tunnelctl" "$BENCH/target/release/uplink" "$BENCH/bin/ours/"
    rev=$(git -C "$REPO" log -1 --format=%h -- uplink Cargo.lock 2>/dev/null || echo unknown)
    dirty=$(git -C "$REPO" status --porcelain -- uplink 2>/dev/null | grep -q . && echo ", uplink/ with uncommitted changes" || true)
    echo "built $(date -u +%Y-%m-%dT%H:%MZ) from uplink/ as of commit $rev$dirty" >"$BENCH/bin/ours/BUILD"
  else
    log "WARNING: our agents did not build; run.sh will report them as not available"
  fi
fi

log "versions:"
{
  echo "iperf3: $(iperf3 --version | head -1)"
  echo "wrk: $(wrk --version 2>&1 | head -1)"
  echo "wg: $(wg --version)"
  echo "boringtun-cli: $("$BENCH/bin/boringtun-cli" --version)"
  echo "rathole: $("$BENCH/bin/rathole" --version 2>&1 | sed -n 's/^Build Version: *//p') (features server,client,noise)"
  echo "wireguard-go: $("$BENCH/bin/wireguard-go" --version | head -1), module golang.zx2c4.com/wireguard $(cd "$WRAP" && go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)"
  echo "bench-httpd: $(go version) (GOMAXPROCS=1)"
} | tee "$BENCH/versions.txt" >&2
