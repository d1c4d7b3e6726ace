//! The agents' edges, in network namespaces: the NAT table is byte-for-byte what `nft -f`
//! loads for the same rules; `tunnelctl apply/status/check` refuse bad documents naming the
//! field and reload a running relay; the uplink refuses a bad key and recovers when fixed.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::{Lab, tunnelctl};
use testbed::netns::Netns;
use testbed::wait::wait_until;
use tunnel_contract::document::{Forward, Protocol};
use uplink::nat::{self, NatSpec};

const REFERENCE: &str = r#"table ip uplink {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wg-uplink" ip daddr 10.200.0.2 tcp dport 8080 dnat to 10.1.2.3:80
		iifname "wg-uplink" ip daddr 10.200.0.2 udp dport 5353 dnat to 10.1.2.3:53
		iifname != "wg-uplink" tcp dport 40600 dnat to 10.200.0.1:40600
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.200.0.0/20 oifname != "wg-uplink" masquerade
		oifname "wg-uplink" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "wg-uplink" ct status dnat accept
		iifname != "wg-uplink" oifname "wg-uplink" ct status dnat accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wg-uplink" ct state established,related accept
		iifname "wg-uplink" ct status dnat accept
		iifname "wg-uplink" tcp dport 40500 accept
		iifname "wg-uplink" drop
	}
}
"#;

/// The table's bytecode as `nft --debug=netlink` lists it, without handles.
fn bytecode(ns: &Netns) -> String {
    let out = ns
        .run(&["nft", "--debug=netlink", "list", "table", "ip", "uplink"])
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("ip uplink ") {
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .filter(|l| l.starts_with("ip uplink") || l.starts_with("  ["))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nat_table_matches_what_nft_loads() {
    let ours = Netns::new("nat-ours").unwrap();
    let theirs = Netns::new("nat-nft").unwrap();
    let spec = NatSpec {
        interface: "wg-uplink".into(),
        address: Ipv4Addr::new(10, 200, 0, 2),
        network: "10.200.0.0/20".parse().unwrap(),
        ready_port: 40500,
        forwards: vec![
            Forward {
                protocol: Protocol::Tcp,
                listen_port: 8080,
                target_ip: Ipv4Addr::new(10, 1, 2, 3),
                target_port: 80,
            },
            Forward {
                protocol: Protocol::Udp,
                listen_port: 5353,
                target_ip: Ipv4Addr::new(10, 1, 2, 3),
                target_port: 53,
            },
        ],
        admin_bridge: Some("10.200.0.1:40600".parse().unwrap()),
    };
    assert!(!ours.enter(nat::table_present).unwrap().unwrap());
    ours.enter(|| nat::apply(&spec)).unwrap().unwrap();
    // Applying twice replaces, it does not append.
    ours.enter(|| nat::apply(&spec)).unwrap().unwrap();
    assert!(ours.enter(nat::table_present).unwrap().unwrap());

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), REFERENCE).unwrap();
    theirs
        .run(&["nft", "-f", file.path().to_str().unwrap()])
        .unwrap();
    let (a, b) = (bytecode(&ours), bytecode(&theirs));
    assert!(a.contains("[ masq ]") && a.contains("nat dnat ip"), "{a}");
    assert_eq!(a, b);

    ours.enter(nat::remove).unwrap().unwrap();
    assert!(!ours.enter(nat::table_present).unwrap().unwrap());
    ours.enter(nat::remove).unwrap().unwrap();
}

