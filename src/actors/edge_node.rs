//! The EdgeNode actor: the single writer of one VPS and of its uplink workload. A pass, in
//! order: read the SSH Secret; keep the WireGuard keys in their Secrets; plan the node with
//! its PortBindings (targets resolved from the watch caches); apply the uplink workload by
//! server-side apply; hand the enrollment to the SSH session actor; on its answer, write the
//! status, answer each PortBinding, publish Events on transitions. Deletion tears the VPS
//! down (unless `skip-deprovision`), then the in-cluster objects, then drops the finalizer.
//!
//! When to run a pass is decided by [`EdgeNodeCore`]; this file is the I/O around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use crate::crd::{
    ANNOTATION_RESTART_ENVOY, ANNOTATION_SKIP_DEPROVISION, EdgeNode, EdgeNodeStatus, FromKind,
    Reference, ToKind, UplinkStatus,
};
use crate::enroll::{Carried, DesiredState, HostTuning, PassReport, Request};
use crate::hash::sha256_hex;
use crate::plan::{self, Layout, NodeInput, PlanInput, PortBindingInput};
use crate::ssh::{Credentials, SshOptions};
use crate::workload::{self, UplinkNames, UplinkWorkload};

use super::conditions::{self, Verdict};
use super::edge_node_core::{EdgeNodeCore, Effect, Event};
use super::error::{ApiStep, ReconcileError};
use super::index::{self, ObjectKey};
use super::keys;
use super::port_binding::BindingMsg;
use super::resolver::StoreResolver;
use super::restarts::jitter;
use super::ssh_session::{Job, JobResult, SshSessionActor, Target, Work};
use super::status::{self, HealthFacts, PassEnd, PortBindingReport};
use super::{Context, EDGE_NODE_MANAGER, FINALIZER, supervisor::Child};

/// Messages of an EdgeNode actor.
#[derive(Debug)]
pub enum NodeMsg {
    /// Something the node depends on changed.
    Changed,
    /// A PortBinding actor (re)started or its spec changed: answer it, or plan again.
    PortBindingChanged {
        /// The PortBinding.
        key: ObjectKey,
        /// Its generation now.
        generation: Option<i64>,
    },
    /// The drift timer.
    DriftDue,
    /// The SSH session actor saw its kept connection end between jobs.
    SessionLost,
    /// A scheduled wake-up of the core.
    WakeUp(u64),
    /// The SSH session actor finished a job.
    JobDone {
        /// The pass it belongs to.
        pass: u64,
        /// What happened.
        result: JobResult,
    },
}

/// The actor.
#[derive(Debug, Default)]
pub struct EdgeNodeActor;

/// A pass waiting for its SSH job.
#[derive(Debug)]
enum InFlight {
    Converge(Box<Prepared>),
    Teardown(Arc<EdgeNode>),
}

/// What a converge pass prepared before SSH.
#[derive(Debug)]
struct Prepared {
    node: Arc<EdgeNode>,
    relay_public: String,
    uplinks: Vec<UplinkStatus>,
    plan_hash: String,
    applied: Vec<String>,
    reports: BTreeMap<ObjectKey, PortBindingReport>,
    private_keys_on_edge: Vec<String>,
    replicas: usize,
    restart_requested: bool,
}

/// The actor's state.
pub struct EdgeNodeState {
    ctx: Arc<Context>,
    key: ObjectKey,
    core: EdgeNodeCore,
    pass: u64,
    ssh: Option<ActorRef<Job>>,
    in_flight: Option<InFlight>,
    reports: BTreeMap<ObjectKey, PortBindingReport>,
    drift: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for EdgeNodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeNodeState")
            .field("key", &self.key)
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

/// How `start_pass` ended.
enum Started {
    /// A job is with the SSH actor; its answer comes as `JobDone`.
    Waiting,
    /// The pass ended without SSH.
    Done { ok: bool, healthy: bool },
    /// The object is gone: the actor stops.
    Gone,
}

impl Child for EdgeNodeActor {
    const KIND: &'static str = "EdgeNode";

