//! The PortBinding actor: the single writer of one PortBinding's status. Each EdgeNode it
//! names owns its own port table and answers each pass with this binding's outcome there (the
//! Manager tells those EdgeNodes of every change of the PortBinding); this actor keeps the last
//! answer of each and turns them into `Ready`, `bindings[]`, `ports`, `edges[]` and the
//! published `addresses` ([`super::edge_set`]); when it starts it asks for the last answers.
//! An EdgeNode that does not exist is reported here, since no EdgeNode actor would answer.
//!
//! Trust first: an EdgeNode in another namespace that granted this PortBinding nothing
//! ([`takes_part`]) gets `ReferenceNotGranted` in its `edges[]` entry from this actor alone,
//! the same answer whether or not that EdgeNode exists; it is never asked for a pass, and no
//! report of it (its errors, its ports, its addresses) reaches this status.

use std::collections::BTreeMap;
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
use super::dns_endpoint;
use super::edge_set::{self, Composed};
use super::index;
use super::protocol::{self, BindingMsg};
use super::source_edges;
use super::status::{self, SourceReport};
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
    /// The last report of each EdgeNode it names.
    reports: BTreeMap<ObjectKey, SourceReport>,
    /// The DNSEndpoint last applied (`Some(Null)`: not known yet, `None`: none wanted).
    dns: Option<serde_json::Value>,
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
        Ok(PortBindingState {
            ctx,
            key,
            reports: BTreeMap::new(),
            dns: Some(serde_json::Value::Null),
        })
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
            if state.dns.is_some() {
                dns_endpoint::delete(&ctx.client, &state.key).await;
            }
            myself.stop(Some("the PortBinding is gone".into()));
            return Ok(());
        };
        let nodes = index::edge_nodes_of(&pb);
        source_edges::heard(
            &ctx,
            &mut state.reports,
            &SourceKey::port_binding(state.key.clone()),
            &nodes,
            message,
        );
        let edges = source_edges::gather(
            &ctx,
            SourceKind::PortBinding,
            &state.key.namespace,
            &nodes,
            &state.reports,
            |node| {
                let v = status::edge_node_missing(&node.to_string());
                (v.reason, v.message)
            },
        );
        if !Composed::complete(&edges) {
            return Ok(());
        }
        let composed = edge_set::compose(&edges);
        let st = PortBindingStatus {
            observed_generation: composed.generation.or(pb.metadata.generation),
            ports: (!composed.ports.is_empty()).then(|| composed.ports.clone()),
            conditions: Vec::new(),
            bindings: composed.bindings.clone(),
            addresses: composed.addresses(),
            edges: composed.edges.clone(),
        };
        let dns = dns_endpoint::wanted(&pb, &st.addresses);
        settle(&ctx, &state.key, &pb, st, composed.verdict).await;
        if dns != state.dns {
            let done = if let Some(object) = &dns {
                dns_endpoint::apply(&ctx.client, &state.key, object).await
            } else {
                dns_endpoint::delete(&ctx.client, &state.key).await;
                true
            };
            if done {
                state.dns = dns;
            }
        }
        Ok(())
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