fn ctl(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = lab
        .vps
        .command(tunnelctl())
        .args(["--config", lab.path("relay.json").to_str().unwrap()])
        .args(["--control", lab.path("relay.sock").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    // stdout (the JSON) first, then the log lines from stderr.
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn tunnelctl_apply_status_and_bad_documents() {
    let lab = Lab::new(2);
    // Not running yet: status says so and fails.
    let (ok, out) = ctl(&lab, &["status"]);
    assert!(!ok && out.contains("\"running\": false"), "{out}");

    let mut doc = lab.relay_doc();
    let first_peer = doc.peers.remove(1);
    let _relay = lab.start_relay(&doc);
    // stdout only: the agents log JSON lines to stderr.
    let status = lab.relay_status();
    assert_eq!(status["interface"], "wg-relay");
    assert_eq!(status["peers"].as_array().unwrap().len(), 1);

    // Bad documents: refused with the field named; nothing installed.
    let bad = lab.path("bad.json");
    let mut value: serde_json::Value = serde_json::from_str(&doc.to_json()).unwrap();
    value["peers"][0]["publicKey"] = "nope".into();
    std::fs::write(&bad, value.to_string()).unwrap();
    let (ok, out) = ctl(&lab, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("peers[0].publicKey: not a 32-byte base64 WireGuard key"),
        "{out}"
    );
    std::fs::write(&bad, r#"{"version": 2}"#).unwrap();
    let (ok, out) = ctl(&lab, &["check", "-f", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("unsupported version 2"), "{out}");
    std::fs::write(&bad, "{").unwrap();
    let (ok, out) = ctl(&lab, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("malformed JSON"), "{out}");

    // A good document with one more peer: installed 0600 and applied by the running relay.
    doc.peers.push(first_peer);
    let good = lab.path("good.json");
    std::fs::write(&good, doc.to_json()).unwrap();
    let (ok, out) = ctl(&lab, &["apply", "-f", good.to_str().unwrap()]);
    assert!(ok, "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.path("relay.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let (_, out) = ctl(&lab, &["status"]);
    assert!(out.contains("edge-uplink-1"), "{out}");
    // The interface deleted under the relay: it notices and rebuilds it.
    lab.vps.run(&["ip", "link", "del", "wg-relay"]).unwrap();
    wait_until("wg-relay rebuilt", Duration::from_secs(10), || {
        lab.vps
            .run(&["ip", "-br", "addr", "show", "wg-relay"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.200.0.1/24"))
            && lab.relay_status()["running"] == true
    });
    // Secrets never reach the logs.
    assert!(!lab.log("relay.log").contains(&lab.relay_key.to_base64()));
}

#[test]
fn uplink_waits_for_a_good_key_and_reports_why() {
    let lab = Lab::new(1);
    let _relay = lab.start_relay(&lab.relay_doc());
    std::fs::write(lab.keys_dir().join("priv-0"), "garbage").unwrap();
    lab.publish_uplink(&lab.uplink_doc(vec![Forward {
        protocol: Protocol::Tcp,
        listen_port: 8080,
        target_ip: Ipv4Addr::new(10, 1, 2, 3),
        target_port: 80,
    }]));
    let _uplink = lab.start_uplink(0);
    // /ready is served on the pod address even before the tunnel exists.
    wait_until("a 503 naming the key file", Duration::from_secs(20), || {
        let (code, body) = crate::support::http_get(&lab.pods[0], "10.244.0.2:40500", "/ready");
        code == 503 && body.contains("priv-0: not a 32-byte base64 WireGuard key")
    });
    // The key appears (a Secret update): the agent picks it up without a restart.
    std::fs::write(
        lab.keys_dir().join("priv-0"),
        lab.uplink_keys[0].to_base64(),
    )
    .unwrap();
    wait_until("ready with the right key", Duration::from_secs(30), || {
        lab.ready(0).0 == 200
    });
    // /status: a JSON report for troubleshooting, without secrets.
    let (code, body) = crate::support::http_get(&lab.pods[0], "10.244.0.2:40500", "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["ordinal"], 0);
    assert_eq!(status["address"], "10.200.0.2/24");
    assert_eq!(status["ready"], "ok");
    assert!(
        status["relay"]["lastHandshakeSecondsAgo"].is_u64(),
        "{status}"
    );
    assert!(!body.contains(&lab.uplink_keys[0].to_base64()));
    // How many forwards, never their in-cluster targets (review L2: any pod, and the VPS
    // through the tunnel, can read /status).
    assert_eq!(status["forwards"], 1, "{status}");
    assert!(!body.contains("10.1.2.3"), "{body}");
    assert!(
        !lab.log("uplink-0.log")
            .contains(&lab.uplink_keys[0].to_base64())
    );
}

#[test]
fn uplink_recovers_from_relay_restart_and_drift_and_the_relay_follows_its_file() {
    let lab = Lab::new(1);
    let mut doc = lab.relay_doc();
    let mut relay = lab.start_relay(&doc);
    let mut up = lab.uplink_doc(Vec::new());
    up.relay.persistent_keepalive = 5;
    lab.publish_uplink(&up);
    let _uplink = lab.start_uplink(0);
    wait_until("uplink ready", Duration::from_secs(30), || {
        lab.ready(0).0 == 200
    });

    // The relay restarts (an upgrade, a reboot): it has no session and cannot dial back; the
    // quiet uplink forces a new handshake instead of waiting for the 2-minute rekey.
    relay.stop(Duration::from_secs(10));
    let relay = lab.start_relay(&doc);
    wait_until(
        "uplink ready after the relay restarted",
        Duration::from_secs(60),
        || lab.ready(0).0 == 200,
    );

    // The relay follows its document file (no reload step): a rename over it is applied.
    doc.peers[0].name = Some("renamed-peer".into());
    let tmp = lab.path(".relay.json.new");
    std::fs::write(&tmp, doc.to_json()).unwrap();
    std::fs::rename(&tmp, lab.path("relay.json")).unwrap();
    wait_until(
        "the relay to apply its rewritten file",
        Duration::from_secs(10),
        || lab.relay_status()["peers"][0]["name"] == "renamed-peer",
    );
    assert_eq!(lab.ready(0).0, 200, "a peer rename keeps the session");

    // Drift: the NAT table disappears. /ready says so with the next snapshot (published each
    // second, so /ready never waits on netlink), and the agent repairs it.
    lab.pods[0]
        .run(&["nft", "delete", "table", "ip", "uplink"])
        .unwrap();
    wait_until(
        "/ready to report the missing table",
        Duration::from_secs(5),
        || {
            let (code, body) = lab.ready(0);
            (code, body.trim()) == (503, "forwarding rules are not in place")
        },
    );
    wait_until("the table to be repaired", Duration::from_secs(45), || {
        lab.ready(0).0 == 200
    });
    drop(relay);
}
