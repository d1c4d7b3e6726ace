//! IPv6 at the edge (issue 20), on the real Envoy running the planner's files in network
//! namespaces (see `edge_support::bed`: the client is 192.0.2.2 and 2001:db8:1::2, the VPS
//! 192.0.2.1 and 2001:db8:1::1):
//! - an EdgeNode listing an IPv6 public address serves TCP, UDP and PROXY v1/v2 bindings to an
//!   IPv6 client (the PROXY headers name its IPv6 address) and still to an IPv4 client; without
//!   one, its ports are not open on IPv6 at all;
//! - source ranges decide for IPv6 clients as for IPv4 ones: an IPv6 client is refused by
//!   IPv4-only ranges (TCP closed before the target is dialled, UDP dropped) and served by an
//!   IPv6 range that holds it, which in turn refuses the IPv4 client; Envoy keeps serving.
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::net::{Ipv4Addr, SocketAddr};

use crate::edge_support::bed::{Bed, CLIENT_IP, CLIENT_IP6, VPS_IP, VPS_IP6, read_line};
use crate::plan_inputs::{input, node, pb};
use tunnel::plan::{Plan, StaticResolver, plan};

/// The node with both public addresses, health checks fast.
const DUAL: &str = "address: 192.0.2.1\npublicAddresses: [192.0.2.1, '2001:db8:1::1']\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";
/// The same node without `publicAddresses` (IPv4 only).
const V4_ONLY: &str = "address: 192.0.2.1\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";

/// The plan of one PortBinding `default/edge` on the node `node_yaml`; every binding served.
fn plan_of(bed: &Bed, node_yaml: &str, bindings: &str) -> Plan {
    let p = plan(
        &input(
            node(node_yaml),
            vec![pb("default", "edge", Some(1), bindings)],
            bed.layout(),
        ),
        &StaticResolver::default(),
    )
    .unwrap();
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
    p
}

/// The uplink's address of the binding named `name` (its tunnel port).
fn uplink_of(p: &Plan, name: &str) -> SocketAddr {
    let b = p.planned.iter().find(|b| b.id.binding == name).unwrap();
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2), b.tunnel_port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((VPS_IP6, port))
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((VPS_IP, port))
}

/// The tag of the backend that answered a TCP connection to `addr` (`None`: refused or closed
/// without one).
fn tag(bed: &Bed, addr: SocketAddr) -> Option<String> {
    let s = bed.connect_to(addr).ok()?;
    read_line(&mut std::io::BufReader::new(s))
}

const BINDINGS: &str = "- {name: tcp, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}\n\
     - {name: pp1, protocol: TCP, listenPort: 7001, tcp: {proxyProtocol: true}, target: {address: 10.96.0.1, port: 80}}\n\
     - {name: pp2, protocol: TCP, listenPort: 7002, tcp: {proxyProtocol: true, proxyProtocolVersion: v2}, target: {address: 10.96.0.1, port: 80}}\n\
     - {name: udp, protocol: UDP, listenPort: 7053, target: {address: 10.96.0.1, port: 53}}";

#[test]
fn an_ipv6_client_reaches_tcp_udp_and_proxy_protocol_bindings_and_an_ipv4_client_still_does() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let p = plan_of(&bed, DUAL, BINDINGS);
    bed.tcp_echo(uplink_of(&p, "tcp"), "tcp", false);
    let pp1 = bed.tcp_echo(uplink_of(&p, "pp1"), "pp1", true);
    let pp2 = bed.tcp_echo(uplink_of(&p, "pp2"), "pp2", true);
    bed.udp_echo(uplink_of(&p, "udp"), "udp");
    bed.apply(&p);

    bed.wait_for("TCP 7000 over IPv6", || {
        tag(&bed, v6(7000)).as_deref() == Some("tcp")
    });
    assert_eq!(
        tag(&bed, v4(7000)).as_deref(),
        Some("tcp"),
        "IPv4 still served"
    );
    bed.wait_for("UDP 7053 over IPv6", || {
        bed.udp_roundtrip_to(v6(7053), "ping6").as_deref() == Some("udp:ping6")
    });
    assert_eq!(
        bed.udp_roundtrip_to(v4(7053), "ping4").as_deref(),
        Some("udp:ping4"),
        "IPv4 still served over UDP"
    );

    // The PROXY headers carry the IPv6 client (and, for the IPv4 client, its IPv4 address).
    for (port, tag_name, seen, version) in [(7001, "pp1", &pp1, "v1"), (7002, "pp2", &pp2, "v2")] {
        let s = bed.connect_to(v6(port)).unwrap();
        let local = s.local_addr().unwrap();
        assert_eq!(local.ip(), std::net::IpAddr::from(CLIENT_IP6));
        assert_eq!(
            read_line(&mut std::io::BufReader::new(s)).as_deref(),
            Some(tag_name)
        );
        let s4 = bed.connect_to(v4(port)).unwrap();
        let local4 = s4.local_addr().unwrap();
        assert_eq!(local4.ip(), std::net::IpAddr::from(CLIENT_IP));
        assert_eq!(
            read_line(&mut std::io::BufReader::new(s4)).as_deref(),
            Some(tag_name)
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [format!("{version} {local}"), format!("{version} {local4}")],
            "PROXY {version} headers"
        );
    }
}

