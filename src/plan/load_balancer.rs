//! Services of `type: LoadBalancer` as a source of bindings, pure (DESIGN.md §3): which
//! Services are ours, which EdgeNode serves each, and how its ports become bindings in the same
//! table as the PortBindings' ([`super::bindings`]).
//!
//! A Service is ours when its `spec.loadBalancerClass` is [`CLASS`] (or it has no class and
//! the operator takes classless Services, `--load-balancer-classless`). Its EdgeNodes are those
//! the annotation [`ANNOTATION_EDGE_NODE`] names (comma-separated, each `name` in the Service's
//! namespace or `namespace/name`, which needs a grant there like any reference; each serves
//! every port, the Service's ingress lists them all), else the EdgeNode marked
//! [`ANNOTATION_DEFAULT`]: one in the Service's own namespace first, else the only one in the
//! cluster; none, or several at the same level, is a problem the Service's status names.
//!
//! Each port is one binding (`listenPort` = the port, target = the Service itself, its
//! ClusterIP and that port). Annotations say what a Service cannot: PROXY protocol, the UDP
//! session timeout, TLS at the edge, connection limits; `spec.loadBalancerSourceRanges` is the
//! binding's allow-list. An annotation that does not parse refuses every port of the Service
//! with a message naming it, and the Service claims no port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use sha2::{Digest, Sha256};

use super::bindings::SourceInput;
use super::outcome::{Reason, Refusal, SourceKind};
use crate::crd::{
    Binding, BindingPolicy, BindingTarget, ConnectionRate, EdgeNode, PortBindingSpec, Protocol,
    ProxyProtocolVersion, SecretReference, ServicePort, ServiceTarget, TcpParams, TlsMode,
    TlsParams, UdpParams,
};
use crate::object_key::ObjectKey;

/// The `spec.loadBalancerClass` of Services an EdgeNode serves.
pub const CLASS: &str = "tunnel.achetronic.com/edge-node";
/// On a Service: the EdgeNodes that serve it, comma-separated (`name` or `namespace/name`).
pub const ANNOTATION_EDGE_NODE: &str = "tunnel.achetronic.com/edge-node";
/// On an EdgeNode, `"true"`: it serves the Services of our class that name none.
pub const ANNOTATION_DEFAULT: &str = "tunnel.achetronic.com/default-load-balancer";
/// `v1` or `v2`: a PROXY protocol header to the target on every TCP port.
pub const ANNOTATION_PROXY_PROTOCOL: &str = "tunnel.achetronic.com/proxy-protocol";
/// A duration (`60s`): the UDP ports' session timeout.
pub const ANNOTATION_UDP_SESSION_TIMEOUT: &str = "tunnel.achetronic.com/udp-session-timeout";
/// `passthrough`, `offload` or `mutual`: TLS at the edge on the TLS ports.
pub const ANNOTATION_TLS_MODE: &str = "tunnel.achetronic.com/tls-mode";
/// The TLS Secret of offload and mutual (`name` or `namespace/name`).
pub const ANNOTATION_TLS_SECRET: &str = "tunnel.achetronic.com/tls-secret";
/// Comma-separated SNI names of a passthrough port.
pub const ANNOTATION_TLS_SERVER_NAMES: &str = "tunnel.achetronic.com/tls-server-names";
/// Comma-separated ports (numbers or names) that get the TLS mode; absent: every TCP port.
pub const ANNOTATION_TLS_PORTS: &str = "tunnel.achetronic.com/tls-ports";
/// Most concurrent connections (TCP) or sessions (UDP) per port.
pub const ANNOTATION_MAX_CONNECTIONS: &str = "tunnel.achetronic.com/max-connections";
/// New TCP connections per second per port: `20`, or `20/40` with a burst of 40.
pub const ANNOTATION_CONNECTION_RATE: &str = "tunnel.achetronic.com/connection-rate";
/// Kubernetes' older spelling of `spec.loadBalancerSourceRanges` (comma-separated), read when
/// the field is empty.
pub const ANNOTATION_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// Our finalizer on the Services we serve: the status we wrote is cleared before it goes.
pub const FINALIZER: &str = "tunnel.achetronic.com/load-balancer";

