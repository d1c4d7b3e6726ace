//! The planner: pure functions from one EdgeNode, the PortBindings that reference it, what
//! their targets resolve to, and the WireGuard keys, to every file the VPS and the uplinks
//! get, with the outcome of every binding. No I/O, no clocks, no kube client: the same input
//! gives the same bytes and hashes.
//!
//! - [`ipam`]: overlay addresses (relay base+1, replica o base+2+o).
//! - [`bindings`] and [`conflicts`]: the binding table, per-binding outcomes ([`outcome`]);
//!   [`policy`]: a binding's L4 policy at the edge, checked.
//! - [`resolve`]: the resolver trait (Service ClusterIPs, TLS Secrets).
//! - [`envoy`]: bootstrap, LDS, CDS and SDS documents.
//! - [`agent_docs`]: the relay and uplink documents of `tunnel_contract::document`.
//!
//! Content hashes come from [`crate::hash`], durations from [`crate::duration`].

pub mod agent_docs;
pub mod bindings;
pub mod conflicts;
pub mod envoy;
pub mod gateway;
pub mod ipam;
pub mod load_balancer;
pub mod outcome;
pub mod policy;
pub mod resolve;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub use agent_docs::{AgentDocsError, Keys};
pub use bindings::{BindingKind, EdgeTls, PlannedBinding, SecretKey, SourceInput};
pub use envoy::{EdgeSettings, EnvoyError, HealthCheck, Layout, OutlierDetection};
pub use ipam::{Ipam, IpamError};
pub use outcome::{BindingId, BindingOutcome, OutcomeKind, Reason, Refusal, SourceKey, SourceKind};
pub use policy::{EdgePolicy, TokenBucket};
pub use resolve::{
    CrossNamespaceTargets, METADATA_ADDRESSES, Resolver, ServiceLookup, ServicePortEntry,
    StaticResolver, TargetPolicy, TlsSecret, api_server_addresses, match_port, service_ports,
};

use crate::crd::EdgeNodeSpec;
use crate::duration::{DurationError, GoDuration};
use crate::hash;

/// Where the relay's document lives on the VPS.
pub const RELAY_DOCUMENT_PATH: &str = "/etc/tunnel/relay.json";
/// The uplink ConfigMap key holding the uplink document.
pub const UPLINK_DOCUMENT_KEY: &str = "uplink.json";

/// The EdgeNode being planned.
#[derive(Debug, Clone)]
pub struct NodeInput {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: EdgeNodeSpec,
}

/// Everything the planner reads.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The EdgeNode.
    pub node: NodeInput,
    /// The sources of bindings (PortBindings, LoadBalancer Services); those referencing
    /// another EdgeNode are ignored.
    pub sources: Vec<SourceInput>,
    /// WireGuard keys.
    pub keys: Keys,
    /// Where Envoy's files live (`/etc/envoy` on a VPS).
    pub layout: Layout,
}

/// One rendered file. `Debug` never shows the contents of a secret file.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the VPS, or the ConfigMap key for the uplink document.
    pub path: String,
    /// The bytes.
    pub contents: String,
    /// Whether it holds private keys (written 0600, never logged or printed by default).
    pub secret: bool,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
}

impl RenderedFile {
    fn new(path: String, contents: String, secret: bool) -> Self {
        let sha256 = hash::sha256_hex(contents.as_bytes());
        Self {
            path,
            contents,
            secret,
            sha256,
        }
    }
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RenderedFile");
        d.field("path", &self.path).field("secret", &self.secret);
        if self.secret {
            d.field(
                "contents",
                &format_args!("<redacted, {} bytes>", self.contents.len()),
            );
        } else {
            d.field("contents", &self.contents);
        }
        d.field("sha256", &self.sha256).finish()
    }
}

/// Hashes of groups of files, to tell what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// Every file (VPS and uplink).
    pub plan: String,
    /// `envoy.yaml` (a change needs an Envoy restart).
    pub bootstrap: String,
    /// `lds.yaml` and `cds.yaml` (hot-reloaded).
    pub envoy: String,
    /// The SDS files (hot-reloaded).
    pub tls: String,
    /// `relay.json`.
    pub relay: String,
    /// `uplink.json`.
    pub uplink: String,
}

