//! Envoy's limits at the edge (issue 12, finding 9), on the real Envoy running the planner's
//! files in network namespaces (see `edge_support::bed`):
//! - a client that never finishes its SNI peek on a passthrough port, or its TLS handshake on
//!   an offload port, is closed by Envoy, while other clients of the same ports are served;
//! - over the global connection limit a new connection is closed at once, and served again
//!   once the count is back under it;
//! - the overload manager's heap monitor and actions are loaded;
//! - past Envoy's default circuit breaker (1 024 per cluster, issue 24, M5) a binding still
//!   serves: 1 100 idle TCP connections, or datagrams from 1 100 UDP sources, and a fresh
//!   client is still served.
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::edge_support::bed::{Bed, CLIENT_IP, VPS_IP, read_line};
use crate::edge_support::{pki, tls_secret};
use crate::plan_inputs::{input, node, pb};
use tunnel::plan::{StaticResolver, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";

fn uplink(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2), port))
}

/// Waits (bounded: `limit`) until the peer closes `s`; true when it did, false when `s` was
/// still open at the end. Bytes the peer sends before closing are read and dropped.
fn closed_by_peer(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn a_stuck_sni_peek_or_tls_handshake_is_closed_while_other_clients_are_served() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let edge_pki = pki(&["web.example.com"]);
    let backend_pki = pki(&["a.example.com"]);
    let resolver =
        StaticResolver::default().with_secret("default", "web-tls", tls_secret(&edge_pki, false));
    let p = plan(
        &input(
            node(NODE),
            vec![pb(
                "default",
                "edge",
                Some(1),
                "- {name: pass, protocol: TCP, listenPort: 8443, tls: {mode: passthrough}, target: {address: 10.96.0.2, port: 443}}\n\
                 - {name: offload, protocol: TCP, listenPort: 7443, tls: {mode: offload, secretRef: {name: web-tls}}, target: {address: 10.96.0.1, port: 80}}",
            )],
            bed.layout(),
        ),
        &resolver,
    )
    .unwrap();
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
    bed.tls_echo(
        uplink(8443),
        "pass",
        &backend_pki.server_pem,
        &backend_pki.server_key_pem,
    );
    bed.tcp_echo(uplink(7443), "offload", false);
    bed.apply(&p);

    let tag_over_tls = |port: u16, sni: &str, ca: &str| -> Option<String> {
        let tls = bed.tls_connect(port, sni, ca, None).ok()?;
        read_line(&mut BufReader::new(tls))
    };
    bed.wait_for("passthrough", || {
        tag_over_tls(8443, "a.example.com", &backend_pki.ca_pem).as_deref() == Some("pass")
    });
    bed.wait_for("offload", || {
        tag_over_tls(7443, "web.example.com", &edge_pki.ca_pem).as_deref() == Some("offload")
    });

    // Slowloris: on the passthrough port, half a TLS record header or nothing at all; on the
    // offload port, nothing (the handshake never starts).
    let mut stuck: Vec<(u16, TcpStream)> = Vec::new();
    for i in 0..40 {
        let port = if i % 2 == 0 { 8443 } else { 7443 };
        let mut s = bed.connect(port).unwrap();
        if port == 8443 && i % 4 == 0 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
        }
        stuck.push((port, s));
    }
    // Meanwhile both ports serve everyone else.
    for _ in 0..5 {
        assert_eq!(
            tag_over_tls(8443, "a.example.com", &backend_pki.ca_pem).as_deref(),
            Some("pass")
        );
        assert_eq!(
            tag_over_tls(7443, "web.example.com", &edge_pki.ca_pem).as_deref(),
            Some("offload")
        );
    }
    // Every stuck connection is closed by Envoy (bound: well past both timeouts, 5 s and 10 s).
    for (port, s) in &mut stuck {
        assert!(
            closed_by_peer(s, Duration::from_secs(40)),
            "a stuck client on port {port} was not closed"
        );
    }
    assert!(bed.stat("listener.0.0.0.0_8443.downstream_pre_cx_timeout") >= 20);
    // And the ports still serve.
    assert_eq!(
        tag_over_tls(8443, "a.example.com", &backend_pki.ca_pem).as_deref(),
        Some("pass")
    );
    assert_eq!(
        tag_over_tls(7443, "web.example.com", &edge_pki.ca_pem).as_deref(),
        Some("offload")
    );
    // The heap monitor and its actions are loaded (each action reports its state).
    for action in [
        "shrink_heap",
        "reduce_timeouts",
        "reject_incoming_connections",
    ] {
        let stats = bed.admin(&format!(
            "/stats?filter=overload.envoy.overload_actions.{action}.active"
        ));
        assert!(stats.contains(&format!("{action}.active: 0")), "{stats}");
    }
    let heap = bed.admin("/stats?filter=overload.envoy.resource_monitors.fixed_heap");
    assert!(heap.contains("fixed_heap.pressure"), "{heap}");
}