/// The most ports of one Service that are served (a PortBinding's limit on its bindings).
pub const MAX_PORTS: usize = 64;

/// Whether the operator takes Services of type LoadBalancer with no class too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadBalancerSettings {
    /// `--load-balancer-classless`.
    pub classless: bool,
}

/// Whether `svc` is a LoadBalancer Service this operator serves (being deleted or not).
pub fn is_ours(svc: &Service, settings: LoadBalancerSettings) -> bool {
    let Some(spec) = &svc.spec else { return false };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        Some(class) => class == CLASS,
        None => settings.classless,
    }
}

/// Whether `svc` carries our finalizer.
pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Why a Service of ours has no EdgeNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoEdgeNode {
    /// No annotation and no EdgeNode marked default.
    Missing,
    /// No annotation and several defaults at the same level.
    Ambiguous(Vec<ObjectKey>),
    /// The annotation is not `name` or `namespace/name`.
    Invalid(String),
}

impl NoEdgeNode {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "EdgeNodeNotFound",
            Self::Ambiguous(_) => "EdgeNodeAmbiguous",
            Self::Invalid(_) => "InvalidSpec",
        }
    }

    /// What to do.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => format!(
                "no EdgeNode serves this Service: annotate it with {ANNOTATION_EDGE_NODE}=<name> (or <namespace>/<name>), or mark one EdgeNode with {ANNOTATION_DEFAULT}=true"
            ),
            Self::Ambiguous(nodes) => format!(
                "several EdgeNodes are marked {ANNOTATION_DEFAULT}=true ({}): annotate the Service with {ANNOTATION_EDGE_NODE} to choose one, or keep one default",
                nodes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Invalid(value) => format!(
                "annotation {ANNOTATION_EDGE_NODE}: {value:?} is not a comma-separated list of at most {MAX_EDGE_NODES} <name> or <namespace>/<name>"
            ),
        }
    }
}

/// The most EdgeNodes one Service names (a PortBinding's limit on `edgeNodeRefs`).
pub const MAX_EDGE_NODES: usize = 8;

/// The EdgeNodes that serve `svc`, sorted: the annotation's, else the default (see the module
/// doc).
pub fn edge_nodes_of(
    svc: &Service,
    nodes: &[impl AsRef<EdgeNode>],
) -> Result<Vec<ObjectKey>, NoEdgeNode> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    if let Some(value) = annotation(svc, ANNOTATION_EDGE_NODE) {
        return parse_references(value, &ns).ok_or_else(|| NoEdgeNode::Invalid(value.to_owned()));
    }
    let defaults: Vec<ObjectKey> = nodes
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_DEFAULT))
                .is_some_and(|v| v == "true")
                && n.metadata.deletion_timestamp.is_none()
        })
        .map(ObjectKey::of)
        .collect();
    let own: Vec<ObjectKey> = defaults
        .iter()
        .filter(|k| k.namespace == ns)
        .cloned()
        .collect();
    let level = if own.is_empty() { defaults } else { own };
    match level.len() {
        0 => Err(NoEdgeNode::Missing),
        1 => Ok(level),
        _ => Err(NoEdgeNode::Ambiguous(level)),
    }
}

/// A comma-separated list of [`parse_reference`]s, at most [`MAX_EDGE_NODES`], sorted and
/// each once; `None` when one does not parse or there are none or too many.
pub fn parse_references(value: &str, namespace: &str) -> Option<Vec<ObjectKey>> {
    let mut keys = value
        .split(',')
        .map(|r| parse_reference(r.trim(), namespace))
        .collect::<Option<Vec<ObjectKey>>>()?;
    keys.sort();
    keys.dedup();
    (!keys.is_empty() && keys.len() <= MAX_EDGE_NODES).then_some(keys)
}