    fn changed() -> NodeMsg {
        NodeMsg::Changed
    }

    async fn parked(ctx: Arc<Context>, key: ObjectKey, message: String) {
        let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let Some(node) = ctx
            .stores
            .edge_nodes
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
        else {
            return;
        };
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
}

impl Actor for EdgeNodeActor {
    type Msg = NodeMsg;
    type State = EdgeNodeState;
    type Arguments = (Arc<Context>, ObjectKey);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, key): (Arc<Context>, ObjectKey),
    ) -> Result<Self::State, ActorProcessingErr> {
        let drift = myself.send_interval(ctx.resync, || NodeMsg::DriftDue);
        myself.send_message(NodeMsg::Changed)?;
        Ok(EdgeNodeState {
            core: EdgeNodeCore::new(ctx.schedule),
            ctx,
            key,
            pass: 0,
            ssh: None,
            in_flight: None,
            reports: BTreeMap::new(),
            drift: Some(drift),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.metrics.forget_node(&state.key);
        if let Some(drift) = state.drift.take() {
            drift.abort();
        }
        if let Some(ssh) = state.ssh.take() {
            ssh.stop(None);
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, _) | SupervisionEvent::ActorTerminated(cell, ..) =
            event
            && state
                .ssh
                .as_ref()
                .is_some_and(|s| s.get_id() == cell.get_id())
        {
            // The session actor is gone: a new one is spawned by the next pass. A pass that
            // waited for it ends here, as a failure that is retried.
            warn!(node = %state.key, "SSH session actor stopped");
            state.ssh = None;
            if state.in_flight.is_some() {
                let pass = state.pass;
                myself.send_message(NodeMsg::JobDone {
                    pass,
                    result: JobResult::Converged(Err(ReconcileError::SessionGone)),
                })?;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: NodeMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.ctx.metrics.handling(Self::KIND);
        let event = match message {
            NodeMsg::Changed => Event::Changed,
            NodeMsg::DriftDue => Event::DriftDue,
            NodeMsg::SessionLost => {
                info!(node = %state.key, "SSH connection to the VPS lost; checking it now");
                Event::SessionLost
            }
            NodeMsg::WakeUp(epoch) => Event::WakeUp { epoch },
            NodeMsg::PortBindingChanged { key, generation } => match state.reports.get(&key) {
                Some(report) if report.generation == generation && !state.core.is_running() => {
                    send_report(&state.ctx, &key, report.clone());
                    return Ok(());
                }
                _ => Event::Changed,
            },
            NodeMsg::JobDone { pass, result } => {
                if pass != state.pass {
                    return Ok(());
                }
                let Some(in_flight) = state.in_flight.take() else {
                    return Ok(());
                };
                let (ok, healthy) = finish(state, in_flight, result).await;
                Event::PassDone { ok, healthy }
            }
        };
        let mut effects = state.core.on(event);
        while let Some(effect) = effects.pop() {
            match effect {
                Effect::WakeAfter { delay, epoch } => {
                    let delay = jitter(delay, state.pass.wrapping_mul(7919) ^ epoch);
                    myself.send_after(delay, move || NodeMsg::WakeUp(epoch));
                }
                Effect::StartPass => match start_pass(&myself, state).await? {
                    Started::Waiting => {}
                    Started::Done { ok, healthy } => {
                        effects.extend(state.core.on(Event::PassDone { ok, healthy }));
                    }
                    Started::Gone => {
                        myself.stop(Some("the EdgeNode is gone".into()));
                        return Ok(());
                    }
                },
            }
        }
        Ok(())
    }
}

async fn start_pass(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
) -> Result<Started, ActorProcessingErr> {
    state.pass += 1;
    let ctx = state.ctx.clone();
    let key = state.key.clone();
    let Some(node) = ctx
        .stores
        .edge_nodes
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
    else {
        return Ok(Started::Gone);
    };
    #[allow(clippy::manual_assert, clippy::panic)]
    if ctx.fault_panic.as_ref() == Some(&key) {
        panic!("fault injection: EdgeNode {key} panics at the start of its pass");
    }
    let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
    if node.metadata.deletion_timestamp.is_some() {
        return start_teardown(myself, state, node, &api).await;
    }
    let finalized = if node.finalizers().iter().any(|f| f == FINALIZER) {
        Ok(())
    } else {
        set_finalizer(&api, &key.name, true).await
    };
    let prepared = match finalized {
        Ok(()) => prepare(&ctx, &node).await,
        Err(e) => Err((e, BTreeMap::new())),
    };
    match prepared {
        Ok((prepared, target, desired, request)) => {
            let ssh = session_actor(myself, state).await?;
            state.in_flight = Some(InFlight::Converge(Box::new(prepared)));
            ssh.send_message(Job {
                pass: state.pass,
                target,
                work: Work::Converge { desired, request },
                reply: myself.clone(),
            })?;
            Ok(Started::Waiting)
        }
        Err((error, reports)) => {
            warn!(node = %key, reason = error.category(), error = %error, "EdgeNode pass failed before SSH");
            let end = PassEnd::Prepare {
                reason: error.category().to_owned(),
                message: error.to_string(),
            };
            conclude(state, &node, &end, None, reports).await;
            Ok(Started::Done {
                ok: false,
                healthy: false,
            })
        }
    }
}

/// The session actor, spawned when there is none.
async fn session_actor(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
) -> Result<ActorRef<Job>, ActorProcessingErr> {
    if let Some(ssh) = &state.ssh {
        return Ok(ssh.clone());
    }
    let (ssh, _) =
        Actor::spawn_linked(None, SshSessionActor, state.ctx.clone(), myself.get_cell()).await?;
    state.ssh = Some(ssh.clone());
    Ok(ssh)
}

type PrepareResult = Result<
    (Prepared, Target, Box<DesiredState>, Request),
    (ReconcileError, BTreeMap<ObjectKey, PortBindingReport>),
>;

/// Everything before SSH. On failure the PortBinding reports are returned when the plan was
/// made, so PortBindings still learn their outcomes.
async fn prepare(ctx: &Context, node: &EdgeNode) -> PrepareResult {
    let no_reports = |e: ReconcileError| (e, BTreeMap::new());
    let key = ObjectKey::of(node);
    // 1. Credentials.
    let resolver = ctx.resolver();
    let target = target_of(ctx, &resolver, node).map_err(no_reports)?;
    // 2. Keys, in their Secrets (and the uplink namespace they live in).
    let uplink_ns = node.spec.uplink.namespace.clone();
    let replicas = u32::try_from(node.spec.uplink.replicas.max(1)).unwrap_or(1);
    apply_namespace(ctx, &uplink_ns).await.map_err(no_reports)?;
    let names = UplinkNames::for_node(&key.namespace, &key.name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &uplink_ns);
    let stored_relay = read_secret(&secrets, &names.vps_key_secret)
        .await
        .map_err(no_reports)?;
    let stored_uplinks = read_secret(&secrets, &names.keys_secret)
        .await
        .map_err(no_reports)?;
    let key_set = keys::reconcile(
        &format!("{uplink_ns}/{}", names.vps_key_secret),
        stored_relay.as_ref(),
        &format!("{uplink_ns}/{}", names.keys_secret),
        stored_uplinks.as_ref(),
        replicas,
    )
    .map_err(|e| no_reports(e.into()))?;
    let (log_format, log_level) = &ctx.uplink_log;
    let w = UplinkWorkload {
        node: &key.name,
        node_namespace: &key.namespace,
        spec: &node.spec.uplink,
        image: &ctx.artefacts.uplink_image,
        log_format,
        log_level,
    };
    if key_set.relay_changed {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(names.vps_key_secret.clone()),
                namespace: Some(uplink_ns.clone()),
                labels: Some(workload::labels(&key.name, &key.namespace)),
                ..ObjectMeta::default()
            },
            string_data: Some(key_set.relay_secret.clone()),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        apply(&secrets, &names.vps_key_secret, &secret, ApiStep::Keys)
            .await
            .map_err(no_reports)?;
    }
    if key_set.uplink_changed {
        let secret = workload::keys_secret(&w, &key_set.uplink_private);
        apply(&secrets, &names.keys_secret, &secret, ApiStep::Keys)
            .await
            .map_err(no_reports)?;
    }
    // 3. The plan, with targets resolved from the caches.
    let port_bindings = ctx.stores.port_bindings.state();
    let inputs: Vec<PortBindingInput> = index::port_bindings_of(&key, &port_bindings)
        .map(|pb| PortBindingInput::of(pb, &key.namespace))
        .collect();
    let generations: BTreeMap<ObjectKey, Option<i64>> =
        index::port_bindings_of(&key, &port_bindings)
            .map(|pb| (ObjectKey::of(pb), pb.metadata.generation))
            .collect();
    let input = PlanInput {
        node: NodeInput {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            spec: node.spec.clone(),
        },
        port_bindings: inputs,
        keys: key_set.keys.clone(),
        layout: Layout::default(),
    };
    let plan = plan::plan(&input, &resolver).map_err(|e| no_reports(e.into()))?;
    let reports: BTreeMap<ObjectKey, PortBindingReport> = generations
        .iter()
        .map(|(pb, generation)| {
            (
                pb.clone(),
                PortBindingReport {
                    generation: *generation,
                    node_problem: None,
                    outcomes: plan.outcomes_of(&pb.namespace, &pb.name).cloned().collect(),
                    ports: plan.served_ports(&pb.namespace, &pb.name),
                },
            )
        })
        .collect();
    // 4. The uplink workload.
    let workload_result = async {
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &uplink_ns);
        apply(
            &config_maps,
            &names.config_map,
            &workload::config_map(&w, &plan.uplink_file.contents),
            ApiStep::Workload,
        )
        .await?;
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &uplink_ns);
        apply(
            &services,
            &names.workload,
            &workload::headless_service(&w),
            ApiStep::Workload,
        )
        .await?;
        let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &uplink_ns);
        apply(
            &stateful_sets,
            &names.workload,
            &workload::statefulset(&w),
            ApiStep::Workload,
        )
        .await?;
        nudge_uplink_pods(
            ctx,
            &uplink_ns,
            &names.workload,
            node.spec.uplink.replicas,
            &sha256_hex(plan.uplink_file.contents.as_bytes()),
        )
        .await;
        Ok(())
    }
    .await;
    if let Err(e) = workload_result {
        return Err((e, reports));
    }
    // 5. What the VPS gets.
    let carried = Carried {
        tunnelctl: ctx.artefacts.tunnelctl.clone(),
        envoy: ctx.artefacts.envoy.clone(),
        host: HostTuning::from(&node.spec.host),
    };
    let desired = match DesiredState::from_rendered(
        plan.vps_files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_bytes())),
        carried,
    ) {
        Ok(d) => d,
        Err(e) => return Err((ReconcileError::Desired(e), reports)),
    };
    let uplinks = plan
        .uplink_addresses
        .iter()
        .zip(&key_set.keys.uplink_public)
        .enumerate()
        .map(|(ordinal, (ip, public))| UplinkStatus {
            ordinal: i32::try_from(ordinal).unwrap_or(i32::MAX),
            tunnel_ip: ip.to_string(),
            public_key: public.to_string(),
        })
        .collect();
    let restart_requested = node
        .annotations()
        .get(ANNOTATION_RESTART_ENVOY)
        .map(String::as_str)
        == Some("true");
    let prepared = Prepared {
        node: Arc::new(node.clone()),
        relay_public: key_set.keys.relay_private.public_key().to_string(),
        uplinks,
        plan_hash: plan.hashes.plan.clone(),
        applied: plan.applied_port_bindings.clone(),
        reports,
        private_keys_on_edge: plan
            .private_keys_on_edge
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect(),
        replicas: usize::try_from(replicas).unwrap_or(1),
        restart_requested,
    };
    Ok((
        prepared,
        target,
        Box::new(desired),
        Request {
            restart_envoy: restart_requested,
        },
    ))
}

