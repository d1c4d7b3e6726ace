//! The test bed: real components started by the tests themselves (DESIGN.md §5).
//!
//! - [`tools`]: where the set-up script cached the binaries (`kube-apiserver`, `etcd`, `helm`,
//!   `envoy`) and the VPS root file system.
//! - [`netns`]: network namespaces and veth links, removed when their handle drops;
//!   [`pods`]: a cluster's network (a router and pod namespaces) below one of them.
//! - [`process`]: child processes that are stopped (by PID) when their handle drops.
//! - [`apiserver`]: a real etcd + kube-apiserver on loopback, with the CRDs installed.
//! - [`vps`]: a Debian VPS booted with `systemd-nspawn`, reachable over SSH.
//! - [`envoy`]: running and validating the real Envoy.
//! - [`external_dns`]: DNS publishing as users run it: Knot DNS and an unmodified external-dns
//!   (RFC2136 provider) against the API server.
//! - [`node`]: a real single-node cluster (kubelet, containerd, kube-proxy, ...) on the host;
//!   [`images`]: the OCI images it runs, written without a registry or builder;
//!   [`gateway_conformance`]: the upstream Gateway API conformance suite run against it.
//! - [`keys`]: encrypted SSH keys as the tools make them, and the KDF bombs (review H2);
//!   [`tls`]: a CA for server certificates and a TLS client that reports what it was shown.
//! - [`network`]: the internet, a VPS and a cluster's pods, as the enrollment and operator
//!   tests use them.
//! - [`operator`]: the operator's bed, one builder for every operator test and benchmark (the
//!   API server with the CRDs, the network, `tunnel run` processes); [`uplinks`]: the
//!   kubelet's part, the uplink pods run from what the operator wrote; [`objects`]: what a
//!   user applies and reads with `kubectl`; [`metrics`]: its `/metrics`, scraped and read.
//! - [`wait`]: bounded waiting; [`free_port`] and [`unique_name`] for things tests make.
//!
//! Every handle cleans up on drop, so a failing or panicking test leaves nothing behind;
//! `tests/leak-check.sh` fails the run if something was.

pub mod apiserver;
pub mod cgroup;
pub mod echo;
pub mod envoy;
pub mod error;
pub mod external_dns;
pub mod gateway_conformance;
pub mod images;
pub mod keys;
pub mod metrics;
pub mod netns;
pub mod network;
pub mod node;
pub mod objects;
pub mod operator;
pub mod pods;
pub mod process;
pub mod prometheus;
pub mod promql;
pub mod tls;
pub mod tools;
pub mod uplinks;
pub mod vps;
pub mod wait;

pub use error::TestbedError;

/// A name unique to this process and call, for namespaces, machines and temp dirs.
pub fn unique_name(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tb-{}-{n}-{label}", std::process::id())
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> Result<u16, TestbedError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(TestbedError::io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(TestbedError::io("reading the port"))?
        .port())
}
