//! Shared helpers of the planner and edge tests: specs built from YAML, fixed keys, a resolver,
//! certificates made with rcgen, and a static bootstrap that lets `envoy --mode validate`
//! check the LDS, CDS and SDS documents (validate mode does not read file-based xDS).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bed;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use tunnel::crd::{EdgeNodeSpec, PortBindingSpec};
use tunnel::plan::{
    Keys, Layout, NodeInput, Plan, PlanInput, PortBindingInput, StaticResolver, TlsSecret,
};
use uplink::PrivateKey;

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
pub fn pb(
    namespace: &str,
    name: &str,
    created: Option<i64>,
    bindings_yaml: &str,
) -> PortBindingInput {
    let spec: PortBindingSpec = serde_yaml::from_str(&format!(
        "edgeNodeRef: {{name: edge, namespace: default}}\nbindings:\n{bindings_yaml}"
    ))
    .unwrap();
    PortBindingInput {
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
pub fn input(node: NodeInput, pbs: Vec<PortBindingInput>, layout: Layout) -> PlanInput {
    let replicas = u8::try_from(node.spec.uplink.replicas.clamp(0, 255)).unwrap();
    PlanInput {
        node,
        port_bindings: pbs,
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

/// A CA and a server certificate it signed, PEM.
pub struct Pki {
    pub ca_pem: String,
    pub ca_key: rcgen::KeyPair,
    pub ca_params: rcgen::CertificateParams,
    pub server_pem: String,
    pub server_key_pem: String,
}

pub fn pki(server_names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut pki = Pki {
        ca_pem: ca_cert.pem(),
        ca_key,
        ca_params,
        server_pem: String::new(),
        server_key_pem: String::new(),
    };
    let (cert, key) = leaf(&pki, server_names);
    pki.server_pem = cert;
    pki.server_key_pem = key;
    pki
}

/// A certificate for `names` signed by the PKI's CA: (cert PEM, key PEM).
pub fn leaf(pki: &Pki, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(owned).unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("leaf"),
    );
    let issuer = rcgen::Issuer::from_params(&pki.ca_params, &pki.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn tls_secret(pki: &Pki, with_ca: bool) -> TlsSecret {
    TlsSecret {
        certificate_chain: Some(pki.server_pem.clone()),
        private_key: Some(pki.server_key_pem.clone()),
        ca: with_ca.then(|| pki.ca_pem.clone()),
    }
}

/// Writes every VPS file of the plan: files already under `root` where they say, the others
/// (e.g. `/etc/tunnel/relay.json`) re-rooted under it.
pub fn write_files(plan: &Plan, root: &Path) {
    for f in &plan.vps_files {
        let path = if Path::new(&f.path).starts_with(root) {
            Path::new(&f.path).to_path_buf()
        } else {
            root.join(f.path.trim_start_matches('/'))
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.contents).unwrap();
    }
}

/// A bootstrap with the plan's listeners, clusters and SDS secrets as static resources (each
/// SDS reference made static), so `envoy --mode validate` checks all of them.
pub fn static_bootstrap(plan: &Plan, layout: &Layout) -> serde_json::Value {
    let doc = |path: &str| -> serde_json::Value {
        serde_yaml::from_str(&plan.vps_file(path).unwrap().contents).unwrap()
    };
    let mut listeners = doc(&layout.lds())["resources"].clone();
    strip_sds_config(&mut listeners);
    let clusters = doc(&layout.cds())["resources"].clone();
    let mut secrets = Vec::new();
    for f in &plan.vps_files {
        if f.path.ends_with(".sds.yaml") {
            let v: serde_json::Value = serde_yaml::from_str(&f.contents).unwrap();
            // Envoy's file-based SDS takes exactly one secret per file.
            assert_eq!(v["resources"].as_array().unwrap().len(), 1, "{}", f.path);
            for mut s in v["resources"].as_array().unwrap().clone() {
                s.as_object_mut().unwrap().remove("@type");
                secrets.push(s);
            }
        }
    }
    let mut listeners = listeners.as_array().unwrap().clone();
    let mut clusters = clusters.as_array().unwrap().clone();
    for r in listeners.iter_mut().chain(clusters.iter_mut()) {
        r.as_object_mut().unwrap().remove("@type");
    }
    let boot: serde_json::Value =
        serde_yaml::from_str(&plan.vps_file(&layout.bootstrap()).unwrap().contents).unwrap();
    serde_json::json!({
        "node": boot["node"],
        "admin": boot["admin"],
        "overload_manager": boot["overload_manager"],
        "static_resources": { "listeners": listeners, "clusters": clusters, "secrets": secrets },
    })
}

fn strip_sds_config(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.contains_key("sds_config") && map.contains_key("name") {
                map.remove("sds_config");
            }
            for (_, child) in map.iter_mut() {
                strip_sds_config(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_sds_config),
        _ => {}
    }
}

/// Validates the plan with the real Envoy: the bootstrap as written, and every listener,
/// cluster and secret through a static bootstrap.
pub fn validate_with_envoy(plan: &Plan, layout: &Layout, dir: &Path) {
    write_files(plan, dir);
    let boot = Path::new(&layout.bootstrap()).to_path_buf();
    testbed::envoy::validate(&boot).unwrap_or_else(|e| panic!("bootstrap: {e}"));
    let stat = dir.join("static.yaml");
    std::fs::write(
        &stat,
        serde_yaml::to_string(&static_bootstrap(plan, layout)).unwrap(),
    )
    .unwrap();
    testbed::envoy::validate(&stat).unwrap_or_else(|e| {
        panic!(
            "static bootstrap: {e}\n{}",
            std::fs::read_to_string(&stat).unwrap()
        )
    });
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
    let mk = |name, node_yaml: &str, pbs: Vec<PortBindingInput>, resolver: StaticResolver| Shape {
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

/// The outcomes of a plan as text lines.
pub fn outcomes_text(plan: &Plan) -> String {
    let mut out = String::new();
    for o in &plan.outcomes {
        let (reason, message) = o
            .refusal
            .as_ref()
            .map_or(("", ""), |r| (r.reason.as_str(), r.message.as_str()));
        let _ = writeln!(
            out,
            "{}/{} {} {}/{}: {} {} {}",
            o.id.namespace,
            o.id.port_binding,
            o.id.binding,
            o.protocol,
            o.listen_port,
            o.kind().as_str(),
            reason,
            message
        );
    }
    out
}

/// A TLS Secret with fixed, fake PEM contents (for golden files; Envoy would refuse it).
pub fn fake_secret(with_ca: bool) -> TlsSecret {
    TlsSecret {
        certificate_chain: Some(
            "-----BEGIN CERTIFICATE-----\nZmFrZSBjZXJ0\n-----END CERTIFICATE-----\n".into(),
        ),
        private_key: Some(
            "-----BEGIN PRIVATE KEY-----\nZmFrZSBrZXk=\n-----END PRIVATE KEY-----\n".into(),
        ),
        ca: with_ca.then(|| {
            "-----BEGIN CERTIFICATE-----\nZmFrZSBjYQ==\n-----END CERTIFICATE-----\n".into()
        }),
    }
}

/// A client certificate signed by the PKI's CA: (cert PEM, key PEM).
pub fn client_cert(pki: &Pki, name: &str) -> (String, String) {
    leaf(pki, &[name])
}
