//! The tests against a real API server (etcd + kube-apiserver of the test bed, and `helm`):
//! the CRDs and their admission rules, the chart and its RBAC, the uplink workload objects.
//! `cargo test -p tunnel --test control_plane`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chart;
mod crd_admission;
mod leader_election;
mod metrics_scrape;
mod oldest_api_server;
mod operator_flags;
mod operator_memory;
mod operator_run;
mod trust_names;
mod uplink_policy;
mod workload;
