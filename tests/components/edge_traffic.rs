//! Real traffic through the real Envoy running the planner's files, in network namespaces:
//! a client on 192.0.2.2, the VPS on 192.0.2.1 (relay 10.200.0.1), and test servers standing
//! in for the uplinks on 10.200.0.2+ (each serving `/ready` on 40500 and the bindings' tunnel
//! ports).
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use crate::edge_support::bed::{Bed, CLIENT_IP, pem_der, read_line};
use crate::edge_support::{client_cert, pki, tls_secret};
use crate::plan_inputs::{input, node, pb};
use tunnel::plan::{Plan, SourceInput, StaticResolver, plan};

fn make_plan(bed: &Bed, node_yaml: &str, pbs: Vec<SourceInput>, resolver: &StaticResolver) -> Plan {
    plan(&input(node(node_yaml), pbs, bed.layout()), resolver).unwrap()
}

/// The PortBinding `default/web`: TCP 7000 to `10.96.0.1:80`, on the node of `node_yaml`.
fn web_plan(bed: &Bed, node_yaml: &str) -> Plan {
    make_plan(
        bed,
        node_yaml,
        vec![pb(
            "default",
            "web",
            Some(1),
            "- {name: http, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}",
        )],
        &StaticResolver::default(),
    )
}

fn uplink(o: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2 + o), port))
}

const FAST_HC: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";

#[test]
fn tcp_udp_and_proxy_protocol_v1_v2() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(0, 7000), "tcp", false);
    let v1 = bed.tcp_echo(uplink(0, 7001), "pp1", true);
    let v2 = bed.tcp_echo(uplink(0, 7002), "pp2", true);
    bed.udp_echo(uplink(0, 7053), "udp");
    let p = make_plan(
        &bed,
        FAST_HC,
        vec![pb(
            "default",
            "edge-ports",
            Some(1),
            "- {name: tcp, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: pp1, protocol: TCP, listenPort: 7001, tcp: {proxyProtocol: true}, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: pp2, protocol: TCP, listenPort: 7002, tcp: {proxyProtocol: true, proxyProtocolVersion: v2}, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: udp, protocol: UDP, listenPort: 7053, udp: {sessionTimeout: 30s}, target: {address: 10.96.0.1, port: 53}}",
        )],
        &StaticResolver::default(),
    );
    bed.apply(&p);
    bed.wait_for("TCP 7000", || bed.tcp_tag(7000).as_deref() == Some("tcp"));

    // TCP echo over a kept connection.
    let s = bed.connect(7000).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_line(&mut r).as_deref(), Some("tcp"));
    writeln!(w, "hello").unwrap();
    assert_eq!(read_line(&mut r).as_deref(), Some("hello"));

    // UDP echo.
    bed.wait_for("UDP 7053", || {
        bed.udp_roundtrip(7053, "ping").as_deref() == Some("udp:ping")
    });

    // PROXY v1 and v2 carry the client's real address.
    bed.wait_for("PROXY v1", || bed.tcp_tag(7001).as_deref() == Some("pp1"));
    bed.wait_for("PROXY v2", || bed.tcp_tag(7002).as_deref() == Some("pp2"));
    let v1 = v1.lock().unwrap().clone();
    let v2 = v2.lock().unwrap().clone();
    assert!(
        !v1.is_empty()
            && v1
                .iter()
                .all(|s| s.starts_with(&format!("v1 {CLIENT_IP}:"))),
        "{v1:?}"
    );
    assert!(
        !v2.is_empty()
            && v2
                .iter()
                .all(|s| s.starts_with(&format!("v2 {CLIENT_IP}:"))),
        "{v2:?}"
    );
}