/// The SSH target from the EdgeNode's spec and its Secret.
fn target_of(
    ctx: &Context,
    resolver: &StoreResolver,
    node: &EdgeNode,
) -> Result<Target, ReconcileError> {
    let ns = node.namespace().unwrap_or_default();
    let secret_ref = &node.spec.ssh.secret_ref;
    let secret_ns = secret_ref.namespace_or(&ns);
    let secret_name = format!("{secret_ns}/{}", secret_ref.name);
    let reference = Reference {
        from_kind: FromKind::EdgeNode,
        from_namespace: &ns,
        to_kind: ToKind::Secret,
        to_namespace: secret_ns,
        to_name: &secret_ref.name,
    };
    if !crate::plan::Resolver::reference_allowed(resolver, &reference) {
        return Err(ReconcileError::SshSecretNotGranted {
            secret: secret_name,
            namespace: ns.clone(),
        });
    }
    let secret = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&secret_ref.name).within(secret_ns))
        .ok_or_else(|| ReconcileError::SshSecretNotFound {
            secret: secret_name.clone(),
            hint: if ctx.stores.secrets.watches(secret_ns) {
                "create it with key privateKey (or password) and knownHosts"
            } else {
                "the operator watches Secrets only in the namespaces of --watch-namespaces (the chart's watchNamespaces), and this is not one of them"
            },
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let credentials =
        Credentials::from_secret_data(&data).map_err(|source| ReconcileError::SshSecret {
            secret: secret_name,
            source,
        })?;
    let mut options = SshOptions::from_spec(&node.spec.address, &node.spec.ssh)
        .map_err(ReconcileError::SshSettings)?;
    options.keepalive_interval = ctx.ssh_keepalive;
    let mut material = format!("{options:?}");
    for (k, v) in &data {
        material.push_str(k);
        material.push_str(&sha256_hex(v));
    }
    Ok(Target {
        options,
        credentials,
        fingerprint: sha256_hex(material.as_bytes()),
    })
}

async fn start_teardown(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
    node: Arc<EdgeNode>,
    api: &Api<EdgeNode>,
) -> Result<Started, ActorProcessingErr> {
    if !node.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Started::Gone);
    }
    let skip = node
        .annotations()
        .get(ANNOTATION_SKIP_DEPROVISION)
        .map(String::as_str)
        == Some("true");
    if skip {
        info!(node = %state.key, "skip-deprovision: leaving the VPS as it is");
        return finish_deletion(state, &node, api).await;
    }
    match target_of(&state.ctx, &state.ctx.resolver(), &node) {
        Ok(target) => {
            let ssh = session_actor(myself, state).await?;
            state.in_flight = Some(InFlight::Teardown(node));
            ssh.send_message(Job {
                pass: state.pass,
                target,
                work: Work::Teardown,
                reply: myself.clone(),
            })?;
            Ok(Started::Waiting)
        }
        Err(e) => {
            deletion_blocked(state, &node, e.category(), &e.to_string()).await;
            Ok(Started::Done {
                ok: false,
                healthy: false,
            })
        }
    }
}

