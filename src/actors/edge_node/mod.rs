//! The EdgeNode actor: the single writer of one VPS and of its uplink workload. A pass is four
//! stages (DESIGN.md §3):
//!
//! 1. [`gather`]: the EdgeNode, its PortBindings and SSH Secret from the caches, the key
//!    Secrets and the owners of the uplink objects from the API, into one value;
//! 2. [`decide`](decide::decide), pure: keys, the plan (the config renderer), the uplink
//!    objects, the VPS's desired state, one report per PortBinding, the status facts;
//! 3. [`apply`](apply::apply): the API writes; then the SSH job goes to the session actor,
//!    which answers with a message (this mailbox never waits on SSH);
//! 4. [`report`]: status, Events, metrics, the sources' reports (PortBindings, LoadBalancer
//!    Services).
//!
//! When to run a pass is decided by the sans-IO [`core`]; deletion is in [`teardown`]. Its
//! children: the SSH session actor and the cert watcher ([`super::cert_watcher`]: the Secrets
//! this VPS depends on; it says when one really changed); the config renderer is pure
//! (`plan::plan`, called by the decide stage). This file is the actor shell: messages in, the
//! core's effects out.

pub mod apply;
pub mod core;
pub mod decide;
pub mod gather;
pub mod report;
pub mod teardown;

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{debug, info, warn};

use crate::crd::EdgeNode;
use crate::object_key::ObjectKey;
use crate::plan::{SourceKey, load_balancer};
use crate::workload::{self, UplinkNames};

use self::core::{EdgeNodeCore, Effect, Event};
use self::decide::{Inputs, PassFacts, Settings};
use super::cert_watcher::{self, CertWatcherActor};
use super::error::ReconcileError;
use super::gateway_api::SourceInput;
use super::index;
use super::protocol::{self, CertMsg, Job, JobResult, NodeMsg, Work};
use super::ssh_session::SshSessionActor;
use super::status::{PassEnd, SourceReport};
use super::{Context, FINALIZER, supervisor::Child};
use crate::jitter::jitter;

/// The actor.
#[derive(Debug, Default)]
pub struct EdgeNodeActor;

/// A pass waiting for its SSH job.
#[derive(Debug)]
enum InFlight {
    Converge {
        node: Arc<EdgeNode>,
        facts: PassFacts,
        reports: BTreeMap<SourceKey, SourceReport>,
        workload_error: Option<Box<ReconcileError>>,
    },
    Teardown(Arc<EdgeNode>),
}

/// The actor's state.
pub struct EdgeNodeState {
    ctx: Arc<Context>,
    key: ObjectKey,
    core: EdgeNodeCore,
    pass: u64,
    ssh: Option<ActorRef<Job>>,
    /// The cert watcher child (the Secrets this VPS depends on).
    certs: Option<ActorRef<CertMsg>>,
    in_flight: Option<InFlight>,
    reports: BTreeMap<SourceKey, SourceReport>,
    drift: Option<tokio::task::JoinHandle<()>>,
    /// Seeds the retry jitter: different per actor, so EdgeNodes that failed together (a
    /// provider outage) do not retry in lockstep.
    seed: u64,
    /// The running pass deleted an uplink pod that blocked the rollout.
    acted: bool,
}

impl std::fmt::Debug for EdgeNodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeNodeState")
            .field("key", &self.key)
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

/// How starting a pass ended.
enum Started {
    /// A job is with the SSH actor; its answer comes as `JobDone`.
    Waiting,
    /// The pass ended without SSH.
    Done { ok: bool, healthy: bool },
    /// The object is gone: the actor stops.
    Gone,
}

impl Child for EdgeNodeActor {
    const KIND: &'static str = protocol::EDGE_NODE;

    fn changed() -> NodeMsg {
        NodeMsg::Changed
    }

