//! The clusters, `/etc/envoy/cds.yaml`: one per served binding. Its endpoints are the uplinks'
//! tunnel addresses at the binding's tunnel port (each uplink forwards that port to the
//! target). Each endpoint is health-checked with `GET /ready?protocol=…&port=<tunnel port>` on
//! port 40500 of the same tunnel address, also while the binding carries no traffic: the
//! uplink answers 200 only when it is ready and forwards this binding's port, so a new
//! binding gets traffic only from uplinks that have its forward (an uplink too old to read
//! the query answers its plain readiness). An uplink that failed is checked again after at
//! most [`UNHEALTHY_INTERVAL_MAX`]. `healthy_panic_threshold: 0` makes a
//! cluster with no healthy uplink refuse at once instead of trying them all. Optional outlier
//! detection ejects an uplink after consecutive connection failures. A TCP cluster buffers at
//! most [`BUFFER_LIMIT_BYTES`] per upstream connection, like the listeners.
//!
//! **Circuit breakers** (issue 24, M5). Envoy's defaults cap every cluster at 1 024
//! connections, pending connections and requests, and its UDP proxy counts its sessions
//! against the same `max_connections`: 1 024 idle TCP connections, or datagrams from 1 024
//! (spoofable) sources, would lock every later client out of a binding. Each cluster sets
//! its thresholds instead to [`MAX_DOWNSTREAM_CONNECTIONS`], the global limit the overload
//! manager already enforces, so one binding may use the whole edge but no more, and
//! `track_remaining` publishes how much is left (`circuit_breakers.default.remaining_cx`).
//! A UDP binding's `policy.maxConnections` (issue 18) is its session cap: its cluster's
//! `max_connections` drops to it.
//!
//! PROXY protocol (v1 or v2) is an upstream transport socket selected by endpoint metadata, so
//! the traffic gets the header and the health checks (which match the plain socket) do not.

use serde_json::{Value, json};

use super::super::bindings::{BindingKind, PlannedBinding};
use super::bootstrap::MAX_DOWNSTREAM_CONNECTIONS;
use super::{BUFFER_LIMIT_BYTES, EdgeSettings, EnvoyError, READY_PORT, names, resources, to_yaml};
use crate::crd::ProxyProtocolVersion;

/// How often an uplink that failed its checks is checked again: the configured interval, at
/// most this. A new binding's cluster starts with its uplinks unchecked; the first check
/// fails while the pod has not yet got the binding's forward (its ConfigMap is on its way),
/// and the binding must not wait a whole interval (5 s by default) after that. A cluster that
/// never carried traffic uses the `no_traffic` intervals instead of `interval` and
/// `unhealthy_interval` (Envoy's rule), so the same split is made there:
/// `no_traffic_interval` (unhealthy uplinks) is this, `no_traffic_healthy_interval` the
/// configured interval.
pub const UNHEALTHY_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_millis(250);

