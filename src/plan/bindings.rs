//! The binding table of one EdgeNode: every binding of every PortBinding that references it,
//! with defaults applied, targets resolved, TLS material gathered, conflicts decided, and the
//! port each binding uses on the uplinks' tunnel addresses.
//!
//! A problem with one binding leaves only that binding out (with a [`Refusal`]); everything
//! else is still planned.
//!
//! Trust comes first: a PortBinding of another namespace that the EdgeNode's namespace did not
//! grant ([`may_use_edge_node`]) is refused before it takes part in anything (it claims no
//! port or server name). Every target, a raw address or the ClusterIP a Service resolves to,
//! then goes through the [`TargetPolicy`]; a Service in another namespace needs a grant there
//! when the policy says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::conflicts::{self, Claim, NodePorts, Sharing};
use super::outcome::{BindingId, BindingOutcome, Reason, Refusal, SourceKind};
use super::policy::{EdgePolicy, edge_policy};
use super::resolve::{CrossNamespaceTargets, Resolver, ServiceLookup, TargetPolicy, TlsSecret};
use crate::crd::reference_grant::not_granted_message;
use crate::crd::{
    Binding, PortBindingSpec, Protocol, ProxyProtocolVersion, RESERVED_PORTS, TcpParams, TlsMode,
    UdpParams,
};
use crate::crd::{FromKind, Reference, ToKind};
use crate::duration::GoDuration;

