//! The pieces as the operator will wire them: the planner renders the VPS files and the uplink
//! document from an EdgeNode and a PortBinding (README Example 1 shape, raw-address target),
//! `DesiredState::from_rendered` turns them into enrollment's input, enrollment pushes them
//! with the real `tunnelctl` and Envoy to a fresh nspawn VPS, and an `uplink` agent fed the
//! planner's uplink document carries a client's connection to the target in the "cluster".
//! Envoy's health checks of the uplink (`/ready` over the tunnel) pass, as configured by the
//! planner.
//!
//! Needs the data-plane binaries: `cargo build -p uplink --bins` first (same target dir).

use std::collections::BTreeMap;
use std::time::Duration;

use tunnel::enroll::{Arch, Blob, Carried, DesiredState, EnvoyInstall, HostTuning};
use tunnel::plan::{Keys, Layout, NodeInput, PlanInput, SourceInput, StaticResolver};
use tunnel_contract::key::PrivateKey;

use crate::enroll_support::{Uplinks, enroll_pass, greeting_network, health, traffic_flows};
use testbed::network::Network;
use testbed::tools::agent_binary;
use testbed::wait::wait_until;

const RELAY_PORT: u16 = 51821;

#[test]
fn planner_output_enrolls_and_carries_traffic() {
    let tunnelctl = Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap());
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());

    // internet ── VPS; internet ── cluster (the target "Service") ── pod (the uplink replica).
    let Network {
        internet,
        vps,
        mut pods,
        ..
    } = greeting_network(1);
    let pod = pods.remove(0);

    // The planner, as the EdgeNode actor will call it.
    let relay_key = PrivateKey::generate().unwrap();
    let uplink_key = PrivateKey::generate().unwrap();
    let node = NodeInput {
        namespace: "default".into(),
        name: "edge".into(),
        spec: serde_yaml::from_str(&format!(
            "address: {}\nssh: {{secretRef: {{name: vps-ssh}}}}\ntunnel: {{listenPort: {RELAY_PORT}, persistentKeepalive: 5}}\n",
            vps.address()
        ))
        .unwrap(),
    };
    let binding = SourceInput {
        kind: tunnel::plan::SourceKind::PortBinding,
        problem: None,
        namespace: "default".into(),
        name: "public-web".into(),
        created: Some(1),
        spec: serde_yaml::from_str(
            "edgeNodeRef: {name: edge}\nbindings:\n- {name: http, protocol: TCP, listenPort: 8080, target: {address: 10.96.0.10, port: 9000}}\n",
        )
        .unwrap(),
    };
    let plan = tunnel::plan::plan(
        &PlanInput {
            node,
            sources: vec![binding],
            keys: Keys {
                relay_private: relay_key,
                uplink_public: vec![uplink_key.public_key()],
            },
            layout: Layout::default(),
        },
        &StaticResolver::default(),
    )
    .unwrap();
    let want = DesiredState::from_rendered(
        plan.vps_files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_bytes())),
        Carried {
            tunnelctl: BTreeMap::from([(Arch::X86_64, tunnelctl)]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, envoy)]),
            },
            host: HostTuning::default(),
        },
    )
    .unwrap();

    let report = enroll_pass(&internet, &vps, &want);
    assert!(
        report.health.envoy_active() && report.health.relay_active(),
        "{:?}",
        report.health
    );

    // The uplink replica with the planner's uplink document.
    let uplinks = Uplinks::start(
        &[&pod],
        "edge",
        &plan.uplink_file.contents,
        std::slice::from_ref(&uplink_key),
    );

    wait_until(
        "the relay to report a fresh handshake",
        Duration::from_secs(60),
        || health(&internet, &vps).is_healthy(),
    );
    assert!(
        traffic_flows(&internet, vps.address()),
        "no traffic; uplink log:\n{}",
        uplinks.log(0)
    );
    let report = enroll_pass(&internet, &vps, &want);
    assert!(!report.changed(), "{:?}", report.steps);
}
