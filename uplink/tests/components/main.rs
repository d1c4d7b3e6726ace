//! The data-plane tests with real traffic through the real agents (`tunnelctl`, `uplink`) in
//! network namespaces, with the real Envoy and `wireguard-go` (root, a warm
//! `/var/cache/tunnel`). `cargo test -p uplink --test components`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod agents;
mod data_path;
mod interop;
mod offload_path;
mod trust_datagrams;
mod trust_flood;
mod trust_forward;
mod trust_http;
mod trust_least_privilege;
mod trust_ready;