async fn deletion_blocked(state: &EdgeNodeState, node: &EdgeNode, reason: &str, message: &str) {
    let message = format!(
        "deleting: the VPS could not be torn down ({message}); to delete without cleaning the VPS: kubectl annotate edgenode -n {} {} {ANNOTATION_SKIP_DEPROVISION}=true",
        state.key.namespace, state.key.name
    );
    let verdicts = [Verdict::failed(status::READY, reason, message)];
    let mut st = node.status.clone().unwrap_or_default();
    let before = st.conditions.clone();
    st.conditions = with_verdicts(&st.conditions, &verdicts, node.metadata.generation);
    write_if_changed(state, node, &st).await;
    publish_transitions(state, node, &before, &verdicts).await;
}

async fn finish_deletion(
    state: &mut EdgeNodeState,
    node: &EdgeNode,
    api: &Api<EdgeNode>,
) -> Result<Started, ActorProcessingErr> {
    if let Err(e) = delete_uplink_objects(&state.ctx, node).await {
        deletion_blocked(state, node, e.category(), &e.to_string()).await;
        return Ok(Started::Done {
            ok: false,
            healthy: false,
        });
    }
    set_finalizer(api, &state.key.name, false).await?;
    info!(node = %state.key, "EdgeNode deleted: VPS and uplink objects removed");
    Ok(Started::Gone)
}

