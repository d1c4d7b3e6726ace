//! Who owns each public port. Decided on the listen ports alone (not on whether a target
//! resolves), so a Service that comes and goes never moves a port from one binding to another.
//!
//! Bindings are visited oldest first: PortBinding creationTimestamp (unknown last), then
//! namespace/name, then binding name. The first to ask for a (protocol, port) keeps it. The one
//! exception: TLS passthrough bindings may share a TCP port when their `tls.serverNames` are
//! disjoint (the same name twice is a conflict) and at most one of them has none (the
//! catch-all). The relay's WireGuard UDP port, the VPS's SSH port (TCP: Envoy must never grab
//! it while sshd restarts) and the reserved ports 40500/40600 are never given out.

use std::collections::BTreeMap;

use super::outcome::{BindingId, Reason, Refusal, SourceKind};
use crate::crd::{Protocol, RESERVED_PORTS};

/// How a binding uses its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// Alone on the port.
    Exclusive,
    /// TLS passthrough, routed by these server names (lower case); none: the catch-all.
    Passthrough(Vec<String>),
}

/// One binding asking for a port, in visiting order.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Which binding.
    pub id: &'a BindingId,
    /// Protocol of the port.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
    /// How it wants to use it.
    pub sharing: Sharing,
}

/// The node's own ports, never given to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// The relay's WireGuard port (UDP): `spec.tunnel.listenPort`.
    pub tunnel_udp: u16,
    /// The VPS's SSH port (TCP): `spec.ssh.port`.
    pub ssh_tcp: u16,
}

/// Decides every claim, in the order given (oldest first): `None` keeps the port.
pub fn decide(claims: &[Claim<'_>], node: NodePorts) -> Vec<Option<Refusal>> {
    let mut holders: BTreeMap<(Protocol, u16), Vec<usize>> = BTreeMap::new();
    let mut out = Vec::with_capacity(claims.len());
    for (i, claim) in claims.iter().enumerate() {
        let refusal = judge(
            claims,
            claim,
            node,
            holders.get(&(claim.protocol, claim.port)),
        );
        if refusal.is_none() {
            holders
                .entry((claim.protocol, claim.port))
                .or_default()
                .push(i);
        }
        out.push(refusal);
    }
    out
}

fn judge(
    claims: &[Claim<'_>],
    claim: &Claim<'_>,
    node: NodePorts,
    holders: Option<&Vec<usize>>,
) -> Option<Refusal> {
    let port = format!("{}/{}", claim.protocol, claim.port);
    let choose = match claim.id.kind {
        SourceKind::PortBinding => "choose another listenPort",
        SourceKind::Service => "choose another port (the Service's spec.ports[].port)",
        SourceKind::Gateway => "choose another port (the Gateway listener's port)",
    };
    if claim.protocol == Protocol::Udp && claim.port == node.tunnel_udp {
        return Some(Refusal {
            reason: Reason::TunnelPortConflict,
            message: format!(
                "{port} is the tunnel's WireGuard port (the EdgeNode's spec.tunnel.listenPort); {choose}"
            ),
        });
    }
    if claim.protocol == Protocol::Tcp && claim.port == node.ssh_tcp {
        return Some(Refusal {
            reason: Reason::ReservedPort,
            message: format!(
                "{port} is the VPS's SSH port (the EdgeNode's spec.ssh.port); {choose}"
            ),
        });
    }
    if RESERVED_PORTS.contains(&claim.port) {
        let owner = if claim.port == RESERVED_PORTS[0] {
            "the uplinks' /ready endpoint"
        } else {
            "Envoy's admin and the uplinks' admin bridge"
        };
        return Some(Refusal {
            reason: Reason::ReservedPort,
            message: format!("port {} is reserved for {owner}; {choose}", claim.port),
        });
    }
    let holders = holders?;
    let first = holders.first().and_then(|&h| claims.get(h))?;
    let Sharing::Passthrough(names) = &claim.sharing else {
        return Some(Refusal {
            reason: Reason::PortConflict,
            message: format!(
                "{port} is already used by {} (the older {} keeps the port); {choose}",
                first.id,
                first.id.kind.as_str()
            ),
        });
    };
    let Sharing::Passthrough(_) = &first.sharing else {
        return Some(Refusal {
            reason: Reason::PortConflict,
            message: format!(
                "{port} is already used by {} (the older {} keeps the port); only TLS passthrough bindings with distinct tls.serverNames may share a port",
                first.id,
                first.id.kind.as_str()
            ),
        });
    };
    for &h in holders {
        let Some(holder) = claims.get(h) else {
            continue;
        };
        let Sharing::Passthrough(held) = &holder.sharing else {
            continue;
        };
        if names.is_empty() && held.is_empty() {
            return Some(Refusal {
                reason: Reason::CatchAllConflict,
                message: format!(
                    "{port} already has a catch-all TLS passthrough binding (one without tls.serverNames): {} (the older {} keeps it); give this binding tls.serverNames or another listenPort",
                    holder.id,
                    holder.id.kind.as_str()
                ),
            });
        }
        if let Some(name) = names.iter().find(|n| held.contains(n)) {
            return Some(Refusal {
                reason: Reason::ServerNameConflict,
                message: format!(
                    "server name {name:?} on {port} is already routed to {} (the older {} keeps it); use distinct tls.serverNames or another listenPort",
                    holder.id,
                    holder.id.kind.as_str()
                ),
            });
        }
    }
    None
}