#[test]
fn tls_offload_mutual_and_passthrough_sni() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let edge_pki = pki(&["web.example.com"]);
    let backend_pki = pki(&["a.example.com", "x.b.example.com", "other.example.com"]);
    let resolver = crate::plan_inputs::edge_grants(StaticResolver::default())
        .with_secret("default", "web-tls", tls_secret(&edge_pki, false))
        .with_secret("default", "mtls", tls_secret(&edge_pki, true));
    let p = make_plan(
        &bed,
        FAST_HC,
        vec![
            pb(
                "default",
                "tls",
                Some(1),
                "- {name: offload, protocol: TCP, listenPort: 7443, tls: {mode: offload, secretRef: {name: web-tls}}, target: {address: 10.96.0.1, port: 80}}\n\
                - {name: mutual, protocol: TCP, listenPort: 7444, tls: {mode: mutual, secretRef: {name: mtls}}, target: {address: 10.96.0.1, port: 80}}",
            ),
            pb(
                "default",
                "sni-a",
                Some(2),
                "- {name: web, protocol: TCP, listenPort: 8443, tls: {mode: passthrough, serverNames: [a.example.com]}, target: {address: 10.96.0.2, port: 443}}",
            ),
            pb(
                "team-b",
                "sni-b",
                Some(3),
                "- {name: web, protocol: TCP, listenPort: 8443, tls: {mode: passthrough, serverNames: ['*.b.example.com']}, target: {address: 10.96.0.3, port: 443}}",
            ),
            pb(
                "default",
                "sni-all",
                Some(4),
                "- {name: web, protocol: TCP, listenPort: 8443, tls: {mode: passthrough}, target: {address: 10.96.0.4, port: 443}}",
            ),
        ],
        &resolver,
    );
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
    let tunnel_port = |pbn: &str| {
        p.planned
            .iter()
            .find(|b| b.id.source == pbn)
            .unwrap()
            .tunnel_port
    };
    bed.tcp_echo(uplink(0, 7443), "offload", false);
    bed.tcp_echo(uplink(0, 7444), "mutual", false);
    for (pbn, tag) in [("sni-a", "A"), ("sni-b", "B"), ("sni-all", "C")] {
        bed.tls_echo(
            uplink(0, tunnel_port(pbn)),
            tag,
            &backend_pki.server_pem,
            &backend_pki.server_key_pem,
        );
    }
    bed.apply(&p);

    // Offload: the client sees the certificate the edge serves, the backend gets plain text.
    let tag_over_tls =
        |port: u16, sni: &str, ca: &str, cert: Option<(&str, &str)>| -> Option<(String, Vec<u8>)> {
            let tls = bed.tls_connect(port, sni, ca, cert).ok()?;
            let der = crate::edge_support::bed::peer_cert(&tls);
            let mut r = BufReader::new(tls);
            Some((read_line(&mut r)?, der))
        };
    bed.wait_for("offload", || {
        tag_over_tls(7443, "web.example.com", &edge_pki.ca_pem, None).is_some()
    });
    let (tag, der) = tag_over_tls(7443, "web.example.com", &edge_pki.ca_pem, None).unwrap();
    assert_eq!(tag, "offload");
    assert_eq!(der, pem_der(&edge_pki.server_pem));

    // Mutual: refused without a client certificate, served with one from the CA.
    bed.wait_for("mutual", || {
        let (c, k) = client_cert(&edge_pki, "client");
        tag_over_tls(7444, "web.example.com", &edge_pki.ca_pem, Some((&c, &k))).is_some()
    });
    assert!(
        tag_over_tls(7444, "web.example.com", &edge_pki.ca_pem, None).is_none(),
        "a client without a certificate must be refused"
    );
    let stranger = pki(&["client"]);
    let (c, k) = client_cert(&stranger, "client");
    assert!(
        tag_over_tls(7444, "web.example.com", &edge_pki.ca_pem, Some((&c, &k))).is_none(),
        "a certificate from another CA must be refused"
    );
    let (c, k) = client_cert(&edge_pki, "client");
    assert_eq!(
        tag_over_tls(7444, "web.example.com", &edge_pki.ca_pem, Some((&c, &k)))
            .unwrap()
            .0,
        "mutual"
    );

    // Passthrough: routed by SNI, TLS ends at the backend (its certificate, not the edge's).
    bed.wait_for("passthrough", || {
        tag_over_tls(8443, "a.example.com", &backend_pki.ca_pem, None).is_some()
    });
    for (sni, want) in [
        ("a.example.com", "A"),
        ("x.b.example.com", "B"),
        ("other.example.com", "C"),
    ] {
        let (tag, der) = tag_over_tls(8443, sni, &backend_pki.ca_pem, None).unwrap();
        assert_eq!(tag, want, "{sni}");
        assert_eq!(der, pem_der(&backend_pki.server_pem));
    }
}

