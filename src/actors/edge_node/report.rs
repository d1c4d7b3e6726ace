//! The report stage of a pass: the EdgeNode's status (written only when it changed), Events on
//! transitions of `Ready`, the pass metrics, and one report to each source's actor (PortBinding,
//! LoadBalancer Service). Also the
//! reports outside a pass: a parked actor, a deletion that cannot proceed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use crate::crd::{ANNOTATION_SKIP_DEPROVISION, EdgeNode, EdgeNodeStatus};
use crate::enroll::PassReport;
use crate::object_key::ObjectKey;
use crate::plan::SourceKey;
use crate::workload::PodState;

use super::super::conditions::{self, Verdict};
use super::super::drain;
use super::super::edge_probe::ProbeTargets;
use super::super::protocol::{self, BindingMsg};
use super::super::status::{self, HealthFacts, PassEnd, SourceReport};
use super::super::{Context, EDGE_NODE_MANAGER, index};
use super::decide::PassFacts;

/// Writes the status of a pass and answers the PortBindings; returns the reports sent (kept
/// by the actor to answer a PortBinding actor that asks again).
pub async fn conclude(
    ctx: &Context,
    node: &EdgeNode,
    end: &PassEnd,
    facts: Option<&PassFacts>,
    mut reports: BTreeMap<SourceKey, SourceReport>,
) -> BTreeMap<SourceKey, SourceReport> {
    let key = ObjectKey::of(node);
    let mut verdicts = status::edge_node_verdicts(end, &node.spec.address);
    let active = match end {
        PassEnd::Done(h) | PassEnd::WorkloadFailed { health: h, .. } => h.active_connections,
        PassEnd::Prepare { .. } | PassEnd::Enroll { .. } => None,
    };
    let drained = drain::verdict(node, active, Timestamp::now());
    verdicts.extend(drained.clone());
    let mut st = node.status.clone().unwrap_or_default();
    if drained.is_none() {
        // Not draining (any more): no Drained condition.
        st.conditions.retain(|c| c.type_ != drain::DRAINED);
    }
    let before = st.conditions.clone();
    st.conditions = with_verdicts(&st.conditions, &verdicts, node.metadata.generation);
    st.observed_generation = node.metadata.generation;
    if let Some(f) = facts {
        st.public_key = Some(f.relay_public.clone());
        st.uplink.clone_from(&f.uplinks);
        st.applied_config_hash = Some(f.plan_hash.clone());
        st.applied_bindings.clone_from(&f.applied);
    }
    write_if_changed(ctx, node, &st).await;
    publish_transitions(ctx, node, &before, &verdicts).await;

    let problem = match end {
        PassEnd::Prepare { reason, message }
        | PassEnd::Enroll { reason, message }
        | PassEnd::WorkloadFailed {
            reason, message, ..
        } => Some((reason.clone(), message.clone())),
        PassEnd::Done(_) => None,
    };
    ctx.metrics
        .pass("EdgeNode", problem.as_ref().map(|(r, _)| r.as_str()));
    ctx.metrics
        .bindings(&key, reports.values().flat_map(|r| &r.outcomes));
    if reports.is_empty() {
        // No plan: every source of the node waits, with the node's reason.
        let pbs = ctx.stores.port_bindings.state();
        let waiting = |source: SourceKey, generation: Option<i64>| {
            let report = SourceReport {
                node: key.clone(),
                generation,
                node_problem: None,
                outcomes: Vec::new(),
                ports: String::new(),
            };
            (source, report)
        };
        reports = index::port_bindings_of(&key, &pbs)
            .map(|pb| {
                waiting(
                    SourceKey::port_binding(ObjectKey::of(pb)),
                    pb.metadata.generation,
                )
            })
            .chain(ctx.load_balancers_of(&key).iter().map(|svc| {
                waiting(
                    SourceKey::service(ObjectKey::of(svc.as_ref())),
                    Some(crate::plan::load_balancer::version(svc)),
                )
            }))
            .chain(
                ctx.gateways_of(&key)
                    .iter()
                    .map(|gw| waiting(SourceKey::gateway(gw.key.clone()), Some(gw.version))),
            )
            .collect();
    }
    for (pb, report) in &mut reports {
        report.node_problem.clone_from(&problem);
        send_report(ctx, pb, report.clone());
    }
    // A drained edge is out of every status: probing it would only add connections to count.
    let targets = if drained.is_some() {
        ProbeTargets::default()
    } else {
        // A pass that did not reach the VPS says nothing of its handshakes: the probe decides.
        let relay_up = match end {
            PassEnd::Done(h) | PassEnd::WorkloadFailed { health: h, .. } => {
                h.fresh_uplinks > 0 || h.replicas == 0
            }
            PassEnd::Prepare { .. } | PassEnd::Enroll { .. } => true,
        };
        probe_targets(node, &reports, relay_up)
    };
    ctx.edges.set_targets(&key, targets);
    reports
}

