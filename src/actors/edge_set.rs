//! A source of bindings served by several EdgeNodes, pure: from each named EdgeNode's last
//! report, the check from outside ([`super::edge_health`]) and its drain annotation, what the
//! source's status says — one entry per edge, the bindings merged, `Ready`, and the public
//! addresses to publish (what DNS gets).
//!
//! An edge is published when it serves at least one binding, is not drained, and passes the
//! check from outside. When no edge that serves passes the check, every serving edge that is
//! not drained stays published (fail open: a check that fails on the operator's own path, or
//! every VPS failing at once, must not unpublish what clients may still reach). One edge
//! behaves exactly as a single `edgeNodeRef` always did: `Ready` says what its pass said.

use crate::crd::{BindingStatus, EdgeNode, EdgeStatus};
use crate::object_key::ObjectKey;

use super::conditions::Verdict;
use super::status::{self, SourceReport};

/// How one named EdgeNode stands with the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeView {
    /// Refused before any pass (the EdgeNode does not exist, or its namespace granted nothing).
    Refused {
        /// The condition reason.
        reason: String,
        /// What to do.
        message: String,
    },
    /// Its pass has not answered yet.
    Waiting,
    /// Its pass's last report.
    Reported(SourceReport),
}

/// What the check from outside says of an edge (fed by the EdgeNode's probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outside {
    /// Not checked yet (no served port, or the first probe is due): published.
    #[default]
    Unknown,
    /// Every probed port answered.
    Healthy,
    /// The check failed (after damping).
    Unhealthy,
}

/// One named EdgeNode and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeInput {
    /// The EdgeNode.
    pub node: ObjectKey,
    /// Its pass's word.
    pub view: EdgeView,
    /// Its public addresses.
    pub addresses: Vec<String>,
    /// The check from outside.
    pub outside: Outside,
    /// It carries the drain annotation.
    pub draining: bool,
}

/// What a source's status says, from all its edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// `Ready`.
    pub verdict: Verdict,
    /// One entry per binding, merged over the edges.
    pub bindings: Vec<BindingStatus>,
    /// Ports served on at least one edge, e.g. `53/UDP,80/TCP`.
    pub ports: String,
    /// One entry per edge.
    pub edges: Vec<EdgeStatus>,
    /// The edges published, with their addresses (sorted by EdgeNode).
    pub published: Vec<(ObjectKey, Vec<String>)>,
    /// The oldest generation the reports read (`None` before any report).
    pub generation: Option<i64>,
}

impl Composed {
    /// Every published address, in order, each once.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.published.iter().flat_map(|(_, a)| a) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Whether every edge has answered (or was refused): the status can be written.
    pub fn complete(edges: &[EdgeInput]) -> bool {
        edges.iter().all(|e| e.view != EdgeView::Waiting)
    }
}

/// The public addresses of `node` (what statuses and DNS carry): its `publicAddresses`
/// (IPv4 and IPv6), else its `address`.
pub fn public_addresses(node: &EdgeNode) -> Vec<String> {
    node.spec
        .public_addresses()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Whether `node` carries [`crate::crd::ANNOTATION_DRAIN`].
pub fn is_draining(node: &EdgeNode) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::crd::ANNOTATION_DRAIN))
        .is_some_and(|v| v == "true")
}

/// Serving, with the report: at least one binding served and the node applied.
fn serving(view: &EdgeView) -> Option<&SourceReport> {
    match view {
        EdgeView::Reported(r)
            if r.node_problem.is_none() && r.outcomes.iter().any(|o| o.refusal.is_none()) =>
        {
            Some(r)
        }
        _ => None,
    }
}

