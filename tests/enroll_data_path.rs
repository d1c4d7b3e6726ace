//! Enrollment carrying real traffic over the real data plane: the operator's SSH enrollment
//! pushes the real `tunnelctl` and Envoy to a fresh nspawn VPS; an `uplink` agent in a "pod"
//! namespace dials the relay over userspace WireGuard; a client on the "internet" reaches an
//! echo server in the "cluster" through the VPS's public port. After a reboot of the VPS, the
//! relay and Envoy come back by themselves and traffic flows again with no operator action.
//! Teardown removes everything, including `wg-relay`.
//!
//! Needs the data-plane binaries: `cargo build -p uplink --bins` first (same target dir).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod enroll_support;

use enroll_support::{
    Network, agent_binary, serve_greeting, traffic_flows, wait_until, with_session,
};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use tunnel::enroll::{self, Arch, Blob, DesiredState, EnvoyInstall, HostTuning, PassOptions};
use tunnel::ssh::Session;
use tunnel_contract::document::{
    Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
use tunnel_contract::key::PrivateKey;

const RELAY_PORT: u16 = 51821;

fn bootstrap() -> String {
    "node: {id: tunnel-edge, cluster: tunnel}\n\
     admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n\
     dynamic_resources:\n\
     \x20 lds_config: {path_config_source: {path: /etc/envoy/lds.yaml}, resource_api_version: V3}\n\
     \x20 cds_config: {path_config_source: {path: /etc/envoy/cds.yaml}, resource_api_version: V3}\n"
        .to_owned()
}

const LDS: &str = "resources:\n\
- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n\
\x20 name: tcp_8080\n\
\x20 address: {socket_address: {address: 0.0.0.0, port_value: 8080}}\n\
\x20 filter_chains:\n\
\x20 - filters:\n\
\x20   - name: envoy.filters.network.tcp_proxy\n\
\x20     typed_config:\n\
\x20       \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n\
\x20       stat_prefix: tcp_8080\n\
\x20       cluster: uplinks_8080\n";

/// The uplink replica 0 (tunnel address 10.200.0.2) forwards 8080 to the target.
const CDS: &str = "resources:\n\
- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n\
\x20 name: uplinks_8080\n\
\x20 type: STATIC\n\
\x20 connect_timeout: 2s\n\
\x20 load_assignment:\n\
\x20   cluster_name: uplinks_8080\n\
\x20   endpoints:\n\
\x20   - lb_endpoints:\n\
\x20     - endpoint: {address: {socket_address: {address: 10.200.0.2, port_value: 8080}}}\n";

#[test]
fn enrolled_vps_carries_traffic_over_the_real_relay_and_survives_a_reboot() {
    let tunnelctl = Blob::new(std::fs::read(agent_binary("tunnelctl")).unwrap());
    let uplink_bin = agent_binary("uplink");
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());

    // internet ── VPS; internet ── cluster ── pod (the uplink replica).
    let Network {
        internet,
        mut vps,
        cluster,
        mut pods,
    } = Network::new(1);
    let pod = pods.remove(0);
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();

    // The target "Service" in the cluster.
    serve_greeting(&cluster, "10.96.0.10:9000", b"cluster says: ");

    // Keys and documents, as the planner would render them.
    let relay_key = PrivateKey::generate().unwrap();
    let uplink_key = PrivateKey::generate().unwrap();
    let relay_doc = RelayDocument {
        version: 1,
        private_key: relay_key.clone(),
        listen_port: RELAY_PORT,
        address: "10.200.0.1/24".parse().unwrap(),
        mtu: 1420,
        peers: vec![RelayPeer {
            name: Some("edge-uplink-0".into()),
            public_key: uplink_key.public_key(),
            allowed_ips: vec!["10.200.0.2/32".parse().unwrap()],
        }],
    };
    let uplink_doc = UplinkDocument {
        version: 1,
        network: "10.200.0.0/24".parse().unwrap(),
        mtu: 1420,
        relay: UplinkRelay {
            public_key: relay_key.public_key(),
            endpoint: format!("{}:{RELAY_PORT}", vps.address()),
            allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
            persistent_keepalive: 5,
        },
        forwards: vec![Forward {
            protocol: Protocol::Tcp,
            listen_port: 8080,
            target_ip: Ipv4Addr::new(10, 96, 0, 10),
            target_port: 9000,
        }],
        admin_bridge: None,
    };
    let want = DesiredState {
        tunnelctl: BTreeMap::from([(Arch::X86_64, tunnelctl)]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, envoy)]),
        },
        relay_document: Blob::new(relay_doc.to_json().into_bytes()),
        envoy_bootstrap: Blob::new(bootstrap().into_bytes()),
        envoy_lds: Blob::new(LDS.as_bytes().to_vec()),
        envoy_cds: Blob::new(CDS.as_bytes().to_vec()),
        sds: BTreeMap::new(),
        host: HostTuning::default(),
    };

    // Enroll; the relay runs but has no uplink yet, so it is not ready.
    let report = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::enroll(s, &want, &PassOptions::default()).await
    })
    .unwrap();
    assert!(
        report.health.envoy_active() && report.health.relay_active(),
        "{:?}",
        report.health
    );
    assert!(
        !report.health.is_healthy(),
        "no uplink yet: {:?}",
        report.health
    );

    // Start the uplink replica in its pod.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("priv-0"), uplink_key.to_base64()).unwrap();
    let config = dir.path().join("uplink.json");
    std::fs::write(&config, uplink_doc.to_json()).unwrap();
    let _uplink = pod
        .spawn(
            "uplink",
            &[
                "env",
                "POD_NAME=edge-uplink-0",
                uplink_bin.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--keys-dir",
                keys.to_str().unwrap(),
                "--drain-seconds",
                "1",
            ],
            Some(&dir.path().join("uplink.log")),
        )
        .unwrap();

    // The relay reports the handshake; a client on the internet reaches the cluster.
    let mut health = None;
    wait_until(
        "the relay to report a fresh handshake",
        Duration::from_secs(60),
        || {
            let h = with_session(&internet, &vps, async |s: &mut Session| {
                enroll::health::check(s).await.unwrap()
            });
            let ok = h.is_healthy();
            health = Some(h);
            ok
        },
    );
    let health = health.unwrap();
    let relay = health.relay_status.unwrap();
    assert_eq!(relay.peers.len(), 1);
    assert_eq!(
        relay.peers[0].public_key,
        uplink_key.public_key().to_string()
    );
    assert!(relay.peers[0].handshake_fresh);
    assert!(
        traffic_flows(&internet, vps.address()),
        "no traffic; uplink log:\n{}",
        std::fs::read_to_string(dir.path().join("uplink.log")).unwrap_or_default()
    );

    // Reboot: relay and Envoy come back by themselves, the uplink re-handshakes, traffic flows.
    vps.reboot(&internet).unwrap();
    assert!(
        traffic_flows(&internet, vps.address()),
        "no traffic after the reboot"
    );
    let report = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::enroll(s, &want, &PassOptions::default()).await
    })
    .unwrap();
    assert!(
        !report.changed(),
        "nothing to redo after a reboot: {:?}",
        report.steps
    );
    assert!(report.health.is_healthy(), "{:?}", report.health);

    // Teardown: nothing left, not even the interface.
    with_session(&internet, &vps, async |s: &mut Session| {
        enroll::teardown(s).await.unwrap();
    });
    let left = vps
        .ssh(
            &internet,
            "ls -d /etc/tunnel /etc/envoy /usr/local/bin/tunnelctl /usr/local/bin/envoy /etc/systemd/system/tunnel-* 2>/dev/null; ip -o link show | grep wg-relay; true",
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout), "");
}