/// `name` (in `namespace`) or `namespace/name`, each a DNS label or subdomain.
fn parse_reference(value: &str, namespace: &str) -> Option<ObjectKey> {
    let (ns, name) = value.split_once('/').unwrap_or((namespace, value));
    (dns_subdomain(ns) && dns_subdomain(name) && ns.len() <= 63).then(|| ObjectKey::new(ns, name))
}

/// Lower-case letters, digits, `-` and `.`, neither first nor last; at most 253 characters.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

/// The TLS Secret the annotations of `svc` name, if any.
pub fn tls_secret_of(svc: &Service) -> Option<ObjectKey> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    annotation(svc, ANNOTATION_TLS_SECRET).and_then(|r| parse_reference(r, ns))
}

/// The Services of `services` that `node` serves: ours, not being deleted, choosing it.
pub fn served_by<'a>(
    node: &'a ObjectKey,
    services: &'a [impl AsRef<Service>],
    nodes: &'a [impl AsRef<EdgeNode>],
    settings: LoadBalancerSettings,
) -> impl Iterator<Item = &'a Service> + 'a {
    services.iter().map(AsRef::as_ref).filter(move |svc| {
        is_ours(svc, settings)
            && svc.metadata.deletion_timestamp.is_none()
            && edge_nodes_of(svc, nodes).is_ok_and(|n| n.contains(node))
    })
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// A 64-bit digest of everything of `svc` the pass reads (its spec, our annotations, whether
/// it is being deleted): the Manager and the EdgeNode compare it to know whether a pass
/// already read the Service as it is. Our own status and finalizer writes do not change it.
pub fn version(svc: &Service) -> i64 {
    let ours: BTreeMap<&String, &String> = svc
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("tunnel.achetronic.com/") || *k == ANNOTATION_SOURCE_RANGES)
        .collect();
    let material = serde_json::json!({
        "spec": svc.spec,
        "annotations": ours,
        "deleting": svc.metadata.deletion_timestamp.is_some(),
    });
    let digest = Sha256::digest(material.to_string().as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// The name of a port's binding: the port's name, else `<protocol>-<port>` (`tcp-80`).
pub fn binding_name(port: &k8s_openapi::api::core::v1::ServicePort) -> String {
    match port.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!(
            "{}-{}",
            port.protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase(),
            port.port
        ),
    }
}

/// The ports of `svc` that are not served at all (SCTP: Envoy has none), for its status.
pub fn unserved_ports(svc: &Service) -> Vec<String> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| protocol(p).is_none())
        .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
        .collect()
}

fn protocol(port: &k8s_openapi::api::core::v1::ServicePort) -> Option<Protocol> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// `svc` as a source of bindings on `node` (the EdgeNode [`edge_node_of`] chose, whose
/// `spec.address` is `address`; the table checks the grant).
pub fn source(svc: &Service, node: &ObjectKey, address: &str) -> SourceInput {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let settings = PortSettings::of(svc, &namespace, node, address);
    let (bindings, problem) = match settings {
        Ok(settings) => (ports_of(svc, &namespace, &name, &settings), None),
        Err(refusal) => (
            ports_of(svc, &namespace, &name, &PortSettings::default()),
            Some(refusal),
        ),
    };
    SourceInput {
        kind: SourceKind::Service,
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        spec: PortBindingSpec::served_by(std::slice::from_ref(node), bindings),
        namespace,
        name,
        problem,
    }
}

fn ports_of(svc: &Service, namespace: &str, name: &str, settings: &PortSettings) -> Vec<Binding> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = protocol(p)?;
            let listen_port = u16::try_from(p.port).ok()?;
            let tcp = protocol == Protocol::Tcp;
            let policy = settings.policy(tcp);
            Some(Binding {
                name: binding_name(p),
                protocol,
                listen_port,
                tcp: tcp.then(|| settings.tcp.clone()),
                udp: (!tcp).then(|| settings.udp.clone()),
                tls: settings
                    .tls
                    .as_ref()
                    .filter(|_| tcp && settings.tls_applies(p))
                    .cloned(),
                target: BindingTarget {
                    service: Some(ServiceTarget {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                        port: ServicePort::Number(listen_port),
                    }),
                    address: None,
                    port: None,
                },
                policy,
            })
        })
        .collect()
}