fn unhealthy_interval(interval: std::time::Duration) -> String {
    let d = interval.min(UNHEALTHY_INTERVAL_MAX);
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// Connect timeout of UDP clusters (Envoy wants one; UDP never connects).
const UDP_CONNECT_TIMEOUT: &str = "5s";

/// The cluster's circuit breakers: one threshold (the default priority, the only one the
/// TCP and UDP proxies use) at the edge's global connection limit, with the remaining
/// capacity published as stats.
///
/// A UDP binding's `policy.maxConnections` lowers `max_connections`, the session cap: the UDP
/// proxy creates no session for a new client over it and drops its datagram
/// (`cluster.<name>.upstream_cx_overflow` counts it).
fn circuit_breakers(max_connections: u64) -> Value {
    json!({
        "thresholds": [{
            "priority": "DEFAULT",
            "max_connections": max_connections,
            "max_pending_requests": MAX_DOWNSTREAM_CONNECTIONS,
            "max_requests": MAX_DOWNSTREAM_CONNECTIONS,
            "track_remaining": true,
        }]
    })
}

/// The cluster resources, in the order of `planned`.
pub fn clusters(planned: &[PlannedBinding], edge: &EdgeSettings) -> Vec<Value> {
    planned.iter().map(|b| cluster(b, edge)).collect()
}

/// `cds.yaml`.
pub fn render(planned: &[PlannedBinding], edge: &EdgeSettings) -> Result<String, EnvoyError> {
    to_yaml("cds.yaml", &resources(&clusters(planned, edge)))
}

/// The cluster's `max_connections`: a UDP binding's own session cap when it has one (never
/// above the edge's), else the edge's global limit.
fn session_cap(b: &PlannedBinding) -> u64 {
    let own = match (&b.kind, &b.policy) {
        (BindingKind::Udp { .. }, Some(policy)) => policy.max_connections.map(u64::from),
        _ => None,
    };
    own.map_or(MAX_DOWNSTREAM_CONNECTIONS, |n| {
        n.min(MAX_DOWNSTREAM_CONNECTIONS)
    })
}

fn cluster(b: &PlannedBinding, edge: &EdgeSettings) -> Value {
    let name = names::cluster(b.protocol, b.listen_port, &b.id);
    let (connect_timeout, proxy_protocol) = match &b.kind {
        BindingKind::Tcp {
            connect_timeout,
            proxy_protocol,
            ..
        } => (connect_timeout.to_envoy(), *proxy_protocol),
        BindingKind::Udp { .. } => (UDP_CONNECT_TIMEOUT.to_owned(), None),
    };
    let hc = &edge.health_check;
    let protocol = match b.protocol {
        crate::crd::Protocol::Tcp => "tcp",
        crate::crd::Protocol::Udp => "udp",
    };
    let mut health_check = json!({
        "timeout": hc.timeout.to_envoy(),
        "interval": hc.interval.to_envoy(),
        "no_traffic_interval": unhealthy_interval(hc.interval.to_std()),
        "no_traffic_healthy_interval": hc.interval.to_envoy(),
        "unhealthy_interval": unhealthy_interval(hc.interval.to_std()),
        "healthy_threshold": hc.healthy_threshold,
        "unhealthy_threshold": hc.unhealthy_threshold,
        "reuse_connection": false,
        "http_health_check": {
            "path": format!("/ready?protocol={protocol}&port={}", b.tunnel_port)
        },
    });
    let endpoints: Vec<Value> = edge
        .uplinks
        .iter()
        .map(|ip| {
            let mut e = json!({
                "endpoint": {
                    "address": {
                        "socket_address": { "address": ip.to_string(), "port_value": b.tunnel_port }
                    },
                    "health_check_config": { "port_value": READY_PORT },
                }
            });
            if proxy_protocol.is_some() {
                e["metadata"] = json!({
                    "filter_metadata": {
                        "envoy.transport_socket_match": { "proxy_protocol": true }
                    }
                });
            }
            e
        })
        .collect();
    let mut c = json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "lb_policy": "ROUND_ROBIN",
        "common_lb_config": { "healthy_panic_threshold": { "value": 0.0 } },
        "circuit_breakers": circuit_breakers(session_cap(b)),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": endpoints }],
        },
    });
    if matches!(b.kind, BindingKind::Tcp { .. }) {
        c["per_connection_buffer_limit_bytes"] = json!(BUFFER_LIMIT_BYTES);
    }
    if let Some(version) = proxy_protocol {
        health_check["transport_socket_match_criteria"] = json!({});
        let raw = json!({
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
            }
        });
        c["transport_socket_matches"] = json!([
            {
                "name": "proxy_protocol",
                "match": { "proxy_protocol": true },
                "transport_socket": {
                    "name": "envoy.transport_sockets.upstream_proxy_protocol",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
                        "config": {
                            "version": match version {
                                ProxyProtocolVersion::V1 => "V1",
                                ProxyProtocolVersion::V2 => "V2",
                            }
                        },
                        "transport_socket": raw,
                    }
                }
            },
            { "name": "plain", "match": {}, "transport_socket": raw },
        ]);
    }
    c["health_checks"] = json!([health_check]);
    if let Some(od) = &edge.outlier_detection {
        c["outlier_detection"] = json!({
            "consecutive_5xx": od.consecutive_failures,
            "enforcing_consecutive_5xx": 100,
            "enforcing_success_rate": 0,
            "interval": od.interval.to_envoy(),
            "base_ejection_time": od.base_ejection_time.to_envoy(),
            "max_ejection_percent": od.max_ejection_percent,
        });
    }
    c
}