/// Ends a pass from the SSH answer: status, PortBindings, Events.
async fn finish(state: &mut EdgeNodeState, in_flight: InFlight, result: JobResult) -> (bool, bool) {
    match (in_flight, result) {
        (InFlight::Converge(prepared), JobResult::Converged(result)) => {
            let node = prepared.node.clone();
            match result {
                Ok(report) => {
                    let health = health_facts(&report, prepared.replicas);
                    state
                        .ctx
                        .metrics
                        .vps_health(&state.key, &report.health, &prepared.uplinks);
                    let end = PassEnd::Done(health);
                    after_enrolled(state, &prepared, &report).await;
                    conclude(
                        state,
                        &node,
                        &end,
                        Some(&prepared),
                        prepared.reports.clone(),
                    )
                    .await;
                    (true, health.healthy())
                }
                Err(e) => {
                    warn!(node = %state.key, reason = e.category(), error = %e, "enrollment pass failed");
                    let end = PassEnd::Enroll {
                        reason: e.category().to_owned(),
                        message: e.to_string(),
                    };
                    conclude(state, &node, &end, None, prepared.reports.clone()).await;
                    (false, false)
                }
            }
        }
        (InFlight::Teardown(node), JobResult::TornDown(result)) => {
            let api: Api<EdgeNode> =
                Api::namespaced(state.ctx.client.clone(), &state.key.namespace);
            match result {
                Ok(()) => {
                    state
                        .ctx
                        .publish(
                            &node.object_ref(&()),
                            false,
                            "TornDown",
                            format!("VPS {} torn down", node.spec.address),
                            "Teardown",
                        )
                        .await;
                    match finish_deletion(state, &node, &api).await {
                        Ok(Started::Done { ok, healthy }) => (ok, healthy),
                        Ok(_) => (true, true),
                        Err(e) => {
                            warn!(node = %state.key, error = %e, "removing the finalizer");
                            (false, false)
                        }
                    }
                }
                Err(e) => {
                    deletion_blocked(state, &node, e.category(), &e.to_string()).await;
                    (false, false)
                }
            }
        }
        (_, _) => (false, false),
    }
}

