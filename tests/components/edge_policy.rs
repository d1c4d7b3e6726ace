//! L4 policy at the edge (issue 18), on the real Envoy running the planner's files in network
//! namespaces (see `edge_support::bed`; the client is 192.0.2.2):
//! - source ranges that exclude the client: a TCP client is closed before the target is
//!   dialled (it gets nothing, not even a server-first greeting) and UDP datagrams are dropped;
//!   on a passthrough port, a refused client of a named binding does not fall through to the
//!   port's catch-all; the stats count each refusal per binding. Ranges including the client
//!   serve it. The ranges are changed live, twice, while a session on another binding keeps
//!   echoing;
//! - a connection limit of N serves N concurrent clients, refuses the next, and serves again
//!   once one leaves;
//! - a rate limit serves a burst of `burst` connections and refuses some of a longer one;
//! - a UDP session cap of N serves N client sources and drops the next one's datagrams, and
//!   serves it once the others' sessions expire.
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::edge_support::bed::{Bed, CLIENT_IP, VPS_IP, read_line};
use crate::edge_support::pki;
use crate::plan_inputs::{input, node, pb};
use tunnel::plan::{Layout, Plan, StaticResolver, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";

fn uplink(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2), port))
}

/// The plan of one PortBinding `default/edge` with these bindings; every binding served.
fn plan_of(layout: &Layout, bindings: &str) -> Plan {
    let p = plan(
        &input(
            node(NODE),
            vec![pb("default", "edge", Some(1), bindings)],
            layout.clone(),
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

/// One echo round trip on a kept session; false means the session is gone.
fn ping(r: &mut BufReader<TcpStream>, msg: &str) -> bool {
    if writeln!(r.get_mut(), "{msg}").is_err() {
        return false;
    }
    let mut line = String::new();
    r.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() == msg
}

/// The first line the server sends on `s` (its tag), read without buffering past it.
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

/// Waits until the binding's cluster has a healthy uplink and its listener is up, without
/// opening a connection to it (which a rate limit would count).
fn wait_ready(bed: &Bed, cluster: &str, listener: &str) {
    bed.wait_for(&format!("{cluster} healthy"), || {
        bed.stat(&format!("cluster.{cluster}.membership_healthy")) == 1
    });
    bed.wait_for(&format!("listener {listener}"), || {
        bed.admin("/listeners").contains(listener)
    });
}

#[test]
fn source_ranges_refuse_or_serve_tcp_and_udp_and_change_live_while_another_session_survives() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7000), "kept", false);
    bed.tcp_echo(uplink(7200), "guard", false);
    bed.udp_echo(uplink(5300), "dns");
    let backend = pki(&["a.example.com", "other.example.com"]);
    // `excluded` leaves the client (192.0.2.2) out, `included` lets it in.
    let layout = bed.layout();
    let render = |ranges: &str| {
        plan_of(
            &layout,
            &format!(
                "- {{name: kept, protocol: TCP, listenPort: 7000, target: {{address: 10.96.0.1, port: 80}}}}\n\
                 - {{name: guard, protocol: TCP, listenPort: 7200, policy: {{sourceRanges: {ranges}}}, target: {{address: 10.96.0.1, port: 80}}}}\n\
                 - {{name: dns, protocol: UDP, listenPort: 5300, policy: {{sourceRanges: {ranges}}}, target: {{address: 10.96.0.10, port: 53}}}}\n\
                 - {{name: sni-a, protocol: TCP, listenPort: 8443, tls: {{mode: passthrough, serverNames: [a.example.com]}}, policy: {{sourceRanges: {ranges}}}, target: {{address: 10.96.0.2, port: 443}}}}\n\
                 - {{name: sni-rest, protocol: TCP, listenPort: 8443, tls: {{mode: passthrough}}, target: {{address: 10.96.0.3, port: 443}}}}"
            ),
        )
    };
    let excluded = "[198.51.100.0/24, '2001:db8::/32']";
    let included = "[198.51.100.0/24, 192.0.2.0/24]";
    let first = render(excluded);
    for b in first.planned.iter().filter(|b| b.listen_port == 8443) {
        let tag = b.id.binding.clone();
        bed.tls_echo(
            uplink(b.tunnel_port),
            &tag,
            &backend.server_pem,
            &backend.server_key_pem,
        );
    }
    bed.apply(&first);
    bed.wait_for("TCP 7000", || bed.tcp_tag(7000).as_deref() == Some("kept"));
    let sni_tag = |bed: &Bed, sni: &str| -> Option<String> {
        let tls = bed.tls_connect(8443, sni, &backend.ca_pem, None).ok()?;
        read_line(&mut BufReader::new(tls))
    };
    bed.wait_for("the passthrough catch-all", || {
        sni_tag(&bed, "other.example.com").as_deref() == Some("sni-rest")
    });

    // The long-lived session on the binding without a policy.
    let mut kept = BufReader::new(bed.connect(7000).unwrap());
    assert_eq!(read_line(&mut kept).as_deref(), Some("kept"));
    kept.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let tcp_refused = "tcp.tcp_7200_default_edge_guard_refused.downstream_cx_no_route";
    let sni_refused = "tcp.tcp_8443_default_edge_sni-a_refused.downstream_cx_no_route";
    let udp_refused = "udp.udp_5300_default_edge_dns.downstream_sess_no_route";
    let guard_upstream = "cluster.tcp_7200_default_edge_guard.upstream_cx_total";
    let assert_refused = |bed: &Bed, round: &str| {
        // Each attempt is counted; none reaches the target.
        let (tcp0, sni0, udp0) = (
            bed.stat(tcp_refused),
            bed.stat(sni_refused),
            bed.stat(udp_refused),
        );
        let upstream0 = bed.stat(guard_upstream);
        for _ in 0..3 {
            assert_eq!(bed.tcp_tag(7200), None, "{round}: a TCP client got through");
            assert_eq!(
                bed.udp_roundtrip(5300, "q"),
                None,
                "{round}: a UDP client got an answer"
            );
            assert!(
                bed.tls_connect(8443, "a.example.com", &backend.ca_pem, None)
                    .is_err(),
                "{round}: a refused SNI client finished a handshake (with the catch-all?)"
            );
        }
        assert!(bed.stat(tcp_refused) >= tcp0 + 3, "{round}: {tcp_refused}");
        assert!(bed.stat(sni_refused) >= sni0 + 3, "{round}: {sni_refused}");
        assert!(bed.stat(udp_refused) >= udp0 + 3, "{round}: {udp_refused}");
        assert_eq!(
            bed.stat(guard_upstream),
            upstream0,
            "{round}: the target was dialled for a refused client"
        );
        // The other names of the shared port are still served.
        assert_eq!(
            sni_tag(bed, "other.example.com").as_deref(),
            Some("sni-rest")
        );
    };
    // Refusals are counted once the listeners are up: wait for the first of each.
    bed.wait_for("TCP refusals counted", || {
        bed.tcp_tag(7200);
        bed.stat(tcp_refused) > 0
    });
    bed.wait_for("UDP refusals counted", || {
        bed.udp_roundtrip(5300, "q");
        bed.stat(udp_refused) > 0
    });
    assert_refused(&bed, "excluded");
    assert!(ping(&mut kept, "after excluded"));

    // Live: the client is let in.
    bed.apply(&render(included));
    bed.wait_for("TCP served once included", || {
        bed.tcp_tag(7200).as_deref() == Some("guard")
    });
    bed.wait_for("UDP served once included", || {
        bed.udp_roundtrip(5300, "q").as_deref() == Some("dns:q")
    });
    bed.wait_for("SNI a served once included", || {
        sni_tag(&bed, "a.example.com").as_deref() == Some("sni-a")
    });
    assert!(
        ping(&mut kept, "after included"),
        "the other session was dropped"
    );

    // Live: shut out again.
    bed.apply(&render(excluded));
    bed.wait_for("TCP refused again", || bed.tcp_tag(7200).is_none());
    bed.wait_for("UDP refused again", || {
        bed.udp_roundtrip(5300, "q").is_none()
    });
    bed.wait_for("SNI a refused again", || {
        sni_tag(&bed, "a.example.com").is_none()
    });
    assert_refused(&bed, "excluded again");
    assert!(
        ping(&mut kept, "after excluded again"),
        "the other session was dropped"
    );
}