/// What the annotations and the spec say for every port.
#[derive(Debug, Clone, Default)]
struct PortSettings {
    tcp: TcpParams,
    udp: UdpParams,
    tls: Option<TlsParams>,
    /// `None`: every TCP port.
    tls_ports: Option<Vec<String>>,
    source_ranges: Vec<String>,
    max_connections: Option<u32>,
    connection_rate: Option<ConnectionRate>,
}

impl PortSettings {
    fn of(
        svc: &Service,
        namespace: &str,
        node: &ObjectKey,
        address: &str,
    ) -> Result<Self, Refusal> {
        let ports = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .count();
        if ports > MAX_PORTS {
            // As a PortBinding's bindings: each port is a listener and a cluster on the VPS.
            return Err(Refusal {
                reason: Reason::InvalidSpec,
                message: format!(
                    "spec.ports: {ports} ports, at most {MAX_PORTS} are served per Service"
                ),
            });
        }
        let mut s = Self::default();
        if let Some(v) = annotation(svc, ANNOTATION_PROXY_PROTOCOL) {
            s.tcp.proxy_protocol = true;
            s.tcp.proxy_protocol_version = match v {
                "v1" => ProxyProtocolVersion::V1,
                "v2" => ProxyProtocolVersion::V2,
                _ => return Err(invalid(ANNOTATION_PROXY_PROTOCOL, v, "v1 or v2")),
            };
        }
        if let Some(v) = annotation(svc, ANNOTATION_UDP_SESSION_TIMEOUT) {
            crate::duration::GoDuration::parse_positive(v)
                .map_err(|e| invalid(ANNOTATION_UDP_SESSION_TIMEOUT, v, &e.to_string()))?;
            v.clone_into(&mut s.udp.session_timeout);
        }
        if let Some(v) = annotation(svc, ANNOTATION_TLS_MODE) {
            let mode = match v {
                "passthrough" => TlsMode::Passthrough,
                "offload" => TlsMode::Offload,
                "mutual" => TlsMode::Mutual,
                _ => {
                    return Err(invalid(
                        ANNOTATION_TLS_MODE,
                        v,
                        "passthrough, offload or mutual",
                    ));
                }
            };
            let secret_ref = annotation(svc, ANNOTATION_TLS_SECRET)
                .map(|r| {
                    parse_reference(r, namespace)
                        .map(|k| SecretReference {
                            name: k.name,
                            namespace: Some(k.namespace),
                        })
                        .ok_or_else(|| {
                            invalid(ANNOTATION_TLS_SECRET, r, "<name> or <namespace>/<name>")
                        })
                })
                .transpose()?;
            if mode != TlsMode::Passthrough && secret_ref.is_none() {
                return Err(Refusal {
                    reason: Reason::InvalidSpec,
                    message: format!(
                        "annotation {ANNOTATION_TLS_MODE}={v} needs the annotation {ANNOTATION_TLS_SECRET}"
                    ),
                });
            }
            let server_names = list(annotation(svc, ANNOTATION_TLS_SERVER_NAMES));
            if let Some(bad) = server_names.iter().find(|n| !server_name(n)) {
                return Err(invalid(
                    ANNOTATION_TLS_SERVER_NAMES,
                    bad,
                    "a DNS name or *.domain",
                ));
            }
            s.tls = Some(TlsParams {
                mode,
                secret_ref,
                server_names,
            });
            s.tls_ports = annotation(svc, ANNOTATION_TLS_PORTS).map(|v| list(Some(v)));
        }
        if let Some(v) = annotation(svc, ANNOTATION_MAX_CONNECTIONS) {
            s.max_connections = Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(ANNOTATION_MAX_CONNECTIONS, v, "a whole number > 0"))?,
            );
        }
        if let Some(v) = annotation(svc, ANNOTATION_CONNECTION_RATE) {
            let (rate, burst) = match v.split_once('/') {
                Some((r, b)) => (r, Some(b)),
                None => (v, None),
            };
            let number = |x: &str| x.trim().parse::<u32>().ok().filter(|n| *n > 0);
            let per_second = number(rate).ok_or_else(|| {
                invalid(
                    ANNOTATION_CONNECTION_RATE,
                    v,
                    "<perSecond> or <perSecond>/<burst>",
                )
            })?;
            let burst = match burst {
                None => None,
                Some(b) => Some(number(b).ok_or_else(|| {
                    invalid(
                        ANNOTATION_CONNECTION_RATE,
                        v,
                        "<perSecond> or <perSecond>/<burst>",
                    )
                })?),
            };
            s.connection_rate = Some(ConnectionRate { per_second, burst });
        }
        let spec_ranges = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_source_ranges.clone())
            .unwrap_or_default();
        s.source_ranges = if spec_ranges.is_empty() {
            list(annotation(svc, ANNOTATION_SOURCE_RANGES))
        } else {
            spec_ranges
        };
        let limit = crate::crd::MAX_SOURCE_RANGES;
        if s.source_ranges.len() > limit {
            return Err(Refusal {
                reason: Reason::InvalidSpec,
                message: format!(
                    "spec.loadBalancerSourceRanges: {} ranges, at most {limit}",
                    s.source_ranges.len()
                ),
            });
        }
        // Kubernetes accepts a range with host bits (`10.0.0.1/8`): it means its network.
        for (i, r) in s.source_ranges.iter_mut().enumerate() {
            let net = r.trim().parse::<ipnet::IpNet>().map_err(|_| Refusal {
                reason: Reason::InvalidSpec,
                message: format!(
                    "spec.loadBalancerSourceRanges[{i}]: {r:?} is not a CIDR (e.g. 203.0.113.0/24)"
                ),
            })?;
            *r = net.trunc().to_string();
        }
        if let Some(ip) = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|ip| !ip.is_empty() && *ip != address)
        {
            return Err(Refusal {
                reason: Reason::InvalidSpec,
                message: format!(
                    "spec.loadBalancerIP {ip} is not the address of EdgeNode {node} ({address}); remove it or set it to {address}"
                ),
            });
        }
        Ok(s)
    }

    fn tls_applies(&self, port: &k8s_openapi::api::core::v1::ServicePort) -> bool {
        match &self.tls_ports {
            None => true,
            Some(ports) => ports
                .iter()
                .any(|p| *p == port.port.to_string() || Some(p.as_str()) == port.name.as_deref()),
        }
    }

    fn policy(&self, tcp: bool) -> Option<BindingPolicy> {
        let policy = BindingPolicy {
            source_ranges: self.source_ranges.clone(),
            max_connections: self.max_connections,
            connection_rate: self.connection_rate.clone().filter(|_| tcp),
        };
        (policy != BindingPolicy::default()).then_some(policy)
    }
}