#[test]
fn over_the_connection_limit_a_connection_is_closed_and_served_again_below_it() {
    const LIMIT: usize = 12;
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7000), "tcp", false);
    let p = plan(
        &input(
            node(NODE),
            vec![pb(
                "default",
                "web",
                Some(1),
                "- {name: http, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}",
            )],
            bed.layout(),
        ),
        &StaticResolver::default(),
    )
    .unwrap();
    // The rendered limit is 100 000; the same document with a small one, so the test can
    // reach it.
    let mut p = p;
    let boot = bed.layout().bootstrap();
    let f = p.vps_files.iter_mut().find(|f| f.path == boot).unwrap();
    let max = tunnel::plan::envoy::bootstrap::MAX_DOWNSTREAM_CONNECTIONS.to_string();
    assert!(f.contents.contains(&max));
    f.contents = f.contents.replace(&max, &LIMIT.to_string());
    bed.apply(&p);
    bed.wait_for("TCP 7000", || bed.tcp_tag(7000).as_deref() == Some("tcp"));

    // Fill the limit with open, served connections (the admin bridge is idle meanwhile).
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        let s = bed.connect(7000).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_line(&mut r).as_deref() == Some("tcp") {
            held.push(s);
        }
    }
    assert!(held.len() >= LIMIT - 1, "{} of {LIMIT} served", held.len());
    // Over it: accepted by the kernel, closed by Envoy without reaching the backend.
    for _ in 0..5 {
        assert_eq!(
            bed.tcp_tag(7000),
            None,
            "a connection over the limit was served"
        );
    }
    // Back under it: served again.
    held.truncate(LIMIT / 2);
    bed.wait_for("served again under the limit", || {
        bed.tcp_tag(7000).as_deref() == Some("tcp")
    });
    drop(held);
    assert!(bed.stat("downstream_global_cx_overflow") >= 5);
}

/// More than Envoy's default circuit breaker of a cluster (1 024 connections or UDP
/// sessions).
const PAST_DEFAULT_BREAKER: usize = 1_100;

/// Raises this process's soft limit of open files to its hard limit when it is under
/// `need` (Envoy, started by the test, inherits it): the breaker tests hold thousands of
/// sockets on each side.
fn raise_fd_limit(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= need, "RLIMIT_NOFILE hard limit {hard} < {need}");
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

/// The first line the server sends on `s`, read without buffering past it.
fn greeting(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// A plan with one binding on the bed's node.
fn plan_one(bed: &Bed, binding: &str) -> tunnel::plan::Plan {
    let p = plan(
        &input(
            node(NODE),
            vec![pb("default", "web", Some(1), binding)],
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

#[test]
fn idle_tcp_connections_past_the_default_circuit_breaker_do_not_lock_a_binding_out() {
    raise_fd_limit(4 * PAST_DEFAULT_BREAKER as u64 + 1024);
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7100), "tcp", false);
    let p = plan_one(
        &bed,
        "- {name: idle, protocol: TCP, listenPort: 7100, target: {address: 10.96.0.1, port: 80}}",
    );
    bed.apply(&p);
    bed.wait_for("TCP 7100", || bed.tcp_tag(7100).as_deref() == Some("tcp"));

    // Idle connections, each through to the backend (its greeting read), all kept open.
    let mut idle = Vec::new();
    for _ in 0..PAST_DEFAULT_BREAKER {
        let mut s = bed.connect(7100).unwrap();
        if greeting(&mut s).as_deref() == Some("tcp") {
            idle.push(s);
        }
    }
    let served = idle.len();
    // A fresh client is served too, while they are all open.
    let fresh = bed.tcp_tag(7100);
    let overflow = bed.stat("upstream_cx_overflow");
    let remaining = bed.stat("circuit_breakers.default.remaining_cx");
    drop(idle);
    assert_eq!(
        served, PAST_DEFAULT_BREAKER,
        "idle connections served; upstream_cx_overflow {overflow}"
    );
    assert_eq!(fresh.as_deref(), Some("tcp"), "a fresh client past them");
    assert_eq!(overflow, 0);
    // `track_remaining`: the room left under the rendered threshold is published.
    let max = tunnel::plan::envoy::bootstrap::MAX_DOWNSTREAM_CONNECTIONS;
    assert!(
        remaining > 0 && remaining <= max - PAST_DEFAULT_BREAKER as u64,
        "remaining_cx {remaining}"
    );
}

#[test]
fn udp_sources_past_the_default_circuit_breaker_do_not_lock_a_binding_out() {
    raise_fd_limit(4 * PAST_DEFAULT_BREAKER as u64 + 1024);
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.udp_echo(uplink(5300), "udp");
    let p = plan_one(
        &bed,
        "- {name: dns, protocol: UDP, listenPort: 5300, target: {address: 10.96.0.1, port: 53}}",
    );
    bed.apply(&p);
    bed.wait_for("UDP 5300", || {
        bed.udp_roundtrip(5300, "hi").as_deref() == Some("udp:hi")
    });

    // One datagram from each of as many source ports: one session each (the default
    // session timeout, 60 s, keeps them all), answered.
    let answered = bed
        .client
        .enter(|| {
            let mut answered = 0;
            let mut buf = [0u8; 64];
            for i in 0..PAST_DEFAULT_BREAKER {
                let port = 20_000 + u16::try_from(i).unwrap();
                let Ok(s) = UdpSocket::bind((CLIENT_IP, port)) else {
                    continue;
                };
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                s.send_to(format!("s{i}").as_bytes(), (VPS_IP, 5300))
                    .unwrap();
                if s.recv(&mut buf)
                    .is_ok_and(|n| buf[..n] == *format!("udp:s{i}").as_bytes())
                {
                    answered += 1;
                }
            }
            answered
        })
        .unwrap();
    // A new client still gets its answer.
    let fresh = bed.udp_roundtrip(5300, "fresh");
    let overflow = bed.stat("upstream_cx_overflow");
    assert_eq!(
        answered, PAST_DEFAULT_BREAKER,
        "sources answered; upstream_cx_overflow {overflow}"
    );
    assert_eq!(
        fresh.as_deref(),
        Some("udp:fresh"),
        "a new client past them"
    );
    let max = tunnel::plan::envoy::bootstrap::MAX_DOWNSTREAM_CONNECTIONS;
    let remaining = bed.stat("circuit_breakers.default.remaining_cx");
    assert!(
        remaining > 0 && remaining <= max - PAST_DEFAULT_BREAKER as u64,
        "remaining_cx {remaining}"
    );
}
