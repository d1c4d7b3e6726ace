//! Hand-written Envoy files for the enrollment tests that do not run the planner: a
//! bootstrap that reads LDS and CDS from their files, TCP listeners that all proxy to one
//! cluster, and a static cluster with one endpoint.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The bootstrap: admin on loopback, listeners and clusters from `/etc/envoy/{lds,cds}.yaml`.
pub const BOOTSTRAP: &str = "node: {id: tunnel-edge, cluster: tunnel}\n\
admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n\
dynamic_resources:\n\
\x20 lds_config: {path_config_source: {path: /etc/envoy/lds.yaml}, resource_api_version: V3}\n\
\x20 cds_config: {path_config_source: {path: /etc/envoy/cds.yaml}, resource_api_version: V3}\n";

/// One TCP listener `tcp_<port>` on each of `ports`, proxied to `cluster`.
pub fn lds(ports: &[u16], cluster: &str) -> String {
    let mut out = String::from("resources:\n");
    for port in ports {
        let _ = write!(
            out,
            "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n\
             \x20 name: tcp_{port}\n\
             \x20 address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}\n\
             \x20 filter_chains:\n\
             \x20 - filters:\n\
             \x20   - name: envoy.filters.network.tcp_proxy\n\
             \x20     typed_config:\n\
             \x20       \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n\
             \x20       stat_prefix: tcp_{port}\n\
             \x20       cluster: {cluster}\n"
        );
    }
    out
}

/// The static cluster `name` with the one endpoint `target`.
pub fn cds(name: &str, target: SocketAddr) -> String {
    format!(
        "resources:\n\
         - \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n\
         \x20 name: {name}\n\
         \x20 type: STATIC\n\
         \x20 connect_timeout: 2s\n\
         \x20 load_assignment:\n\
         \x20   cluster_name: {name}\n\
         \x20   endpoints:\n\
         \x20   - lb_endpoints:\n\
         \x20     - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
        target.ip(),
        target.port()
    )
}
