//! The operator's Prometheus metrics (prometheus-client, the Prometheus project's client):
//! one registry, its families, and a cheap cloneable handle ([`Metrics`]) that every actor
//! carries in its `Context`. Names follow Prometheus conventions (prefix `tunnel_`, units in
//! the name, `_total` on counters, added by the encoder). Label values come from code only:
//! actor kinds, `category()` labels, outcome kinds, and the names of Kubernetes objects
//! (validated by the API server), never from free text such as error messages.
//!
//! [`crate::telemetry::metrics_server`] serves [`Metrics::encode`] on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::UplinkStatus;
use crate::enroll::health::Health;
use crate::object_key::ObjectKey;
use crate::plan::BindingOutcome;
use crate::ssh::{Access, LoggedCommand};

/// Labels: an actor kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `EdgeNode`, `PortBinding`, `SSHSession`.
    pub kind: &'static str,
}

/// Labels: a reconcile pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    /// The kind reconciled.
    pub kind: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels: an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The kind whose pass failed.
    pub kind: &'static str,
    /// The error's `category()`.
    pub category: String,
}

/// Labels: an SSH command.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SshLabels {
    /// `read` or `write`, as the command declares.
    pub access: &'static str,
    /// `success`, `nonzero` (ran, failed) or `incomplete` (timeout, transport error).
    pub result: &'static str,
}

/// Labels: an enrollment (or teardown) pass on a VPS.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnrollLabels {
    /// `converge` or `teardown`.
    pub work: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels: one EdgeNode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Labels: the bindings of one EdgeNode with one outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingLabels {
    /// The EdgeNode's namespace.
    pub namespace: String,
    /// The EdgeNode's name.
    pub name: String,
    /// `planned`, `conflict`, `missing_target`, `invalid`.
    pub outcome: &'static str,
}

/// Labels: one uplink replica of an EdgeNode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UplinkLabels {
    /// The EdgeNode's namespace.
    pub namespace: String,
    /// The EdgeNode's name.
    pub name: String,
    /// The replica's StatefulSet ordinal.
    pub ordinal: String,
}

type Timing<L> = Family<L, Histogram, fn() -> Histogram>;

