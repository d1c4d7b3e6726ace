//! The tree's protocol: every message an actor of the tree receives, and typed look-ups of the
//! actors by kind. Message types live here rather than in the actor that receives them, so
//! actors that talk to each other never import each other (DESIGN.md §2: no import circles).
//!
//! ```text
//! watches ──ManagerMsg──▶ Manager ──SupervisorMsg──▶ supervisors ──Changed──▶ children
//! Manager ──CertMsg::SecretChanged──▶ cert watcher ──NodeMsg::Changed──▶ EdgeNode (content changed)
//! Manager ──NodeMsg::Source──▶ EdgeNode            (every PortBinding or LoadBalancer
//!                                                    Service event, one route)
//! EdgeNode ──Job──▶ SSH session ──NodeMsg::JobDone──▶ EdgeNode
//! EdgeNode ──BindingMsg::Report──▶ PortBinding / LoadBalancer (what the pass did with it)
//! PortBinding / LoadBalancer ──NodeMsg::ReportWanted──▶ EdgeNode (a (re)started actor asks)
//! edge probe ──ManagerMsg::EdgeHealth──▶ Manager ──Changed──▶ that EdgeNode's sources' actors
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use ractor::ActorRef;

use crate::crd::{EdgeNode, PortBinding};
use crate::enroll::{DesiredState, PassReport, Request};
use crate::object_key::ObjectKey;
use crate::plan::{SourceKey, SourceKind};
use crate::ssh::{Credentials, SshOptions};

use super::Context;
use super::edge_node::core::Seen;
use super::error::ReconcileError;
use super::status::SourceReport;

/// The kind under which EdgeNode actors are registered.
pub const EDGE_NODE: &str = "EdgeNode";
/// The kind under which PortBinding actors are registered.
pub const PORT_BINDING: &str = "PortBinding";

/// The EdgeNode actor of `key`, if it runs (a parked one does not).
pub fn edge_node(ctx: &Context, key: &ObjectKey) -> Option<ActorRef<NodeMsg>> {
    ActorRef::where_is(ctx.name(EDGE_NODE, key))
}

/// The kind under which each EdgeNode actor's cert watcher is registered.
pub const CERT_WATCHER: &str = "CertWatcher";

/// The cert watcher of EdgeNode `key`, if its EdgeNode actor runs.
pub fn cert_watcher(ctx: &Context, key: &ObjectKey) -> Option<ActorRef<CertMsg>> {
    ActorRef::where_is(ctx.name(CERT_WATCHER, key))
}

/// The PortBinding actor of `key`, if it runs.
pub fn port_binding(ctx: &Context, key: &ObjectKey) -> Option<ActorRef<BindingMsg>> {
    ActorRef::where_is(ctx.name(PORT_BINDING, key))
}

/// The kind under which the actors of LoadBalancer Services are registered.
pub const LOAD_BALANCER: &str = "LoadBalancer";

/// The actor of a source (a PortBinding's, or a LoadBalancer Service's), if it runs; a
/// Gateway's reports go to the one Gateway actor ([`gateway`]).
pub fn source(ctx: &Context, source: &SourceKey) -> Option<ActorRef<BindingMsg>> {
    let kind = match source.kind {
        SourceKind::PortBinding => PORT_BINDING,
        SourceKind::Service => LOAD_BALANCER,
        SourceKind::Gateway => return None,
    };
    ActorRef::where_is(ctx.name(kind, &source.key))
}

/// The kind under which the Gateway actor is registered.
pub const GATEWAY: &str = "Gateway";

/// What the Gateway actor hears.
#[derive(Debug)]
pub enum GatewayMsg {
    /// A GatewayClass, Gateway, route, namespace, or an EdgeNode changed: decide again.
    Changed,
    /// An EdgeNode's pass answers for one Gateway.
    Report(ObjectKey, Box<SourceReport>),
}

/// The Gateway actor (the single writer of Gateway API statuses), if it runs.
pub fn gateway(ctx: &Context) -> Option<ActorRef<GatewayMsg>> {
    ActorRef::where_is(ctx.singleton(GATEWAY))
}

