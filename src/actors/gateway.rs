//! The Gateway actor: the single writer of Gateway API statuses (GatewayClasses of ours,
//! their Gateways, and our entries in routes' `status.parents[]`). One actor for all: a route
//! may name Gateways of several EdgeNodes, and its `status.parents` is one list, so one writer
//! keeps it whole. It hears the Manager's `Changed` (any Gateway API object, namespace, grant or
//! EdgeNode) and each EdgeNode pass's report per Gateway; every time, it translates the
//! Gateways again ([`super::gateway_api`]), makes the statuses ([`super::gateway_status`]) and
//! writes those that differ from what is there and from what it last wrote (so its own writes,
//! which come back as watch events, end there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tracing::warn;

use crate::crd::gateway::{Gateway, GatewayClass};
use crate::crd::gateway_route::RouteKind;
use crate::object_key::ObjectKey;
use crate::plan::gateway::{self, GatewaySource, RouteKey};
use crate::plan::{SourceKey, SourceKind};

use super::Context;
use super::edge_set::{self, EdgeInput, EdgeView};
use super::gateway_status::{self, NodeAddress};
use super::protocol::{self, GatewayMsg, NodeMsg};
use super::source_edges;
use super::status::SourceReport;

/// Field manager of Gateway API statuses.
pub const GATEWAY_MANAGER: &str = "tunnel-gateway";

/// The actor.
#[derive(Debug, Default)]
pub struct GatewayActor;