fn handler_buckets() -> Histogram {
    // 100 µs .. ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn ssh_buckets() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn pass_buckets() -> Histogram {
    // 10 ms .. ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

const OUTCOMES: [&str; 4] = ["planned", "conflict", "missing_target", "invalid"];

struct Families {
    registry: Registry,
    actors_alive: Family<KindLabels, Gauge>,
    messages: Family<KindLabels, Counter>,
    handler_duration: Timing<KindLabels>,
    restarts: Family<KindLabels, Counter>,
    parked: Family<KindLabels, Gauge>,
    passes: Family<PassLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    ssh_commands: Family<SshLabels, Counter>,
    ssh_duration: Timing<SshLabels>,
    enroll_duration: Timing<EnrollLabels>,
    bindings: Family<BindingLabels, Gauge>,
    vps_healthy: Family<NodeLabels, Gauge>,
    fresh_uplinks: Family<NodeLabels, Gauge>,
    handshake_age: Family<UplinkLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
}

/// The handle on the registry: clone it freely.
#[derive(Clone)]
pub struct Metrics(Arc<Families>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family of the operator.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tunnel");
        let f = Families {
            actors_alive: Family::default(),
            messages: Family::default(),
            handler_duration: Family::new_with_constructor(handler_buckets),
            restarts: Family::default(),
            parked: Family::default(),
            passes: Family::default(),
            errors: Family::default(),
            ssh_commands: Family::default(),
            ssh_duration: Family::new_with_constructor(ssh_buckets),
            enroll_duration: Family::new_with_constructor(pass_buckets),
            bindings: Family::default(),
            vps_healthy: Family::default(),
            fresh_uplinks: Family::default(),
            handshake_age: Family::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "actors_alive",
            "Actors running, by kind",
            f.actors_alive.clone(),
        );
        registry.register(
            "actor_messages",
            "Messages handled by actors, by kind",
            f.messages.clone(),
        );
        registry.register(
            "actor_handler_duration_seconds",
            "Time an actor spent handling one message, by kind",
            f.handler_duration.clone(),
        );
        registry.register(
            "actor_restarts",
            "Actors restarted by their supervisor after a failure, by kind",
            f.restarts.clone(),
        );
        registry.register(
            "actors_parked",
            "Actors parked after too many restarts (RestartLoop), by kind",
            f.parked.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconcile passes, by kind and result",
            f.passes.clone(),
        );
        registry.register(
            "errors",
            "Failed passes, by kind and error category",
            f.errors.clone(),
        );
        registry.register(
            "ssh_commands",
            "Commands run on VPSes over SSH, by access and result",
            f.ssh_commands.clone(),
        );
        registry.register(
            "ssh_command_duration_seconds",
            "Duration of one SSH command, by access and result",
            f.ssh_duration.clone(),
        );
        registry.register(
            "enrollment_pass_duration_seconds",
            "Duration of one enrollment (or teardown) pass on a VPS, SSH slot wait excluded",
            f.enroll_duration.clone(),
        );
        registry.register(
            "bindings",
            "Bindings of an EdgeNode's last plan, by outcome",
            f.bindings.clone(),
        );
        registry.register(
            "edge_node_vps_healthy",
            "1 when the EdgeNode's VPS runs Envoy and the relay and the relay reports ready",
            f.vps_healthy.clone(),
        );
        registry.register(
            "edge_node_uplinks_fresh_handshake",
            "Uplinks of the EdgeNode whose WireGuard handshake the relay counts as fresh",
            f.fresh_uplinks.clone(),
        );
        registry.register(
            "uplink_last_handshake_seconds",
            "Seconds since the uplink's last WireGuard handshake, as the relay reported it at the last pass",
            f.handshake_age.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without leader election)",
            f.leader.clone(),
        );
        Self(Arc::new(Families { registry, ..f }))
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// An actor of `kind` started. Its kind's restart counter and parked gauge exist from
    /// then on, at zero until something happens: a dashboard panel or an alert reading them
    /// has a series to show rather than nothing.
    pub fn actor_started(&self, kind: &'static str) {
        let labels = KindLabels { kind };
        self.0.actors_alive.get_or_create(&labels).inc();
        drop(self.0.restarts.get_or_create(&labels));
        drop(self.0.parked.get_or_create(&labels));
    }

    /// An actor of `kind` stopped or failed.
    pub fn actor_stopped(&self, kind: &'static str) {
        self.0
            .actors_alive
            .get_or_create(&KindLabels { kind })
            .dec();
    }

    /// Counts an actor of `kind` alive while the guard lives (for actors no supervisor of
    /// ours spawns: the SSH session).
    pub fn alive(&self, kind: &'static str) -> AliveGuard {
        self.actor_started(kind);
        AliveGuard {
            metrics: self.clone(),
            kind,
        }
    }

    /// A supervisor restarts a failed actor of `kind`.
    pub fn actor_restarted(&self, kind: &'static str) {
        self.0.restarts.get_or_create(&KindLabels { kind }).inc();
    }

    /// A supervisor parks (`true`) or un-parks (`false`) an actor of `kind`.
    pub fn actor_parked(&self, kind: &'static str, parked: bool) {
        let gauge = self.0.parked.get_or_create(&KindLabels { kind });
        if parked {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    /// Times one message of an actor of `kind`: counted and observed when the guard drops.
    pub fn handling(&self, kind: &'static str) -> HandlerTimer {
        HandlerTimer {
            metrics: self.clone(),
            kind,
            started: Instant::now(),
        }
    }

    /// A reconcile pass of `kind` ended; `error` is the failure's `category()`.
    pub fn pass(&self, kind: &'static str, error: Option<&str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.0
            .passes
            .get_or_create(&PassLabels { kind, result })
            .inc();
        if let Some(category) = error {
            self.0
                .errors
                .get_or_create(&ErrorLabels {
                    kind,
                    category: category.to_owned(),
                })
                .inc();
        }
    }

    /// The SSH commands a job ran.
    pub fn ssh_commands(&self, commands: &[LoggedCommand]) {
        for c in commands {
            let labels = SshLabels {
                access: match c.access {
                    Access::Read => "read",
                    Access::Write => "write",
                },
                result: match c.status {
                    Some(0) => "success",
                    Some(_) => "nonzero",
                    None => "incomplete",
                },
            };
            self.0.ssh_commands.get_or_create(&labels).inc();
            self.0
                .ssh_duration
                .get_or_create(&labels)
                .observe(c.duration.as_secs_f64());
        }
    }

    /// An enrollment (`teardown` false) or teardown pass took `took`.
    pub fn enrollment_pass(&self, teardown: bool, ok: bool, took: Duration) {
        let labels = EnrollLabels {
            work: if teardown { "teardown" } else { "converge" },
            result: if ok { "success" } else { "error" },
        };
        self.0
            .enroll_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The outcomes of an EdgeNode's last plan.
    pub fn bindings<'a>(
        &self,
        node: &ObjectKey,
        outcomes: impl IntoIterator<Item = &'a BindingOutcome>,
    ) {
        let mut counts = [0_i64; 4];
        for o in outcomes {
            counts[outcome_index(o)] += 1;
        }
        for (outcome, count) in OUTCOMES.iter().zip(counts) {
            self.0
                .bindings
                .get_or_create(&BindingLabels {
                    namespace: node.namespace.clone(),
                    name: node.name.clone(),
                    outcome,
                })
                .set(count);
        }
    }

    /// The health an enrollment pass read from an EdgeNode's VPS; `uplinks` (from the plan)
    /// maps each uplink's public key to its StatefulSet ordinal.
    pub fn vps_health(&self, node: &ObjectKey, health: &Health, uplinks: &[UplinkStatus]) {
        let labels = NodeLabels {
            namespace: node.namespace.clone(),
            name: node.name.clone(),
        };
        let healthy = health.envoy_active()
            && health.relay_active()
            && health.relay_status.as_ref().is_some_and(|s| s.ready);
        self.0
            .vps_healthy
            .get_or_create(&labels)
            .set(i64::from(healthy));
        let peers = health
            .relay_status
            .as_ref()
            .map(|s| s.peers.as_slice())
            .unwrap_or_default();
        let fresh = peers.iter().filter(|p| p.handshake_fresh).count();
        self.0
            .fresh_uplinks
            .get_or_create(&labels)
            .set(i64::try_from(fresh).unwrap_or(i64::MAX));
        for u in uplinks {
            let uplink = UplinkLabels {
                namespace: node.namespace.clone(),
                name: node.name.clone(),
                ordinal: u.ordinal.to_string(),
            };
            let age = peers
                .iter()
                .find(|p| p.public_key == u.public_key)
                .and_then(|p| p.last_handshake_seconds_ago);
            match age {
                #[allow(clippy::cast_precision_loss)]
                Some(seconds) => {
                    self.0
                        .handshake_age
                        .get_or_create(&uplink)
                        .set(seconds as f64);
                }
                None => {
                    // Never shaken hands: no sample rather than a made-up age.
                    self.0.handshake_age.remove(&uplink);
                }
            }
        }
    }

    /// The EdgeNode is gone (or its actor stopped): its series go.
    pub fn forget_node(&self, node: &ObjectKey) {
        let labels = NodeLabels {
            namespace: node.namespace.clone(),
            name: node.name.clone(),
        };
        self.0.vps_healthy.remove(&labels);
        self.0.fresh_uplinks.remove(&labels);
        for outcome in OUTCOMES {
            self.0.bindings.remove(&BindingLabels {
                namespace: node.namespace.clone(),
                name: node.name.clone(),
                outcome,
            });
        }
        // prometheus-client has no prefix removal; uplinks beyond the replica limit never
        // exist (uplink.replicas ≤ 253).
        for ordinal in 0..253 {
            self.0.handshake_age.remove(&UplinkLabels {
                namespace: node.namespace.clone(),
                name: node.name.clone(),
                ordinal: ordinal.to_string(),
            });
        }
    }

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.0.leader.set(i64::from(leading));
    }
}

fn outcome_index(o: &BindingOutcome) -> usize {
    use crate::plan::OutcomeKind;
    match o.kind() {
        OutcomeKind::Planned => 0,
        OutcomeKind::Conflict => 1,
        OutcomeKind::MissingTarget => 2,
        OutcomeKind::Invalid => 3,
    }
}

/// Counts one actor alive until dropped.
#[derive(Debug)]
pub struct AliveGuard {
    metrics: Metrics,
    kind: &'static str,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.metrics.actor_stopped(self.kind);
    }
}

