//! What the status of an EdgeNode and of a PortBinding says after a pass, pure: the
//! conditions' verdicts from what the pass reached, and each binding's entry. The actors merge
//! them with the object's current status ([`super::conditions`]) and write only differences.

use crate::crd::BindingStatus;
use crate::plan::BindingOutcome;

use super::conditions::Verdict;

/// Condition types of an EdgeNode.
pub const READY: &str = "Ready";
/// The VPS was reached and brought to the desired state.
pub const ENROLLED: &str = "Enrolled";
/// The plan was made and applied (VPS files and uplink workload).
pub const CONFIG_APPLIED: &str = "ConfigApplied";
/// Every uplink replica has a fresh handshake with the relay.
pub const UPLINKS_READY: &str = "UplinksReady";

/// Where a pass stopped, with the failing step's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassEnd {
    /// A step before the SSH pass failed (SSH Secret, keys, plan, workload).
    Prepare {
        /// The error's category.
        reason: String,
        /// Its message.
        message: String,
    },
    /// The SSH pass failed.
    Enroll {
        /// The error's category.
        reason: String,
        /// Its message.
        message: String,
    },
    /// The pass went through; this is the health it found.
    Done(HealthFacts),
    /// The VPS was enrolled (this is its health), but the uplink workload could not be applied.
    WorkloadFailed {
        /// The error's category.
        reason: String,
        /// Its message.
        message: String,
        /// The health the SSH pass found.
        health: HealthFacts,
    },
}

/// The VPS's health as the pass saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthFacts {
    /// `tunnel-envoy.service` is active.
    pub envoy_active: bool,
    /// `tunnel-relay.service` is active.
    pub relay_active: bool,
    /// Uplinks up now: the pod runs and the relay has a fresh handshake with it.
    pub fresh_uplinks: usize,
    /// Uplink replicas wanted.
    pub replicas: usize,
    /// Why each uplink that is not up is not (e.g. `pod x-1 is Pending, the scheduler says: …`).
    pub not_up: Vec<String>,
    /// Connections and sessions Envoy holds on the public ports (`None`: not read).
    pub active_connections: Option<u64>,
}

impl HealthFacts {
    /// Everything is up.
    pub fn healthy(&self) -> bool {
        self.envoy_active && self.relay_active && self.fresh_uplinks >= self.replicas
    }
}

/// The EdgeNode's verdicts after a pass. Conditions of steps the pass did not reach are not
/// among them (the actor keeps what they said before).
pub fn edge_node_verdicts(end: &PassEnd, address: &str) -> Vec<Verdict> {
    match end {
        PassEnd::Prepare { reason, message } => vec![
            Verdict::failed(READY, reason.clone(), message.clone()),
            Verdict::failed(CONFIG_APPLIED, reason.clone(), message.clone()),
        ],
        PassEnd::Enroll { reason, message } => {
            let message = format!("VPS {address}: {message}");
            vec![
                Verdict::failed(READY, reason.clone(), message.clone()),
                Verdict::failed(ENROLLED, reason.clone(), message.clone()),
                Verdict::failed(CONFIG_APPLIED, reason.clone(), message),
            ]
        }
        PassEnd::WorkloadFailed {
            reason,
            message,
            health,
        } => {
            let message = format!(
                "VPS {address} is enrolled, but the uplink workload was not applied: {message}"
            );
            edge_node_verdicts(&PassEnd::Done(health.clone()), address)
                .into_iter()
                .map(|v| {
                    if v.type_ == READY || v.type_ == CONFIG_APPLIED {
                        Verdict::failed(v.type_, reason.clone(), message.clone())
                    } else {
                        v
                    }
                })
                .collect()
        }
        PassEnd::Done(h) => {
            let mut uplinks = format!(
                "{}/{} uplinks are up (pod running, fresh handshake with the relay)",
                h.fresh_uplinks, h.replicas
            );
            if !h.not_up.is_empty() {
                uplinks.push_str("; ");
                uplinks.push_str(&h.not_up.join("; "));
            }
            let ready = if !h.envoy_active {
                Verdict::failed(
                    READY,
                    "EnvoyNotActive",
                    format!("tunnel-envoy.service is not active on {address}"),
                )
            } else if !h.relay_active {
                Verdict::failed(
                    READY,
                    "RelayNotActive",
                    format!("tunnel-relay.service is not active on {address}"),
                )
            } else if h.fresh_uplinks < h.replicas {
                Verdict::failed(READY, "UplinksNotReady", uplinks.clone())
            } else {
                Verdict::ok(
                    READY,
                    "AllHealthy",
                    format!("VPS {address} is enrolled, configured and reached by every uplink"),
                )
            };
            vec![
                ready,
                Verdict::ok(ENROLLED, "Enrolled", format!("VPS {address} is enrolled")),
                Verdict::ok(
                    CONFIG_APPLIED,
                    "Applied",
                    "the plan is applied to the VPS and the uplink workload",
                ),
                if h.fresh_uplinks >= h.replicas {
                    Verdict::ok(UPLINKS_READY, "UplinksReady", uplinks)
                } else {
                    Verdict::failed(UPLINKS_READY, "UplinksNotReady", uplinks)
                },
            ]
        }
    }
}