fn health_facts(report: &PassReport, replicas: usize) -> HealthFacts {
    HealthFacts {
        envoy_active: report.health.envoy_active(),
        relay_active: report.health.relay_active(),
        fresh_uplinks: report
            .health
            .relay_status
            .as_ref()
            .map_or(0, |s| s.peers.iter().filter(|p| p.handshake_fresh).count()),
        replicas,
    }
}

/// What follows a successful SSH pass: the restart annotation goes, private keys are
/// announced.
async fn after_enrolled(state: &EdgeNodeState, prepared: &Prepared, report: &PassReport) {
    let node = &prepared.node;
    let reference = node.object_ref(&());
    if prepared.restart_requested {
        let api: Api<EdgeNode> = Api::namespaced(state.ctx.client.clone(), &state.key.namespace);
        let patch =
            serde_json::json!({"metadata": {"annotations": {ANNOTATION_RESTART_ENVOY: null}}});
        match api
            .patch(
                &state.key.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                state
                    .ctx
                    .publish(
                        &reference,
                        false,
                        "EnvoyRestarted",
                        "Envoy restarted on request".into(),
                        "RestartEnvoy",
                    )
                    .await;
            }
            Err(e) => warn!(node = %state.key, error = %e, "removing the restart-envoy annotation"),
        }
    }
    let sds_written: Vec<&String> = report
        .steps
        .iter()
        .filter(|s| s.contains(crate::enroll::layout::ENVOY_TLS_DIR))
        .collect();
    if !sds_written.is_empty() && !prepared.private_keys_on_edge.is_empty() {
        state
            .ctx
            .publish(
                &reference,
                true,
                "PrivateKeyOnEdge",
                format!(
                    "TLS private keys of Secret(s) {} were copied to VPS {} for TLS at the edge (offload/mutual); the VPS's provider can read them",
                    prepared.private_keys_on_edge.join(", "),
                    node.spec.address
                ),
                "Enroll",
            )
            .await;
    }
}