#[test]
fn a_node_without_an_ipv6_public_address_does_not_listen_on_ipv6() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let p = plan_of(&bed, V4_ONLY, BINDINGS);
    bed.tcp_echo(uplink_of(&p, "tcp"), "tcp", false);
    bed.apply(&p);
    bed.wait_for("TCP 7000 over IPv4", || {
        tag(&bed, v4(7000)).as_deref() == Some("tcp")
    });
    let refused = bed.connect_to(v6(7000)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn source_ranges_refuse_ipv6_clients_outside_them_and_serve_those_inside() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let p = plan_of(
        &bed,
        DUAL,
        "- {name: v4only, protocol: TCP, listenPort: 7100, policy: {sourceRanges: [192.0.2.0/24, 198.51.100.0/24]}, target: {address: 10.96.0.1, port: 80}}\n\
         - {name: v6only, protocol: TCP, listenPort: 7101, policy: {sourceRanges: ['2001:db8:1::/64']}, target: {address: 10.96.0.1, port: 80}}\n\
         - {name: udp4, protocol: UDP, listenPort: 7153, policy: {sourceRanges: [192.0.2.0/24]}, target: {address: 10.96.0.1, port: 53}}\n\
         - {name: udp6, protocol: UDP, listenPort: 7154, policy: {sourceRanges: ['2001:db8:1::/64']}, target: {address: 10.96.0.1, port: 53}}",
    );
    bed.tcp_echo(uplink_of(&p, "v4only"), "v4only", false);
    bed.tcp_echo(uplink_of(&p, "v6only"), "v6only", false);
    bed.udp_echo(uplink_of(&p, "udp4"), "udp4");
    bed.udp_echo(uplink_of(&p, "udp6"), "udp6");
    bed.apply(&p);
    bed.wait_for("v4only served to IPv4", || {
        tag(&bed, v4(7100)).as_deref() == Some("v4only")
    });
    bed.wait_for("v6only served to IPv6", || {
        tag(&bed, v6(7101)).as_deref() == Some("v6only")
    });
    bed.wait_for("udp4 served to IPv4", || {
        bed.udp_roundtrip_to(v4(7153), "a").as_deref() == Some("udp4:a")
    });
    bed.wait_for("udp6 served to IPv6", || {
        bed.udp_roundtrip_to(v6(7154), "b").as_deref() == Some("udp6:b")
    });
    let refused_before = bed.stat("_refused.downstream_cx_no_route");

    // TCP: the client of the other family is closed at once by the binding's refusing chain
    // (a `tcp_proxy` to no cluster: counted, nothing dialled).
    assert_eq!(
        tag(&bed, v6(7100)),
        None,
        "IPv6 client against IPv4-only ranges"
    );
    assert_eq!(
        tag(&bed, v4(7101)),
        None,
        "IPv4 client against an IPv6 range"
    );
    bed.wait_for("two refusals counted", || {
        bed.stat("_refused.downstream_cx_no_route") == refused_before + 2
    });
    // UDP: the other family's datagrams are dropped, counted as without a route.
    let dropped_before = bed.stat("downstream_sess_no_route");
    assert_eq!(bed.udp_roundtrip_to(v6(7153), "c"), None);
    assert_eq!(bed.udp_roundtrip_to(v4(7154), "d"), None);
    assert_eq!(bed.stat("downstream_sess_no_route"), dropped_before + 2);

    // Envoy kept serving both families.
    assert_eq!(tag(&bed, v6(7101)).as_deref(), Some("v6only"));
    assert_eq!(tag(&bed, v4(7100)).as_deref(), Some("v4only"));
    assert_eq!(
        bed.udp_roundtrip_to(v6(7154), "e").as_deref(),
        Some("udp6:e")
    );
}