/// What an EdgeNode pass did for one source of bindings (a PortBinding, a LoadBalancer
/// Service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    /// The EdgeNode whose pass this is.
    pub node: crate::object_key::ObjectKey,
    /// The version the plan read: a PortBinding's generation, a Service's
    /// [`crate::plan::load_balancer::version`].
    pub generation: Option<i64>,
    /// `None` when the EdgeNode's configuration was applied; else why it was not.
    pub node_problem: Option<(String, String)>,
    /// The outcome of each of its bindings (empty when no plan was made).
    pub outcomes: Vec<BindingOutcome>,
    /// Its served ports, e.g. `53/UDP,80/TCP`.
    pub ports: String,
}

/// The PortBinding's `Ready` verdict and binding entries from a report.
pub fn port_binding_status(report: &SourceReport) -> (Verdict, Vec<BindingStatus>) {
    let bindings: Vec<BindingStatus> = report
        .outcomes
        .iter()
        .map(|o| BindingStatus {
            name: o.id.binding.clone(),
            protocol: o.protocol.to_string(),
            listen_port: o.listen_port,
            state: if o.refusal.is_none() {
                "Served".into()
            } else {
                "Refused".into()
            },
            reason: o.refusal.as_ref().map(|r| r.reason.as_str().to_owned()),
            message: o.refusal.as_ref().map(|r| r.message.clone()),
        })
        .collect();
    let verdict = if let Some((reason, message)) = &report.node_problem {
        Verdict::failed(
            READY,
            "EdgeNodeNotReady",
            format!("the EdgeNode's configuration is not applied ({reason}): {message}"),
        )
    } else if let Some(refused) = report.outcomes.iter().find(|o| o.refusal.is_some()) {
        let refusal = refused
            .refusal
            .as_ref()
            .map(|r| (r.reason.as_str(), r.message.as_str()));
        let (reason, message) = refusal.unwrap_or_default();
        let served = bindings.iter().filter(|b| b.state == "Served").count();
        let word = refused.id.kind.binding_word();
        Verdict::failed(
            READY,
            reason,
            format!(
                "{word} {:?} is refused: {message} ({served} of {} {word}s served)",
                refused.id.binding,
                bindings.len()
            ),
        )
    } else {
        let word = report
            .outcomes
            .first()
            .map_or("binding", |o| o.id.kind.binding_word());
        Verdict::ok(
            READY,
            "Served",
            format!("every {word} is served ({})", report.ports),
        )
    };
    (verdict, bindings)
}

