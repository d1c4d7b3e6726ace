//! Datagrams of any size at the agents' public UDP ports (issue 24, H3): empty datagrams from
//! the internet at the relay's port (client namespace → 192.0.2.1:51820), and from the
//! cluster at the uplink's ephemeral port, on the plain per-packet path
//! (`TUNNEL_OFFLOADS=off`, what kernels without UDP GRO get) and with the offloads. Neither
//! agent's WireGuard loop stops: the uplink stays ready between every round, traffic crosses
//! the tunnel, each agent counts every empty datagram as invalid, and no log holds a panic
//! or a rebuilt loop. Bounded by count: rounds of empty datagrams, no timing asserted.

use std::net::{SocketAddr, UdpSocket};

use crate::support::{Conn, Lab, RELAY_PORT, forward, http_get, tcp_echo};
use testbed::netns::Netns;
use testbed::wait::wait_until;
use tunnel_contract::document::Protocol;

const ROUNDS: usize = 4;
const PER_ROUND: usize = 50;

/// Sends `count` empty datagrams from `ns` to `to`.
fn send_empty(ns: &Netns, to: SocketAddr, count: usize) {
    ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            s.send_to(&[], to).unwrap();
        }
    })
    .unwrap();
}

/// The UDP ports bound in `ns` (the uplink's WireGuard socket is the only UDP socket of its
/// pod namespace).
fn udp_ports(ns: &Netns) -> Vec<u16> {
    let out = ns.run(&["ss", "-Hlun"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit_once(':'))
        .filter_map(|(_, port)| port.parse().ok())
        .collect()
}

/// The uplink's `/status`, asked on its pod address.
fn uplink_status(lab: &Lab) -> serde_json::Value {
    let (_, body) = http_get(&lab.pods[0], "10.244.0.2:40500", "/status");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

fn invalid(drops: &serde_json::Value) -> u64 {
    drops["invalid"].as_u64().unwrap_or(0)
}

fn empty_datagrams_stop_neither_agent(offloads: &str) {
    let plain = offloads == "TUNNEL_OFFLOADS=off";
    let lab = Lab::new(1);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    let _relay = lab.start_relay_with(&lab.relay_doc(), offloads);
    lab.publish_uplink(&lab.uplink_doc(vec![forward(Protocol::Tcp, 8080, 9000)]));
    let _uplink = lab.start_uplink_with(0, offloads);
    lab.wait_uplinks_ready(1);

    let relay = lab.relay_status();
    assert_eq!(relay["offloads"]["udpGro"], !plain, "{relay}");
    let uplink = uplink_status(&lab);
    assert_eq!(uplink["offloads"]["udpGro"], !plain, "{uplink}");
    let (relay_before, uplink_before) = (invalid(&relay["drops"]), invalid(&uplink["drops"]));
    let uplink_ports = udp_ports(&lab.pods[0]);
    assert!(
        !uplink_ports.is_empty(),
        "no UDP socket in the uplink's pod"
    );

    let relay_port = SocketAddr::from(([192, 0, 2, 1], RELAY_PORT));
    for round in 0..ROUNDS {
        send_empty(&lab.client, relay_port, PER_ROUND);
        for &port in &uplink_ports {
            send_empty(
                &lab.cluster,
                SocketAddr::from(([10, 244, 0, 2], port)),
                PER_ROUND,
            );
        }
        // Right after each round, through the tunnel: the uplink's /ready, and a forward.
        let (code, body) = lab.ready(0);
        assert_eq!(
            code,
            200,
            "round {round}: /ready over the tunnel: {body}\nrelay log:\n{}",
            lab.log("relay.log")
        );
        let mut conn = Conn::open(&lab.vps, "10.200.0.2:8080")
            .unwrap_or_else(|e| panic!("round {round}: the forward over the tunnel: {e}"));
        assert_eq!(
            conn.echo(&format!("round {round}")).unwrap(),
            format!("round {round}")
        );
    }

    // Every empty datagram reached a loop that is still the same one, and was counted.
    let sent = u64::try_from(ROUNDS * PER_ROUND).unwrap();
    wait_until(
        "the relay counted every empty datagram",
        std::time::Duration::from_secs(10),
        || invalid(&lab.relay_status()["drops"]) >= relay_before + sent,
    );
    let per_uplink = sent * u64::try_from(uplink_ports.len()).unwrap();
    wait_until(
        "the uplink counted every empty datagram",
        std::time::Duration::from_secs(10),
        || invalid(&uplink_status(&lab)["drops"]) >= uplink_before + per_uplink,
    );
    assert_eq!(lab.relay_status()["ready"], true);
    for log in ["relay.log", "uplink-0.log"] {
        let text = lab.log(log);
        for bad in ["panicked", "loop stopped"] {
            assert!(!text.contains(bad), "{log} holds {bad:?}:\n{text}");
        }
    }
}

#[test]
fn empty_datagrams_on_the_plain_path_stop_neither_agent() {
    empty_datagrams_stop_neither_agent("TUNNEL_OFFLOADS=off");
}

#[test]
fn empty_datagrams_with_the_offloads_stop_neither_agent() {
    empty_datagrams_stop_neither_agent("TUNNEL_OFFLOADS=on");
}