fn invalid(annotation: &str, value: &str, expected: &str) -> Refusal {
    Refusal {
        reason: Reason::InvalidSpec,
        message: format!("annotation {annotation}: {value:?} is not {expected}"),
    }
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An SNI name as `tls.serverNames` takes it: a DNS name, or `*.` and one.
fn server_name(name: &str) -> bool {
    dns_subdomain(name.strip_prefix("*.").unwrap_or(name)) && name.len() <= 253
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn game(extra_metadata: &str, extra_spec: &str) -> Service {
        svc(&format!(
            "metadata:\n  name: game\n  namespace: apps\n  creationTimestamp: '2026-01-01T00:00:00Z'\n{extra_metadata}spec:\n  type: LoadBalancer\n  loadBalancerClass: {CLASS}\n  clusterIP: 10.96.0.40\n  ports:\n  - {{name: tcp, port: 7000, protocol: TCP}}\n  - {{name: udp, port: 7000, protocol: UDP}}\n  - {{port: 9, protocol: SCTP}}\n{extra_spec}"
        ))
    }

    fn node(namespace: &str, name: &str, default: bool) -> std::sync::Arc<EdgeNode> {
        let annotations = if default {
            format!("  annotations: {{{ANNOTATION_DEFAULT}: 'true'}}\n")
        } else {
            String::new()
        };
        std::sync::Arc::new(serde_yaml::from_str(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{annotations}spec:\n  address: 203.0.113.10\n  ssh: {{secretRef: {{name: s}}}}\n"
        ))
        .unwrap())
    }

    fn on(annotations: &str) -> String {
        format!("  annotations:\n{annotations}")
    }

    #[test]
    fn only_load_balancers_of_our_class_are_ours_unless_classless_is_taken() {
        let classless = LoadBalancerSettings { classless: true };
        assert!(is_ours(&game("", ""), LoadBalancerSettings::default()));
        let none = svc("metadata: {name: x}\nspec: {type: LoadBalancer}\n");
        assert!(!is_ours(&none, LoadBalancerSettings::default()));
        assert!(is_ours(&none, classless));
        let other = svc(
            "metadata: {name: x}\nspec: {type: LoadBalancer, loadBalancerClass: example.com/lb}\n",
        );
        assert!(
            !is_ours(&other, classless),
            "another controller's class, always"
        );
        let cluster_ip = svc("metadata: {name: x}\nspec: {type: ClusterIP}\n");
        assert!(!is_ours(&cluster_ip, classless));
    }

    #[test]
    fn the_annotation_names_the_edge_node_else_the_default_nearest_first() {
        let nodes = vec![
            node("apps", "near", true),
            node("edge", "far", true),
            node("edge", "plain", false),
        ];
        let named = game(&on("    tunnel.achetronic.com/edge-node: edge/plain\n"), "");
        assert_eq!(
            edge_nodes_of(&named, &nodes),
            Ok(vec![ObjectKey::new("edge", "plain")])
        );
        let short = game(&on("    tunnel.achetronic.com/edge-node: plain\n"), "");
        assert_eq!(
            edge_nodes_of(&short, &nodes),
            Ok(vec![ObjectKey::new("apps", "plain")])
        );
        assert_eq!(
            edge_nodes_of(&game("", ""), &nodes),
            Ok(vec![ObjectKey::new("apps", "near")]),
            "a default in the Service's namespace comes first"
        );
        let elsewhere = vec![node("edge", "far", true), node("edge", "plain", false)];
        assert_eq!(
            edge_nodes_of(&game("", ""), &elsewhere),
            Ok(vec![ObjectKey::new("edge", "far")])
        );
        let two = vec![node("edge", "a", true), node("other", "b", true)];
        let ambiguous = edge_nodes_of(&game("", ""), &two).unwrap_err();
        assert_eq!(ambiguous.reason(), "EdgeNodeAmbiguous");
        assert!(ambiguous.message().contains("edge/a") && ambiguous.message().contains("other/b"));
        let missing = edge_nodes_of(&game("", ""), &[node("edge", "plain", false)]).unwrap_err();
        assert_eq!(missing, NoEdgeNode::Missing);
        assert!(missing.message().contains(ANNOTATION_EDGE_NODE));
        let bad = game(&on("    tunnel.achetronic.com/edge-node: 'a/b/c'\n"), "");
        assert_eq!(
            edge_nodes_of(&bad, &nodes).unwrap_err().reason(),
            "InvalidSpec"
        );
        let several = game(
            &on("    tunnel.achetronic.com/edge-node: 'plain, edge/far,plain'\n"),
            "",
        );
        assert_eq!(
            edge_nodes_of(&several, &nodes),
            Ok(vec![
                ObjectKey::new("apps", "plain"),
                ObjectKey::new("edge", "far")
            ]),
            "several, each once, sorted"
        );
        let empty_one = game(&on("    tunnel.achetronic.com/edge-node: 'a,,b'\n"), "");
        assert!(edge_nodes_of(&empty_one, &nodes).is_err());
        let too_many = (0..=MAX_EDGE_NODES)
            .map(|i| format!("n{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let too_many = game(
            &on(&format!(
                "    tunnel.achetronic.com/edge-node: '{too_many}'\n"
            )),
            "",
        );
        assert!(edge_nodes_of(&too_many, &nodes).is_err());
    }

    #[test]
    fn each_tcp_or_udp_port_is_a_binding_to_the_service_itself() {
        let s = source(
            &game("", ""),
            &ObjectKey::new("edge", "vps"),
            "203.0.113.10",
        );
        assert_eq!(
            (s.kind, s.namespace.as_str(), s.name.as_str()),
            (SourceKind::Service, "apps", "game")
        );
        assert_eq!(s.created, Some(1_767_225_600));
        assert_eq!(s.problem, None);
        assert_eq!(s.spec.edge_nodes("apps"), [ObjectKey::new("edge", "vps")]);
        let names: Vec<(&str, Protocol, u16)> = s
            .spec
            .bindings
            .iter()
            .map(|b| (b.name.as_str(), b.protocol, b.listen_port))
            .collect();
        assert_eq!(
            names,
            [("tcp", Protocol::Tcp, 7000), ("udp", Protocol::Udp, 7000)]
        );
        let target = s.spec.bindings[0].target.service.clone().unwrap();
        assert_eq!(
            (target.namespace.as_str(), target.name.as_str(), target.port),
            ("apps", "game", ServicePort::Number(7000))
        );
        assert_eq!(unserved_ports(&game("", "")), ["9/SCTP"]);
        assert!(
            s.spec
                .bindings
                .iter()
                .all(|b| b.policy.is_none() && b.tls.is_none())
        );
    }

    #[test]
    fn annotations_and_source_ranges_become_the_bindings_settings() {
        let svc = game(
            &on(
                "    tunnel.achetronic.com/proxy-protocol: v2\n    tunnel.achetronic.com/udp-session-timeout: 90s\n    tunnel.achetronic.com/tls-mode: offload\n    tunnel.achetronic.com/tls-secret: game-tls\n    tunnel.achetronic.com/max-connections: '100'\n    tunnel.achetronic.com/connection-rate: 20/40\n",
            ),
            "  loadBalancerSourceRanges: [203.0.113.0/24]\n",
        );
        let s = source(&svc, &ObjectKey::new("edge", "vps"), "203.0.113.10");
        assert_eq!(s.problem, None);
        let (tcp, udp) = (&s.spec.bindings[0], &s.spec.bindings[1]);
        let params = tcp.tcp.clone().unwrap();
        assert!(params.proxy_protocol && params.proxy_protocol_version == ProxyProtocolVersion::V2);
        assert_eq!(udp.udp.clone().unwrap().session_timeout, "90s");
        let tls = tcp.tls.clone().unwrap();
        assert_eq!(tls.mode, TlsMode::Offload);
        assert_eq!(tls.secret_ref.unwrap().namespace.as_deref(), Some("apps"));
        assert!(udp.tls.is_none(), "TLS is for TCP ports");
        let policy = tcp.policy.clone().unwrap();
        assert_eq!(policy.source_ranges, ["203.0.113.0/24"]);
        let host_bits = game("", "  loadBalancerSourceRanges: [203.0.113.7/24]\n");
        let s = source(&host_bits, &ObjectKey::new("edge", "vps"), "203.0.113.10");
        let ranges = &s.spec.bindings[0].policy.as_ref().unwrap().source_ranges;
        assert_eq!(
            ranges,
            &["203.0.113.0/24".to_owned()],
            "its network, as Kubernetes means it"
        );
        assert_eq!(policy.max_connections, Some(100));
        assert_eq!(
            policy.connection_rate,
            Some(ConnectionRate {
                per_second: 20,
                burst: Some(40)
            })
        );
        let udp_policy = udp.policy.clone().unwrap();
        assert_eq!(udp_policy.connection_rate, None, "a rate is for TCP ports");
        assert_eq!(udp_policy.max_connections, Some(100));
        assert_eq!(
            tls_secret_of(&svc),
            Some(ObjectKey::new("apps", "game-tls"))
        );
        let legacy = game(
            &on(
                "    service.beta.kubernetes.io/load-balancer-source-ranges: '198.51.100.0/24, 192.0.2.0/24'\n",
            ),
            "",
        );
        let s = source(&legacy, &ObjectKey::new("edge", "vps"), "203.0.113.10");
        assert_eq!(
            s.spec.bindings[0].policy.clone().unwrap().source_ranges,
            ["198.51.100.0/24", "192.0.2.0/24"]
        );
    }

    #[test]
    fn a_bad_annotation_or_address_refuses_the_service_naming_it() {
        let node = ObjectKey::new("edge", "vps");
        for (metadata, spec, names) in [
            (
                on("    tunnel.achetronic.com/proxy-protocol: v3\n"),
                "",
                ANNOTATION_PROXY_PROTOCOL,
            ),
            (
                on("    tunnel.achetronic.com/udp-session-timeout: soon\n"),
                "",
                ANNOTATION_UDP_SESSION_TIMEOUT,
            ),
            (
                on("    tunnel.achetronic.com/tls-mode: offload\n"),
                "",
                ANNOTATION_TLS_SECRET,
            ),
            (
                on("    tunnel.achetronic.com/tls-mode: magic\n"),
                "",
                ANNOTATION_TLS_MODE,
            ),
            (
                on("    tunnel.achetronic.com/max-connections: '0'\n"),
                "",
                ANNOTATION_MAX_CONNECTIONS,
            ),
            (
                on("    tunnel.achetronic.com/connection-rate: fast\n"),
                "",
                ANNOTATION_CONNECTION_RATE,
            ),
            (
                String::new(),
                "  loadBalancerSourceRanges: [nowhere]\n",
                "spec.loadBalancerSourceRanges[0]",
            ),
            (
                String::new(),
                "  loadBalancerIP: 198.51.100.7\n",
                "spec.loadBalancerIP",
            ),
        ] {
            let s = source(&game(&metadata, spec), &node, "203.0.113.10");
            let problem = s.problem.unwrap_or_else(|| panic!("{names}: refused"));
            assert_eq!(problem.reason, Reason::InvalidSpec);
            assert!(
                problem.message.contains(names),
                "{names}: {}",
                problem.message
            );
            assert_eq!(
                s.spec.bindings.len(),
                2,
                "its ports are still listed, to be refused"
            );
        }
        let same = game("", "  loadBalancerIP: 203.0.113.10\n");
        assert_eq!(
            source(&same, &node, "203.0.113.10").problem,
            None,
            "the VPS's own address is fine"
        );
    }

    #[test]
    fn the_version_follows_what_a_pass_reads_and_not_our_own_writes() {
        let base = game("", "");
        let v = version(&base);
        assert_eq!(v, version(&game("", "")));
        assert_ne!(
            v,
            version(&game(
                &on("    tunnel.achetronic.com/proxy-protocol: v1\n"),
                ""
            ))
        );
        assert_ne!(
            v,
            version(&game("", "  loadBalancerSourceRanges: [10.0.0.0/8]\n"))
        );
        let mut written = base.clone();
        written.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        written.metadata.annotations =
            Some([("example.com/other".to_owned(), "x".to_owned())].into());
        written.status = Some(k8s_openapi::api::core::v1::ServiceStatus::default());
        assert_eq!(
            v,
            version(&written),
            "a finalizer, a status, another's annotation"
        );
        assert!(has_finalizer(&written) && !has_finalizer(&base));
    }
}
