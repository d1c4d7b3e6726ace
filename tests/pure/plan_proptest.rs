//! The planner never panics, on arbitrary specs: ports (including reserved and the tunnel's),
//! protocols, TLS modes, server names, durations (valid or not), targets (valid or not),
//! L4 policies (valid or not), creation times and replica counts. Whatever it gets, every binding has exactly one outcome,
//! served bindings never share a (protocol, port) except passthrough with distinct names, and
//! rendering twice gives the same bytes.

use proptest::prelude::*;
use tunnel::crd::{
    Binding, BindingPolicy, BindingTarget, ConnectionRate, EdgeNodeRef, PortBindingSpec, Protocol,
    ProxyProtocolVersion, SecretReference, ServiceTarget, TcpParams, TlsMode, TlsParams, UdpParams,
};
use tunnel::plan::{Layout, SourceInput, plan};

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(80u16),
        Just(443),
        Just(53),
        Just(51821),
        Just(40500),
        Just(40600),
        1u16..=65535
    ]
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("5s".to_owned()),
        Just("500ms".to_owned()),
        Just("0s".to_owned()),
        Just("1h30m".to_owned()),
        Just("99999999999h".to_owned()),
        "[0-9a-z.]{0,8}",
    ]
}

fn policy() -> impl Strategy<Value = Option<BindingPolicy>> {
    proptest::option::of(
        (
            proptest::collection::vec(
                prop_oneof![
                    Just("10.0.0.0/8"),
                    Just("10.1.0.0/16"),
                    Just("2001:db8::/32"),
                    Just("10.0.0.1/8"),
                    Just("bogus"),
                ],
                0..4,
            ),
            proptest::option::of(0u32..4),
            proptest::option::of((0u32..4, proptest::option::of(0u32..8))),
        )
            .prop_map(|(ranges, max, rate)| BindingPolicy {
                source_ranges: ranges.into_iter().map(str::to_owned).collect(),
                max_connections: max,
                connection_rate: rate
                    .map(|(per_second, burst)| ConnectionRate { per_second, burst }),
            }),
    )
}

fn binding(i: usize) -> impl Strategy<Value = Binding> {
    (
        policy(),
        any::<bool>(),
        port(),
        prop_oneof![
            Just(None),
            Just(Some(TlsMode::Passthrough)),
            Just(Some(TlsMode::Offload)),
            Just(Some(TlsMode::Mutual))
        ],
        proptest::collection::vec(
            prop_oneof![
                Just("a.example.com"),
                Just("*.example.com"),
                Just("B.example.com")
            ],
            0..3,
        ),
        duration(),
        any::<bool>(),
        prop_oneof![
            Just((Some("my-web"), None, None)),
            Just((Some("nope"), None, None)),
            Just((Some("headless"), None, None)),
            Just((None, Some("10.1.2.3"), Some(80u16))),
            Just((None, Some("fd00::1"), Some(80))),
            Just((None, Some("not-an-ip"), Some(80))),
            Just((None, Some("10.1.2.3"), None)),
            Just((None, None, None)),
        ],
    )
        .prop_map(
            move |(policy, is_tcp, listen_port, tls, names, dur, pp, (svc, addr, tport))| {
                let protocol = if is_tcp { Protocol::Tcp } else { Protocol::Udp };
                Binding {
                    name: format!("b{i}"),
                    protocol,
                    listen_port,
                    tcp: is_tcp.then(|| TcpParams {
                        proxy_protocol: pp,
                        proxy_protocol_version: if pp {
                            ProxyProtocolVersion::V2
                        } else {
                            ProxyProtocolVersion::V1
                        },
                        connect_timeout: dur.clone(),
                        idle_timeout: "1h".into(),
                    }),
                    udp: (!is_tcp).then(|| UdpParams {
                        session_timeout: dur.clone(),
                    }),
                    tls: tls.map(|mode| TlsParams {
                        mode,
                        secret_ref: Some(SecretReference {
                            name: "web-tls".into(),
                            namespace: None,
                        }),
                        server_names: names.iter().map(|s| (*s).to_owned()).collect(),
                    }),
                    target: BindingTarget {
                        service: svc.map(|name| ServiceTarget {
                            name: name.into(),
                            namespace: "default".into(),
                            port: 8080.into(),
                        }),
                        address: addr.map(str::to_owned),
                        port: tport,
                    },
                    policy,
                }
            },
        )
}

fn port_binding(i: usize) -> impl Strategy<Value = SourceInput> {
    (
        proptest::option::of(0i64..5),
        prop_oneof![Just("default"), Just("other")],
        proptest::collection::vec(0usize..1, 0..5),
    )
        .prop_flat_map(move |(created, ns, n)| {
            let bindings: Vec<_> = (0..n.len()).map(binding).collect();
            (Just(created), Just(ns), bindings)
        })
        .prop_map(move |(created, ns, bindings)| SourceInput {
            kind: tunnel::plan::SourceKind::PortBinding,
            problem: None,
            namespace: ns.to_owned(),
            name: format!("pb{i}"),
            created,
            spec: PortBindingSpec {
                edge_node_ref: Some(EdgeNodeRef {
                    name: "edge".into(),
                    namespace: Some("default".into()),
                }),
                edge_node_refs: Vec::new(),
                bindings,
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn planner_never_panics(
        pbs in proptest::collection::vec(0usize..1, 0..5).prop_flat_map(|v| (0..v.len()).map(port_binding).collect::<Vec<_>>()),
        replicas in 0i32..300,
        network in prop_oneof![Just("10.200.0.0/24"), Just("10.0.0.0/29"), Just("bogus"), Just("10.0.0.0/31")],
        interval in duration(),
    ) {
        let mut n = crate::plan_inputs::node("address: 203.0.113.10\nssh: {secretRef: {name: s}}\n");
        n.spec.uplink.replicas = replicas;
        n.spec.tunnel.network = network.into();
        n.spec.edge.health_check.interval = interval;
        let mut input = crate::plan_inputs::input(n.clone(), pbs.clone(), Layout::default());
        input.keys = crate::plan_inputs::keys(u8::try_from(replicas.clamp(0, 255)).unwrap());
        let resolver = crate::plan_inputs::services().with_secret("default", "web-tls", crate::fixtures::fake_secret(true));
        let Ok(p) = plan(&input, &resolver) else { return Ok(()); };
        let total: usize = pbs.iter().map(|pb| pb.spec.bindings.len()).sum();
        prop_assert_eq!(p.outcomes.len(), total);
        for (i, a) in p.planned.iter().enumerate() {
            for b in &p.planned[i + 1..] {
                if a.protocol == b.protocol && a.listen_port == b.listen_port {
                    let both_named = matches!((&a.kind, &b.kind), (
                        tunnel::plan::BindingKind::Tcp { tls: Some(tunnel::plan::EdgeTls::Passthrough { .. }), .. },
                        tunnel::plan::BindingKind::Tcp { tls: Some(tunnel::plan::EdgeTls::Passthrough { .. }), .. },
                    ));
                    prop_assert!(both_named, "{:?} and {:?} share a port", a.id, b.id);
                    prop_assert_ne!(a.tunnel_port, b.tunnel_port);
                }
            }
        }
        let again = plan(&input, &resolver).unwrap();
        prop_assert_eq!(&p.vps_files, &again.vps_files);
    }
}