/// Writes the status of a pass and answers the PortBindings.
async fn conclude(
    state: &mut EdgeNodeState,
    node: &EdgeNode,
    end: &PassEnd,
    prepared: Option<&Prepared>,
    mut reports: BTreeMap<ObjectKey, PortBindingReport>,
) {
    let verdicts = status::edge_node_verdicts(end, &node.spec.address);
    let mut st = node.status.clone().unwrap_or_default();
    let before = st.conditions.clone();
    st.conditions = with_verdicts(&st.conditions, &verdicts, node.metadata.generation);
    st.observed_generation = node.metadata.generation;
    if let Some(p) = prepared {
        st.public_key = Some(p.relay_public.clone());
        st.uplink.clone_from(&p.uplinks);
        st.applied_config_hash = Some(p.plan_hash.clone());
        st.applied_bindings.clone_from(&p.applied);
    }
    write_if_changed(state, node, &st).await;
    publish_transitions(state, node, &before, &verdicts).await;

    let problem = match end {
        PassEnd::Prepare { reason, message } | PassEnd::Enroll { reason, message } => {
            Some((reason.clone(), message.clone()))
        }
        PassEnd::Done(_) => None,
    };
    state
        .ctx
        .metrics
        .pass("EdgeNode", problem.as_ref().map(|(r, _)| r.as_str()));
    state
        .ctx
        .metrics
        .bindings(&state.key, reports.values().flat_map(|r| &r.outcomes));
    if reports.is_empty() {
        // No plan: every PortBinding of the node waits, with the node's reason.
        let pbs = state.ctx.stores.port_bindings.state();
        reports = index::port_bindings_of(&state.key, &pbs)
            .map(|pb| {
                (
                    ObjectKey::of(pb),
                    PortBindingReport {
                        generation: pb.metadata.generation,
                        node_problem: None,
                        outcomes: Vec::new(),
                        ports: String::new(),
                    },
                )
            })
            .collect();
    }
    for (key, report) in &mut reports {
        report.node_problem.clone_from(&problem);
        send_report(&state.ctx, key, report.clone());
    }
    state.reports = reports;
}

fn send_report(ctx: &Context, key: &ObjectKey, report: PortBindingReport) {
    if let Some(actor) = ActorRef::<BindingMsg>::where_is(ctx.name("PortBinding", key)) {
        let _ = actor.send_message(BindingMsg::Report(report));
    }
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
    state: &EdgeNodeState,
    node: &EdgeNode,
    before: &[Condition],
    verdicts: &[Verdict],
) {
    let reference = node.object_ref(&());
    for v in conditions::transitions(before, verdicts) {
        if v.type_ != status::READY {
            continue;
        }
        state
            .ctx
            .publish(&reference, !v.ok, &v.reason, v.message.clone(), "Reconcile")
            .await;
    }
}

