//! The PortBinding actor: the single writer of one PortBinding's status. Its EdgeNode actor
//! owns the port table and answers each pass with this binding's outcome (the Manager tells
//! the EdgeNode of every change of the PortBinding), which this actor turns into `Ready`,
//! `bindings[]` and `ports`; when it starts it asks for the last answer. An EdgeNode that does not exist is
//! reported here, since no EdgeNode actor would answer.
//!
//! Trust first: a PortBinding whose EdgeNode is in another namespace that granted it nothing
//! ([`takes_part`]) gets `ReferenceNotGranted` from this actor alone, the same answer whether
//! or not that EdgeNode exists; it never asks the EdgeNode for a pass, and no report of the
//! EdgeNode (its errors, its ports) reaches its status.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use crate::crd::{PortBinding, PortBindingStatus};
use crate::plan::bindings::may_use_edge_node;
use crate::plan::{Resolver, SourceKey, SourceKind};

use crate::object_key::ObjectKey;

use super::conditions::{self, Verdict};
use super::index;
use super::protocol::{self, BindingMsg, NodeMsg};
use super::status;
use super::supervisor::Child;
use super::{Context, PORT_BINDING_MANAGER};

/// The actor.
#[derive(Debug, Default)]
pub struct PortBindingActor;

/// Its state.
#[derive(Debug)]
pub struct PortBindingState {
    ctx: Arc<Context>,
    key: ObjectKey,
}

impl Child for PortBindingActor {
    const KIND: &'static str = protocol::PORT_BINDING;

    fn changed() -> BindingMsg {
        BindingMsg::Changed
    }

    async fn parked(ctx: Arc<Context>, key: ObjectKey, message: String) {
        let Some(pb) = get(&ctx, &key) else { return };
        let verdict = Verdict::failed(status::READY, "RestartLoop", message.clone());
        let mut st = pb.status.clone().unwrap_or_default();
        st.conditions = conditions::merge(
            &st.conditions,
            &[verdict],
            pb.metadata.generation,
            &Time(Timestamp::now()),
        );
        write(&ctx, &key, &pb, &st).await;
        ctx.publish(
            &pb.object_ref(&()),
            true,
            "RestartLoop",
            message,
            "Reconcile",
        )
        .await;
    }
}

/// Whether a PortBinding of namespace `namespace` may use EdgeNode `node` at all (its own
/// namespace, or a grant there); one that may not takes part in nothing.
pub fn takes_part(resolver: &dyn Resolver, namespace: &str, node: &ObjectKey) -> bool {
    may_use_edge_node(
        resolver,
        SourceKind::PortBinding,
        namespace,
        (&node.namespace, &node.name),
    )
    .is_ok()
}

fn get(ctx: &Context, key: &ObjectKey) -> Option<Arc<PortBinding>> {
    ctx.stores
        .port_bindings
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
}

impl Actor for PortBindingActor {
    type Msg = BindingMsg;
    type State = PortBindingState;
    type Arguments = (Arc<Context>, ObjectKey);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, key): (Arc<Context>, ObjectKey),
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(BindingMsg::Changed)?;
        Ok(PortBindingState { ctx, key })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: BindingMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.ctx.metrics.handling(Self::KIND);
        let ctx = state.ctx.clone();
        let Some(pb) = get(&ctx, &state.key) else {
            myself.stop(Some("the PortBinding is gone".into()));
            return Ok(());
        };
        let node = index::edge_node_of(&pb);
        if let Err(refusal) = may_use_edge_node(
            &ctx.resolver(),
            SourceKind::PortBinding,
            &state.key.namespace,
            (&node.namespace, &node.name),
        ) {
            // Whatever the message: no node state, no pass.
            let verdict = Verdict::failed(status::READY, refusal.reason.as_str(), refusal.message);
            let st = unserved(pb.metadata.generation);
            settle(&ctx, &state.key, &pb, st, verdict).await;
            return Ok(());
        }
        match message {
            BindingMsg::Changed => {
                let exists = ctx
                    .stores
                    .edge_nodes
                    .get(&ObjectRef::new(&node.name).within(&node.namespace))
                    .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
                if !exists {
                    let verdict = status::edge_node_missing(&node.to_string());
                    let st = unserved(pb.metadata.generation);
                    settle(&ctx, &state.key, &pb, st, verdict).await;
                    return Ok(());
                }
                // The Manager told the EdgeNode of the change itself; this only asks for what
                // its last pass said (a restarted actor, or one that just started).
                if let Some(actor) = protocol::edge_node(&ctx, &node) {
                    let _ = actor.send_message(NodeMsg::ReportWanted(SourceKey::port_binding(
                        state.key.clone(),
                    )));
                }
            }
            BindingMsg::Report(report) => {
                let (verdict, bindings) = status::port_binding_status(&report);
                let st = PortBindingStatus {
                    observed_generation: report.generation,
                    ports: (!report.ports.is_empty()).then(|| report.ports.clone()),
                    conditions: Vec::new(),
                    bindings,
                };
                settle(&ctx, &state.key, &pb, st, verdict).await;
            }
        }
        Ok(())
    }
}

/// The status of a PortBinding no EdgeNode serves (refused, or its EdgeNode missing): no
/// ports, no bindings; the condition comes with it.
fn unserved(generation: Option<i64>) -> PortBindingStatus {
    PortBindingStatus {
        observed_generation: generation,
        ports: None,
        conditions: Vec::new(),
        bindings: Vec::new(),
    }
}

/// Merges `verdict` into `st` against the current status, writes it when it differs, and
/// publishes an Event when `Ready` changed.
async fn settle(
    ctx: &Context,
    key: &ObjectKey,
    pb: &PortBinding,
    mut st: PortBindingStatus,
    verdict: Verdict,
) {
    let before = pb.status.clone().unwrap_or_default().conditions;
    st.conditions = conditions::merge(
        &before,
        std::slice::from_ref(&verdict),
        st.observed_generation,
        &Time(Timestamp::now()),
    );
    write(ctx, key, pb, &st).await;
    if !conditions::transitions(&before, std::slice::from_ref(&verdict)).is_empty() {
        ctx.publish(
            &pb.object_ref(&()),
            verdict.warns(),
            &verdict.reason,
            verdict.message.clone(),
            "Reconcile",
        )
        .await;
    }
}

async fn write(ctx: &Context, key: &ObjectKey, pb: &PortBinding, st: &PortBindingStatus) {
    if pb.status.as_ref() == Some(st) {
        ctx.metrics.pass("PortBinding", None);
        return;
    }
    let api: Api<PortBinding> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = serde_json::json!({
        "apiVersion": PortBinding::api_version(&()),
        "kind": PortBinding::kind(&()),
        "status": st,
    });
    let result = api
        .patch_status(
            &pb.name_any(),
            &PatchParams::apply(PORT_BINDING_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    ctx.metrics.pass(
        "PortBinding",
        result.as_ref().err().map(|_| "StatusWriteFailed"),
    );
    if let Err(e) = result {
        warn!(port_binding = %key, error = %e, "writing the PortBinding status");
    }
}
