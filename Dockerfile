# Operator and uplink images, built from one workspace.
#   docker build --target operator -t ghcr.io/achetronic/tunnel:dev .
#   docker build --target uplink   -t ghcr.io/achetronic/tunnel/uplink:dev .
# (Not built in CI here: these machines have no Docker engine. The binaries themselves are
# built and tested by `bash tests/run.sh`.)

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tunnel -p uplink \
 && mkdir -p /out \
 && cp target/release/tunnel target/release/tunnelctl target/release/uplink /out/

# The operator carries tunnelctl, which it pushes to each VPS over SSH.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/tunnel /usr/local/bin/tunnel
COPY --from=build /out/tunnelctl /opt/tunnelctl/tunnelctl-x86_64
ENTRYPOINT ["/usr/local/bin/tunnel"]
CMD ["run"]

# The uplink agent: needs CAP_NET_ADMIN (WireGuard TUN device, DNAT rules) and /dev/net/tun.
FROM gcr.io/distroless/cc-debian12 AS uplink
COPY --from=build /out/uplink /usr/local/bin/uplink
ENTRYPOINT ["/usr/local/bin/uplink"]
