#!/usr/bin/env bash
# The one test command (README, .ci/run): sets up the test bed on a fresh machine (root),
# then runs the quality gate and every test, then checks that nothing was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

export TUNNEL_CACHE=${TUNNEL_CACHE:-/var/cache/tunnel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TUNNEL_CACHE/target}
export CARGO_TERM_COLOR=never

start=$(date +%s)
bash tests/testbed/setup.sh
bash tests/leak-check.sh --clean-stale

# Every crate of the lock file, for every platform: cargo deny reads them all offline, and
# a build fetches only the host's (a fresh machine's registry has nothing else).
cargo fetch --locked -q
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo deny: licences, bans, sources (offline; advisories are a release step)"
"$TUNNEL_CACHE/bin/cargo-deny" --offline check licenses bans sources
echo "== cargo test"
status=0
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" || status=$?
echo "== leak check"
bash tests/leak-check.sh || status=1
echo "== done in $(( $(date +%s) - start ))s, status $status"
exit "$status"
