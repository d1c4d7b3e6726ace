//! The parts fit: README Example 1 (an EdgeNode and a PortBinding to a Service) plus a UDP
//! binding from Example 2 go through the planner, its files become the VPS's desired state,
//! enrollment installs them on a fresh nspawn VPS over SSH, two uplink agents start from the
//! planner's uplink document and keys (as the StatefulSet's pods would), and a client on the
//! internet reaches the Service over TCP and the raw address over UDP through the VPS.
//! Nothing in between is hand-written: every document is the planner's. The same with the
//! EdgeNode listing the VPS's IPv4 and IPv6 addresses in `publicAddresses` (issue 20): the
//! client reaches both bindings over the VPS's IPv6 address, and still over IPv4.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use serde::Deserialize;
use tunnel::crd::{EdgeNode, PortBinding};
use tunnel::enroll::{Arch, Blob, Carried, DesiredState, EnvoyInstall, HostTuning};
use tunnel::plan::{Keys, Layout, NodeInput, PlanInput, SourceInput, SourceKind, StaticResolver};
use tunnel_contract::key::PrivateKey;

use crate::enroll_support::{Uplinks, enroll_pass, health};
use testbed::network::{Network, serve_greeting};
use testbed::tools::agent_binary;
use testbed::wait::wait_until;

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(format!("tests/fixtures/readme/{file}.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn readme_example_reaches_its_service_through_an_enrolled_vps() {
    reaches_through_an_enrolled_vps(false);
}

#[test]
fn readme_example_with_ipv6_public_addresses_is_reached_over_ipv6_and_ipv4() {
    reaches_through_an_enrolled_vps(true);
}

/// TCP `my-web: hello` and a UDP echo through the VPS at `public`, retried for 30 s at most:
/// (TCP answered, UDP answered).
fn exchange(internet: &testbed::netns::Netns, public: IpAddr) -> (bool, bool) {
    internet
        .enter(move || {
            let mut tcp_ok = false;
            let mut udp_ok = false;
            for _ in 0..60 {
                if !tcp_ok {
                    tcp_ok = TcpStream::connect_timeout(
                        &SocketAddr::from((public, 80)),
                        Duration::from_secs(2),
                    )
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.write_all(b"hello\n")?;
                        let mut out = String::new();
                        s.read_to_string(&mut out)?;
                        Ok(out == "my-web: hello\n")
                    })
                    .unwrap_or(false);
                }
                if !udp_ok {
                    let any: IpAddr = if public.is_ipv6() {
                        Ipv6Addr::UNSPECIFIED.into()
                    } else {
                        Ipv4Addr::UNSPECIFIED.into()
                    };
                    let sock = UdpSocket::bind((any, 0)).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let _ = sock.send_to(b"query", (public, 53));
                    let mut buf = [0u8; 64];
                    udp_ok =
                        matches!(sock.recv_from(&mut buf), Ok((5, _))) && &buf[..5] == b"query";
                }
                if tcp_ok && udp_ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            (tcp_ok, udp_ok)
        })
        .unwrap()
}

