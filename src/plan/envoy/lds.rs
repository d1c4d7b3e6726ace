//! The listeners, `/etc/envoy/lds.yaml`: one per public (protocol, port).
//!
//! - TCP: a `tcp_proxy` to the binding's cluster, with its idle timeout; every TCP listener
//!   buffers at most [`BUFFER_LIMIT_BYTES`] per connection.
//! - TLS offload/mutual: the same, behind a `DownstreamTlsContext` whose certificate (and, for
//!   mutual, the CA that client certificates must chain to) comes from the Secret's SDS file;
//!   a handshake not done within [`TLS_HANDSHAKE_TIMEOUT`] is closed.
//! - TLS passthrough: a `tls_inspector` reads the SNI; one filter chain per binding matches its
//!   `server_names` (exact or `*.` wildcard; the most specific wins), the binding without names
//!   is the chain without a match (the catch-all). With no catch-all, an unknown name is closed.
//!   A client that does not finish its ClientHello within [`LISTENER_FILTERS_TIMEOUT`] is
//!   closed (a slowloris on the peek holds nothing for long).
//! - UDP: a `udp_proxy` with the session timeout, and SO_RCVBUF/SO_SNDBUF raised so bursts are
//!   not dropped at the socket.
//!
//! A listener's content depends only on its own bindings, so a change to one port leaves the
//! other listeners byte-identical and Envoy does not touch them. Within a shared passthrough
//! port, each filter chain depends only on its binding, so Envoy's in-place filter chain update
//! drains only the chains that changed.

use serde_json::{Value, json};

use super::super::bindings::{BindingKind, EdgeTls, PlannedBinding};
use super::{
    BUFFER_LIMIT_BYTES, EdgeSettings, EnvoyError, LISTENER_FILTERS_TIMEOUT, TLS_HANDSHAKE_TIMEOUT,
    file_source, names, resources, to_yaml,
};
use crate::crd::Protocol;

const SOL_SOCKET: i64 = 1;
const SO_SNDBUF: i64 = 7;
const SO_RCVBUF: i64 = 8;

/// The listener resources, one per (protocol, port), sorted by protocol then port.
pub fn listeners(planned: &[PlannedBinding], edge: &EdgeSettings) -> Vec<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < planned.len() {
        let first = &planned[i];
        let mut j = i + 1;
        while j < planned.len()
            && planned[j].protocol == first.protocol
            && planned[j].listen_port == first.listen_port
        {
            j += 1;
        }
        out.push(listener(&planned[i..j], edge));
        i = j;
    }
    out
}

/// `lds.yaml`.
pub fn render(planned: &[PlannedBinding], edge: &EdgeSettings) -> Result<String, EnvoyError> {
    to_yaml("lds.yaml", &resources(&listeners(planned, edge)))
}

fn listener(group: &[PlannedBinding], edge: &EdgeSettings) -> Value {
    let first = &group[0];
    let name = names::listener(first.protocol, first.listen_port);
    match first.protocol {
        Protocol::Udp => udp_listener(&name, first, edge),
        Protocol::Tcp => {
            let passthrough = group.iter().any(|b| {
                matches!(
                    b.kind,
                    BindingKind::Tcp {
                        tls: Some(EdgeTls::Passthrough { .. }),
                        ..
                    }
                )
            });
            // Catch-all last, named chains by name: the order Envoy shows them in.
            let mut chains: Vec<&PlannedBinding> = group.iter().collect();
            chains.sort_by_key(|b| (server_names(b).is_empty(), server_names(b).to_vec(), &b.id));
            let mut l = json!({
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": name,
                "address": {
                    "socket_address": { "address": "0.0.0.0", "port_value": first.listen_port }
                },
                "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
                "filter_chains": chains.iter().map(|b| filter_chain(b, edge)).collect::<Vec<_>>(),
            });
            if passthrough {
                // A peek that never completes is closed, not passed on without its SNI.
                l["listener_filters_timeout"] = json!(LISTENER_FILTERS_TIMEOUT);
                l["continue_on_listener_filters_timeout"] = json!(false);
                l["listener_filters"] = json!([{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                    }
                }]);
            }
            l
        }
    }
}

fn server_names(b: &PlannedBinding) -> &[String] {
    match &b.kind {
        BindingKind::Tcp {
            tls: Some(EdgeTls::Passthrough { server_names }),
            ..
        } => server_names,
        _ => &[],
    }
}

fn filter_chain(b: &PlannedBinding, edge: &EdgeSettings) -> Value {
    let cluster = names::cluster(b.protocol, b.listen_port, &b.id);
    let BindingKind::Tcp {
        idle_timeout, tls, ..
    } = &b.kind
    else {
        return json!({});
    };
    let mut chain = json!({
        "name": cluster,
        "filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": cluster,
                "cluster": cluster,
                "idle_timeout": idle_timeout.to_envoy(),
            }
        }],
    });
    let sds = |name: String, file: &str| {
        json!({
            "name": name,
            "sds_config": file_source(&edge.layout.sds(file), &edge.layout.tls_dir()),
        })
    };
    match tls {
        Some(EdgeTls::Passthrough { server_names }) if !server_names.is_empty() => {
            chain["filter_chain_match"] = json!({ "server_names": server_names });
        }
        Some(EdgeTls::Offload { secret }) => {
            let file = names::certificate(secret);
            chain["transport_socket_connect_timeout"] = json!(TLS_HANDSHAKE_TIMEOUT);
            chain["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [sds(names::certificate(secret), &file)],
                    },
                }
            });
        }
        Some(EdgeTls::Mutual { secret }) => {
            let file = names::certificate(secret);
            chain["transport_socket_connect_timeout"] = json!(TLS_HANDSHAKE_TIMEOUT);
            chain["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [sds(names::certificate(secret), &file)],
                        "validation_context_sds_secret_config": sds(names::ca(secret), &names::ca(secret)),
                    },
                }
            });
        }
        _ => {}
    }
    chain
}

fn udp_listener(name: &str, b: &PlannedBinding, edge: &EdgeSettings) -> Value {
    let cluster = names::cluster(b.protocol, b.listen_port, &b.id);
    let session_timeout = match &b.kind {
        BindingKind::Udp { session_timeout } => session_timeout.to_envoy(),
        BindingKind::Tcp { .. } => "60s".to_owned(),
    };
    let mut l = json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {
            "socket_address": {
                "protocol": "UDP",
                "address": "0.0.0.0",
                "port_value": b.listen_port,
            }
        },
        "udp_listener_config": {},
        "listener_filters": [{
            "name": "envoy.filters.udp_listener.udp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
                "stat_prefix": cluster,
                "idle_timeout": session_timeout,
                "matcher": {
                    "on_no_match": {
                        "action": {
                            "name": "route",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route",
                                "cluster": cluster,
                            }
                        }
                    }
                }
            }
        }],
    });
    if edge.udp_socket_buffer > 0 {
        l["socket_options"] = json!([
            { "level": SOL_SOCKET, "name": SO_RCVBUF, "int_value": edge.udp_socket_buffer, "state": "STATE_PREBIND" },
            { "level": SOL_SOCKET, "name": SO_SNDBUF, "int_value": edge.udp_socket_buffer, "state": "STATE_PREBIND" },
        ]);
    }
    l
}