/// Counts and times one message when dropped.
#[derive(Debug)]
pub struct HandlerTimer {
    metrics: Metrics,
    kind: &'static str,
    started: Instant,
}

impl Drop for HandlerTimer {
    fn drop(&mut self) {
        let labels = KindLabels { kind: self.kind };
        self.metrics.0.messages.get_or_create(&labels).inc();
        self.metrics
            .0
            .handler_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_convention() {
        let m = Metrics::new();
        m.actor_started("EdgeNode");
        m.actor_restarted("EdgeNode");
        m.pass("EdgeNode", Some("SSHAuthFailed"));
        m.pass("PortBinding", None);
        drop(m.handling("EdgeNode"));
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "tunnel_actors_alive{kind=\"EdgeNode\"} 1",
            "tunnel_actor_restarts_total{kind=\"EdgeNode\"} 1",
            "tunnel_actor_messages_total{kind=\"EdgeNode\"} 1",
            "tunnel_reconcile_passes_total{kind=\"EdgeNode\",result=\"error\"} 1",
            "tunnel_reconcile_passes_total{kind=\"PortBinding\",result=\"success\"} 1",
            "tunnel_errors_total{kind=\"EdgeNode\",category=\"SSHAuthFailed\"} 1",
            "tunnel_actor_handler_duration_seconds_count{kind=\"EdgeNode\"} 1",
            "tunnel_leader 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_started_kind_has_its_restart_and_parked_series_at_zero() {
        let m = Metrics::new();
        m.actor_started("PortBinding");
        let text = m.encode();
        for line in [
            "tunnel_actor_restarts_total{kind=\"PortBinding\"} 0",
            "tunnel_actors_parked{kind=\"PortBinding\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn node_series_go_with_the_node() {
        let m = Metrics::new();
        let key = ObjectKey::new("default", "edge");
        m.bindings(&key, []);
        let health = Health::default();
        m.vps_health(
            &key,
            &health,
            &[UplinkStatus {
                ordinal: 0,
                tunnel_ip: "10.0.0.2".into(),
                public_key: "k".into(),
            }],
        );
        let text = m.encode();
        assert!(
            text.contains("tunnel_edge_node_vps_healthy{namespace=\"default\",name=\"edge\"} 0")
        );
        assert!(text.contains(
            "tunnel_bindings{namespace=\"default\",name=\"edge\",outcome=\"planned\"} 0"
        ));
        m.forget_node(&key);
        assert!(!m.encode().contains("name=\"edge\""));
    }
}