/// The status of a source served by `edges` (sorted by EdgeNode, each once).
pub fn compose(edges: &[EdgeInput]) -> Composed {
    let per_edge: Vec<(Verdict, Vec<BindingStatus>)> = edges
        .iter()
        .map(|e| match &e.view {
            EdgeView::Refused { reason, message } => (
                Verdict::failed(status::READY, reason.clone(), message.clone()),
                Vec::new(),
            ),
            EdgeView::Waiting => (
                Verdict::failed(
                    status::READY,
                    "Pending",
                    format!("waiting for EdgeNode {}'s pass", e.node),
                ),
                Vec::new(),
            ),
            EdgeView::Reported(r) => status::port_binding_status(r),
        })
        .collect();
    let any_healthy = edges
        .iter()
        .any(|e| serving(&e.view).is_some() && !e.draining && e.outside != Outside::Unhealthy);
    let published: Vec<(ObjectKey, Vec<String>)> = edges
        .iter()
        .filter(|e| {
            serving(&e.view).is_some()
                && !e.draining
                && (e.outside != Outside::Unhealthy || !any_healthy)
        })
        .map(|e| (e.node.clone(), e.addresses.clone()))
        .collect();
    let edge_statuses: Vec<EdgeStatus> = edges
        .iter()
        .zip(&per_edge)
        .map(|(e, (verdict, _))| edge_status(e, verdict, &published))
        .collect();
    let generation = edges
        .iter()
        .filter_map(|e| match &e.view {
            EdgeView::Reported(r) => r.generation,
            _ => None,
        })
        .min();
    let ports = merged_ports(edges);
    if let [(verdict, bindings)] = per_edge.as_slice() {
        return Composed {
            verdict: verdict.clone(),
            bindings: bindings.clone(),
            ports,
            edges: edge_statuses,
            published,
            generation,
        };
    }
    let bindings = merged_bindings(edges, &per_edge);
    let ready: Vec<&EdgeInput> = edges
        .iter()
        .zip(&per_edge)
        .filter(|(_, (v, _))| v.ok)
        .map(|(e, _)| e)
        .collect();
    let not_ready: Vec<String> = edges
        .iter()
        .zip(&per_edge)
        .filter(|(_, (v, _))| !v.ok)
        .map(|(e, (v, _))| format!("EdgeNode {}: {}: {}", e.node, v.reason, v.message))
        .collect();
    let verdict = if not_ready.is_empty() {
        Verdict::ok(
            status::READY,
            "Served",
            format!("served by all {} EdgeNodes ({ports})", edges.len()),
        )
    } else if !ready.is_empty() {
        Verdict::ok(
            status::READY,
            "SomeEdgesNotServing",
            format!(
                "served by {} of {} EdgeNodes; {}",
                ready.len(),
                edges.len(),
                not_ready.join("; ")
            ),
        )
    } else {
        let reason = per_edge
            .first()
            .map(|(v, _)| v.reason.clone())
            .unwrap_or_default();
        Verdict::failed(
            status::READY,
            reason,
            format!(
                "served by none of {} EdgeNodes; {}",
                edges.len(),
                not_ready.join("; ")
            ),
        )
    };
    Composed {
        verdict,
        bindings,
        ports,
        edges: edge_statuses,
        published,
        generation,
    }
}

fn edge_status(
    e: &EdgeInput,
    verdict: &Verdict,
    published: &[(ObjectKey, Vec<String>)],
) -> EdgeStatus {
    let is_published = published.iter().any(|(n, _)| *n == e.node);
    let (state, reason, message) = if serving(&e.view).is_none() {
        (
            "NotServing",
            Some(verdict.reason.clone()),
            Some(verdict.message.clone()),
        )
    } else if e.draining {
        (
            "Draining",
            Some("Draining".to_owned()),
            Some("the EdgeNode is drained on request: out of the published addresses".to_owned()),
        )
    } else if e.outside == Outside::Unhealthy {
        let message = if is_published {
            "fails the check from outside, but so does every edge: kept published (fail open)"
        } else {
            "fails the check from outside (its public ports do not answer, or no uplink has a fresh handshake with its relay): out of the published addresses until it passes again"
        };
        (
            "Unhealthy",
            Some("EdgeUnreachable".to_owned()),
            Some(message.to_owned()),
        )
    } else if !verdict.ok {
        (
            "Degraded",
            Some(verdict.reason.clone()),
            Some(verdict.message.clone()),
        )
    } else {
        ("Serving", None, None)
    };
    let ports = match &e.view {
        EdgeView::Reported(r) if !r.ports.is_empty() => Some(r.ports.clone()),
        _ => None,
    };
    EdgeStatus {
        name: e.node.to_string(),
        state: state.to_owned(),
        reason,
        message,
        addresses: e.addresses.clone(),
        ports,
    }
}