#[test]
fn a_connection_limit_of_n_serves_n_refuses_the_next_and_serves_again_when_one_leaves() {
    const N: usize = 3;
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7300), "capped", false);
    let p = plan_of(
        &bed.layout(),
        &format!(
            "- {{name: capped, protocol: TCP, listenPort: 7300, policy: {{maxConnections: {N}}}, target: {{address: 10.96.0.1, port: 80}}}}"
        ),
    );
    bed.apply(&p);
    bed.wait_for("TCP 7300", || {
        bed.tcp_tag(7300).as_deref() == Some("capped")
    });
    let limited = "connection_limit.tcp_7300_default_edge_capped.limited_connections";
    let active = "connection_limit.tcp_7300_default_edge_capped.active_connections";
    // The readiness probes above are closed: wait until Envoy no longer counts them.
    bed.wait_for("no connection counted", || bed.stat(active) == 0);

    let mut held: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = bed.connect(7300).unwrap();
            assert_eq!(greeting(&mut s).as_deref(), Some("capped"), "client {i}");
            s
        })
        .collect();
    let before = bed.stat(limited);
    // The next one: closed without a greeting, counted.
    assert_eq!(bed.tcp_tag(7300), None, "client {} was served", N + 1);
    assert_eq!(bed.stat(limited), before + 1);
    // The held ones still echo.
    for s in &mut held {
        writeln!(s, "still").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim_end(), "still");
    }
    // One leaves: served again.
    held.pop();
    bed.wait_for("served again once one left", || {
        bed.tcp_tag(7300).as_deref() == Some("capped")
    });
    drop(held);
}

