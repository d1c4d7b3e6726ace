//! The Manager, root of the tree: it runs the reflectors (EdgeNodes, PortBindings, Secrets,
//! Services, uplink StatefulSets, ReferenceGrants), waits until every cache is filled, spawns
//! the two supervisors, and turns watch events into messages: EdgeNode and PortBinding changes
//! go to their supervisor (only when the spec, the annotations or the deletion state changed,
//! so our own status writes never loop), Secret and Service changes go through the reference
//! index to the EdgeNodes that use them, and a grant change (or a change of the API server's
//! addresses) to every EdgeNode. A PortBinding that may not use its EdgeNode (no grant) never
//! makes that EdgeNode plan again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use crate::crd::{EdgeNode, PortBinding, ReferenceGrant};

use super::edge_node::{EdgeNodeActor, NodeMsg};
use super::index::{self, ObjectKey};
use super::port_binding::{PortBindingActor, takes_part};
use super::resolver::{API_SERVER_SERVICE, API_SERVER_SLICES, ApiServerStores};
use super::scoped_store::pump_scoped;
use super::supervisor::{Supervisor, SupervisorMsg};
use super::{Context, Stores};

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
    /// An uplink StatefulSet went (someone deleted it: re-apply).
    StatefulSetGone(ObjectKey),
    /// A watch relisted: these are all the objects of that kind.
    Relisted {
        /// `EdgeNode` or `PortBinding`.
        kind: &'static str,
    },
}

/// The Manager.
#[derive(Debug, Default)]
pub struct Manager;

/// What starts a Manager.
pub struct ManagerArgs {
    /// Everything but the stores, which the Manager fills.
    pub make_context: Box<dyn FnOnce(Stores) -> Context + Send>,
    /// The API client.
    pub client: kube::Client,
    /// Set when every cache is filled and the watches are healthy.
    pub ready: Arc<AtomicBool>,
    /// `--watch-namespaces`: Secrets and Services are watched only there (empty: everywhere).
    pub watch_namespaces: Vec<String>,
}

impl std::fmt::Debug for ManagerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerArgs").finish_non_exhaustive()
    }
}

/// What of an EdgeNode triggers a pass: its generation, its annotations, whether it is being
/// deleted (its status, written by us, does not).
type NodeSeen = (Option<i64>, BTreeMap<String, String>, bool);

/// Its state.
pub struct ManagerState {
    ctx: Arc<Context>,
    edge_nodes: ActorRef<SupervisorMsg>,
    port_bindings: ActorRef<SupervisorMsg>,
    /// What of each EdgeNode last triggered a pass: generation, annotations, deleting.
    node_seen: BTreeMap<ObjectKey, NodeSeen>,
    /// Each PortBinding's generation and EdgeNode when last seen.
    pb_seen: BTreeMap<ObjectKey, (Option<i64>, ObjectKey)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ManagerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerState").finish_non_exhaustive()
    }
}

/// Runs one reflector, forwarding its events to the Manager; `/readyz` follows its health.
fn pump<K, F>(
    api: Api<K>,
    config: watcher::Config,
    ready: Arc<AtomicBool>,
    manager: ActorRef<ManagerMsg>,
    to_msg: F,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Fn(watcher::Event<K>) -> Vec<ManagerMsg> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(forward(stream, ready, manager, to_msg));
    (store, task)
}

pub(super) async fn forward<K, F>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    ready: Arc<AtomicBool>,
    manager: ActorRef<ManagerMsg>,
    to_msg: F,
) where
    F: Fn(watcher::Event<K>) -> Vec<ManagerMsg>,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if failing {
                    failing = false;
                    ready.store(true, Ordering::Relaxed);
                    info!("watch recovered");
                }
                for msg in to_msg(event) {
                    if manager.send_message(msg).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                failing = true;
                ready.store(false, Ordering::Relaxed);
                warn!(error = %e, "watch failed; retrying with backoff");
            }
        }
    }
}

fn key_of<K: Resource>(object: &K) -> ObjectKey {
    ObjectKey::of(object)
}

