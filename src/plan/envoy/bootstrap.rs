//! The bootstrap, `/etc/envoy/envoy.yaml`: the node identity, Envoy's admin, the read-only
//! admin bridge, and the LDS and CDS files. It changes only when the tunnel network changes,
//! and that needs an Envoy restart; everything else is hot-reloaded from the files it points
//! at.
//!
//! The admin interface listens on the VPS's loopback only (`127.0.0.1:40600`): its mutating
//! endpoints (`/quitquitquit`, `/drain_listeners`, `/runtime_modify`, `/healthcheck/fail`,
//! `/logging`, ...) must never be reachable from a pod. What the uplinks' admin bridge
//! reaches instead is the static listener `admin_bridge` on the relay's tunnel address
//! (`<relay>:40600`): an HTTP connection manager that routes only GET and HEAD requests to
//! the admin cluster and answers every other method with 405, so `/stats/prometheus`,
//! `/config_dump`, `/clusters`, `/ready` and `/server_info` keep working from the cluster
//! while nothing can stop, drain or reconfigure Envoy. Envoy's admin itself refuses a GET on
//! a mutating endpoint, so the two layers together leave only reads. The same port on two
//! specific addresses does not collide, and 40600 is reserved for bindings. The bridge serves
//! only sources inside the tunnel network (review 2026-12, I3: a neighbour on the VPS's
//! public network could otherwise route the tunnel address at the VPS and read it).

use serde_json::json;

use super::{ADMIN_PORT, BUFFER_LIMIT_BYTES, EdgeSettings, EnvoyError, file_source, to_yaml};

/// Where Envoy's admin listens: loopback of the VPS, never the tunnel or a public address.
pub const ADMIN_ADDRESS: &str = "127.0.0.1";
/// The listener (and stat prefix) of the read-only admin bridge.
pub const ADMIN_BRIDGE_LISTENER: &str = "admin_bridge";
/// The cluster that reaches the loopback admin.
pub const ADMIN_CLUSTER: &str = "admin_loopback";
/// The methods the bridge passes on; the rest are answered 405.
pub const READ_ONLY_METHODS: [&str; 2] = ["GET", "HEAD"];

/// Most downstream connections Envoy accepts at once, over all listeners (TCP; UDP sessions
/// are not connections). Over it, a new connection is accepted and closed at once.
pub const MAX_DOWNSTREAM_CONNECTIONS: u64 = 100_000;
/// The heap Envoy may use before the overload manager acts (1 GiB).
pub const MAX_HEAP_BYTES: u64 = 1 << 30;
/// Share of [`MAX_HEAP_BYTES`] at which Envoy gives freed memory back to the system.
pub const SHRINK_HEAP_AT: f64 = 0.90;
/// Share of [`MAX_HEAP_BYTES`] at which new connections are refused (existing ones go on).
pub const REJECT_CONNECTIONS_AT: f64 = 0.95;
/// From this share of the heap up to [`REJECT_CONNECTIONS_AT`], TLS handshake and HTTP idle
/// timeouts shrink linearly, down to [`MIN_TIMEOUT_SCALE_PERCENT`] of their value.
pub const REDUCE_TIMEOUTS_FROM: f64 = 0.80;
/// The smallest share of a reduced timeout, in percent.
pub const MIN_TIMEOUT_SCALE_PERCENT: f64 = 20.0;

/// The bootstrap document.
pub fn document(edge: &EdgeSettings) -> serde_json::Value {
    let layout = &edge.layout;
    json!({
        "node": { "id": "tunnel-relay", "cluster": "tunnel-relay" },
        "admin": {
            "address": {
                "socket_address": { "address": ADMIN_ADDRESS, "port_value": ADMIN_PORT }
            }
        },
        "static_resources": {
            "listeners": [admin_bridge_listener(edge)],
            "clusters": [admin_cluster()],
        },
        "dynamic_resources": {
            "lds_config": file_source(&layout.lds(), &layout.dir),
            "cds_config": file_source(&layout.cds(), &layout.dir),
        },
        "overload_manager": overload_manager(),
    })
}