/// What the check from outside probes on `node`: the TCP ports its pass serves, else its SSH
/// port (the host is up), at its public addresses; `relay_up`: the pass found an uplink with a
/// fresh handshake.
pub fn probe_targets(
    node: &EdgeNode,
    reports: &BTreeMap<SourceKey, SourceReport>,
    relay_up: bool,
) -> ProbeTargets {
    let mut ports: Vec<u16> = reports
        .values()
        .filter(|r| r.node_problem.is_none())
        .flat_map(|r| &r.outcomes)
        .filter(|o| o.refusal.is_none() && o.protocol == crate::crd::Protocol::Tcp)
        .map(|o| o.listen_port)
        .collect();
    if ports.is_empty() {
        ports.push(node.spec.ssh.port);
    }
    ProbeTargets {
        addresses: super::super::edge_set::public_addresses(node),
        ports,
        relay_up,
    }
}

/// Sends `report` to the actor of source `key`, if it runs.
pub fn send_report(ctx: &Context, key: &SourceKey, report: SourceReport) {
    if key.kind == crate::plan::SourceKind::Gateway {
        if let Some(actor) = protocol::gateway(ctx) {
            let _ = actor.send_message(protocol::GatewayMsg::Report(
                key.key.clone(),
                Box::new(report),
            ));
        }
        return;
    }
    if let Some(actor) = protocol::source(ctx, key) {
        let _ = actor.send_message(BindingMsg::Report(report));
    }
}