impl Actor for Manager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ManagerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ManagerArgs {
            make_context,
            client,
            ready,
            watch_namespaces,
        } = args;
        let cfg = watcher::Config::default;
        let (edge_nodes, t1) = pump(
            Api::<EdgeNode>::all(client.clone()),
            cfg(),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    vec![ManagerMsg::EdgeNode(Arc::new(o))]
                }
                watcher::Event::Delete(o) => vec![ManagerMsg::EdgeNodeGone(key_of(&o))],
                watcher::Event::InitDone => vec![ManagerMsg::Relisted { kind: "EdgeNode" }],
                watcher::Event::Init => Vec::new(),
            },
        );
        let (port_bindings, t2) = pump(
            Api::<PortBinding>::all(client.clone()),
            cfg(),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    vec![ManagerMsg::PortBinding(Arc::new(o))]
                }
                watcher::Event::Delete(o) => vec![ManagerMsg::PortBindingGone(key_of(&o))],
                watcher::Event::InitDone => vec![ManagerMsg::Relisted {
                    kind: "PortBinding",
                }],
                watcher::Event::Init => Vec::new(),
            },
        );
        let (secrets, t3) = pump_scoped::<Secret, _>(
            &client,
            &watch_namespaces,
            &cfg(),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                    vec![ManagerMsg::Secret(key_of(&o))]
                }
                _ => Vec::new(),
            },
        );
        let (services, t4) = pump_scoped::<Service, _>(
            &client,
            &watch_namespaces,
            &cfg(),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                    vec![ManagerMsg::Service(key_of(&o))]
                }
                _ => Vec::new(),
            },
        );
        let (stateful_sets, t5) = pump(
            Api::<StatefulSet>::all(client.clone()),
            cfg().labels("app.kubernetes.io/managed-by=tunnel"),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Delete(o) => vec![ManagerMsg::StatefulSetGone(key_of(&o))],
                _ => Vec::new(),
            },
        );
        let (grants, t6) = pump(
            Api::<ReferenceGrant>::all(client.clone()),
            cfg(),
            ready.clone(),
            myself.clone(),
            |e| match e {
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => vec![ManagerMsg::Grant],
                _ => Vec::new(),
            },
        );
        let (api_service, t7) = pump(
            Api::<Service>::namespaced(client.clone(), API_SERVER_SERVICE.0),
            cfg().fields(&format!("metadata.name={}", API_SERVER_SERVICE.1)),
            ready.clone(),
            myself.clone(),
            api_server_changed::<Service>,
        );
        let (api_slices, t8) = pump(
            Api::<EndpointSlice>::namespaced(client.clone(), API_SERVER_SERVICE.0),
            cfg().labels(API_SERVER_SLICES),
            ready.clone(),
            myself.clone(),
            api_server_changed::<EndpointSlice>,
        );
        let stores = Stores {
            edge_nodes,
            port_bindings,
            secrets,
            services,
            stateful_sets,
            grants,
            api_server: ApiServerStores {
                service: api_service,
                slices: api_slices,
            },
        };
        stores.edge_nodes.wait_until_ready().await?;
        stores.port_bindings.wait_until_ready().await?;
        stores.secrets.wait_until_ready().await?;
        stores.services.wait_until_ready().await?;
        stores.stateful_sets.wait_until_ready().await?;
        stores.grants.wait_until_ready().await?;
        stores.api_server.service.wait_until_ready().await?;
        stores.api_server.slices.wait_until_ready().await?;
        info!("watch caches filled");
        let ctx = Arc::new(make_context(stores));
        let (edge_nodes, _) = Actor::spawn_linked(
            Some(ctx.singleton("EdgeNodeSupervisor")),
            Supervisor::<EdgeNodeActor>::default(),
            ctx.clone(),
            myself.get_cell(),
        )
        .await?;
        let (port_bindings, _) = Actor::spawn_linked(
            Some(ctx.singleton("PortBindingSupervisor")),
            Supervisor::<PortBindingActor>::default(),
            ctx.clone(),
            myself.get_cell(),
        )
        .await?;
        ready.store(true, Ordering::Relaxed);
        info!("the actor tree runs");
        Ok(ManagerState {
            ctx,
            edge_nodes,
            port_bindings,
            node_seen: BTreeMap::new(),
            pb_seen: BTreeMap::new(),
            tasks: vec![t1, t2, t3, t4, t5, t6, t7, t8],
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A supervisor never fails on its own; if one does, the process restarts (crash-only).
        if let SupervisionEvent::ActorFailed(_, e) = &event {
            warn!(error = %e, "a supervisor failed: stopping the tree");
            myself.stop(Some(format!("a supervisor failed: {e}")));
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: ManagerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ManagerMsg::EdgeNode(node) => {
                let key = key_of(node.as_ref());
                let seen = (
                    node.metadata.generation,
                    node.annotations().clone(),
                    node.metadata.deletion_timestamp.is_some(),
                );
                if state.node_seen.get(&key) != Some(&seen) {
                    state.node_seen.insert(key.clone(), seen);
                    state
                        .edge_nodes
                        .send_message(SupervisorMsg::Upsert(key.clone()))?;
                    // Its PortBindings may have waited for it.
                    for pb in index::port_bindings_of(&key, &state.ctx.stores.port_bindings.state())
                    {
                        state
                            .port_bindings
                            .send_message(SupervisorMsg::Upsert(ObjectKey::of(pb)))?;
                    }
                }
            }
            ManagerMsg::EdgeNodeGone(key) => {
                state.node_seen.remove(&key);
                state
                    .edge_nodes
                    .send_message(SupervisorMsg::Remove(key.clone()))?;
                for pb in index::port_bindings_of(&key, &state.ctx.stores.port_bindings.state()) {
                    state
                        .port_bindings
                        .send_message(SupervisorMsg::Upsert(ObjectKey::of(pb)))?;
                }
            }
            ManagerMsg::PortBinding(pb) => {
                let key = key_of(pb.as_ref());
                let node = index::edge_node_of(&pb);
                let seen = (pb.metadata.generation, node.clone());
                let before = state.pb_seen.insert(key.clone(), seen.clone());
                if before.as_ref() != Some(&seen) {
                    if let Some((_, old_node)) = before
                        && old_node != node
                        && takes_part(&state.ctx.resolver(), &key.namespace, &old_node)
                    {
                        // It moved to another EdgeNode: the old one closes its ports.
                        changed(&state.ctx, &old_node);
                    }
                    state
                        .port_bindings
                        .send_message(SupervisorMsg::Upsert(key))?;
                }
            }
            ManagerMsg::PortBindingGone(key) => {
                state
                    .port_bindings
                    .send_message(SupervisorMsg::Remove(key.clone()))?;
                if let Some((_, node)) = state.pb_seen.remove(&key)
                    && takes_part(&state.ctx.resolver(), &key.namespace, &node)
                {
                    changed(&state.ctx, &node);
                }
            }
            ManagerMsg::Secret(key) => {
                let users = index::users_of_secret(
                    &key,
                    &state.ctx.stores.edge_nodes.state(),
                    &taking_part(&state.ctx),
                );
                for node in users {
                    changed(&state.ctx, &node);
                }
            }
            ManagerMsg::Service(key) => {
                for node in index::users_of_service(&key, &taking_part(&state.ctx)) {
                    changed(&state.ctx, &node);
                }
            }
            ManagerMsg::Grant => {
                for node in state.ctx.stores.edge_nodes.state() {
                    changed(&state.ctx, &ObjectKey::of(node.as_ref()));
                }
                // No pass answers a PortBinding whose EdgeNode does not exist: its own actor
                // decides again (ReferenceNotGranted or EdgeNodeNotFound).
                let nodes = &state.ctx.stores.edge_nodes;
                for pb in state.ctx.stores.port_bindings.state() {
                    let node = index::edge_node_of(&pb);
                    if nodes
                        .get(&reflector::ObjectRef::new(&node.name).within(&node.namespace))
                        .is_none()
                    {
                        state
                            .port_bindings
                            .send_message(SupervisorMsg::Upsert(ObjectKey::of(pb.as_ref())))?;
                    }
                }
            }
            ManagerMsg::ApiServer => {
                for node in state.ctx.stores.edge_nodes.state() {
                    changed(&state.ctx, &ObjectKey::of(node.as_ref()));
                }
            }
            ManagerMsg::StatefulSetGone(sts) => {
                for node in state.ctx.stores.edge_nodes.state() {
                    let names = crate::workload::UplinkNames::for_node(
                        &node.namespace().unwrap_or_default(),
                        &node.name_any(),
                    );
                    if node.spec.uplink.namespace == sts.namespace && names.workload == sts.name {
                        changed(&state.ctx, &ObjectKey::of(node.as_ref()));
                    }
                }
            }
            ManagerMsg::Relisted { kind } => {
                let (keys, supervisor): (Vec<ObjectKey>, _) = if kind == "EdgeNode" {
                    (
                        state
                            .ctx
                            .stores
                            .edge_nodes
                            .state()
                            .iter()
                            .map(|n| key_of(n.as_ref()))
                            .collect(),
                        &state.edge_nodes,
                    )
                } else {
                    (
                        state
                            .ctx
                            .stores
                            .port_bindings
                            .state()
                            .iter()
                            .map(|p| key_of(p.as_ref()))
                            .collect(),
                        &state.port_bindings,
                    )
                };
                supervisor.send_message(SupervisorMsg::Sync(keys))?;
            }
        }
        Ok(())
    }
}

/// A change of the API server's Service or EndpointSlices (by value: `pump`'s signature).
#[allow(clippy::needless_pass_by_value)]
fn api_server_changed<K>(e: watcher::Event<K>) -> Vec<ManagerMsg> {
    match e {
        watcher::Event::Apply(_) | watcher::Event::Delete(_) => vec![ManagerMsg::ApiServer],
        _ => Vec::new(),
    }
}

/// The PortBindings that may use their EdgeNode (the others take part in nothing).
fn taking_part(ctx: &Context) -> Vec<Arc<PortBinding>> {
    let resolver = ctx.resolver();
    ctx.stores
        .port_bindings
        .state()
        .into_iter()
        .filter(|pb| {
            takes_part(
                &resolver,
                pb.metadata.namespace.as_deref().unwrap_or_default(),
                &index::edge_node_of(pb),
            )
        })
        .collect()
}

/// Tells an EdgeNode actor that something it uses changed (a parked one stays parked).
fn changed(ctx: &Context, node: &ObjectKey) {
    if let Some(actor) = ActorRef::<NodeMsg>::where_is(ctx.name("EdgeNode", node)) {
        let _ = actor.send_message(NodeMsg::Changed);
    }
}
