//! The tests that start real components of the test bed (DESIGN.md §5; root, a warm
//! `/var/cache/tunnel`): the real Envoy in network namespaces, nspawn VPSes over SSH, and the
//! real agents (`cargo build -p uplink --bins` first). `cargo test -p tunnel --test components`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod edge_support;
mod enroll_support;
mod envoy_files;
mod operator_support;
#[path = "../shared/plan_inputs.rs"]
mod plan_inputs;

mod e2e_plan_to_traffic;
mod edge_ipv6;
mod edge_limits;
mod edge_policy;
mod edge_reload;
mod edge_traffic;
mod edge_validate;
mod edges;
mod enroll_data_path;
mod enroll_download;
mod enroll_lifecycle;
mod enroll_packed;
mod enroll_planned;
mod external_dns;
mod gateway_api;
mod load_balancer;
mod node_e2e;
mod node_support;
mod node_upgrade;
mod operator_chart_rbac;
mod operator_e2e;
mod operator_faults;
mod operator_metrics;
mod operator_passes;
mod operator_tls;
mod operator_uplink_pods;
mod ssh_costs;
mod ssh_session;
mod trust_admin;
mod trust_references;
mod trust_vps;
mod trust_vps_fence;
mod trust_vps_output;