/// The health facts of a successful SSH pass: an uplink counts when the relay has a fresh
/// handshake with its key *and* its pod is up now (a handshake stays fresh for minutes after
/// the pod went). `pods` is `None` when the pods could not be read: the relay's word alone.
pub fn health_facts(
    report: &PassReport,
    facts: &PassFacts,
    workload: &str,
    pods: Option<&BTreeMap<usize, PodState>>,
) -> HealthFacts {
    let fresh: BTreeSet<&str> = report
        .health
        .relay_status
        .as_ref()
        .map(|s| {
            s.peers
                .iter()
                .filter(|p| p.handshake_fresh)
                .map(|p| p.public_key.as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut up = 0;
    let mut not_up = Vec::new();
    for u in &facts.uplinks {
        let ordinal = usize::try_from(u.ordinal).unwrap_or(usize::MAX);
        let pod = format!("{workload}-{ordinal}");
        let state = pods.and_then(|p| p.get(&ordinal));
        match state {
            Some(s) if !s.is_up() => not_up.push(format!("uplink {ordinal}: {}", s.describe(&pod))),
            _ if !fresh.contains(u.public_key.as_str()) => {
                not_up.push(format!(
                    "uplink {ordinal}: no fresh handshake with the relay"
                ));
            }
            _ => up += 1,
        }
    }
    HealthFacts {
        envoy_active: report.health.envoy_active(),
        relay_active: report.health.relay_active(),
        fresh_uplinks: up,
        replicas: facts.replicas,
        not_up,
        active_connections: report.health.active_connections,
    }
}

/// What follows a successful SSH pass: the restart annotation goes, private keys sent to the
/// VPS are announced.
pub async fn after_enrolled(
    ctx: &Context,
    node: &EdgeNode,
    facts: &PassFacts,
    report: &PassReport,
) {
    let key = ObjectKey::of(node);
    let reference = node.object_ref(&());
    if facts.restart_requested {
        let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
        match super::apply::clear_restart_request(&api, &key.name).await {
            Ok(()) => {
                ctx.publish(
                    &reference,
                    false,
                    "EnvoyRestarted",
                    "Envoy restarted on request".into(),
                    "RestartEnvoy",
                )
                .await;
            }
            Err(e) => warn!(node = %key, error = %e, "removing the restart-envoy annotation"),
        }
    }
    if report.wrote_tls && !facts.private_keys_on_edge.is_empty() {
        ctx.publish(
            &reference,
            true,
            "PrivateKeyOnEdge",
            format!(
                "TLS private keys of Secret(s) {} were copied to VPS {} for TLS at the edge (offload/mutual); the VPS's provider can read them",
                facts.private_keys_on_edge.join(", "),
                node.spec.address
            ),
            "Enroll",
        )
        .await;
    }
}

/// Before the first enrollment's SSH job: `Ready=Unknown`, reason `Enrolling`, saying what
/// happens now (an EdgeNode enrolled before keeps its conditions while later passes run).
pub async fn enrolling(ctx: &Context, node: &EdgeNode) {
    let message = format!(
        "enrolling VPS {}: connecting over SSH and looking at the VPS, then installing the relay agent and Envoy (the first enrollment uploads about 110 MB when Envoy is pushed); the uplink workload is applied",
        node.spec.address
    );
    if let Some((before, verdicts)) = write_enrolling(ctx, node, message).await {
        publish_transitions(ctx, node, &before, &verdicts).await;
    }
}

/// During the first enrollment's SSH job: the phase that starts now, in the `Enrolling`
/// message (a few per pass, [`crate::enroll::progress`]); no Event.
pub async fn enrolling_step(ctx: &Context, node: &EdgeNode, progress: &crate::enroll::Progress) {
    let message = format!(
        "enrolling VPS {}: {progress}; the uplink workload is applied",
        node.spec.address
    );
    write_enrolling(ctx, node, message).await;
}

/// Writes `Ready=Unknown`, `Enrolling`, with `message` unless the node was enrolled before;
/// the conditions before and the verdict, when written.
async fn write_enrolling(
    ctx: &Context,
    node: &EdgeNode,
    message: String,
) -> Option<(Vec<Condition>, [Verdict; 1])> {
    let st = node.status.clone().unwrap_or_default();
    let enrolled_before = st
        .conditions
        .iter()
        .any(|c| c.type_ == status::ENROLLED && c.status == "True");
    if enrolled_before {
        return None;
    }
    let verdicts = [Verdict::unknown(status::READY, "Enrolling", message)];
    let mut next = st.clone();
    next.conditions = with_verdicts(&st.conditions, &verdicts, node.metadata.generation);
    write_if_changed(ctx, node, &next).await;
    Some((st.conditions, verdicts))
}

/// An uplink pod deleted so the rollout can go on: an Event and a log line.
pub async fn rollout_unblocked(ctx: &Context, node: &EdgeNode, unblock: &crate::workload::Unblock) {
    let message = unblock.to_string();
    info!(node = %ObjectKey::of(node), pod = unblock.pod(), "{message}");
    ctx.publish(
        &node.object_ref(&()),
        false,
        unblock.reason(),
        message,
        "Rollout",
    )
    .await;
}

/// A deletion that cannot tear the VPS down: `Ready=False` with the way out.
pub async fn deletion_blocked(ctx: &Context, node: &EdgeNode, reason: &str, message: &str) {
    let key = ObjectKey::of(node);
    let message = format!(
        "deleting: the VPS could not be torn down ({message}); to delete without cleaning the VPS: kubectl annotate edgenode -n {} {} {ANNOTATION_SKIP_DEPROVISION}=true",
        key.namespace, key.name
    );
    let verdicts = [Verdict::failed(status::READY, reason, message)];
    let mut st = node.status.clone().unwrap_or_default();
    let before = st.conditions.clone();
    st.conditions = with_verdicts(&st.conditions, &verdicts, node.metadata.generation);
    write_if_changed(ctx, node, &st).await;
    publish_transitions(ctx, node, &before, &verdicts).await;
}

/// A parked actor: `Ready=False`, reason `RestartLoop`, and an Event.
pub async fn parked(ctx: &Context, node: &EdgeNode, message: String) {
    let key = ObjectKey::of(node);
    let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let verdict = Verdict::failed(status::READY, "RestartLoop", message.clone());
    let mut st = node.status.clone().unwrap_or_default();
    st.conditions = with_verdicts(&st.conditions, &[verdict], node.metadata.generation);
    if let Err(e) = write_status(&api, &key.name, &st).await {
        warn!(node = %key, error = %e, "writing the RestartLoop status");
    }
    ctx.publish(
        &node.object_ref(&()),
        true,
        "RestartLoop",
        message,
        "Reconcile",
    )
    .await;
}

/// Condition order in status.
const ORDER: [&str; 4] = [
    status::READY,
    status::ENROLLED,
    status::CONFIG_APPLIED,
    status::UPLINKS_READY,
];

/// The conditions after `verdicts`: those decided now, merged, and the others kept.
fn with_verdicts(
    previous: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    let decided: BTreeSet<&str> = verdicts.iter().map(|v| v.type_).collect();
    let mut out = conditions::merge(previous, verdicts, generation, &now);
    out.extend(
        previous
            .iter()
            .filter(|c| !decided.contains(c.type_.as_str()))
            .cloned(),
    );
    out.sort_by_key(|c| {
        ORDER
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(ORDER.len())
    });
    out
}

async fn publish_transitions(
    ctx: &Context,
    node: &EdgeNode,
    before: &[Condition],
    verdicts: &[Verdict],
) {
    let reference = node.object_ref(&());
    for v in conditions::transitions(before, verdicts) {
        if v.type_ != status::READY {
            continue;
        }
        ctx.publish(
            &reference,
            v.warns(),
            &v.reason,
            v.message.clone(),
            "Reconcile",
        )
        .await;
    }
}

async fn write_if_changed(ctx: &Context, node: &EdgeNode, st: &EdgeNodeStatus) {
    if node.status.as_ref() == Some(st) {
        return;
    }
    let key = ObjectKey::of(node);
    let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
    if let Err(e) = write_status(&api, &key.name, st).await {
        warn!(node = %key, error = %e, "writing the EdgeNode status");
    }
}

async fn write_status(
    api: &Api<EdgeNode>,
    name: &str,
    st: &EdgeNodeStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": EdgeNode::api_version(&()),
        "kind": EdgeNode::kind(&()),
        "status": st,
    });
    api.patch_status(
        name,
        &PatchParams::apply(EDGE_NODE_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Protocol;
    use crate::plan::{BindingId, BindingOutcome, Reason, Refusal, SourceKind};

    fn outcome(port: u16, protocol: Protocol, refused: bool) -> BindingOutcome {
        BindingOutcome {
            id: BindingId {
                namespace: "d".into(),
                kind: SourceKind::PortBinding,
                source: "pb".into(),
                binding: format!("p{port}"),
            },
            protocol,
            listen_port: port,
            refusal: refused.then(|| Refusal {
                reason: Reason::PortConflict,
                message: "taken".into(),
            }),
        }
    }

    fn node() -> EdgeNode {
        serde_yaml::from_str(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: a, namespace: d}\nspec:\n  address: 192.0.2.1\n  publicAddresses: ['192.0.2.1', '2001:db8::1']\n  ssh: {secretRef: {name: s}, port: 2222}\n",
        )
        .unwrap()
    }

    fn reports(outcomes: Vec<BindingOutcome>) -> BTreeMap<SourceKey, SourceReport> {
        BTreeMap::from([(
            SourceKey::port_binding(ObjectKey::new("d", "pb")),
            SourceReport {
                node: ObjectKey::new("d", "a"),
                generation: Some(1),
                node_problem: None,
                outcomes,
                ports: String::new(),
            },
        )])
    }

    #[test]
    fn the_check_probes_served_tcp_ports_at_every_public_address() {
        let t = probe_targets(
            &node(),
            &reports(vec![
                outcome(80, Protocol::Tcp, false),
                outcome(443, Protocol::Tcp, true),
                outcome(53, Protocol::Udp, false),
            ]),
            true,
        );
        assert_eq!(t.ports, [80], "served TCP only");
        assert_eq!(t.addresses, ["192.0.2.1", "2001:db8::1"]);
        assert!(t.relay_up);
        let udp_only = probe_targets(
            &node(),
            &reports(vec![outcome(53, Protocol::Udp, false)]),
            false,
        );
        assert_eq!(udp_only.ports, [2222], "the host's SSH port");
        assert!(!udp_only.relay_up, "no fresh handshake: the probe fails");
    }
}
