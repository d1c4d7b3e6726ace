//! Enrollment carrying real traffic over the real data plane: the operator's SSH enrollment
//! pushes the real `tunnelctl` and Envoy to a fresh nspawn VPS; an `uplink` agent in a "pod"
//! namespace dials the relay over userspace WireGuard; a client on the "internet" reaches an
//! echo server in the "cluster" through the VPS's public port. After a reboot of the VPS, the
//! relay and Envoy come back by themselves and traffic flows again with no operator action.
//! Teardown removes everything, including `wg-relay`.
//!
//! Needs the data-plane binaries: `cargo build -p uplink --bins` first (same target dir).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use tunnel::enroll::{self, Arch, Blob, DesiredState, EnvoyInstall, HostTuning};
use tunnel::ssh::Session;
use tunnel_contract::document::{
    Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
use tunnel_contract::key::PrivateKey;

use crate::enroll_support::{
    Uplinks, enroll_pass, greeting_network, health, traffic_flows, with_session,
};
use crate::envoy_files::{BOOTSTRAP, cds, lds};
use testbed::network::Network;
use testbed::tools::agent_binary;
use testbed::wait::wait_until;

const RELAY_PORT: u16 = 51821;

#[test]
fn enrolled_vps_carries_traffic_over_the_real_relay_and_survives_a_reboot() {
    let tunnelctl = Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap());
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());

    // internet ── VPS; internet ── cluster (the target "Service") ── pod (the uplink replica).
    let Network {
        internet,
        mut vps,
        mut pods,
        ..
    } = greeting_network(1);
    let pod = pods.remove(0);

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
        envoy_bootstrap: Blob::new(BOOTSTRAP.as_bytes().to_vec()),
        // Envoy's public 8080 to the uplink replica 0 (tunnel address 10.200.0.2), which
        // forwards 8080 to the target.
        envoy_lds: Blob::new(lds(&[8080], "uplinks_8080").into_bytes()),
        envoy_cds: Blob::new(cds("uplinks_8080", "10.200.0.2:8080".parse().unwrap()).into_bytes()),
        sds: BTreeMap::new(),
        host: HostTuning::default(),
    };

    // Enroll; the relay runs but has no uplink yet, so it is not ready.
    let report = enroll_pass(&internet, &vps, &want);
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
    let uplinks = Uplinks::start(
        &[&pod],
        "edge",
        &uplink_doc.to_json(),
        std::slice::from_ref(&uplink_key),
    );

    // The relay reports the handshake; a client on the internet reaches the cluster.
    let mut last = None;
    wait_until(
        "the relay to report a fresh handshake",
        Duration::from_secs(60),
        || {
            let h = health(&internet, &vps);
            let ok = h.is_healthy();
            last = Some(h);
            ok
        },
    );
    let relay = last.unwrap().relay_status.unwrap();
    assert_eq!(relay.peers.len(), 1);
    assert_eq!(
        relay.peers[0].public_key,
        uplink_key.public_key().to_string()
    );
    assert!(relay.peers[0].handshake_fresh);
    assert!(
        traffic_flows(&internet, vps.address()),
        "no traffic; uplink log:\n{}",
        uplinks.log(0)
    );

    // Reboot: relay and Envoy come back by themselves, the uplink re-handshakes, traffic flows.
    vps.reboot(&internet).unwrap();
    assert!(
        traffic_flows(&internet, vps.address()),
        "no traffic after the reboot"
    );
    let report = enroll_pass(&internet, &vps, &want);
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