/// The PortBinding status to write when its EdgeNode does not exist.
pub fn edge_node_missing(node: &str) -> Verdict {
    Verdict::failed(
        READY,
        "EdgeNodeNotFound",
        format!("EdgeNode {node} does not exist; create it or fix spec.edgeNodeRef"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Protocol;
    use crate::plan::{BindingId, Reason, Refusal};

    fn outcome(binding: &str, port: u16, refusal: Option<Refusal>) -> BindingOutcome {
        BindingOutcome {
            id: BindingId {
                namespace: "d".into(),
                kind: crate::plan::SourceKind::PortBinding,
                source: "pb".into(),
                binding: binding.into(),
            },
            protocol: Protocol::Tcp,
            listen_port: port,
            refusal,
        }
    }

    #[test]
    fn a_healthy_pass_makes_every_condition_true() {
        let v = edge_node_verdicts(
            &PassEnd::Done(HealthFacts {
                envoy_active: true,
                relay_active: true,
                fresh_uplinks: 2,
                replicas: 2,
                not_up: Vec::new(),
                active_connections: None,
            }),
            "192.0.2.1",
        );
        assert!(v.iter().all(|v| v.ok), "{v:?}");
        assert_eq!(v[0].reason, "AllHealthy");
    }

    #[test]
    fn a_refused_workload_does_not_hide_that_the_vps_is_enrolled() {
        let v = edge_node_verdicts(
            &PassEnd::WorkloadFailed {
                reason: "WorkloadApplyFailed".into(),
                message: "applying StatefulSet tunnel/x: the API server refused it (422 Invalid)"
                    .into(),
                health: HealthFacts {
                    envoy_active: true,
                    relay_active: true,
                    fresh_uplinks: 0,
                    replicas: 1,
                    not_up: vec!["uplink 0: pod x-0 does not exist".into()],
                    active_connections: None,
                },
            },
            "192.0.2.1",
        );
        let get = |t: &str| v.iter().find(|v| v.type_ == t).unwrap();
        assert!(!get(READY).ok && get(READY).reason == "WorkloadApplyFailed");
        assert!(
            get(READY)
                .message
                .contains("is enrolled, but the uplink workload was not applied")
        );
        assert!(get(ENROLLED).ok, "the VPS was enrolled all the same");
        assert_eq!(get(CONFIG_APPLIED).reason, "WorkloadApplyFailed");
        assert!(
            get(UPLINKS_READY)
                .message
                .contains("pod x-0 does not exist")
        );
    }

    #[test]
    fn the_first_failing_step_gives_ready_its_reason() {
        let v = edge_node_verdicts(
            &PassEnd::Enroll {
                reason: "SSHUnreachable".into(),
                message: "connecting timed out".into(),
            },
            "192.0.2.1",
        );
        assert_eq!(v[0].type_, READY);
        assert_eq!(v[0].reason, "SSHUnreachable");
        assert!(v[0].message.contains("192.0.2.1"));
        assert!(v.iter().all(|v| v.type_ != UPLINKS_READY));
        let waiting = edge_node_verdicts(
            &PassEnd::Done(HealthFacts {
                envoy_active: true,
                relay_active: true,
                fresh_uplinks: 1,
                replicas: 2,
                not_up: vec![
                    "uplink 1: pod x-1 is Pending, the scheduler says: 0/1 nodes are available"
                        .into(),
                ],
                active_connections: None,
            }),
            "a",
        );
        assert_eq!(waiting[0].reason, "UplinksNotReady");
        assert!(waiting[0].message.starts_with("1/2"));
        assert!(
            waiting[0].message.contains("the scheduler says: 0/1 nodes"),
            "{}",
            waiting[0].message
        );
    }

    #[test]
    fn a_refused_binding_names_its_reason_and_the_others_stay_served() {
        let report = SourceReport {
            node: crate::object_key::ObjectKey::new("team", "edge"),
            generation: Some(3),
            node_problem: None,
            outcomes: vec![
                outcome("http", 80, None),
                outcome(
                    "https",
                    443,
                    Some(Refusal {
                        reason: Reason::PortConflict,
                        message: "port 443/TCP is held by binding \"x\" of PortBinding d/older"
                            .into(),
                    }),
                ),
            ],
            ports: "80/TCP".into(),
        };
        let (ready, bindings) = port_binding_status(&report);
        assert!(!ready.ok);
        assert_eq!(ready.reason, "PortConflict");
        assert!(ready.message.contains("d/older") && ready.message.contains("1 of 2"));
        assert_eq!(bindings[0].state, "Served");
        assert_eq!(bindings[1].state, "Refused");
        assert_eq!(bindings[1].reason.as_deref(), Some("PortConflict"));
    }

    #[test]
    fn a_node_that_is_not_applied_makes_its_port_bindings_wait() {
        let report = SourceReport {
            node: crate::object_key::ObjectKey::new("team", "edge"),
            generation: Some(1),
            node_problem: Some(("SSHUnreachable".into(), "down".into())),
            outcomes: vec![outcome("http", 80, None)],
            ports: "80/TCP".into(),
        };
        let (ready, _) = port_binding_status(&report);
        assert_eq!(ready.reason, "EdgeNodeNotReady");
        assert!(ready.message.contains("SSHUnreachable"));
    }
}
