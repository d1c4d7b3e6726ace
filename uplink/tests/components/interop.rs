//! Interoperability with another WireGuard implementation: Debian's `wireguard-go`,
//! configured with `wg`, on either end of our agents, with real traffic both ways.

use std::path::Path;
use std::time::Duration;

use crate::support::{Conn, Lab, RELAY_PORT, TARGET_IP, tcp_echo};
use testbed::netns::Netns;
use testbed::process::Process;
use testbed::wait::wait_until;
use tunnel_contract::document::{Forward, Protocol};

/// Starts `wireguard-go` in `ns` on a machine-unique interface name (its control sockets
/// in /var/run/wireguard are shared by every namespace).
fn wireguard_go(lab: &Lab, ns: &Netns, suffix: &str) -> (Process, String) {
    let name = format!("wgtb{}{suffix}", std::process::id() % 100_000);
    let bin = testbed::tools::bin("wireguard-go").unwrap();
    let process = ns
        .spawn(
            "wireguard-go",
            &[
                "env",
                "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
                bin.to_str().unwrap(),
                "-f",
                &name,
            ],
            Some(&lab.path(&format!("{name}.log"))),
        )
        .unwrap();
    let sock = format!("/var/run/wireguard/{name}.sock");
    wait_until(
        "wireguard-go's control socket",
        Duration::from_secs(10),
        || Path::new(&sock).exists(),
    );
    (process, name)
}

fn wg(ns: &Netns, args: &[&str]) -> String {
    let bin = testbed::tools::bin("wg").unwrap();
    let mut all = vec![bin.to_str().unwrap()];
    all.extend_from_slice(args);
    String::from_utf8(ns.run(&all).unwrap().stdout).unwrap()
}

#[test]
fn wireguard_go_uplink_reaches_our_relay() {
    let lab = Lab::new(1);
    let _relay = lab.start_relay(&lab.relay_doc());
    tcp_echo(&lab.vps, "10.200.0.1:7000");

    let pod = &lab.pods[0];
    let (_wg, name) = wireguard_go(&lab, pod, "u");
    let key = lab.path("uplink.key");
    std::fs::write(&key, lab.uplink_keys[0].to_base64()).unwrap();
    wg(
        pod,
        &[
            "set",
            &name,
            "private-key",
            key.to_str().unwrap(),
            "peer",
            &lab.relay_key.public_key().to_string(),
            "endpoint",
            &format!("198.51.100.1:{RELAY_PORT}"),
            "allowed-ips",
            "10.200.0.1/32",
            "persistent-keepalive",
            "25",
        ],
    );
    pod.addr(&name, "10.200.0.2/24").unwrap();

    // Traffic both ways: wireguard-go → our relay → a server on the relay's tunnel address.
    let mut conn = None;
    wait_until(
        "a connection through the tunnel",
        Duration::from_secs(20),
        || {
            conn = Conn::open(pod, "10.200.0.1:7000").ok();
            conn.is_some()
        },
    );
    let mut conn = conn.unwrap();
    assert_eq!(conn.greeting, "from 10.200.0.2");
    assert_eq!(conn.echo("interop").unwrap(), "interop");
    let big = "x".repeat(1300);
    assert_eq!(conn.echo(&big).unwrap(), big, "full-size packets pass");

    let status = lab.relay_status();
    assert_eq!(status["ready"], true, "{status}");
    assert!(status["peers"][0]["rxBytes"].as_u64().unwrap() > 0);
    let handshakes = wg(pod, &["show", &name, "latest-handshakes"]);
    let stamp: u64 = handshakes
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stamp > 0,
        "wireguard-go completed a handshake: {handshakes}"
    );
}

#[test]
fn our_uplink_reaches_a_wireguard_go_relay() {
    let lab = Lab::new(1);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");

    let (_wg, name) = wireguard_go(&lab, &lab.vps, "r");
    let key = lab.path("relay.key");
    std::fs::write(&key, lab.relay_key.to_base64()).unwrap();
    wg(
        &lab.vps,
        &[
            "set",
            &name,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            &RELAY_PORT.to_string(),
            "peer",
            &lab.uplink_keys[0].public_key().to_string(),
            "allowed-ips",
            "10.200.0.2/32",
        ],
    );
    lab.vps.addr(&name, "10.200.0.1/24").unwrap();

    lab.publish_uplink(&lab.uplink_doc(vec![Forward {
        protocol: Protocol::Tcp,
        listen_port: 8080,
        target_ip: TARGET_IP,
        target_port: 9000,
    }]));
    let _uplink = lab.start_uplink(0);

    // `/ready` answers over the wireguard-go relay: a handshake and traffic both ways.
    wait_until(
        "our uplink ready behind wireguard-go",
        Duration::from_secs(30),
        || lab.ready(0).0 == 200,
    );
    // And a forwarded port reaches the target through our DNAT.
    let mut conn = Conn::open(&lab.vps, "10.200.0.2:8080").unwrap();
    assert_eq!(conn.greeting, "from 10.244.0.2");
    let big = "y".repeat(1300);
    assert_eq!(conn.echo(&big).unwrap(), big);
    let peers = wg(&lab.vps, &["show", &name, "endpoints"]);
    assert!(
        peers.contains("198.51.100.2") || peers.contains("10.244.0.2"),
        "{peers}"
    );
}