/// The union of the edges' served ports, in the reports' own order (`port/PROTO`).
fn merged_ports(edges: &[EdgeInput]) -> String {
    let mut ports: Vec<&str> = Vec::new();
    for e in edges {
        if let EdgeView::Reported(r) = &e.view
            && r.node_problem.is_none()
        {
            for p in r.ports.split(',').filter(|p| !p.is_empty()) {
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
    }
    ports.sort_by_key(|p| {
        let (n, proto) = p.split_once('/').unwrap_or((p, ""));
        (n.parse::<u32>().unwrap_or(u32::MAX), proto.to_owned())
    });
    ports.join(",")
}

/// A binding is `Served` when one edge serves it; a refusal on some edge is named in its
/// message, with the edge.
fn merged_bindings(
    edges: &[EdgeInput],
    per_edge: &[(Verdict, Vec<BindingStatus>)],
) -> Vec<BindingStatus> {
    let mut merged: Vec<BindingStatus> = Vec::new();
    for (e, (_, bindings)) in edges.iter().zip(per_edge) {
        for b in bindings {
            let refused_here = (b.state != "Served").then(|| {
                format!(
                    "on EdgeNode {}: {}",
                    e.node,
                    b.message.clone().unwrap_or_default()
                )
            });
            match merged.iter_mut().find(|m| m.name == b.name) {
                None => {
                    let mut first = b.clone();
                    first.message = refused_here;
                    merged.push(first);
                }
                Some(m) => {
                    if b.state == "Served" && m.state != "Served" {
                        m.state = "Served".into();
                    }
                    if let Some(r) = refused_here {
                        if m.reason.is_none() {
                            m.reason.clone_from(&b.reason);
                        }
                        m.message = Some(match m.message.take() {
                            Some(before) => format!("{before}; {r}"),
                            None => r,
                        });
                    }
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Protocol;
    use crate::plan::{BindingId, BindingOutcome, Reason, Refusal, SourceKind};

    fn outcome(binding: &str, port: u16, refused: bool) -> BindingOutcome {
        BindingOutcome {
            id: BindingId {
                namespace: "d".into(),
                kind: SourceKind::PortBinding,
                source: "pb".into(),
                binding: binding.into(),
            },
            protocol: Protocol::Tcp,
            listen_port: port,
            refusal: refused.then(|| Refusal {
                reason: Reason::PortConflict,
                message: format!("port {port}/TCP is held by d/older"),
            }),
        }
    }

    fn edge(name: &str, view: EdgeView) -> EdgeInput {
        EdgeInput {
            node: ObjectKey::new("edge", name),
            view,
            addresses: vec![format!("203.0.113.{}", name.len())],
            outside: Outside::Unknown,
            draining: false,
        }
    }

    fn served(name: &str, refused_https: bool) -> EdgeView {
        EdgeView::Reported(SourceReport {
            node: ObjectKey::new("edge", name),
            generation: Some(2),
            node_problem: None,
            outcomes: vec![
                outcome("http", 80, false),
                outcome("https", 443, refused_https),
            ],
            ports: if refused_https {
                "80/TCP"
            } else {
                "80/TCP,443/TCP"
            }
            .into(),
        })
    }

    fn down(name: &str) -> EdgeView {
        EdgeView::Reported(SourceReport {
            node: ObjectKey::new("edge", name),
            generation: Some(2),
            node_problem: Some(("SSHUnreachable".into(), "connecting timed out".into())),
            outcomes: vec![outcome("http", 80, false)],
            ports: "80/TCP".into(),
        })
    }

    #[test]
    fn one_edge_says_what_its_pass_said() {
        let edges = [edge("a", served("a", true))];
        let c = compose(&edges);
        let (alone, bindings) = match &edges[0].view {
            EdgeView::Reported(r) => status::port_binding_status(r),
            _ => unreachable!(),
        };
        assert_eq!(c.verdict, alone);
        assert_eq!(c.bindings, bindings);
        assert_eq!(c.addresses(), ["203.0.113.1"]);
        assert_eq!(c.edges[0].state, "Degraded");
    }

    #[test]
    fn every_edge_serving_is_ready_and_published() {
        let c = compose(&[
            edge("a", served("a", false)),
            edge("bb", served("bb", false)),
        ]);
        assert!(
            c.verdict.ok && c.verdict.reason == "Served",
            "{:?}",
            c.verdict
        );
        assert_eq!(c.addresses(), ["203.0.113.1", "203.0.113.2"]);
        assert_eq!(c.ports, "80/TCP,443/TCP");
        assert!(c.edges.iter().all(|e| e.state == "Serving"));
        assert_eq!(c.generation, Some(2));
    }

    #[test]
    fn an_edge_down_leaves_the_others_serving_and_says_so() {
        let c = compose(&[edge("a", served("a", false)), edge("bb", down("bb"))]);
        assert!(c.verdict.ok);
        assert_eq!(c.verdict.reason, "SomeEdgesNotServing");
        assert!(
            c.verdict.message.contains("edge/bb") && c.verdict.message.contains("SSHUnreachable")
        );
        assert_eq!(
            c.addresses(),
            ["203.0.113.1"],
            "only the serving edge is published"
        );
        assert_eq!(c.edges[1].state, "NotServing");
        let none = compose(&[edge("a", down("a")), edge("bb", down("bb"))]);
        assert!(!none.verdict.ok);
        assert!(none.addresses().is_empty());
    }

    #[test]
    fn a_conflict_on_one_edge_refuses_the_binding_there_only() {
        let c = compose(&[
            edge("a", served("a", false)),
            edge("bb", served("bb", true)),
        ]);
        let https = c.bindings.iter().find(|b| b.name == "https").unwrap();
        assert_eq!(https.state, "Served", "another edge serves it");
        assert_eq!(https.reason.as_deref(), Some("PortConflict"));
        assert!(
            https
                .message
                .as_deref()
                .unwrap()
                .contains("on EdgeNode edge/bb")
        );
        assert_eq!(c.edges[1].state, "Degraded");
        assert_eq!(
            c.addresses().len(),
            2,
            "a degraded edge still serves the rest"
        );
    }

    #[test]
    fn unhealthy_and_drained_edges_leave_the_published_addresses() {
        let mut a = edge("a", served("a", false));
        let mut b = edge("bb", served("bb", false));
        b.outside = Outside::Unhealthy;
        let c = compose(&[a.clone(), b.clone()]);
        assert_eq!(c.addresses(), ["203.0.113.1"]);
        assert_eq!(c.edges[1].state, "Unhealthy");
        assert!(
            c.verdict.ok,
            "still serving: the check decides publication only"
        );
        a.draining = true;
        b.outside = Outside::Healthy;
        let c = compose(&[a.clone(), b.clone()]);
        assert_eq!(c.addresses(), ["203.0.113.2"]);
        assert_eq!(c.edges[0].state, "Draining");
        // Every serving edge failing the check: all kept (fail open); a drained one never.
        a.draining = false;
        a.outside = Outside::Unhealthy;
        b.outside = Outside::Unhealthy;
        assert_eq!(compose(&[a.clone(), b.clone()]).addresses().len(), 2);
        b.draining = true;
        assert_eq!(compose(&[a, b]).addresses(), ["203.0.113.1"]);
    }

    #[test]
    fn a_waiting_edge_holds_the_write_and_a_refused_one_does_not() {
        let waiting = [edge("a", served("a", false)), edge("bb", EdgeView::Waiting)];
        assert!(!Composed::complete(&waiting));
        let refused = [
            edge("a", served("a", false)),
            edge(
                "bb",
                EdgeView::Refused {
                    reason: "ReferenceNotGranted".into(),
                    message: "no grant".into(),
                },
            ),
        ];
        assert!(Composed::complete(&refused));
        let c = compose(&refused);
        assert_eq!(c.edges[1].reason.as_deref(), Some("ReferenceNotGranted"));
        assert_eq!(c.addresses(), ["203.0.113.1"]);
    }
}
