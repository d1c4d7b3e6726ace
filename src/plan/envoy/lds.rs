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
//! - Addresses: `0.0.0.0`, plus `::` (IPv6 only) in `additional_addresses` on a node that lists
//!   an IPv6 public address (`EdgeNodeSpec::serves_ipv6`); one listener, one set of chains, so
//!   policy and PROXY headers hold for IPv6 clients as for IPv4 ones.
//! - L4 policy (only bindings with one; the others render as without it). TCP: the binding's
//!   chain matches only its `sourceRanges` (`direct_source_prefix_ranges`, the peer's own
//!   address), so another client never reaches a network filter; a second chain of the binding,
//!   `<cluster>_refused`, catches the binding's other clients and closes them at once with a
//!   `tcp_proxy` towards a cluster that does not exist (counted as
//!   `tcp.<cluster>_refused.downstream_cx_no_route`). Envoy's RBAC network filter is not used: it decides
//!   on the client's first byte, after `tcp_proxy` has connected upstream, so a refused client
//!   of a server-first protocol would still get the server's greeting (seen on Envoy 1.40). In
//!   the chain, before `tcp_proxy`: `connection_limit` (`maxConnections`) then
//!   `local_ratelimit` (`connectionRate`, a token bucket refilled every second), both deciding
//!   when the connection opens, with the cluster's name as stat prefix. UDP: the `udp_proxy`
//!   matcher routes only sources inside the ranges (Envoy's `ip` input matcher on the source
//!   address); another source has no route and its datagrams are dropped
//!   (`udp.<cluster>.downstream_sess_no_route`). The UDP session cap is the cluster's circuit
//!   breaker (see `cds`).
//!
//! A listener's content depends only on its own bindings, so a change to one port leaves the
//! other listeners byte-identical and Envoy does not touch them. Within a shared passthrough
//! port, each filter chain depends only on its binding, so Envoy's in-place filter chain update
//! drains only the chains that changed.

use serde_json::{Value, json};

use super::super::bindings::{BindingKind, EdgeTls, PlannedBinding};
use super::super::policy::EdgePolicy;
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
                "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
                "filter_chains": chains.iter().flat_map(|b| filter_chains(b, edge)).collect::<Vec<_>>(),
            });
            bind(&mut l, None, first.listen_port, edge);
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

/// The listener's sockets: every IPv4 address (`0.0.0.0`) and, when the node serves IPv6,
/// every IPv6 address (`::`) as an `additional_addresses` entry. Envoy opens `::` IPv6-only
/// (`ipv4_compat` is off), so the IPv4 socket stays exactly as on a node without IPv6; both
/// sockets share the filter chains (policy included) and, for UDP, the socket options.
fn bind(l: &mut Value, protocol: Option<&str>, port: u16, edge: &EdgeSettings) {
    let socket = |address: &str| {
        let mut s = json!({ "address": address, "port_value": port });
        if let Some(p) = protocol {
            s["protocol"] = json!(p);
        }
        json!({ "socket_address": s })
    };
    l["address"] = socket("0.0.0.0");
    if edge.ipv6 {
        l["additional_addresses"] = json!([{ "address": socket("::") }]);
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

/// A `tcp_proxy` filter towards `cluster`, counting under `stat_prefix`.
fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
        }
    })
}

/// Envoy's `CidrRange`s of the allowed sources.
fn cidr_ranges(policy: &EdgePolicy) -> Value {
    policy
        .source_ranges
        .iter()
        .map(|net| json!({ "address_prefix": net.network().to_string(), "prefix_len": net.prefix_len() }))
        .collect()
}

/// The binding's filter chain and, when its policy restricts the sources, the chain that
/// closes the others (same match without the sources: the less specific one).
fn filter_chains(b: &PlannedBinding, edge: &EdgeSettings) -> Vec<Value> {
    let mut chain = filter_chain(b, edge);
    let Some(policy) = b.policy.as_ref().filter(|p| !p.source_ranges.is_empty()) else {
        return vec![chain];
    };
    let refused_name = names::refused(b.protocol, b.listen_port, &b.id);
    let mut refused = json!({
        "name": refused_name,
        "filters": [tcp_proxy(&refused_name, &refused_name)],
    });
    if let Some(m) = chain.get("filter_chain_match") {
        refused["filter_chain_match"] = m.clone();
    }
    chain["filter_chain_match"]["direct_source_prefix_ranges"] = cidr_ranges(policy);
    vec![chain, refused]
}

/// The limits of a binding's policy, the network filters before its `tcp_proxy`.
fn limit_filters(cluster: &str, policy: Option<&EdgePolicy>) -> Vec<Value> {
    let mut filters = Vec::new();
    let Some(policy) = policy else {
        return filters;
    };
    if let Some(max) = policy.max_connections {
        filters.push(json!({
            "name": "envoy.filters.network.connection_limit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
                "stat_prefix": cluster,
                "max_connections": max,
            }
        }));
    }
    if let Some(rate) = policy.connection_rate {
        filters.push(json!({
            "name": "envoy.filters.network.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": cluster,
                "token_bucket": {
                    "max_tokens": rate.burst,
                    "tokens_per_fill": rate.per_second,
                    "fill_interval": "1s",
                },
            }
        }));
    }
    filters
}

fn filter_chain(b: &PlannedBinding, edge: &EdgeSettings) -> Value {
    let cluster = names::cluster(b.protocol, b.listen_port, &b.id);
    let BindingKind::Tcp {
        idle_timeout, tls, ..
    } = &b.kind
    else {
        return json!({});
    };
    let mut proxy = tcp_proxy(&cluster, &cluster);
    proxy["typed_config"]["idle_timeout"] = json!(idle_timeout.to_envoy());
    let mut filters = limit_filters(&cluster, b.policy.as_ref());
    filters.push(proxy);
    let mut chain = json!({
        "name": cluster,
        "filters": filters,
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
        "udp_listener_config": {},
        "listener_filters": [{
            "name": "envoy.filters.udp_listener.udp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
                "stat_prefix": cluster,
                "idle_timeout": session_timeout,
                "matcher": udp_matcher(&cluster, b.policy.as_ref()),
            }
        }],
    });
    bind(&mut l, Some("UDP"), b.listen_port, edge);
    if edge.udp_socket_buffer > 0 {
        l["socket_options"] = json!([
            { "level": SOL_SOCKET, "name": SO_RCVBUF, "int_value": edge.udp_socket_buffer, "state": "STATE_PREBIND" },
            { "level": SOL_SOCKET, "name": SO_SNDBUF, "int_value": edge.udp_socket_buffer, "state": "STATE_PREBIND" },
        ]);
    }
    l
}

/// The `udp_proxy` matcher: every source to the binding's cluster, or, with source ranges,
/// only the sources inside them (the others have no route: their datagrams are dropped).
fn udp_matcher(cluster: &str, policy: Option<&EdgePolicy>) -> Value {
    let route = json!({
        "action": {
            "name": "route",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route",
                "cluster": cluster,
            }
        }
    });
    let Some(policy) = policy.filter(|p| !p.source_ranges.is_empty()) else {
        return json!({ "on_no_match": route });
    };
    json!({
        "matcher_list": {
            "matchers": [{
                "predicate": {
                    "single_predicate": {
                        "input": {
                            "name": "envoy.matching.inputs.source_ip",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput"
                            }
                        },
                        "custom_match": {
                            "name": "envoy.matching.matchers.ip",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip",
                                "cidr_ranges": cidr_ranges(policy),
                                "stat_prefix": cluster,
                            }
                        }
                    }
                },
                "on_match": route,
            }]
        }
    })
}