/// One watch event, as the Manager needs it.
#[derive(Debug)]
pub enum ManagerMsg {
    /// An EdgeNode was added or changed.
    EdgeNode(Arc<EdgeNode>),
    /// An EdgeNode is gone.
    EdgeNodeGone(ObjectKey),
    /// A PortBinding was added or changed.
    PortBinding(Arc<PortBinding>),
    /// A PortBinding is gone.
    PortBindingGone(ObjectKey),
    /// A Secret changed or went.
    Secret(ObjectKey),
    /// A Service changed or went.
    Service(ObjectKey),
    /// A ReferenceGrant changed or went: every EdgeNode plans again.
    Grant,
    /// The API server's addresses changed: every EdgeNode plans again.
    ApiServer,
    /// An uplink StatefulSet was added or changed (its status: its pods came or went).
    StatefulSet(Arc<StatefulSet>),
    /// An uplink StatefulSet went (someone deleted it: re-apply).
    StatefulSetGone(ObjectKey),
    /// A watch relisted: these are all the objects of that kind.
    Relisted(Listed),
    /// A GatewayClass, Gateway, TCPRoute, UDPRoute, TLSRoute or namespace changed or went.
    GatewayApi,
    /// Gateway API's CRDs were installed or removed since the start: the tree stops (the
    /// process restarts and watches what is served then).
    WatchKindsChanged,
    /// The check from outside changed its verdict on this EdgeNode: its sources write their
    /// statuses again (their published addresses).
    EdgeHealth(ObjectKey),
}

/// The kinds whose relist ends actors of objects that are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// EdgeNodes.
    EdgeNodes,
    /// PortBindings.
    PortBindings,
    /// Services (their LoadBalancer actors).
    Services,
    /// The uplink StatefulSets (those gone meanwhile are gone for their EdgeNodes).
    StatefulSets,
}

/// Messages of an EdgeNode actor.
#[derive(Debug)]
pub enum NodeMsg {
    /// Something the node depends on changed.
    Changed,
    /// The actor started: run the first pass.
    Start,
    /// From the Manager, for every event of a source: one of this node's PortBindings or
    /// LoadBalancer Services changed, appeared, went, or moved here or away. A pass runs
    /// unless one already read it so.
    Source {
        /// The source.
        source: SourceKey,
        /// How it is now.
        seen: Seen,
    },
    /// A source's actor (re)started and asks for the last pass's report on it (never a pass).
    ReportWanted(SourceKey),
    /// The drift timer.
    DriftDue,
    /// The SSH session actor saw its kept connection end between jobs.
    SessionLost,
    /// A scheduled wake-up of the core.
    WakeUp(u64),
    /// The SSH session actor's job of pass `pass` started a phase (a few per pass).
    Progress {
        /// The pass it belongs to.
        pass: u64,
        /// The phase and its first step.
        progress: crate::enroll::Progress,
    },
    /// The SSH session actor finished a job.
    JobDone {
        /// The pass it belongs to.
        pass: u64,
        /// What happened.
        result: JobResult,
    },
}

/// Messages of an EdgeNode's cert watcher.
#[derive(Debug)]
pub enum CertMsg {
    /// From its EdgeNode actor: the pass now running read these Secrets, with this content
    /// (`None`: missing).
    PassRead(BTreeMap<ObjectKey, Option<String>>),
    /// From the Manager: a Secret the EdgeNode uses changed or went.
    SecretChanged(ObjectKey),
}

/// Messages of a source's actor (a PortBinding's, a LoadBalancer Service's).
#[derive(Debug)]
pub enum BindingMsg {
    /// Its object changed (or the actor just started).
    Changed,
    /// What its EdgeNode's last pass did with it.
    Report(SourceReport),
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address, port, user, timeouts.
    pub options: SshOptions,
    /// From the SSH Secret.
    pub credentials: Credentials,
    /// A digest of both: a new one means a new connection.
    pub fingerprint: String,
}

/// What to do on the VPS.
#[derive(Debug)]
pub enum Work {
    /// Bring it to the desired state, then report health.
    Converge {
        /// The desired state.
        desired: Box<DesiredState>,
        /// E.g. restart Envoy.
        request: Request,
    },
    /// Remove everything of ours.
    Teardown,
}

/// A job and whom to answer.
#[derive(Debug)]
pub struct Job {
    /// The pass it belongs to.
    pub pass: u64,
    /// Where.
    pub target: Target,
    /// What.
    pub work: Work,
    /// Who gets the answer.
    pub reply: ActorRef<NodeMsg>,
}

/// The answer to a job.
#[derive(Debug)]
pub enum JobResult {
    /// A converge pass.
    Converged(Result<PassReport, ReconcileError>),
    /// A teardown.
    TornDown(Result<(), ReconcileError>),
}