#[test]
fn a_rate_limit_serves_a_burst_and_refuses_past_it() {
    const BURST: usize = 5;
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7400), "rated", false);
    let p = plan_of(
        &bed.layout(),
        &format!(
            "- {{name: rated, protocol: TCP, listenPort: 7400, policy: {{connectionRate: {{perSecond: 1, burst: {BURST}}}}}, target: {{address: 10.96.0.1, port: 80}}}}"
        ),
    );
    bed.apply(&p);
    // No probe connection: it would take a token.
    wait_ready(&bed, "tcp_7400_default_edge_rated", "tcp_7400");
    let rate_limited = "local_rate_limit.tcp_7400_default_edge_rated.rate_limited";
    assert_eq!(bed.stat(rate_limited), 0);

    // BURST + 5 connections back to back: the bucket starts full.
    let served: Vec<bool> = (0..BURST + 5)
        .map(|_| bed.tcp_tag(7400).as_deref() == Some("rated"))
        .collect();
    assert!(
        served[..BURST].iter().all(|s| *s),
        "the first {BURST} were not all served: {served:?}"
    );
    let refused = served.iter().filter(|s| !**s).count();
    assert!(refused >= 1, "nothing refused: {served:?}");
    assert_eq!(bed.stat(rate_limited), refused as u64, "{served:?}");
}

#[test]
fn a_udp_session_cap_of_n_serves_n_sources_and_drops_the_next() {
    const N: u16 = 3;
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.udp_echo(uplink(5400), "game");
    let p = plan_of(
        &bed.layout(),
        &format!(
            "- {{name: game, protocol: UDP, listenPort: 5400, udp: {{sessionTimeout: 3s}}, policy: {{maxConnections: {N}}}, target: {{address: 10.96.0.1, port: 27015}}}}"
        ),
    );
    bed.apply(&p);
    bed.wait_for("UDP 5400", || {
        bed.udp_roundtrip(5400, "hi").as_deref() == Some("game:hi")
    });
    let sessions = "udp.udp_5400_default_edge_game.downstream_sess_active";
    let overflow = "cluster.udp_5400_default_edge_game.upstream_cx_overflow";
    // The probes' sessions expire (3 s idle).
    bed.wait_for("no session left", || bed.stat(sessions) == 0);
    let before = bed.stat(overflow);

    let sockets: Vec<UdpSocket> = (0..=N)
        .map(|i| {
            let s = bed
                .client
                .enter(|| UdpSocket::bind((CLIENT_IP, 31_000 + i)))
                .unwrap()
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .collect();
    let roundtrip = |s: &UdpSocket, msg: &str| -> Option<String> {
        s.send_to(msg.as_bytes(), (VPS_IP, 5400)).ok()?;
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    for (i, s) in sockets[..usize::from(N)].iter().enumerate() {
        assert_eq!(
            roundtrip(s, &format!("s{i}")),
            Some(format!("game:s{i}")),
            "source {i}"
        );
    }
    let last = &sockets[usize::from(N)];
    assert_eq!(roundtrip(last, "over"), None, "source {N} was answered");
    assert!(bed.stat(overflow) > before, "{overflow} did not count it");
    // The first N still are answered.
    assert_eq!(
        roundtrip(&sockets[0], "again"),
        Some("game:again".to_owned())
    );
    // Once their sessions expire, the last source is served.
    bed.wait_for("sessions expired", || bed.stat(sessions) == 0);
    assert_eq!(roundtrip(last, "later"), Some("game:later".to_owned()));
}
