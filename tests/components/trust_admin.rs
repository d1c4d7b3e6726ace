//! Trust boundary 2 (issue 12): no pod can drive Envoy's admin. With the planner's real
//! bootstrap running in the real Envoy, a client on the tunnel side (where the uplinks' admin
//! bridge connects from) gets 405 for every mutating endpoint, POST or otherwise, and Envoy
//! carries on unchanged; the read-only endpoints the README promises keep answering, and
//! only to the tunnel side: a neighbour on the VPS's public network gets nothing.
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::edge_support::bed::Bed;
use crate::plan_inputs::{input, node, pb};
use testbed::netns::Netns;
use tunnel::plan::{StaticResolver, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\n";

/// One HTTP/1.1 request from `ns` to `addr`: (status, whole response).
fn request(ns: &Netns, addr: &str, method: &str, path: &str) -> (u16, String) {
    let addr = addr.parse().unwrap();
    let (method, path) = (method.to_string(), path.to_string());
    ns.enter(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, "connect failed".to_string());
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out)
    })
    .unwrap()
}

#[test]
fn the_admin_bridge_is_read_only_and_envoy_survives_every_mutation() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    let pbs = vec![pb(
        "default",
        "web",
        Some(1),
        "- {name: tcp, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}",
    )];
    let p = plan(
        &input(node(NODE), pbs, bed.layout()),
        &StaticResolver::default(),
    )
    .unwrap();
    bed.apply(&p);
    bed.wait_for("the admin bridge", || {
        request(&bed.uplinks, "10.200.0.1:40600", "GET", "/ready").0 == 200
    });

    let mutating = [
        "/quitquitquit",
        "/drain_listeners",
        "/drain_listeners?graceful",
        "/runtime_modify?x=y",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/logging?level=trace",
        "/reset_counters",
        "/cpuprofiler?enable=y",
        "/heapprofiler?enable=y",
        "/reopen_logs",
    ];
    for path in mutating {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let (code, body) = request(&bed.uplinks, "10.200.0.1:40600", method, path);
            assert_eq!(code, 405, "{method} {path} must be refused: {body}");
        }
        // A GET on a mutating endpoint passes the bridge and Envoy's admin refuses it.
        let (code, body) = request(&bed.uplinks, "10.200.0.1:40600", "GET", path);
        assert!(
            (400..500).contains(&code),
            "GET {path} must be refused: {code} {body}"
        );
    }
    // Envoy is unchanged: alive, live, still healthy, its listener still there.
    assert!(bed.envoy.as_mut().unwrap().process.is_running());
    let (code, info) = request(&bed.uplinks, "10.200.0.1:40600", "GET", "/server_info");
    assert_eq!(code, 200, "{info}");
    assert!(info.contains("\"state\": \"LIVE\""), "{info}");
    let (code, ready) = request(&bed.uplinks, "10.200.0.1:40600", "GET", "/ready");
    assert_eq!(code, 200, "{ready}");
    let (code, listeners) = request(&bed.uplinks, "10.200.0.1:40600", "GET", "/listeners");
    assert_eq!(code, 200);
    assert!(listeners.contains("tcp_7000"), "{listeners}");
    let (_, logging) = request(&bed.vps, "127.0.0.1:40600", "GET", "/logging");
    assert!(!logging.contains("trace"), "{logging}");

    // The reads the README promises.
    for path in ["/stats/prometheus", "/config_dump", "/clusters", "/ready"] {
        let (code, body) = request(&bed.uplinks, "10.200.0.1:40600", "GET", path);
        assert_eq!(code, 200, "GET {path}: {}", &body[..body.len().min(300)]);
    }
    let (code, _) = request(
        &bed.uplinks,
        "10.200.0.1:40600",
        "HEAD",
        "/stats/prometheus",
    );
    assert_eq!(code, 200);
    let (_, prom) = request(&bed.uplinks, "10.200.0.1:40600", "GET", "/stats/prometheus");
    assert!(
        prom.contains("envoy_server_live"),
        "{}",
        &prom[..prom.len().min(300)]
    );

    // A neighbour on the VPS's public network that routes the tunnel network at the VPS
    // reaches the tunnel address (Linux's weak host model), but the bridge serves only
    // sources inside the tunnel network (review 2026-12, I3): its connection is closed.
    bed.client
        .run(&["ip", "route", "add", "10.200.0.0/24", "via", "192.0.2.1"])
        .unwrap();
    let (code, body) = request(&bed.client, "10.200.0.1:40600", "GET", "/config_dump");
    assert_eq!(code, 0, "a neighbour read the admin bridge: {body}");
    assert!(!body.contains("envoy"), "{body}");
    let (code, _) = request(&bed.uplinks, "10.200.0.1:40600", "GET", "/ready");
    assert_eq!(code, 200, "the tunnel side is still served");

    // The admin itself is on the VPS's loopback only: not on the tunnel address.
    let (code, _) = request(&bed.uplinks, "10.200.0.1:40600", "POST", "/quitquitquit");
    assert_eq!(code, 405);
    let (code, _) = request(&bed.vps, "127.0.0.1:40600", "GET", "/server_info");
    assert_eq!(
        code, 200,
        "the VPS itself still reaches the admin on loopback"
    );
    assert!(bed.envoy.as_mut().unwrap().process.is_running());
}
