//! The data-plane tests that need no namespaces: the TUN offloads' segmentation and
//! coalescing on crafted packets, the UDP socket's GSO/GRO batching over loopback, and
//! generated hostile input for the packet path and the agent documents.
//! `cargo test -p uplink --test pure`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod generated_input;
mod gro;
mod offload;
mod udp_batch;