/// A source of bindings as the planner reads it: a PortBinding, or a LoadBalancer Service
/// translated into the same shape ([`super::load_balancer`]).
#[derive(Debug, Clone)]
pub struct SourceInput {
    /// What kind of object it is.
    pub kind: SourceKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.creationTimestamp` in seconds since the epoch; `None` (not created yet, as in
    /// `tunnel render` of local files) sorts after every known time.
    pub created: Option<i64>,
    /// Its EdgeNode and bindings.
    pub spec: PortBindingSpec,
    /// Why none of its bindings can be served, found before the table (a Service's
    /// annotation that does not parse): each binding is refused with it and claims nothing.
    pub problem: Option<Refusal>,
}

impl SourceInput {
    /// What the planner reads of a PortBinding object; `default_namespace` stands in for a
    /// missing namespace (local files given to `tunnel render`).
    pub fn of(pb: &crate::crd::PortBinding, default_namespace: &str) -> Self {
        Self {
            kind: SourceKind::PortBinding,
            namespace: pb
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_owned()),
            name: pb.metadata.name.clone().unwrap_or_default(),
            created: pb
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            spec: pb.spec.clone(),
            problem: None,
        }
    }

    /// The id of its binding `binding`.
    pub fn binding_id(&self, binding: &str) -> BindingId {
        BindingId {
            kind: self.kind,
            namespace: self.namespace.clone(),
            source: self.name.clone(),
            binding: binding.to_owned(),
        }
    }
}

/// A TLS Secret reference, resolved to a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
}

/// TLS at the edge for one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeTls {
    /// Routed by SNI without decrypting; no server names: the port's catch-all.
    Passthrough {
        /// Lower-case server names, sorted.
        server_names: Vec<String>,
    },
    /// Terminated on the VPS with the Secret's certificate.
    Offload {
        /// The Secret.
        secret: SecretKey,
    },
    /// Terminated on the VPS, client certificates verified against the Secret's `ca.crt`.
    Mutual {
        /// The Secret.
        secret: SecretKey,
    },
}

/// What a binding does on the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingKind {
    /// A TCP port.
    Tcp {
        /// Time to connect to an uplink.
        connect_timeout: GoDuration,
        /// Idle time after which a connection is closed.
        idle_timeout: GoDuration,
        /// PROXY protocol header towards the target, if any.
        proxy_protocol: Option<ProxyProtocolVersion>,
        /// TLS at the edge, if any.
        tls: Option<EdgeTls>,
    },
    /// A UDP port.
    Udp {
        /// Idle time after which a client's session is forgotten.
        session_timeout: GoDuration,
    },
}

/// A binding that is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBinding {
    /// Which binding.
    pub id: BindingId,
    /// Protocol.
    pub protocol: Protocol,
    /// Public port on the VPS.
    pub listen_port: u16,
    /// Port Envoy sends to on each uplink's tunnel address; the uplink forwards it to the
    /// target. The listen port, except for passthrough bindings with server names, which share
    /// a public port and so need one of their own on the tunnel.
    pub tunnel_port: u16,
    /// Where the uplinks forward to.
    pub target_ip: IpAddr,
    /// Target port.
    pub target_port: u16,
    /// Protocol-specific settings.
    pub kind: BindingKind,
    /// L4 policy at the edge, if any ([`super::policy`]).
    pub policy: Option<EdgePolicy>,
}

/// The binding table: what is served and what happened to every binding.
#[derive(Debug, Clone, Default)]
pub struct BindingTable {
    /// Served bindings, sorted by (protocol, listen port, id).
    pub planned: Vec<PlannedBinding>,
    /// One outcome per binding, sorted by id.
    pub outcomes: Vec<BindingOutcome>,
    /// The TLS Secrets the edge needs, with what each is used for.
    pub secrets: BTreeMap<SecretKey, (TlsSecret, bool)>,
}

struct Candidate<'a> {
    id: BindingId,
    created: Option<i64>,
    binding: &'a Binding,
}

/// The grantable kind of a source.
pub fn from_kind(kind: SourceKind) -> FromKind {
    match kind {
        SourceKind::PortBinding => FromKind::PortBinding,
        SourceKind::Service => FromKind::Service,
        SourceKind::Gateway => FromKind::Gateway,
    }
}

/// The reference a source of kind `kind` in namespace `source_namespace` makes to the
/// EdgeNode `node` (`(namespace, name)`).
pub fn edge_node_reference<'a>(
    kind: SourceKind,
    source_namespace: &'a str,
    node: (&'a str, &'a str),
) -> Reference<'a> {
    Reference {
        from_kind: from_kind(kind),
        from_namespace: source_namespace,
        to_kind: ToKind::EdgeNode,
        to_namespace: node.0,
        to_name: node.1,
    }
}

/// Whether a source of kind `kind` in namespace `source_namespace` may use the EdgeNode
/// `node` (`(namespace, name)`) at all: always in its own namespace, else only with a grant in
/// the EdgeNode's namespace. The refusal names only what the source itself says (its
/// `edgeNodeRef` or annotation), the same whether or not that EdgeNode exists. The operator
/// asks this before a source takes part in anything: conflicts, status, passes.
pub fn may_use_edge_node(
    resolver: &dyn Resolver,
    kind: SourceKind,
    source_namespace: &str,
    node: (&str, &str),
) -> Result<(), Refusal> {
    granted(resolver, &edge_node_reference(kind, source_namespace, node))
}

/// Builds the table from the sources (PortBindings, Services) that reference the node. `node_ports` are the
/// relay's WireGuard UDP port and the VPS's SSH port, `tunnel_network` the node's tunnel network (never a target).
/// `node` is the EdgeNode's `(namespace, name)`: a PortBinding of another namespace needs a
/// `ReferenceGrant` for it, or all its bindings are refused before the conflict table.
pub fn build(
    port_bindings: &[SourceInput],
    node: (&str, &str),
    node_ports: NodePorts,
    tunnel_network: Option<Ipv4Net>,
    resolver: &dyn Resolver,
) -> BindingTable {
    let policy = TargetPolicy {
        tunnel_network,
        ..resolver.target_policy()
    };
    let mut table = BindingTable::default();
    // Ungranted sources, and those with a problem of their own, first: refused, they claim
    // nothing.
    let mut allowed: Vec<&SourceInput> = Vec::with_capacity(port_bindings.len());
    for pb in port_bindings {
        let refusal = match may_use_edge_node(resolver, pb.kind, &pb.namespace, node)
            .and_then(|()| pb.problem.clone().map_or(Ok(()), Err))
        {
            Ok(()) => {
                allowed.push(pb);
                continue;
            }
            Err(refusal) => refusal,
        };
        for b in &pb.spec.bindings {
            table.outcomes.push(BindingOutcome {
                id: pb.binding_id(&b.name),
                protocol: b.protocol,
                listen_port: b.listen_port,
                refusal: Some(refusal.clone()),
            });
        }
    }
    let mut candidates: Vec<Candidate<'_>> = allowed
        .into_iter()
        .flat_map(|pb| {
            pb.spec.bindings.iter().map(move |b| Candidate {
                id: pb.binding_id(&b.name),
                created: pb.created,
                binding: b,
            })
        })
        .collect();
    // Oldest first; unknown creation times last; then namespace/name/binding.
    candidates.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.id).cmp(&(b.created.is_none(), b.created, &b.id))
    });
    // Two identical ids (the same PortBinding listed twice) would be one binding.
    candidates.dedup_by(|a, b| a.id == b.id);

    let claims: Vec<Claim<'_>> = candidates
        .iter()
        .map(|c| Claim {
            id: &c.id,
            protocol: c.binding.protocol,
            port: c.binding.listen_port,
            sharing: sharing(c.binding),
        })
        .collect();
    let decisions = conflicts::decide(&claims, node_ports);

    // TCP ports taken on the tunnel by bindings that use their listen port there.
    let mut tunnel_tcp: BTreeSet<u16> = RESERVED_PORTS.into_iter().collect();
    for (c, d) in candidates.iter().zip(&decisions) {
        if d.is_none() && c.binding.protocol == Protocol::Tcp && !is_named_passthrough(c.binding) {
            tunnel_tcp.insert(c.binding.listen_port);
        }
    }

    for (c, decision) in candidates.iter().zip(decisions) {
        let refusal = match decision {
            Some(r) => Some(r),
            None => match resolve(c, &policy, resolver, &mut table.secrets) {
                Ok(mut planned) => {
                    if is_named_passthrough(c.binding) {
                        planned.tunnel_port = shared_tunnel_port(&c.id, &mut tunnel_tcp);
                    }
                    table.planned.push(planned);
                    None
                }
                Err(r) => Some(r),
            },
        };
        table.outcomes.push(BindingOutcome {
            id: c.id.clone(),
            protocol: c.binding.protocol,
            listen_port: c.binding.listen_port,
            refusal,
        });
    }
    table.planned.sort_by(|a, b| {
        (a.protocol, a.listen_port, &a.id).cmp(&(b.protocol, b.listen_port, &b.id))
    });
    table.outcomes.sort_by(|a, b| a.id.cmp(&b.id));
    // The same PortBinding listed twice (ungranted) would give duplicate outcomes.
    table.outcomes.dedup_by(|a, b| a.id == b.id);
    table
}

fn sharing(b: &Binding) -> Sharing {
    match &b.tls {
        Some(tls) if b.protocol == Protocol::Tcp && tls.mode == TlsMode::Passthrough => {
            Sharing::Passthrough(server_names(&tls.server_names))
        }
        _ => Sharing::Exclusive,
    }
}

fn server_names(names: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    set.into_iter().collect()
}

fn is_named_passthrough(b: &Binding) -> bool {
    matches!(sharing(b), Sharing::Passthrough(names) if !names.is_empty())
}

/// A tunnel port for a passthrough binding with server names: derived from its id, so it does
/// not move when other bindings come and go, moved on past ports already taken.
fn shared_tunnel_port(id: &BindingId, taken: &mut BTreeSet<u16>) -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 20_000;
    // A PortBinding's seed is as it always was (its tunnel ports do not move on upgrade).
    let kind = match id.kind {
        SourceKind::PortBinding => "",
        SourceKind::Service => "Service/",
        SourceKind::Gateway => "Gateway/",
    };
    let digest =
        Sha256::digest(format!("{kind}{}/{}/{}", id.namespace, id.source, id.binding).as_bytes());
    let start = u16::from_be_bytes([digest[0], digest[1]]) % SPAN;
    for step in 0..SPAN {
        let port = FIRST + (start + step) % SPAN;
        if taken.insert(port) {
            return port;
        }
    }
    // Unreachable in practice (20,000 ports for at most 64 bindings per PortBinding).
    FIRST
}

fn resolve(
    c: &Candidate<'_>,
    policy: &TargetPolicy,
    resolver: &dyn Resolver,
    secrets: &mut BTreeMap<SecretKey, (TlsSecret, bool)>,
) -> Result<PlannedBinding, Refusal> {
    let b = c.binding;
    let (target_ip, target_port) = resolve_target(c, policy, resolver)?;
    let kind = match b.protocol {
        Protocol::Tcp => {
            let defaults = TcpParams::default();
            let tcp = b.tcp.as_ref().unwrap_or(&defaults);
            let connect_timeout = duration("tcp.connectTimeout", &tcp.connect_timeout)?;
            let idle_timeout = duration("tcp.idleTimeout", &tcp.idle_timeout)?;
            let tls = match &b.tls {
                None => None,
                Some(tls) => Some(edge_tls(c, tls, resolver, secrets)?),
            };
            BindingKind::Tcp {
                connect_timeout,
                idle_timeout,
                proxy_protocol: tcp.proxy_protocol.then_some(tcp.proxy_protocol_version),
                tls,
            }
        }
        Protocol::Udp => {
            let defaults = UdpParams::default();
            let udp = b.udp.as_ref().unwrap_or(&defaults);
            BindingKind::Udp {
                session_timeout: duration("udp.sessionTimeout", &udp.session_timeout)?,
            }
        }
    };
    Ok(PlannedBinding {
        id: c.id.clone(),
        protocol: b.protocol,
        listen_port: b.listen_port,
        tunnel_port: b.listen_port,
        target_ip,
        target_port,
        kind,
        policy: edge_policy(b.policy.as_ref(), b.protocol)?,
    })
}

/// `Ok` when `reference` stays in its namespace or is granted there.
fn granted(resolver: &dyn Resolver, reference: &Reference<'_>) -> Result<(), Refusal> {
    if resolver.reference_allowed(reference) {
        Ok(())
    } else {
        Err(Refusal {
            reason: Reason::ReferenceNotGranted,
            message: not_granted_message(reference),
        })
    }
}

fn duration(field: &str, value: &str) -> Result<GoDuration, Refusal> {
    GoDuration::parse_positive(value).map_err(|e| Refusal {
        reason: Reason::InvalidSpec,
        message: format!("{field}: {e}"),
    })
}

/// Where a binding forwards to: its Service's ClusterIP and port, or its raw address, refused
/// when the [`TargetPolicy`] restricts it (however it was resolved) or when the Service is in
/// another namespace that the policy requires a grant from.
fn resolve_target(
    c: &Candidate<'_>,
    policy: &TargetPolicy,
    resolver: &dyn Resolver,
) -> Result<(IpAddr, u16), Refusal> {
    let b = c.binding;
    let (ip, port) = match (&b.target.service, &b.target.address) {
        (Some(svc), _) => {
            // A Gateway's backends were checked against Gateway API's grants, from their
            // routes, whatever the policy ([`super::gateway`]).
            if policy.cross_namespace_targets == CrossNamespaceTargets::RequireGrant
                && c.id.kind != SourceKind::Gateway
            {
                // Before the lookup: an ungranted author learns nothing of the namespace.
                granted(
                    resolver,
                    &Reference {
                        from_kind: from_kind(c.id.kind),
                        from_namespace: &c.id.namespace,
                        to_kind: ToKind::Service,
                        to_namespace: &svc.namespace,
                        to_name: &svc.name,
                    },
                )?;
            }
            resolve_service(svc, policy, resolver)?
        }
        (None, Some(address)) => {
            let ip: IpAddr = address.parse().map_err(|_| Refusal {
                reason: Reason::UnsupportedTarget,
                message: format!("target.address {address:?} is not an IP address"),
            })?;
            let port = b.target.port.filter(|p| *p > 0).ok_or_else(|| Refusal {
                reason: Reason::InvalidSpec,
                message: "target.port is required with target.address".to_owned(),
            })?;
            restricted(policy, ip, &format!("target.address {ip} is"))?;
            (ip, port)
        }
        (None, None) => {
            return Err(Refusal {
                reason: Reason::InvalidSpec,
                message: "target needs a service or an address".to_owned(),
            });
        }
    };
    if ip.is_ipv6() {
        return Err(Refusal {
            reason: Reason::UnsupportedTarget,
            message: format!(
                "target {ip} is IPv6; the uplinks forward to IPv4 targets only for now"
            ),
        });
    }
    if ip.is_unspecified() {
        return Err(Refusal {
            reason: Reason::UnsupportedTarget,
            message: format!("target {ip} is the unspecified address"),
        });
    }
    Ok((ip, port))
}

/// `Err(RestrictedTarget)` when the policy refuses `ip`; `subject` starts the message.
fn restricted(policy: &TargetPolicy, ip: IpAddr, subject: &str) -> Result<(), Refusal> {
    match policy.restriction(ip) {
        None => Ok(()),
        Some(what) => Err(Refusal {
            reason: Reason::RestrictedTarget,
            message: format!(
                "{subject} {what}; publishing it needs the operator's --allow-restricted-targets flag"
            ),
        }),
    }
}

/// A target Service's ClusterIP and port number, checked against the policy.
fn resolve_service(
    svc: &crate::crd::ServiceTarget,
    policy: &TargetPolicy,
    resolver: &dyn Resolver,
) -> Result<(IpAddr, u16), Refusal> {
    match resolver.service(&svc.namespace, &svc.name, &svc.port) {
        ServiceLookup::Found { address, port } => {
            restricted(
                policy,
                address,
                &format!(
                    "target Service {}/{} resolves to {address}, which is",
                    svc.namespace, svc.name
                ),
            )?;
            Ok((address, port))
        }
        ServiceLookup::NotFound => Err(Refusal {
            reason: Reason::ServiceNotFound,
            message: format!(
                "target Service {}/{} does not exist; the binding is served once it does",
                svc.namespace, svc.name
            ),
        }),
        ServiceLookup::Headless => Err(Refusal {
            reason: Reason::ServiceHeadless,
            message: format!(
                "target Service {}/{} has no ClusterIP (headless); point the binding at a Service with a ClusterIP, or at an address",
                svc.namespace, svc.name
            ),
        }),
        ServiceLookup::PortNotFound { available: list } => Err(Refusal {
            reason: Reason::ServicePortNotFound,
            message: format!(
                "target Service {}/{} has no port {} (it has: {})",
                svc.namespace,
                svc.name,
                svc.port,
                if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.join(", ")
                }
            ),
        }),
    }
}

fn edge_tls(
    c: &Candidate<'_>,
    tls: &crate::crd::TlsParams,
    resolver: &dyn Resolver,
    secrets: &mut BTreeMap<SecretKey, (TlsSecret, bool)>,
) -> Result<EdgeTls, Refusal> {
    if tls.mode == TlsMode::Passthrough {
        return Ok(EdgeTls::Passthrough {
            server_names: server_names(&tls.server_names),
        });
    }
    let mutual = tls.mode == TlsMode::Mutual;
    let reference = tls.secret_ref.as_ref().ok_or_else(|| Refusal {
        reason: Reason::InvalidSpec,
        message: "tls.secretRef is required when mode is offload or mutual".to_owned(),
    })?;
    let key = SecretKey {
        namespace: reference.namespace_or(&c.id.namespace).to_owned(),
        name: reference.name.clone(),
    };
    // Copying another namespace's private key to the VPS needs that namespace's consent.
    granted(
        resolver,
        &Reference {
            from_kind: from_kind(c.id.kind),
            from_namespace: &c.id.namespace,
            to_kind: ToKind::Secret,
            to_namespace: &key.namespace,
            to_name: &key.name,
        },
    )?;
    let secret = resolver
        .tls_secret(&key.namespace, &key.name)
        .ok_or_else(|| Refusal {
            reason: Reason::TlsSecretNotFound,
            message: format!(
                "TLS Secret {}/{} does not exist; the binding is served once it does",
                key.namespace, key.name
            ),
        })?;
    let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let mut missing = Vec::new();
    if !present(&secret.certificate_chain) {
        missing.push("tls.crt");
    }
    if !present(&secret.private_key) {
        missing.push("tls.key");
    }
    if mutual && !present(&secret.ca) {
        missing.push("ca.crt");
    }
    if !missing.is_empty() {
        return Err(Refusal {
            reason: Reason::TlsSecretIncomplete,
            message: format!(
                "TLS Secret {}/{} has no {} (mode {})",
                key.namespace,
                key.name,
                missing.join(", "),
                if mutual { "mutual" } else { "offload" }
            ),
        });
    }
    let entry = secrets.entry(key.clone()).or_insert((secret, false));
    entry.1 |= mutual;
    Ok(if mutual {
        EdgeTls::Mutual { secret: key }
    } else {
        EdgeTls::Offload { secret: key }
    })
}
