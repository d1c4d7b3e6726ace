//! The data-plane tests that need no namespaces: the TUN offloads' segmentation and
//! coalescing on crafted packets, and the UDP socket's GSO/GRO batching over loopback.
//! `cargo test -p uplink --test pure`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod offload;
mod udp_batch;