/// Its state.
#[derive(Debug)]
pub struct GatewayState {
    ctx: Arc<Context>,
    /// The last report of each EdgeNode pass, by (Gateway, EdgeNode).
    reports: BTreeMap<(ObjectKey, ObjectKey), SourceReport>,
    /// What was last written, by (kind, namespace/name, uid).
    written: BTreeMap<(String, ObjectKey, String), Value>,
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(GatewayMsg::Changed)?;
        Ok(GatewayState {
            ctx,
            reports: BTreeMap::new(),
            written: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: GatewayMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.ctx.metrics.handling(protocol::GATEWAY);
        if let GatewayMsg::Report(key, report) = message {
            state.reports.insert((key, report.node.clone()), *report);
        }
        settle_all(state).await;
        Ok(())
    }
}

/// The edges of a Gateway ([`source_edges::gather`]), with the reports of its current
/// translation only (an older translation's report is no answer yet).
fn edges_of(ctx: &Context, state: &GatewayState, src: &GatewaySource) -> Vec<EdgeInput> {
    let nodes = src.edge_nodes.clone().unwrap_or_default();
    let reports: BTreeMap<ObjectKey, SourceReport> = state
        .reports
        .range((src.key.clone(), ObjectKey::new("", ""))..)
        .take_while(|((gw, _), _)| *gw == src.key)
        .filter(|(_, r)| r.generation == Some(src.version))
        .map(|((_, node), r)| (node.clone(), r.clone()))
        .collect();
    source_edges::gather(
        ctx,
        SourceKind::Gateway,
        &src.key.namespace,
        &nodes,
        &reports,
        |node| {
            (
                "EdgeNodeNotFound".to_owned(),
                format!("EdgeNode {node} does not exist"),
            )
        },
    )
}

/// The addresses a Gateway is published at, or why no EdgeNode may serve it; and the report
/// its listeners' conditions follow (the first edge that serves it, else the first that
/// answered).
fn node_address(src: &GatewaySource, edges: &[EdgeInput]) -> (NodeAddress, Option<SourceReport>) {
    if let Err(problem) = &src.edge_nodes {
        return (Err(problem.clone()), None);
    }
    let refusals: Vec<String> = edges
        .iter()
        .filter_map(|e| match &e.view {
            EdgeView::Refused { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    if refusals.len() == edges.len() {
        return (Err(refusals.join("; ")), None);
    }
    let reports: Vec<&SourceReport> = edges
        .iter()
        .filter_map(|e| match &e.view {
            EdgeView::Reported(r) => Some(r),
            _ => None,
        })
        .collect();
    let report = reports
        .iter()
        .find(|r| r.node_problem.is_none())
        .or_else(|| reports.first())
        .map(|r| (*r).clone());
    (Ok(edge_set::compose(edges).addresses()), report)
}

async fn settle_all(state: &mut GatewayState) {
    let ctx = state.ctx.clone();
    let Some(stores) = &ctx.stores.gateway_api else {
        return;
    };
    let now = Time(Timestamp::now());
    for class in stores.classes.state() {
        if !gateway::class_is_ours(&class) {
            continue;
        }
        let problem = gateway::class_problem(&class);
        let status = gateway_status::class_status(
            problem.as_deref(),
            class.status.as_ref(),
            class.metadata.generation,
            &now,
        );
        let id = written_key::<GatewayClass>(class.as_ref());
        write(state, id, class.status.as_ref(), &status).await;
    }
    let resolver = ctx.resolver();
    let sources = stores.sources(&resolver);
    let mut parents: BTreeMap<RouteKey, Vec<Value>> = BTreeMap::new();
    for src in &sources {
        let Some(gw) = stores
            .gateways
            .get(&ObjectRef::new(&src.key.name).within(&src.key.namespace))
        else {
            continue;
        };
        let edges = edges_of(&ctx, state, src);
        for e in edges.iter().filter(|e| e.view == EdgeView::Waiting) {
            if let Some(actor) = protocol::edge_node(&ctx, &e.node) {
                let _ =
                    actor.send_message(NodeMsg::ReportWanted(SourceKey::gateway(src.key.clone())));
            }
        }
        let (node, report) = node_address(src, &edges);
        let current = report.as_ref().filter(|_| node.is_ok());
        let status = gateway_status::gateway_status(
            src,
            &node,
            current,
            gw.status.as_ref(),
            gw.metadata.generation,
            &now,
        );
        let id = written_key::<Gateway>(gw.as_ref());
        write(state, id, gw.status.as_ref(), &status).await;
        for facts in &src.parents {
            let route = route_of(stores, &facts.route);
            let before = route
                .as_ref()
                .and_then(|r| r.status.as_ref())
                .and_then(|s| s.get("parents"))
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter().find(|p| {
                        gateway_status::is_ours(p)
                            && p.get("parentRef")
                                == serde_json::to_value(&facts.parent_ref).ok().as_ref()
                    })
                })
                .cloned();
            let generation = route.as_ref().and_then(|r| r.generation);
            parents
                .entry(facts.route.clone())
                .or_default()
                .push(gateway_status::route_parent(
                    facts,
                    current,
                    before.as_ref(),
                    generation,
                    &now,
                ));
        }
    }
    for route in stores.routes() {
        let key = RouteKey {
            kind: route.kind,
            key: ObjectKey::new(route.namespace.clone(), route.name.clone()),
        };
        let existing: Vec<Value> = route
            .status
            .as_ref()
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = parents.remove(&key).unwrap_or_default();
        if ours.is_empty() && !existing.iter().any(gateway_status::is_ours) {
            continue;
        }
        let mut wanted: Vec<Value> = existing
            .iter()
            .filter(|p| !gateway_status::is_ours(p))
            .cloned()
            .collect();
        wanted.extend(ours);
        let status = json!({ "parents": wanted });
        let id = (
            route.kind.as_str().to_owned(),
            key.key.clone(),
            route.uid.clone().unwrap_or_default(),
        );
        let current = route
            .status
            .as_ref()
            .map(|s| json!({ "parents": s.get("parents") }));
        write(state, id, current.as_ref(), &status).await;
    }
    // What was written on objects that are gone is forgotten (the map stays as large as the
    // objects are many).
    let live: BTreeSet<WrittenKey> = stores
        .classes
        .state()
        .iter()
        .map(|c| written_key(c.as_ref()))
        .chain(
            stores
                .gateways
                .state()
                .iter()
                .map(|g| written_key(g.as_ref())),
        )
        .chain(stores.routes().into_iter().map(|r| {
            (
                r.kind.as_str().to_owned(),
                ObjectKey::new(r.namespace, r.name),
                r.uid.unwrap_or_default(),
            )
        }))
        .collect();
    state.written.retain(|k, _| live.contains(k));
}

fn route_of(
    stores: &super::gateway_api::GatewayStores,
    key: &RouteKey,
) -> Option<crate::crd::gateway_route::RouteObject> {
    let (name, ns) = (&key.key.name, &key.key.namespace);
    match key.kind {
        RouteKind::Tcp => stores
            .tcp
            .get(&ObjectRef::new(name).within(ns))
            .map(|o| o.as_ref().into()),
        RouteKind::Udp => stores
            .udp
            .get(&ObjectRef::new(name).within(ns))
            .map(|o| o.as_ref().into()),
        RouteKind::Tls => stores
            .tls
            .get(&ObjectRef::new(name).within(ns))
            .map(|o| o.as_ref().into()),
    }
}

/// Which object a write is for: (kind, namespace/name, uid).
type WrittenKey = (String, ObjectKey, String);

fn written_key<K: Resource<DynamicType = ()>>(o: &K) -> WrittenKey {
    (
        K::kind(&()).to_string(),
        ObjectKey::new(
            o.meta().namespace.clone().unwrap_or_default(),
            o.meta().name.clone().unwrap_or_default(),
        ),
        o.meta().uid.clone().unwrap_or_default(),
    )
}

/// Writes `status` (server-side apply of the status subresource) on the object `id` names,
/// unless it is there already (`current`) or was the last thing written on it.
async fn write(state: &mut GatewayState, id: WrittenKey, current: Option<&Value>, status: &Value) {
    if current == Some(status) || state.written.get(&id) == Some(status) {
        return;
    }
    let (kind, key) = (&id.0, &id.1);
    let plural = match kind.as_str() {
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        other => match RouteKind::from_kind(other) {
            Some(k) => k.plural(),
            None => return,
        },
    };
    let resource = ApiResource {
        group: gateway::GROUP.to_owned(),
        version: "v1".to_owned(),
        api_version: format!("{}/v1", gateway::GROUP),
        kind: kind.clone(),
        plural: plural.to_owned(),
    };
    let api: Api<DynamicObject> = if key.namespace.is_empty() {
        Api::all_with(state.ctx.client.clone(), &resource)
    } else {
        Api::namespaced_with(state.ctx.client.clone(), &key.namespace, &resource)
    };
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status,
    });
    let result = api
        .patch_status(
            &key.name,
            &PatchParams::apply(GATEWAY_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    state.ctx.metrics.pass(
        protocol::GATEWAY,
        result.as_ref().err().map(|_| "StatusWriteFailed"),
    );
    match result {
        Ok(_) => {
            state.written.insert(id, status.clone());
        }
        Err(e) => warn!(kind = %kind, object = %key, error = %e, "writing a Gateway API status"),
    }
}
