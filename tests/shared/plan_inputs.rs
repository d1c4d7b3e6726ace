//! The planner's inputs, shared by the pure and the component tests (included by both with
//! `#[path]`): specs built from YAML, fixed keys, a resolver knowing a few Services, and every
//! configuration shape the edge supports.

use std::net::IpAddr;

use tunnel::crd::{EdgeNodeSpec, PortBindingSpec};
use tunnel::plan::{Keys, Layout, NodeInput, PlanInput, SourceInput, StaticResolver, TlsSecret};
use tunnel_contract::PrivateKey;

/// The EdgeNode `default/edge` from a YAML spec.
pub fn node(spec_yaml: &str) -> NodeInput {
    NodeInput {
        namespace: "default".into(),
        name: "edge".into(),
        spec: serde_yaml::from_str::<EdgeNodeSpec>(spec_yaml).unwrap(),
    }
}

/// A PortBinding referencing `default/edge`, created at `created` (seconds), from YAML
/// `bindings:` items.
pub fn pb(namespace: &str, name: &str, created: Option<i64>, bindings_yaml: &str) -> SourceInput {
    let spec: PortBindingSpec = serde_yaml::from_str(&format!(
        "edgeNodeRef: {{name: edge, namespace: default}}\nbindings:\n{bindings_yaml}"
    ))
    .unwrap();
    SourceInput {
        kind: tunnel::plan::SourceKind::PortBinding,
        problem: None,
        namespace: namespace.into(),
        name: name.into(),
        created,
        spec,
    }
}

/// Fixed keys: relay `[1; 32]`, uplink o `[7, 0xAA, 7, 7, 7, o, 7, ...]`.
pub fn keys(replicas: u8) -> Keys {
    Keys {
        relay_private: PrivateKey::from_bytes([1; 32]),
        uplink_public: (0..replicas)
            .map(|o| {
                let mut bytes = [7u8; 32];
                bytes[5] = o;
                bytes[1] = 0xAA;
                PrivateKey::from_bytes(bytes).public_key()
            })
            .collect(),
    }
}

/// A plan input.
pub fn input(node: NodeInput, pbs: Vec<SourceInput>, layout: Layout) -> PlanInput {
    let replicas = u8::try_from(node.spec.uplink.replicas.clamp(0, 255)).unwrap();
    PlanInput {
        node,
        sources: pbs,
        keys: keys(replicas),
        layout,
    }
}

/// A resolver knowing a few Services.
/// `resolver` with a ReferenceGrant in `default` letting the tests' other namespaces'
/// PortBindings use the EdgeNode `default/edge`.
pub fn edge_grants(resolver: StaticResolver) -> StaticResolver {
    use tunnel::crd::{FromKind, GrantFrom, GrantTo, ReferenceGrantSpec, ToKind};
    resolver.with_grant(
        "default",
        ReferenceGrantSpec {
            from: ["ns-a", "ns-b", "other", "team-b"]
                .iter()
                .map(|ns| GrantFrom {
                    kind: FromKind::PortBinding,
                    namespace: (*ns).into(),
                })
                .collect(),
            to: vec![GrantTo {
                kind: ToKind::EdgeNode,
                name: Some("edge".into()),
            }],
        },
    )
}