/// The plan of one EdgeNode.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One outcome per binding of the PortBindings that reference the node, sorted.
    pub outcomes: Vec<BindingOutcome>,
    /// The bindings that are served.
    pub planned: Vec<PlannedBinding>,
    /// The relay's tunnel address.
    pub relay_address: Ipv4Addr,
    /// Each uplink replica's tunnel address, by ordinal.
    pub uplink_addresses: Vec<Ipv4Addr>,
    /// Files for the VPS, sorted by path: Envoy's bootstrap, LDS, CDS, SDS, and `relay.json`.
    pub vps_files: Vec<RenderedFile>,
    /// The uplink document (ConfigMap key `uplink.json`).
    pub uplink_file: RenderedFile,
    /// The relay document, typed.
    pub relay_document: tunnel_contract::RelayDocument,
    /// The uplink document, typed.
    pub uplink_document: tunnel_contract::UplinkDocument,
    /// Hashes.
    pub hashes: Hashes,
    /// TLS Secrets whose private key is copied to the VPS (offload and mutual).
    pub private_keys_on_edge: Vec<SecretKey>,
    /// Every source with at least one served binding, sorted: `namespace/name` for a
    /// PortBinding, `Service namespace/name` for a Service.
    pub applied_sources: Vec<String>,
}

impl Plan {
    /// The VPS file at `path`.
    pub fn vps_file(&self, path: &str) -> Option<&RenderedFile> {
        self.vps_files.iter().find(|f| f.path == path)
    }

    /// The outcomes of one source's bindings, sorted by binding name.
    pub fn outcomes_of<'a>(
        &'a self,
        kind: SourceKind,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a BindingOutcome> + 'a {
        self.outcomes.iter().filter(move |o| {
            o.id.kind == kind && o.id.namespace == namespace && o.id.source == name
        })
    }

    /// The public ports one source is served on, e.g. `53/TCP,53/UDP,80/TCP` (for its
    /// status), sorted by port then protocol; empty when none is served.
    pub fn served_ports(&self, kind: SourceKind, namespace: &str, name: &str) -> String {
        let mut ports: Vec<(u16, String)> = self
            .outcomes_of(kind, namespace, name)
            .filter(|o| o.refusal.is_none())
            .map(|o| (o.listen_port, o.protocol.to_string()))
            .collect();
        ports.sort();
        ports.dedup();
        ports
            .iter()
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why no plan could be made for the node at all (per-binding problems are outcomes instead).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The tunnel network cannot hold the relay and the replicas.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A health-check or outlier-detection duration is unusable.
    #[error("edge.{field}: {source}")]
    Duration {
        /// The field under `spec.edge`.
        field: &'static str,
        /// The parse error.
        source: DurationError,
    },
    /// The health-check timeout is longer than its interval.
    #[error(
        "edge.healthCheck.timeout ({timeout}) must not be longer than edge.healthCheck.interval ({interval})"
    )]
    TimeoutOverInterval {
        /// The timeout.
        timeout: String,
        /// The interval.
        interval: String,
    },
    /// The replica count is not positive.
    #[error("uplink.replicas must be at least 1, got {0}")]
    Replicas(i32),
    /// The agent documents could not be built.
    #[error(transparent)]
    AgentDocs(#[from] AgentDocsError),
    /// An Envoy document could not be printed.
    #[error(transparent)]
    Envoy(#[from] EnvoyError),
}

impl PlanError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Ipam(e) => e.category(),
            Self::Duration { .. } => "EdgeDurationInvalid",
            Self::TimeoutOverInterval { .. } => "HealthCheckTimeoutOverInterval",
            Self::Replicas(_) => "ReplicasInvalid",
            Self::AgentDocs(e) => e.category(),
            Self::Envoy(e) => e.category(),
        }
    }
}

fn positive(field: &'static str, value: &str) -> Result<GoDuration, PlanError> {
    GoDuration::parse_positive(value).map_err(|source| PlanError::Duration { field, source })
}

