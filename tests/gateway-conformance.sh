#!/usr/bin/env bash
# The upstream Gateway API conformance suite (issue 19) against the real node, one command
# (root, the test bed set up): docs/testing.md "Gateway API conformance". Builds what it needs
# (the suite and its images' binaries through tests/testbed/gateway-conformance-setup.sh, the workspace's
# debug binaries), then runs the test target `gateway_conformance` (not part of `cargo test`)
# under the shared test lock. Writes docs/gateway-api/conformance-report.yaml and the suite's
# output under target/gateway-conformance/.
#
#   GATEWAY_CONFORMANCE_RUN_TEST=TCPRouteWeightedRouting   one test (--run-test)
#   GATEWAY_CONFORMANCE_CAP_SECONDS=3600                   the suite's wall-clock cap
#   GATEWAY_CONFORMANCE_EXTRA="--allow-crds-mismatch"      more suite flags
set -euo pipefail
cd "$(dirname "$0")/.."

export TUNNEL_CACHE=${TUNNEL_CACHE:-/var/cache/tunnel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TUNNEL_CACHE/target}
GATEWAY_API_VERSION=$(sed -n 's/^GATEWAY_API_VERSION=\${GATEWAY_API_VERSION:-\(.*\)}$/\1/p' tests/testbed/setup.sh)
CACHE=$TUNNEL_CACHE GATEWAY_API_VERSION=$GATEWAY_API_VERSION bash tests/testbed/setup.d/50-gateway-api.sh
CACHE=$TUNNEL_CACHE GATEWAY_API_VERSION=$GATEWAY_API_VERSION bash tests/testbed/gateway-conformance-setup.sh
cargo build -q -p tunnel -p uplink -p testbed --bins
cargo test -q -p tunnel --test gateway_conformance --no-run
exec flock /run/tunnel-dev-test.lock \
  cargo test -q -p tunnel --test gateway_conformance -- --nocapture --test-threads=1