pub fn services() -> StaticResolver {
    edge_grants(StaticResolver::default())
        .with_service("default", "my-web", Some(ip("10.96.0.20")), &[8080])
        .with_service(
            "networking",
            "internal-ingress",
            Some(ip("10.96.0.30")),
            &[443, 80],
        )
        .with_service("default", "grpc-api", Some(ip("10.96.0.40")), &[50051])
        .with_service("default", "headless", None, &[80])
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A named configuration shape: the input and what its targets resolve to.
pub struct Shape {
    pub name: &'static str,
    pub input: PlanInput,
    pub resolver: StaticResolver,
}

const NODE_MIN: &str = "address: 203.0.113.10\nssh: {secretRef: {name: vps-ssh-secret}}\n";

/// Every configuration shape the edge supports, with TLS Secrets from `secret(with_ca)`.
pub fn shapes(layout: &Layout, secret: &dyn Fn(bool) -> TlsSecret) -> Vec<Shape> {
    let mk = |name, node_yaml: &str, pbs: Vec<SourceInput>, resolver: StaticResolver| Shape {
        name,
        input: input(node(node_yaml), pbs, layout.clone()),
        resolver,
    };
    vec![
        mk("empty", NODE_MIN, vec![], services()),
        mk(
            "tcp",
            NODE_MIN,
            vec![pb(
                "default",
                "public-web",
                Some(100),
                "- {name: http, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}",
            )],
            services(),
        ),
        mk(
            "tcp-proxy-v1",
            NODE_MIN,
            vec![pb(
                "default",
                "public-edge",
                Some(100),
                "- {name: https-web, protocol: TCP, listenPort: 443, tcp: {proxyProtocol: true}, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}",
            )],
            services(),
        ),
        mk(
            "tcp-proxy-v2",
            NODE_MIN,
            vec![pb(
                "default",
                "public-edge",
                Some(100),
                "- {name: https-web, protocol: TCP, listenPort: 443, tcp: {proxyProtocol: true, proxyProtocolVersion: v2, connectTimeout: 1500ms, idleTimeout: 10m}, target: {address: 10.1.2.3, port: 8443}}",
            )],
            services(),
        ),
        mk(
            "udp",
            "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nhost: {kernelMaxSocketBufferBytes: 8388608}\n",
            vec![pb(
                "default",
                "public-edge",
                Some(100),
                "- {name: dns-udp, protocol: UDP, listenPort: 53, udp: {sessionTimeout: 60s}, target: {address: 10.96.0.10, port: 53}}\n- {name: dns-tcp, protocol: TCP, listenPort: 53, target: {address: 10.96.0.10, port: 53}}",
            )],
            services(),
        ),
        mk(
            "passthrough-sni",
            NODE_MIN,
            vec![
                pb(
                    "default",
                    "sni-a",
                    Some(100),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough, serverNames: [a.example.com]}, target: {address: 10.1.0.1, port: 443}}",
                ),
                pb(
                    "team-b",
                    "sni-b",
                    Some(200),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough, serverNames: ['*.b.example.com', b.example.com]}, target: {address: 10.1.0.2, port: 443}}",
                ),
                pb(
                    "default",
                    "sni-default",
                    Some(300),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough}, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}",
                ),
            ],
            services(),
        ),
        mk(
            "offload",
            NODE_MIN,
            vec![pb(
                "default",
                "public-tls",
                Some(100),
                "- {name: https-offload, protocol: TCP, listenPort: 9443, tls: {mode: offload, secretRef: {name: web-tls}}, target: {service: {name: my-web, namespace: default, port: 8080}}}",
            )],
            services().with_secret("default", "web-tls", secret(false)),
        ),
        mk(
            "mutual",
            NODE_MIN,
            vec![pb(
                "default",
                "public-tls",
                Some(100),
                "- {name: grpc-mtls, protocol: TCP, listenPort: 9444, tls: {mode: mutual, secretRef: {name: grpc-mtls, namespace: default}}, target: {service: {name: grpc-api, namespace: default, port: 50051}}}",
            )],
            services().with_secret("default", "grpc-mtls", secret(true)),
        ),
        mk(
            "ha",
            "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nedge:\n  healthCheck: {interval: 500ms, timeout: 250ms, healthyThreshold: 1, unhealthyThreshold: 3}\n  outlierDetection: {consecutiveFailures: 3, interval: 2s, baseEjectionTime: 15s, maxEjectionPercent: 50}\ntunnel: {listenPort: 51821, network: 10.200.0.0/24, mtu: 1420, persistentKeepalive: 25}\nuplink: {namespace: tunnel, replicas: 3}\n",
            vec![pb(
                "default",
                "public-web",
                Some(100),
                "- {name: http, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}\n- {name: dns, protocol: UDP, listenPort: 53, target: {address: 10.96.0.10, port: 53}}",
            )],
            services(),
        ),
        mk(
            "policy",
            NODE_MIN,
            vec![
                pb(
                    "default",
                    "limited",
                    Some(100),
                    "- {name: ssh, protocol: TCP, listenPort: 2222, policy: {sourceRanges: [203.0.113.0/24, 198.51.100.7/32, '2001:db8::/32'], maxConnections: 20, connectionRate: {perSecond: 5, burst: 10}}, target: {address: 10.1.0.9, port: 22}}\n- {name: game, protocol: UDP, listenPort: 27015, policy: {sourceRanges: [198.51.100.0/24], maxConnections: 500}, target: {address: 10.1.0.10, port: 27015}}\n- {name: open, protocol: TCP, listenPort: 8080, policy: {maxConnections: 100}, target: {service: {name: my-web, namespace: default, port: 8080}}}\n- {name: nothing, protocol: TCP, listenPort: 8081, policy: {}, target: {service: {name: my-web, namespace: default, port: 8080}}}",
                ),
                pb(
                    "default",
                    "sni-a",
                    Some(200),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough, serverNames: [a.example.com]}, policy: {sourceRanges: [192.0.2.0/24]}, target: {address: 10.1.0.1, port: 443}}",
                ),
                pb(
                    "default",
                    "sni-default",
                    Some(300),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough}, policy: {sourceRanges: [10.0.0.0/8]}, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}",
                ),
                pb(
                    "default",
                    "tls-guarded",
                    Some(400),
                    "- {name: https, protocol: TCP, listenPort: 9443, tls: {mode: offload, secretRef: {name: web-tls}}, policy: {sourceRanges: [203.0.113.0/24], connectionRate: {perSecond: 100}}, target: {service: {name: my-web, namespace: default, port: 8080}}}",
                ),
            ],
            services().with_secret("default", "web-tls", secret(false)),
        ),
        mk(
            "ipv6",
            "address: vps.example.com\npublicAddresses: [203.0.113.10, '2001:db8::10']\nssh: {secretRef: {name: s}}\nhost: {kernelMaxSocketBufferBytes: 8388608}\n",
            vec![
                pb(
                    "default",
                    "dual",
                    Some(100),
                    "- {name: http, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}\n- {name: pp, protocol: TCP, listenPort: 8443, tcp: {proxyProtocol: true, proxyProtocolVersion: v2}, target: {address: 10.1.2.3, port: 8443}}\n- {name: dns, protocol: UDP, listenPort: 53, policy: {sourceRanges: [198.51.100.0/24, '2001:db8:1::/48']}, target: {address: 10.96.0.10, port: 53}}\n- {name: ssh, protocol: TCP, listenPort: 2222, policy: {sourceRanges: ['2001:db8:1::/48']}, target: {address: 10.1.0.9, port: 22}}\n- {name: https, protocol: TCP, listenPort: 9443, tls: {mode: offload, secretRef: {name: web-tls}}, target: {service: {name: my-web, namespace: default, port: 8080}}}",
                ),
                pb(
                    "default",
                    "sni-a",
                    Some(200),
                    "- {name: web, protocol: TCP, listenPort: 443, tls: {mode: passthrough, serverNames: [a.example.com]}, target: {address: 10.1.0.1, port: 443}}",
                ),
            ],
            services().with_secret("default", "web-tls", secret(false)),
        ),
        mk(
            "conflicts",
            NODE_MIN,
            vec![
                pb(
                    "default",
                    "old",
                    Some(100),
                    "- {name: http, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}",
                ),
                pb(
                    "default",
                    "new",
                    Some(200),
                    "- {name: http, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}\n- {name: other, protocol: TCP, listenPort: 81, target: {service: {name: my-web, namespace: default, port: 8080}}}\n- {name: wg, protocol: UDP, listenPort: 51821, target: {address: 10.1.1.1, port: 1}}\n- {name: gone, protocol: TCP, listenPort: 82, target: {service: {name: nope, namespace: default, port: 80}}}\n- {name: hl, protocol: TCP, listenPort: 83, target: {service: {name: headless, namespace: default, port: 80}}}",
                ),
            ],
            services(),
        ),
    ]
}
