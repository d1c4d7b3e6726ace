//! Trust boundary 5 (issue 12): the uplink runs with `NET_ADMIN` only. In a pod namespace,
//! `uplink init` (the privileged init container's step) turns on forwarding and copies this
//! replica's key and no other; then the agent, started with a bounding set of `NET_ADMIN`
//! alone and `no_new_privs` (what the container's security context grants), brings the
//! tunnel up, programs its table and carries a forward from the VPS.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{Conn, Lab, forward, tcp_echo, uplink_bin};
use testbed::wait::wait_until;
use tunnel_contract::document::Protocol;
use tunnel_contract::key::PrivateKey;

const CAP_NET_ADMIN: u64 = 1 << 12;

/// `CapEff` of a process, as a bit mask.
fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn the_agent_needs_net_admin_only_and_sees_only_its_key() {
    let lab = Lab::new(1);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    // The Secret holds every replica's key; replica 0 must end up with its own only.
    for o in 1..3 {
        std::fs::write(
            lab.keys_dir().join(format!("priv-{o}")),
            PrivateKey::generate().unwrap().to_base64(),
        )
        .unwrap();
    }
    let own = lab.path("own-key");
    std::fs::create_dir_all(&own).unwrap();
    lab.pods[0]
        .run(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .unwrap();
    lab.pods[0]
        .run(&[
            "env",
            "POD_NAME=edge-uplink-0",
            uplink_bin(),
            "init",
            "--keys-from",
            lab.keys_dir().to_str().unwrap(),
            "--keys-to",
            own.to_str().unwrap(),
        ])
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(&own)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["priv-0"], "only this replica's key is copied");
    let mode = std::fs::metadata(own.join("priv-0"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);
    let forwarding = lab.pods[0]
        .run(&["cat", "/proc/sys/net/ipv4/ip_forward"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");

    let _relay = lab.start_relay(&lab.relay_doc());
    lab.publish_uplink(&lab.uplink_doc(vec![forward(Protocol::Tcp, 8080, 9000)]));
    let config = lab.path("config").join("uplink.json");
    let mut agent = lab.pods[0]
        .spawn(
            "uplink",
            &[
                "setpriv",
                "--bounding-set=-all,+net_admin",
                "--inh-caps=-all",
                "--no-new-privs",
                "--",
                "env",
                "POD_NAME=edge-uplink-0",
                uplink_bin(),
                "--config",
                config.to_str().unwrap(),
                "--keys-dir",
                own.to_str().unwrap(),
            ],
            Some(&lab.path("uplink-0.log")),
        )
        .unwrap();
    wait_until("uplink 0 ready", Duration::from_secs(30), || {
        lab.ready(0).0 == 200
    });
    assert_eq!(
        effective_caps(agent.pid()),
        CAP_NET_ADMIN,
        "the agent runs with NET_ADMIN alone"
    );
    let mut conn = Conn::open(&lab.vps, "10.200.0.2:8080").unwrap();
    assert_eq!(conn.greeting, "from 10.244.0.2");
    assert_eq!(conn.echo("least privilege").unwrap(), "least privilege");
    assert!(agent.is_running(), "{}", lab.log("uplink-0.log"));
}
