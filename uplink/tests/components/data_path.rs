//! The whole data path with real traffic: client → Envoy on the VPS (public port) →
//! `tunnelctl run` (wg-relay) ═▶ three `uplink` agents, each in its own pod namespace →
//! kernel DNAT → echo servers in the cluster. Covers load spreading, ejection of a dead
//! replica, fail-fast with none left, recovery, a config change that adds a port while a
//! long-lived connection on another survives, the admin bridge, and the drain on SIGTERM.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{Conn, Lab, forward, healthy_hosts, tcp_echo, udp_echo, udp_request};
use testbed::wait::wait_until;
use tunnel_contract::document::Protocol;

/// Opens `n` connections to the public port; returns the set of pod addresses that served.
fn spread(lab: &Lab, port: u16, n: usize) -> Result<BTreeSet<String>, String> {
    let mut seen = BTreeSet::new();
    for k in 0..n {
        let mut conn = Conn::open(&lab.client, &format!("192.0.2.1:{port}"))?;
        let back = conn.echo(&format!("ping {k}"))?;
        if back != format!("ping {k}") {
            return Err(format!("echo mismatch: {back}"));
        }
        seen.insert(conn.greeting.trim_start_matches("from ").to_string());
    }
    Ok(seen)
}

#[test]
fn relay_envoy_and_three_uplinks_carry_real_traffic() {
    let lab = Lab::new(3);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    tcp_echo(&lab.cluster, "10.96.0.10:9001");
    udp_echo(&lab.cluster, "10.96.0.10:9053");

    let _relay = lab.start_relay(&lab.relay_doc());
    let mut forwards = vec![
        forward(Protocol::Tcp, 8080, 9000),
        forward(Protocol::Udp, 5353, 9053),
    ];
    lab.publish_uplink(&lab.uplink_doc(forwards.clone()));
    let mut uplinks: Vec<_> = (0..3).map(|i| Some(lab.start_uplink(i))).collect();

    lab.wait_uplinks_ready(3);
    let status = lab.relay_status();
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["peers"].as_array().unwrap().len(), 3);

    let config = lab.path("envoy.yaml");
    std::fs::write(
        &config,
        crate::support::envoy_config(3, &[8080, 8081], &[5353]),
    )
    .unwrap();
    testbed::envoy::validate(&config).unwrap();
    let _envoy = testbed::envoy::Envoy::start(
        Some(&lab.vps),
        &config,
        &lab.path("envoy.log"),
        "10.200.0.1:40600",
    )
    .unwrap();
    wait_until(
        "Envoy to see 3 healthy uplinks",
        Duration::from_secs(30),
        || {
            ["tcp_8080", "tcp_8081", "udp_5353"]
                .iter()
                .all(|c| healthy_hosts(&lab.vps, c) == 3)
        },
    );

    // TCP through the public port reaches the target through every replica.
    let seen = spread(&lab, 8080, 30).unwrap();
    assert_eq!(
        seen,
        ["10.244.0.2", "10.244.1.2", "10.244.2.2"]
            .map(String::from)
            .into(),
        "the target sees each pod's address (masquerade), and all three served"
    );
    // UDP too.
    let answer = udp_request(&lab.client, "192.0.2.1:5353", "hello").unwrap();
    assert!(
        answer.starts_with("from 10.244.") && answer.ends_with(" hello"),
        "{answer}"
    );

    // The admin bridge: Envoy's metrics from a pod's address, asked from the cluster.
    let (code, body) =
        crate::support::http_get(&lab.cluster, "10.244.0.2:40600", "/stats/prometheus");
    assert_eq!(code, 200);
    assert!(
        body.contains("envoy_cluster_upstream_cx_total"),
        "{}",
        &body[..body.len().min(300)]
    );

    // A long-lived connection on 8080 survives a config change that adds 8081.
    let mut long = Conn::open(&lab.client, "192.0.2.1:8080").unwrap();
    assert_eq!(long.echo("before").unwrap(), "before");
    assert!(
        Conn::open(&lab.client, "192.0.2.1:8081").is_err(),
        "8081 is not forwarded yet"
    );
    forwards.push(forward(Protocol::Tcp, 8081, 9001));
    lab.publish_uplink(&lab.uplink_doc(forwards.clone()));
    wait_until("8081 forwarded", Duration::from_secs(20), || {
        Conn::open(&lab.client, "192.0.2.1:8081").is_ok()
    });
    assert_eq!(
        long.echo("after").unwrap(),
        "after",
        "the established session survived"
    );

    // A bad document is refused and the previous state keeps running.
    crate::support::publish(
        &lab.path("config"),
        "uplink.json",
        "{\"version\": 1, \"bogus\": true}",
    );
    wait_until("the bad document refused", Duration::from_secs(30), || {
        lab.log("uplink-0.log").contains("unknown field `bogus`")
    });
    assert_eq!(lab.ready(0).0, 200);
    assert_eq!(long.echo("still").unwrap(), "still");
    lab.publish_uplink(&lab.uplink_doc(forwards.clone()));

    // Kill replica 1 (no drain): Envoy ejects it and new connections use the others.
    let served_long = long.greeting.clone();
    let mut victim = uplinks[1].take().unwrap();
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(10)).unwrap();
    wait_until("Envoy to eject replica 1", Duration::from_secs(20), || {
        healthy_hosts(&lab.vps, "tcp_8080") == 2
    });
    // Envoy's workers learn of the ejection a moment after its main thread.
    wait_until(
        "the workers to see the ejection",
        Duration::from_secs(10),
        || spread(&lab, 8080, 4).is_ok(),
    );
    let seen = spread(&lab, 8080, 12).unwrap();
    assert!(!seen.contains("10.244.1.2"), "{seen:?}");
    assert_eq!(seen.len(), 2);
    if served_long != "from 10.244.1.2" {
        assert_eq!(long.echo("alive").unwrap(), "alive");
    }

    // SIGTERM on replica 2: /ready turns 503 "draining" while it still forwards.
    let mut draining = uplinks[2].take().unwrap();
    draining.signal("TERM");
    wait_until("replica 2 draining", Duration::from_secs(5), || {
        lab.ready(2) == (503, "draining\n".into())
    });
    assert_eq!(
        draining.wait_exit(Duration::from_secs(20)).unwrap(),
        Some(0)
    );

    // All replicas down: connections fail fast instead of hanging.
    let mut last = uplinks[0].take().unwrap();
    last.signal("KILL");
    last.wait_exit(Duration::from_secs(10)).unwrap();
    wait_until(
        "Envoy to eject every replica",
        Duration::from_secs(20),
        || healthy_hosts(&lab.vps, "tcp_8080") == 0,
    );
    // Envoy closes the connection at once (no greeting, no read timeout on the client's side).
    match Conn::open(&lab.client, "192.0.2.1:8080") {
        Ok(c) => panic!("served with no healthy uplink: {}", c.greeting),
        Err(e) => assert!(
            e == "closed before the greeting" || e.contains("reset"),
            "no healthy uplink must close the connection, not let it time out: {e}"
        ),
    }

    // Restart replica 0: back in rotation.
    uplinks[0] = Some(lab.start_uplink(0));
    // Each cluster health-checks on its own, and Envoy's workers learn of a change a moment
    // after its main thread: wait for both clusters and a first connection, then insist.
    wait_until("replica 0 back", Duration::from_secs(30), || {
        healthy_hosts(&lab.vps, "tcp_8080") == 1 && healthy_hosts(&lab.vps, "tcp_8081") == 1
    });
    wait_until(
        "a connection through replica 0",
        Duration::from_secs(10),
        || spread(&lab, 8080, 1).is_ok() && spread(&lab, 8081, 1).is_ok(),
    );
    let seen = spread(&lab, 8080, 3).unwrap();
    assert_eq!(seen, ["10.244.0.2".to_string()].into());
    let seen = spread(&lab, 8081, 2).unwrap();
    assert_eq!(
        seen,
        ["10.244.0.2".to_string()].into(),
        "the restarted replica read the current config"
    );
}