#[test]
fn unready_uplink_is_ejected_and_all_down_fails_fast() {
    let mut bed = Bed::new(2);
    let r0 = bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let r1 = bed.ready(Ipv4Addr::new(10, 200, 0, 3));
    bed.tcp_echo(uplink(0, 7000), "r0", false);
    bed.tcp_echo(uplink(1, 7000), "r1", false);
    let node_yaml = format!("{FAST_HC}uplink: {{replicas: 2}}\n");
    let p = web_plan(&bed, &node_yaml);
    bed.apply(&p);
    let mut seen = std::collections::BTreeSet::new();
    bed.wait_for("both uplinks serving", || {
        if let Some(t) = bed.tcp_tag(7000) {
            seen.insert(t);
        }
        seen.len() == 2
    });

    // r0's /ready fails: it is ejected, every connection goes to r1.
    r0.store(false, Ordering::SeqCst);
    bed.wait_for("r0 ejected", || {
        (0..10).all(|_| bed.tcp_tag(7000).as_deref() == Some("r1"))
    });

    // Both fail: connections are closed at once, nothing is tried.
    r1.store(false, Ordering::SeqCst);
    bed.wait_for("all down", || bed.tcp_tag(7000).is_none());
    let stats = bed.admin("/stats?filter=tcp_7000_default_web_http.upstream_cx_none_healthy");
    let none_healthy: u64 = stats
        .lines()
        .find_map(|l| {
            l.split_once("upstream_cx_none_healthy: ")
                .map(|(_, v)| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(none_healthy > 0, "{stats}");

    // Back: r0 ready again serves again.
    r0.store(true, Ordering::SeqCst);
    bed.wait_for("r0 back", || bed.tcp_tag(7000).as_deref() == Some("r0"));
}

#[test]
fn outlier_detection_ejects_an_uplink_that_refuses_connections() {
    // r0 answers /ready but refuses the binding's port: active checks keep it in, only passive
    // outlier detection takes it out.
    let mut bed = Bed::new(2);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.ready(Ipv4Addr::new(10, 200, 0, 3));
    bed.tcp_echo(uplink(1, 7000), "r1", false);
    let node_yaml = format!(
        "{FAST_HC}  outlierDetection: {{consecutiveFailures: 2, interval: 1s, baseEjectionTime: 300s, maxEjectionPercent: 50}}\nuplink: {{replicas: 2}}\n"
    )
    .replace(
        "edge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}",
        "edge:\n  healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}",
    );
    let p = web_plan(&bed, &node_yaml);
    assert!(
        p.vps_file(&bed.layout().cds())
            .unwrap()
            .contents
            .contains("outlier_detection")
    );
    bed.apply(&p);
    bed.wait_for("r0 ejected by outlier detection", || {
        (0..10).all(|_| bed.tcp_tag(7000).as_deref() == Some("r1"))
    });
    let stats = bed.admin(
        "/stats?filter=tcp_7000_default_web_http.outlier_detection.ejections_enforced_total",
    );
    let ejections: u64 = stats
        .lines()
        .find_map(|l| {
            l.split_once("ejections_enforced_total: ")
                .map(|(_, v)| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(ejections > 0, "{stats}");
}