/// The node-wide Envoy settings: addresses, validated health checking and outlier detection.
pub fn edge_settings(spec: &EdgeNodeSpec, layout: &Layout) -> Result<EdgeSettings, PlanError> {
    let ipam = Ipam::parse(&spec.tunnel.network)?;
    let replicas = u32::try_from(spec.uplink.replicas)
        .ok()
        .filter(|r| *r >= 1)
        .ok_or(PlanError::Replicas(spec.uplink.replicas))?;
    ipam.check_replicas(replicas)?;
    let uplinks = (0..replicas)
        .map(|o| ipam.replica(o))
        .collect::<Result<Vec<_>, _>>()?;
    let hc = &spec.edge.health_check;
    let interval = positive("healthCheck.interval", &hc.interval)?;
    let timeout = positive("healthCheck.timeout", &hc.timeout)?;
    if timeout > interval {
        return Err(PlanError::TimeoutOverInterval {
            timeout: hc.timeout.clone(),
            interval: hc.interval.clone(),
        });
    }
    let outlier_detection = match &spec.edge.outlier_detection {
        None => None,
        Some(od) => Some(OutlierDetection {
            consecutive_failures: od.consecutive_failures.max(1),
            interval: positive("outlierDetection.interval", &od.interval)?,
            base_ejection_time: positive(
                "outlierDetection.baseEjectionTime",
                &od.base_ejection_time,
            )?,
            max_ejection_percent: od.max_ejection_percent.clamp(1, 100),
        }),
    };
    Ok(EdgeSettings {
        relay: ipam.relay()?,
        tunnel_network: ipam,
        uplinks,
        health_check: HealthCheck {
            interval,
            timeout,
            healthy_threshold: hc.healthy_threshold.max(1),
            unhealthy_threshold: hc.unhealthy_threshold.max(1),
        },
        outlier_detection,
        ipv6: spec.serves_ipv6(),
        udp_socket_buffer: spec.host.kernel_max_socket_buffer_bytes.max(0),
        layout: layout.clone(),
    })
}