/// Envoy faces the internet: a global connection limit and a heap limit with actions
/// (docs/edge-config.md "Limits at the edge").
fn overload_manager() -> serde_json::Value {
    const HEAP: &str = "envoy.resource_monitors.fixed_heap";
    let threshold = |value: f64| json!({ "name": HEAP, "threshold": { "value": value } });
    json!({
        "refresh_interval": "0.250s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                }
            },
            {
                "name": HEAP,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": MAX_HEAP_BYTES,
                }
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [threshold(SHRINK_HEAP_AT)],
            },
            {
                "name": "envoy.overload_actions.reduce_timeouts",
                "triggers": [{
                    "name": HEAP,
                    "scaled": {
                        "scaling_threshold": REDUCE_TIMEOUTS_FROM,
                        "saturation_threshold": REJECT_CONNECTIONS_AT,
                    },
                }],
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                    "timer_scale_factors": [
                        { "timer": "TRANSPORT_SOCKET_CONNECT", "min_scale": { "value": MIN_TIMEOUT_SCALE_PERCENT } },
                        { "timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_scale": { "value": MIN_TIMEOUT_SCALE_PERCENT } },
                        { "timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_scale": { "value": MIN_TIMEOUT_SCALE_PERCENT } },
                    ],
                },
            },
            {
                "name": "envoy.overload_actions.reject_incoming_connections",
                "triggers": [threshold(REJECT_CONNECTIONS_AT)],
            },
        ],
    })
}

/// The read-only view of the admin on `<relay>:40600`, what the uplinks bridge to.
fn admin_bridge_listener(edge: &EdgeSettings) -> serde_json::Value {
    let mut routes: Vec<serde_json::Value> = READ_ONLY_METHODS
        .iter()
        .map(|method| {
            json!({
                "match": {
                    "prefix": "/",
                    "headers": [{ "name": ":method", "string_match": { "exact": method } }],
                },
                "route": { "cluster": ADMIN_CLUSTER, "timeout": "10s" },
            })
        })
        .collect();
    routes.push(json!({
        "match": { "prefix": "/" },
        "direct_response": {
            "status": 405,
            "body": { "inline_string": "the admin bridge is read-only: GET and HEAD only\n" },
        },
    }));
    json!({
        "name": ADMIN_BRIDGE_LISTENER,
        "address": {
            "socket_address": { "address": edge.relay.to_string(), "port_value": ADMIN_PORT }
        },
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "filter_chains": [{
            // Only the tunnel's own addresses: Linux accepts a packet for any local address
            // on any interface, so without this a neighbour on the VPS's public network
            // routing the tunnel address at the VPS would read the admin too. No chain
            // matches its connection, and Envoy closes it. A spoofed tunnel source cannot
            // finish the handshake: the answer goes into the tunnel.
            "filter_chain_match": {
                "source_prefix_ranges": [{
                    "address_prefix": edge.tunnel_network.network().to_string(),
                    "prefix_len": edge.tunnel_network.prefix(),
                }],
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": ADMIN_BRIDGE_LISTENER,
                    "codec_type": "HTTP1",
                    "request_headers_timeout": "10s",
                    "stream_idle_timeout": "30s",
                    "common_http_protocol_options": {
                        "idle_timeout": "60s",
                        "max_headers_count": 64,
                    },
                    "max_request_headers_kb": 16,
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                        }
                    }],
                    "route_config": {
                        "name": ADMIN_BRIDGE_LISTENER,
                        "virtual_hosts": [{
                            "name": ADMIN_BRIDGE_LISTENER,
                            "domains": ["*"],
                            "routes": routes,
                        }],
                    },
                }
            }]
        }],
    })
}

/// The cluster of the loopback admin.
fn admin_cluster() -> serde_json::Value {
    json!({
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": {
                        "address": {
                            "socket_address": { "address": ADMIN_ADDRESS, "port_value": ADMIN_PORT }
                        }
                    }
                }]
            }]
        },
    })
}

/// The bootstrap as YAML.
pub fn render(edge: &EdgeSettings) -> Result<String, EnvoyError> {
    to_yaml("envoy.yaml", &document(edge))
}