    async fn parked(ctx: Arc<Context>, key: ObjectKey, message: String) {
        if let Some(node) = ctx
            .stores
            .edge_nodes
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
        {
            report::parked(&ctx, &node, message).await;
        }
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
        myself.send_message(NodeMsg::Start)?;
        Ok(EdgeNodeState {
            core: EdgeNodeCore::new(ctx.schedule),
            ctx,
            seed: crate::jitter::random_seed(),
            acted: false,
            key,
            pass: 0,
            ssh: None,
            certs: None,
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
        if let Some(certs) = state.certs.take() {
            certs.stop(None);
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
            &event
            && state
                .certs
                .as_ref()
                .is_some_and(|c| c.get_id() == cell.get_id())
        {
            // Secret changes may have been missed: the next pass respawns it and reads again.
            warn!(node = %state.key, "cert watcher stopped");
            state.certs = None;
            myself.send_message(NodeMsg::Changed)?;
            return Ok(());
        }
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
            NodeMsg::Start => Event::Started,
            NodeMsg::Changed => Event::Changed,
            NodeMsg::DriftDue => Event::DriftDue,
            NodeMsg::SessionLost => {
                info!(node = %state.key, "SSH connection to the VPS lost; checking it now");
                Event::SessionLost
            }
            NodeMsg::WakeUp(epoch) => Event::WakeUp { epoch },
            NodeMsg::Source { source, seen } => Event::Source { source, seen },
            NodeMsg::ReportWanted(key) => {
                if !state.core.is_running()
                    && let Some(report) = state.reports.get(&key)
                {
                    report::send_report(&state.ctx, &key, report.clone());
                }
                return Ok(());
            }
            NodeMsg::Progress { pass, progress } => {
                if pass == state.pass
                    && let Some(InFlight::Converge { node, .. }) = &state.in_flight
                {
                    report::enrolling_step(&state.ctx, node, &progress).await;
                }
                return Ok(());
            }
            NodeMsg::JobDone { pass, result } => {
                if pass != state.pass {
                    return Ok(());
                }
                let Some(in_flight) = state.in_flight.take() else {
                    return Ok(());
                };
                let (ok, healthy) = finish(state, in_flight, result).await;
                if std::mem::take(&mut state.acted) {
                    state.core.on(Event::Acted);
                }
                Event::PassDone { ok, healthy }
            }
        };
        let mut effects = state.core.on(event);
        while let Some(effect) = effects.pop() {
            match effect {
                Effect::WakeAfter { delay, epoch } => {
                    let delay = jitter(delay, state.seed ^ epoch);
                    myself.send_after(delay, move || NodeMsg::WakeUp(epoch));
                }
                Effect::StartPass => match Box::pin(start_pass(&myself, state)).await? {
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

/// Runs the stages up to the SSH job.
async fn start_pass(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
) -> Result<Started, ActorProcessingErr> {
    state.pass += 1;
    let started = std::time::Instant::now();
    let ctx = state.ctx.clone();
    let key = state.key.clone();
    let Some(node) = ctx
        .stores
        .edge_nodes
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
    else {
        return Ok(Started::Gone);
    };
    if node.metadata.deletion_timestamp.is_some() && crate::actors::drain::may_proceed(&node) {
        return start_teardown(myself, state, node).await;
    }
    // A drained EdgeNode being deleted keeps serving (and counting its connections) until
    // its drain is over.
    // What this pass reads of its sources (PortBindings, LoadBalancer Services), before
    // anything can fail: an event of a source that it covers needs no other pass.
    let port_bindings: Vec<_> = ctx
        .stores
        .port_bindings
        .state()
        .into_iter()
        .filter(|pb| index::edge_nodes_of(pb).contains(&key))
        .collect();
    let services = ctx.load_balancers_of(&key);
    let gateways: Vec<SourceInput> = ctx
        .gateways_of(&key)
        .into_iter()
        .map(crate::plan::gateway::GatewaySource::source_with_version)
        .collect();
    state.core.pass_read(
        port_bindings
            .iter()
            .map(|pb| {
                (
                    SourceKey::port_binding(ObjectKey::of(pb.as_ref())),
                    pb.metadata.generation,
                )
            })
            .chain(services.iter().map(|svc| {
                (
                    SourceKey::service(ObjectKey::of(svc.as_ref())),
                    Some(load_balancer::version(svc)),
                )
            }))
            .chain(gateways.iter().map(|g| {
                (
                    SourceKey::gateway(ObjectKey::new(g.namespace.clone(), g.name.clone())),
                    g.version,
                )
            }))
            .collect(),
    );
    // And of the Secrets (fetched now: they are watched as metadata only), for the cert
    // watcher: a change it sees later is one this pass missed.
    let mut wanted = index::secrets_of(&node, &port_bindings, &services);
    wanted.extend(
        gateways
            .iter()
            .flat_map(|g| index::tls_secrets_of_source(&g.input)),
    );
    let secrets = ctx.secrets(&wanted).await;
    let secrets_read = started.elapsed();
    let read = wanted
        .iter()
        .map(|s| {
            let digest = secrets
                .as_ref()
                .ok()
                .and_then(|found| found.get(s))
                .map(|secret| cert_watcher::secret_digest(secret));
            (s.clone(), digest)
        })
        .collect();
    cert_watcher(myself, state)
        .await?
        .send_message(CertMsg::PassRead(read))?;
    let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let finalized = if node.finalizers().iter().any(|f| f == FINALIZER) {
        Ok(())
    } else {
        apply::set_finalizer(&api, &key.name, true).await
    };
    let resolver = ctx.resolver();
    let gathered = match (finalized, secrets) {
        (Ok(()), Ok(secrets)) => {
            gather::gather(
                &ctx,
                &resolver,
                node.clone(),
                (port_bindings, services, gateways),
                secrets,
            )
            .await
        }
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(e.into()),
    };
    let gathered_at = started.elapsed();
    let outcome = match gathered {
        Ok(g) => {
            let settings = Settings {
                artefacts: &ctx.artefacts,
                uplink_log: (&ctx.uplink_log.0, &ctx.uplink_log.1),
                pod_options: &ctx.uplink_pod_options,
            };
            let inputs = Inputs {
                node: &g.node,
                stored_keys: &g.existing.keys,
                port_bindings: &g.port_bindings,
                services: &g.services,
                gateways: &g.gateways,
            };
            let resolver = resolver.with_secrets(g.secrets.clone());
            let decision = decide::decide(&inputs, &resolver, &settings);
            Box::pin(apply::write_keys(
                &ctx,
                &node.spec.uplink.namespace,
                decision,
            ))
            .await
            .map(|planned| (g.target, planned, g.existing.legacy))
        }
        Err(error) => Err(decide::Refused {
            error,
            reports: BTreeMap::new(),
        }),
    };
    let (target, planned, legacy) = match outcome {
        Ok(ready) => ready,
        Err(refused) => return Ok(refuse(state, &node, refused).await),
    };
    let decide::Planned {
        workload,
        desired,
        request,
        facts,
        reports,
    } = planned;
    let config = apply::apply_config(&ctx, &workload).await;
    let desired = match desired {
        Ok(desired) => desired,
        Err(error) => {
            // The uplink workload is applied all the same.
            apply::apply_workload(&ctx, config, &workload, &legacy).await;
            let refused = decide::Refused { error, reports };
            return Ok(refuse(state, &node, refused).await);
        }
    };
    // The uplink document was applied first; now the VPS: its job runs in the session actor
    // while the rest of the uplink workload is applied here (the answer is read once this
    // handler returns).
    let ssh = session_actor(myself, state).await?;
    debug!(
        node = %key,
        secrets_ms = secrets_read.as_millis(),
        gathered_ms = gathered_at.as_millis(),
        decided_ms = started.elapsed().as_millis(),
        "pass decided; the SSH job starts"
    );
    ssh.send_message(Job {
        pass: state.pass,
        target,
        work: Work::Converge { desired, request },
        reply: myself.clone(),
    })?;
    let applied = Box::pin(apply::apply_workload(&ctx, config, &workload, &legacy)).await;
    report::enrolling(&ctx, &node).await;
    if let Some(pod) = &applied.unblocked {
        report::rollout_unblocked(&ctx, &node, pod).await;
        state.acted = true;
    }
    if let Some(e) = &applied.error {
        warn!(node = %key, reason = e.category(), error = %e, "uplink workload not applied; enrolling the VPS all the same");
    }
    state.in_flight = Some(InFlight::Converge {
        node,
        facts,
        reports,
        workload_error: applied.error.map(Box::new),
    });
    Ok(Started::Waiting)
}

/// Ends a pass that stopped before SSH: status and reports say why.
async fn refuse(state: &mut EdgeNodeState, node: &EdgeNode, refused: decide::Refused) -> Started {
    let error = refused.error;
    warn!(node = %state.key, reason = error.category(), error = %error, "EdgeNode pass failed before SSH");
    let end = PassEnd::Prepare {
        reason: error.category().to_owned(),
        message: error.to_string(),
    };
    state.reports = report::conclude(&state.ctx, node, &end, None, refused.reports).await;
    Started::Done {
        ok: false,
        healthy: false,
    }
}

/// The cert watcher, spawned (under its registered name) when there is none.
async fn cert_watcher(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
) -> Result<ActorRef<CertMsg>, ActorProcessingErr> {
    if let Some(certs) = &state.certs {
        return Ok(certs.clone());
    }
    let name = state.ctx.name(protocol::CERT_WATCHER, &state.key);
    let (certs, _) = Actor::spawn_linked(
        Some(name),
        CertWatcherActor,
        (state.ctx.clone(), myself.clone()),
        myself.get_cell(),
    )
    .await?;
    state.certs = Some(certs.clone());
    Ok(certs)
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

async fn start_teardown(
    myself: &ActorRef<NodeMsg>,
    state: &mut EdgeNodeState,
    node: Arc<EdgeNode>,
) -> Result<Started, ActorProcessingErr> {
    let ctx = state.ctx.clone();
    match teardown::begin(&ctx, &node).await {
        teardown::Next::Gone => Ok(Started::Gone),
        teardown::Next::Blocked => Ok(Started::Done {
            ok: false,
            healthy: false,
        }),
        teardown::Next::Finish => Ok(if teardown::finish(&ctx, &node).await? {
            Started::Gone
        } else {
            Started::Done {
                ok: false,
                healthy: false,
            }
        }),
        teardown::Next::TearDown(target) => {
            let ssh = session_actor(myself, state).await?;
            state.in_flight = Some(InFlight::Teardown(node));
            ssh.send_message(Job {
                pass: state.pass,
                target: *target,
                work: Work::Teardown,
                reply: myself.clone(),
            })?;
            Ok(Started::Waiting)
        }
    }
}

/// Ends a pass from the SSH answer: status, PortBindings, Events.
async fn finish(state: &mut EdgeNodeState, in_flight: InFlight, result: JobResult) -> (bool, bool) {
    let ctx = state.ctx.clone();
    match (in_flight, result) {
        (
            InFlight::Converge {
                node,
                facts,
                reports,
                workload_error,
            },
            JobResult::Converged(result),
        ) => match result {
            Ok(pass) => {
                let names = UplinkNames::for_node(&state.key.namespace, &state.key.name);
                let pods = match workload::uplink_pods(
                    &ctx.client,
                    &node.spec.uplink.namespace,
                    &names.workload,
                    facts.replicas,
                )
                .await
                {
                    Ok(p) => Some(p),
                    Err(e) => {
                        warn!(node = %state.key, error = %e, "reading the uplink pods; counting handshakes alone");
                        None
                    }
                };
                let health = report::health_facts(&pass, &facts, &names.workload, pods.as_ref());
                // A drain is checked again soon, like an unhealthy node, while its connections
                // are open and while a deletion or a restart waits for it.
                let draining = crate::actors::drain::verdict(
                    &node,
                    health.active_connections,
                    k8s_openapi::jiff::Timestamp::now(),
                )
                .is_some_and(|v| !v.ok)
                    || (crate::actors::edge_set::is_draining(&node)
                        && (node.metadata.deletion_timestamp.is_some() || facts.restart_held));
                let healthy = health.healthy() && !draining;
                ctx.metrics
                    .vps_health(&state.key, &pass.health, &facts.uplinks);
                report::after_enrolled(&ctx, &node, &facts, &pass).await;
                let Some(e) = workload_error else {
                    let end = PassEnd::Done(health);
                    state.reports =
                        report::conclude(&ctx, &node, &end, Some(&facts), reports).await;
                    return (true, healthy);
                };
                let end = PassEnd::WorkloadFailed {
                    reason: e.category().to_owned(),
                    message: e.to_string(),
                    health,
                };
                state.reports = report::conclude(&ctx, &node, &end, Some(&facts), reports).await;
                (false, false)
            }
            Err(e) => {
                warn!(node = %state.key, reason = e.category(), error = %e, "enrollment pass failed");
                let end = PassEnd::Enroll {
                    reason: e.category().to_owned(),
                    message: e.to_string(),
                };
                state.reports = report::conclude(&ctx, &node, &end, None, reports).await;
                (false, false)
            }
        },
        (InFlight::Teardown(node), JobResult::TornDown(result)) => {
            match teardown::torn_down(&ctx, &node, result).await {
                Ok(done) => (done, done),
                Err(e) => {
                    warn!(node = %state.key, error = %e, "removing the finalizer");
                    (false, false)
                }
            }
        }
        (_, _) => (false, false),
    }
}
