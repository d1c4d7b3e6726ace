# Operator and uplink images, built from one workspace.
#   docker build --target operator -t ghcr.io/achetronic/tunnel:dev .
#   docker build --target uplink   -t ghcr.io/achetronic/tunnel/uplink:dev .
# The base images are build arguments (a mirror, or a local base, works). Where no registry
# or Docker engine is reachable, the test bed writes images with the same files, paths, users
# and entrypoints as OCI archives by hand, on a base made from its cached Debian root file
# system (tests/testbed/src/images.rs, docs/testing.md "The node").
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG OPERATOR_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG UPLINK_BASE=gcr.io/distroless/cc-debian12
# The Envoy the operator pushes to each VPS (push mode); same version as --envoy-version.
ARG ENVOY_IMAGE=docker.io/envoyproxy/envoy:distroless-v1.40.0

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tunnel -p uplink \
 && mkdir -p /out \
 && cp target/release/tunnel target/release/tunnelctl target/release/uplink /out/

FROM ${ENVOY_IMAGE} AS envoy

# Envoy gzipped: the operator uploads it packed (about a third of the bytes) and each VPS
# unpacks it with its gzip, checking the digest of what it unpacked.
FROM ${BUILD_IMAGE} AS envoy-packed
COPY --from=envoy /usr/local/bin/envoy /envoy
RUN gzip -9 -n /envoy

# The operator carries what it pushes to each VPS over SSH: the relay agent and Envoy, named
# for the architecture (`--tunnelctl-dir`, `--envoy-dir`; TARGETARCH is amd64 or arm64). One
# image serves VPSes of its own architecture; for the other one, add its binaries next to
# these (docs/operations.md, "Images").
FROM ${OPERATOR_BASE} AS operator
ARG TARGETARCH
COPY --from=build /out/tunnel /usr/local/bin/tunnel
COPY --from=build /out/tunnelctl /opt/tunnelctl/tunnelctl-linux-${TARGETARCH}
COPY --from=envoy-packed /envoy.gz /opt/envoy/envoy-linux-${TARGETARCH}.gz
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tunnel"]
CMD ["run"]

# The uplink agent: needs CAP_NET_ADMIN (WireGuard TUN device, DNAT rules) and /dev/net/tun.
FROM ${UPLINK_BASE} AS uplink
COPY --from=build /out/uplink /usr/local/bin/uplink
ENTRYPOINT ["/usr/local/bin/uplink"]