fn reaches_through_an_enrolled_vps(ipv6: bool) {
    // internet ── VPS; internet ── cluster ── pod-0, pod-1.
    let Network {
        internet,
        vps,
        cluster,
        pods,
    } = Network::new(2).unwrap();
    // The raw UDP target lives in the cluster namespace too, next to the Service's ClusterIP.
    cluster.addr("lo", "10.96.0.53/32").unwrap();

    // The Service `my-web` (port 8080) and a UDP echo at 10.96.0.53:53.
    serve_greeting(&cluster, "10.96.0.10:8080", b"my-web: ").unwrap();
    let udp = cluster
        .enter(|| UdpSocket::bind("10.96.0.53:53").unwrap())
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });

    // README Example 1, pointed at this VPS with two uplinks, plus Example 2's UDP binding.
    let ex1 = docs("example1");
    let mut node: EdgeNode = serde_yaml::from_value(ex1[0].clone()).unwrap();
    node.spec.address = vps.address().to_string();
    if ipv6 {
        node.spec.public_addresses = vec![vps.address().to_string(), vps.address6().to_string()];
    }
    node.spec.uplink.replicas = 2;
    let mut pb: PortBinding = serde_yaml::from_value(ex1[1].clone()).unwrap();
    let ex2: PortBinding = serde_yaml::from_value(docs("example2")[0].clone()).unwrap();
    let mut dns = ex2
        .spec
        .bindings
        .into_iter()
        .find(|b| b.name == "dns-udp")
        .unwrap();
    dns.target.address = Some("10.96.0.53".into());
    pb.spec.bindings.push(dns);

    let relay_key = PrivateKey::generate().unwrap();
    let uplink_keys: Vec<PrivateKey> = (0..2).map(|_| PrivateKey::generate().unwrap()).collect();
    let input = PlanInput {
        node: NodeInput {
            namespace: "default".into(),
            name: "edge-node".into(),
            spec: node.spec.clone(),
        },
        sources: vec![SourceInput {
            kind: tunnel::plan::SourceKind::PortBinding,
            problem: None,
            namespace: "default".into(),
            name: "public-web".into(),
            created: Some(0),
            spec: pb.spec,
        }],
        keys: Keys {
            relay_private: relay_key.clone(),
            uplink_public: uplink_keys.iter().map(PrivateKey::public_key).collect(),
        },
        layout: Layout::default(),
    };
    let resolver = StaticResolver::default().with_service(
        "default",
        "my-web",
        Some("10.96.0.10".parse().unwrap()),
        &[8080],
    );
    let plan = tunnel::plan::plan(&input, &resolver).unwrap();
    assert_eq!(
        plan.served_ports(SourceKind::PortBinding, "default", "public-web"),
        "53/UDP,80/TCP"
    );

    let carried = Carried {
        tunnelctl: BTreeMap::from([(
            Arch::X86_64,
            Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap()),
        )]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(
                Arch::X86_64,
                Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap()),
            )]),
        },
        host: HostTuning::from(&node.spec.host),
    };
    let desired = DesiredState::from_rendered(
        plan.vps_files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_bytes())),
        carried,
    )
    .unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let report = enroll_pass(&internet, &vps, &desired);
    assert!(
        report.health.envoy_active() && report.health.relay_active(),
        "{:?}",
        report.health
    );

    // The uplink pods, as the StatefulSet would run them: POD_NAME, the ConfigMap's
    // uplink.json and the keys Secret's priv-<ordinal>.
    let pods: Vec<&testbed::netns::Netns> = pods.iter().collect();
    let uplinks = Uplinks::start(&pods, "edge-node", &plan.uplink_file.contents, &uplink_keys);

    // Both uplinks handshake with the relay.
    wait_until("both uplinks to handshake", Duration::from_secs(60), || {
        health(&internet, &vps)
            .relay_status
            .is_some_and(|r| r.peers.len() == 2 && r.peers.iter().all(|p| p.handshake_fresh))
    });

    // TCP :80 reaches the Service; UDP :53 reaches the raw address (over IPv6 first, when
    // listed, then over IPv4).
    let mut publics: Vec<IpAddr> = Vec::new();
    if ipv6 {
        publics.push(vps.address6().into());
    }
    publics.push(vps.address().into());
    let answered: Vec<(IpAddr, (bool, bool))> = publics
        .iter()
        .map(|&public| (public, exchange(&internet, public)))
        .collect();
    let logs = || {
        (0..2)
            .map(|o| uplinks.log(o))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        answered.iter().all(|(_, a)| *a == (true, true)),
        "(tcp, udp) through the VPS at each address: {answered:?}; uplink logs:\n{}",
        logs()
    );

    // A second pass with the same plan changes nothing on the VPS.
    let again = enroll_pass(&internet, &vps, &desired);
    assert!(!again.changed(), "{:?}", again.steps);
}