/// Plans one EdgeNode.
pub fn plan(input: &PlanInput, resolver: &dyn Resolver) -> Result<Plan, PlanError> {
    let spec = &input.node.spec;
    let edge = edge_settings(spec, &input.layout)?;
    let ipam = Ipam::parse(&spec.tunnel.network)?;
    let mine: Vec<SourceInput> = input
        .sources
        .iter()
        .filter(|pb| {
            pb.spec
                .names_edge_node(&pb.namespace, (&input.node.namespace, &input.node.name))
        })
        .cloned()
        .collect();
    let table = bindings::build(
        &mine,
        (&input.node.namespace, &input.node.name),
        conflicts::NodePorts {
            tunnel_udp: spec.tunnel.listen_port,
            ssh_tcp: spec.ssh.port,
        },
        ipam.net(),
        resolver,
    );

    let layout = &input.layout;
    let mut vps_files = vec![
        RenderedFile::new(layout.bootstrap(), envoy::bootstrap::render(&edge)?, false),
        RenderedFile::new(
            layout.lds(),
            envoy::lds::render(&table.planned, &edge)?,
            false,
        ),
        RenderedFile::new(
            layout.cds(),
            envoy::cds::render(&table.planned, &edge)?,
            false,
        ),
    ];
    let sds = envoy::sds::render(&table.secrets)?;
    let sds_paths: Vec<String> = sds.iter().map(|(stem, _)| layout.sds(stem)).collect();
    for (stem, contents) in sds {
        vps_files.push(RenderedFile::new(layout.sds(&stem), contents, true));
    }
    let relay_document =
        agent_docs::relay(&input.node.name, spec, &ipam, &edge.uplinks, &input.keys)?;
    let uplink_document = agent_docs::uplink(spec, &ipam, &table.planned, &input.keys)?;
    vps_files.push(RenderedFile::new(
        RELAY_DOCUMENT_PATH.to_owned(),
        relay_document.to_json(),
        true,
    ));
    vps_files.sort_by(|a, b| a.path.cmp(&b.path));
    let uplink_file = RenderedFile::new(
        UPLINK_DOCUMENT_KEY.to_owned(),
        uplink_document.to_json(),
        false,
    );

    let hash_of = |path: &str| {
        vps_files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.sha256.clone())
            .unwrap_or_default()
    };
    let lds_hash = hash_of(&layout.lds());
    let cds_hash = hash_of(&layout.cds());
    let lds_path = layout.lds();
    let cds_path = layout.cds();
    let hashes = Hashes {
        plan: hash::combine(
            vps_files
                .iter()
                .chain(std::iter::once(&uplink_file))
                .map(|f| (f.path.as_str(), f.sha256.as_str())),
        ),
        bootstrap: hash_of(&layout.bootstrap()),
        envoy: hash::combine([
            (lds_path.as_str(), lds_hash.as_str()),
            (cds_path.as_str(), cds_hash.as_str()),
        ]),
        tls: hash::combine(
            vps_files
                .iter()
                .filter(|f| sds_paths.contains(&f.path))
                .map(|f| (f.path.as_str(), f.sha256.as_str())),
        ),
        relay: hash_of(RELAY_DOCUMENT_PATH),
        uplink: uplink_file.sha256.clone(),
    };
    let applied: BTreeSet<String> = table
        .planned
        .iter()
        .map(|b| match b.id.kind {
            SourceKind::PortBinding => format!("{}/{}", b.id.namespace, b.id.source),
            SourceKind::Service => format!("Service {}/{}", b.id.namespace, b.id.source),
            SourceKind::Gateway => format!("Gateway {}/{}", b.id.namespace, b.id.source),
        })
        .collect();
    Ok(Plan {
        outcomes: table.outcomes,
        planned: table.planned,
        relay_address: edge.relay,
        uplink_addresses: edge.uplinks,
        vps_files,
        uplink_file,
        relay_document,
        uplink_document,
        hashes,
        private_keys_on_edge: table.secrets.keys().cloned().collect(),
        applied_sources: applied.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let yaml = || serde_yaml::from_str::<u8>("x").unwrap_err();
        let all = [
            PlanError::Ipam(IpamError::Syntax {
                network: String::new(),
            }),
            PlanError::Duration {
                field: "healthCheck.interval",
                source: DurationError::Zero {
                    input: String::new(),
                },
            },
            PlanError::TimeoutOverInterval {
                timeout: String::new(),
                interval: String::new(),
            },
            PlanError::Replicas(0),
            PlanError::AgentDocs(AgentDocsError::MissingUplinkKey {
                replicas: 1,
                keys: 0,
            }),
            PlanError::AgentDocs(AgentDocsError::OutOfRange {
                field: "tunnel.mtu",
                value: String::new(),
            }),
            PlanError::AgentDocs(AgentDocsError::Invalid {
                which: "relay",
                source: tunnel_contract::DocumentError::Syntax(String::new()),
            }),
            PlanError::Envoy(EnvoyError::Yaml {
                what: "lds",
                source: yaml(),
            }),
        ];
        let categories: Vec<&str> = all.iter().map(PlanError::category).collect();
        assert_eq!(
            categories,
            [
                "TunnelNetworkInvalid",
                "EdgeDurationInvalid",
                "HealthCheckTimeoutOverInterval",
                "ReplicasInvalid",
                "UplinkKeyMissing",
                "AgentDocumentOutOfRange",
                "AgentDocumentInvalid",
                "EnvoyRenderFailed",
            ]
        );
    }

    #[test]
    fn debug_never_shows_private_keys() {
        let file = RenderedFile::new(
            "/etc/envoy/tls/a.sds.yaml".into(),
            "SECRET-KEY".into(),
            true,
        );
        assert!(!format!("{file:?}").contains("SECRET-KEY"));
        let open = RenderedFile::new("/etc/envoy/lds.yaml".into(), "resources: []".into(), false);
        assert!(format!("{open:?}").contains("resources: []"));
        let secret = TlsSecret {
            certificate_chain: Some("CERT".into()),
            private_key: Some("SECRET-KEY".into()),
            ca: None,
        };
        assert!(!format!("{secret:?}").contains("SECRET-KEY"));
    }
}