async fn write_if_changed(state: &EdgeNodeState, node: &EdgeNode, st: &EdgeNodeStatus) {
    if node.status.as_ref() == Some(st) {
        return;
    }
    let api: Api<EdgeNode> = Api::namespaced(state.ctx.client.clone(), &state.key.namespace);
    if let Err(e) = write_status(&api, &state.key.name, st).await {
        warn!(node = %state.key, error = %e, "writing the EdgeNode status");
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

/// Adds (or removes) our finalizer, owned by its own field manager so no one else's goes.
async fn set_finalizer(
    api: &Api<EdgeNode>,
    name: &str,
    present: bool,
) -> Result<(), ReconcileError> {
    let finalizers: Vec<&str> = if present { vec![FINALIZER] } else { Vec::new() };
    let patch = serde_json::json!({
        "apiVersion": EdgeNode::api_version(&()),
        "kind": EdgeNode::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        name,
        &PatchParams::apply("tunnel-finalizer").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(ReconcileError::api(
        ApiStep::Metadata,
        format!("setting the finalizer of EdgeNode {name}"),
    ))
}

async fn apply_namespace(ctx: &Context, name: &str) -> Result<(), ReconcileError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(ReconcileError::api(
            ApiStep::Workload,
            format!("reading namespace {name}"),
        ))?
        .is_some()
    {
        return Ok(());
    }
    match api
        .create(
            &kube::api::PostParams::default(),
            &workload::namespace(name),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(ReconcileError::api(
            ApiStep::Workload,
            format!("creating namespace {name}"),
        )(e)),
    }
}

/// Annotates each uplink pod with the hash of its configuration. A kubelet refreshes a
/// ConfigMap volume when it syncs the pod: on its periodic sync (a minute or more) or when the
/// pod object changes. Without this nudge a new forward reached the pods only after the next
/// periodic sync (71 s measured on the test bed's node), while Envoy served the port already.
/// A merge patch with an unchanged value writes nothing. A pod that does not exist yet is
/// skipped (it mounts the new ConfigMap when it starts); any other failure only delays the
/// refresh to the kubelet's own sync, so it is logged, and the pass goes on.
async fn nudge_uplink_pods(
    ctx: &Context,
    namespace: &str,
    workload: &str,
    replicas: i32,
    hash: &str,
) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {workload::CONFIG_HASH_ANNOTATION: &hash[..16]}}
    });
    for ordinal in 0..replicas.max(0) {
        let name = format!("{workload}-{ordinal}");
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(
                pod = %format!("{namespace}/{name}"),
                error = %e,
                "could not annotate the uplink pod with its new configuration; it picks the change up at the kubelet's next sync"
            ),
        }
    }
}

async fn apply<K>(api: &Api<K>, name: &str, object: &K, step: ApiStep) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(EDGE_NODE_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(ReconcileError::api(
        step,
        format!("applying {} {name}", K::kind(&())),
    ))
}

async fn read_secret(
    api: &Api<Secret>,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, ReconcileError> {
    let secret = api.get_opt(name).await.map_err(ReconcileError::api(
        ApiStep::Keys,
        format!("reading Secret {name}"),
    ))?;
    Ok(secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
            .collect()
    }))
}

async fn delete_uplink_objects(ctx: &Context, node: &EdgeNode) -> Result<(), ReconcileError> {
    let ns = &node.spec.uplink.namespace;
    let names = UplinkNames::for_node(&node.namespace().unwrap_or_default(), &node.name_any());
    let dp = DeleteParams::default();
    let gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    };
    let what = |kind: &str, name: &str| format!("deleting {kind} {ns}/{name}");
    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    gone(sts.delete(&names.workload, &dp).await.map(|_| ())).map_err(ReconcileError::api(
        ApiStep::Cleanup,
        what("StatefulSet", &names.workload),
    ))?;
    let svc: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    gone(svc.delete(&names.workload, &dp).await.map(|_| ())).map_err(ReconcileError::api(
        ApiStep::Cleanup,
        what("Service", &names.workload),
    ))?;
    let cm: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    gone(cm.delete(&names.config_map, &dp).await.map(|_| ())).map_err(ReconcileError::api(
        ApiStep::Cleanup,
        what("ConfigMap", &names.config_map),
    ))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in [&names.keys_secret, &names.vps_key_secret] {
        gone(secrets.delete(name, &dp).await.map(|_| ()))
            .map_err(ReconcileError::api(ApiStep::Cleanup, what("Secret", name)))?;
    }
    Ok(())
}
