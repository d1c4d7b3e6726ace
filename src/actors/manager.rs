//! The Manager, root of the tree: it starts the watches ([`super::watches`]), waits until every
//! cache is filled, spawns the two supervisors, and routes watch events (DESIGN.md §3, one
//! route per kind of change):
//!
//! - an EdgeNode's spec, annotations or deletion state changed → its supervisor (`Upsert`:
//!   spawn the actor, or tell it). Our own status writes change none of these, so they never
//!   loop;
//! - every PortBinding event (changed, new, gone, moved) → the EdgeNode(s) concerned as
//!   [`NodeMsg::PortBinding`], and the PortBinding supervisor (its actor writes its status);
//!   a PortBinding that may not use its EdgeNode (no grant) never reaches that EdgeNode;
//! - a Secret → through the reference index to the cert watchers of the EdgeNodes that use it
//!   (each tells its EdgeNode only when the content changed); a Service → through the index
//!   to the EdgeNodes that use it as a target;
//! - a Service of `type: LoadBalancer` of ours is a source like a PortBinding: every event
//!   (changed, new, gone, moved, no longer ours) → the EdgeNode(s) concerned as
//!   [`NodeMsg::Source`], and the LoadBalancer supervisor (its actor writes its status and
//!   keeps our finalizer); an EdgeNode event re-routes them (the default EdgeNode may move);
//! - an uplink StatefulSet whose pod counts changed (the StatefulSet controller's word that an
//!   uplink pod is being deleted, went, came or became Ready: [`routes::uplink_set_changed`])
//!   → its EdgeNode ([`routes::owners_of_uplink_set`]), so `UplinksReady` tells the truth now
//!   rather than at the drift pass; one deleted, or gone while the watch was down → its
//!   EdgeNode (re-apply). Our own apply of it changes no count, so it never loops;
//! - a grant, or the API server's addresses → every EdgeNode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::reflector;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use k8s_openapi::api::core::v1::Service;

use crate::crd::PortBinding;
use crate::object_key::ObjectKey;
use crate::plan::{SourceKey, load_balancer};

use super::edge_node::EdgeNodeActor;
use super::edge_node::core::Seen;
use super::edge_probe::EdgeProbeActor;
use super::gateway::GatewayActor;
use super::index;
use super::load_balancer::LoadBalancerActor;
use super::port_binding::{PortBindingActor, takes_part};
use super::protocol::{self, CertMsg, Listed, ManagerMsg, NodeMsg};
use super::supervisor::{Supervisor, SupervisorMsg};
use super::{Context, Stores, routes, watches};

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
    /// `--gateway-api-discovery-period`.
    pub discovery_period: std::time::Duration,
}

impl std::fmt::Debug for ManagerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerArgs").finish_non_exhaustive()
    }
}

/// Its state.
pub struct ManagerState {
    ctx: Arc<Context>,
    edge_nodes: ActorRef<SupervisorMsg>,
    port_bindings: ActorRef<SupervisorMsg>,
    load_balancers: ActorRef<SupervisorMsg>,
    /// What of each EdgeNode was seen last ([`routes::NodeSeen`]).
    node_seen: BTreeMap<ObjectKey, routes::NodeSeen>,
    /// Each PortBinding's generation and EdgeNode when last seen.
    pb_seen: BTreeMap<ObjectKey, routes::SourceSeen>,
    /// Each served LoadBalancer Service's version and EdgeNode when last seen.
    svc_seen: BTreeMap<ObjectKey, routes::SourceSeen>,
    /// What the LoadBalancer actor of each Service last heard: (version, finalizer, ours).
    lb_heard: BTreeMap<ObjectKey, (i64, bool, bool)>,
    /// The pod counts of each uplink StatefulSet when last seen.
    sts_seen: BTreeMap<ObjectKey, routes::UplinkSetSeen>,
    /// Each Gateway of ours: its EdgeNode and the version of its translation, when last seen.
    gw_seen: BTreeMap<ObjectKey, routes::SourceSeen>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ManagerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerState").finish_non_exhaustive()
    }
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
            discovery_period,
        } = args;
        let gateway_grants = super::grants::gateway_grants_served(&client).await;
        let gateway_api = super::gateway_api::served(&client).await;
        let (stores, mut tasks) = watches::start(
            &client,
            &watch_namespaces,
            (gateway_grants, gateway_api),
            &ready,
            &myself,
        );
        let me = myself.clone();
        tasks.push(tokio::spawn(super::gateway_api::watch_kinds_changed(
            client.clone(),
            (gateway_grants, gateway_api),
            discovery_period,
            move || {
                let _ = me.send_message(ManagerMsg::WatchKindsChanged);
            },
        )));
        watches::filled(&stores).await?;
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
        let (load_balancers, _) = Actor::spawn_linked(
            Some(ctx.singleton("LoadBalancerSupervisor")),
            Supervisor::<LoadBalancerActor>::default(),
            ctx.clone(),
            myself.get_cell(),
        )
        .await?;
        Actor::spawn_linked(
            Some(ctx.singleton("EdgeProbe")),
            EdgeProbeActor,
            (ctx.edges.clone(), myself.clone()),
            myself.get_cell(),
        )
        .await?;
        if ctx.stores.gateway_api.is_some() {
            Actor::spawn_linked(
                Some(ctx.singleton(protocol::GATEWAY)),
                GatewayActor,
                ctx.clone(),
                myself.get_cell(),
            )
            .await?;
        }
        let mut state = ManagerState {
            ctx,
            edge_nodes,
            port_bindings,
            load_balancers,
            node_seen: BTreeMap::new(),
            pb_seen: BTreeMap::new(),
            svc_seen: BTreeMap::new(),
            lb_heard: BTreeMap::new(),
            sts_seen: BTreeMap::new(),
            gw_seen: BTreeMap::new(),
            tasks,
        };
        state.gw_seen = gateways_seen(&state.ctx);
        // The Services' watch forwards changes only: those there at start are routed here.
        // The EdgeNodes' first passes read them anyway, so no EdgeNode is told twice.
        route_services(&mut state, false)?;
        ready.store(true, Ordering::Relaxed);
        info!("the actor tree runs");
        Ok(state)
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
        myself: ActorRef<Self::Msg>,
        message: ManagerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = state.ctx.clone();
        match message {
            ManagerMsg::EdgeNode(node) => {
                let key = ObjectKey::of(node.as_ref());
                let seen = routes::NodeSeen::of(&node);
                let route = routes::edge_node(state.node_seen.get(&key), &seen);
                state.node_seen.insert(key.clone(), seen);
                if route.upsert {
                    state
                        .edge_nodes
                        .send_message(SupervisorMsg::Upsert(key.clone()))?;
                }
                if route.port_bindings_again {
                    upsert_port_bindings_of(&ctx, &state.port_bindings, &key)?;
                    upsert_load_balancers_of(state, &key)?;
                }
                if route.upsert {
                    route_services(state, true)?;
                    gateways_changed(&ctx);
                }
            }
            ManagerMsg::EdgeNodeGone(key) => {
                state.node_seen.remove(&key);
                ctx.edges.forget(&key);
                state
                    .edge_nodes
                    .send_message(SupervisorMsg::Remove(key.clone()))?;
                upsert_port_bindings_of(&ctx, &state.port_bindings, &key)?;
                upsert_load_balancers_of(state, &key)?;
                route_services(state, true)?;
                gateways_changed(&ctx);
            }
            ManagerMsg::PortBinding(pb) => {
                let key = ObjectKey::of(pb.as_ref());
                let seen = routes::SourceSeen::of(&pb);
                let route = routes::port_binding(state.pb_seen.get(&key), &seen);
                state.pb_seen.insert(key.clone(), seen);
                for (node, how) in route.tell {
                    tell(&ctx, &node, &SourceKey::port_binding(key.clone()), how);
                }
                if route.upsert {
                    state
                        .port_bindings
                        .send_message(SupervisorMsg::Upsert(key))?;
                }
            }
            ManagerMsg::PortBindingGone(key) => {
                state
                    .port_bindings
                    .send_message(SupervisorMsg::Remove(key.clone()))?;
                for (node, how) in routes::port_binding_gone(state.pb_seen.remove(&key).as_ref()) {
                    tell(&ctx, &node, &SourceKey::port_binding(key.clone()), how);
                }
            }
            ManagerMsg::Secret(key) => {
                let served = ctx.load_balancers();
                let load_balancers: Vec<(ObjectKey, &Service)> = served
                    .iter()
                    .map(|(node, svc)| (node.clone(), svc.as_ref()))
                    .collect();
                let users = index::users_of_secret(
                    &key,
                    &ctx.stores.edge_nodes.state(),
                    &taking_part(&ctx),
                    &load_balancers,
                );
                // Its cert watcher decides whether the content really changed.
                for node in users {
                    if let Some(watcher) = protocol::cert_watcher(&ctx, &node) {
                        let _ = watcher.send_message(CertMsg::SecretChanged(key.clone()));
                    }
                }
            }
            ManagerMsg::Service(key) => {
                for node in index::users_of_service(&key, &taking_part(&ctx)) {
                    changed(&ctx, &node);
                }
                for node in gateway_users_of_service(&ctx, &key) {
                    changed(&ctx, &node);
                }
                route_service(state, &key, true)?;
            }
            ManagerMsg::Grant => {
                for node in ctx.stores.edge_nodes.state() {
                    changed(&ctx, &ObjectKey::of(node.as_ref()));
                }
                state.gw_seen = gateways_seen(&ctx);
                gateways_changed(&ctx);
                // No pass answers a PortBinding whose EdgeNode does not exist: its own actor
                // decides again (ReferenceNotGranted or EdgeNodeNotFound).
                let nodes = &ctx.stores.edge_nodes;
                for pb in ctx.stores.port_bindings.state() {
                    let missing = index::edge_nodes_of(&pb).iter().any(|node| {
                        nodes
                            .get(&reflector::ObjectRef::new(&node.name).within(&node.namespace))
                            .is_none()
                    });
                    if missing {
                        state
                            .port_bindings
                            .send_message(SupervisorMsg::Upsert(ObjectKey::of(pb.as_ref())))?;
                    }
                }
            }
            ManagerMsg::GatewayApi => {
                let now = gateways_seen(&ctx);
                let mut keys: std::collections::BTreeSet<ObjectKey> = now.keys().cloned().collect();
                keys.extend(state.gw_seen.keys().cloned());
                for key in keys {
                    for (node, _) in routes::source(state.gw_seen.get(&key), now.get(&key)) {
                        changed(&ctx, &node);
                    }
                }
                state.gw_seen = now;
                gateways_changed(&ctx);
            }
            ManagerMsg::EdgeHealth(node) => {
                upsert_port_bindings_of(&ctx, &state.port_bindings, &node)?;
                upsert_load_balancers_of(state, &node)?;
                gateways_changed(&ctx);
            }
            ManagerMsg::WatchKindsChanged => {
                warn!(
                    "Gateway API's CRDs were installed or removed: stopping the tree to watch what is served now"
                );
                myself.stop(Some(
                    "Gateway API's CRDs were installed or removed since the start".into(),
                ));
            }
            ManagerMsg::ApiServer => {
                for node in ctx.stores.edge_nodes.state() {
                    changed(&ctx, &ObjectKey::of(node.as_ref()));
                }
            }
            ManagerMsg::StatefulSet(sts) => {
                let key = ObjectKey::of(sts.as_ref());
                let seen = routes::UplinkSetSeen::of(&sts);
                let run = routes::uplink_set_changed(state.sts_seen.get(&key), &seen);
                state.sts_seen.insert(key.clone(), seen);
                if run {
                    tell_owners_of_uplink_set(&ctx, &key);
                }
            }
            ManagerMsg::StatefulSetGone(key) => {
                state.sts_seen.remove(&key);
                tell_owners_of_uplink_set(&ctx, &key);
            }
            ManagerMsg::Relisted(listed) => {
                let (keys, supervisor): (Vec<ObjectKey>, _) = match listed {
                    Listed::EdgeNodes => (
                        ctx.stores
                            .edge_nodes
                            .state()
                            .iter()
                            .map(|n| ObjectKey::of(n.as_ref()))
                            .collect(),
                        &state.edge_nodes,
                    ),
                    Listed::PortBindings => (
                        ctx.stores
                            .port_bindings
                            .state()
                            .iter()
                            .map(|p| ObjectKey::of(p.as_ref()))
                            .collect(),
                        &state.port_bindings,
                    ),
                    Listed::StatefulSets => {
                        // Those deleted while the watch was down: re-applied now.
                        let listed = &ctx.stores.stateful_sets;
                        let gone: Vec<ObjectKey> = state
                            .sts_seen
                            .keys()
                            .filter(|k| {
                                listed
                                    .get(&reflector::ObjectRef::new(&k.name).within(&k.namespace))
                                    .is_none()
                            })
                            .cloned()
                            .collect();
                        for key in gone {
                            state.sts_seen.remove(&key);
                            tell_owners_of_uplink_set(&ctx, &key);
                        }
                        return Ok(());
                    }
                    Listed::Services => {
                        // Services gone while the watch was down: their EdgeNodes and actors
                        // hear of it.
                        route_services(state, true)?;
                        let keys = state.lb_heard.keys().cloned().collect();
                        state
                            .load_balancers
                            .send_message(SupervisorMsg::Sync(keys))?;
                        return Ok(());
                    }
                };
                supervisor.send_message(SupervisorMsg::Sync(keys))?;
            }
        }
        Ok(())
    }
}

/// The PortBindings that may use at least one of their EdgeNodes, each naming only those it
/// may use (the others take part in nothing).
fn taking_part(ctx: &Context) -> Vec<Arc<PortBinding>> {
    let resolver = ctx.resolver();
    ctx.stores
        .port_bindings
        .state()
        .into_iter()
        .filter_map(|pb| {
            let ns = pb.metadata.namespace.as_deref().unwrap_or_default();
            let named = index::edge_nodes_of(&pb);
            let granted: Vec<ObjectKey> = named
                .iter()
                .filter(|node| takes_part(&resolver, ns, node))
                .cloned()
                .collect();
            if granted.is_empty() {
                return None;
            }
            if granted.len() == named.len() {
                return Some(pb);
            }
            let mut only = pb.as_ref().clone();
            only.spec = crate::crd::PortBindingSpec::served_by(&granted, only.spec.bindings);
            Some(Arc::new(only))
        })
        .collect()
}

/// Each Gateway of ours with an EdgeNode, and the version of its translation.
fn gateways_seen(ctx: &Context) -> BTreeMap<ObjectKey, routes::SourceSeen> {
    let Some(stores) = &ctx.stores.gateway_api else {
        return BTreeMap::new();
    };
    stores
        .sources(&ctx.resolver())
        .into_iter()
        .filter_map(|g| {
            Some((
                g.key,
                routes::SourceSeen {
                    generation: Some(g.version),
                    edge_nodes: g.edge_nodes.ok()?.into_iter().collect(),
                },
            ))
        })
        .collect()
}

/// The EdgeNodes serving a Gateway with a route to Service `service`.
fn gateway_users_of_service(ctx: &Context, service: &ObjectKey) -> Vec<ObjectKey> {
    let Some(stores) = &ctx.stores.gateway_api else {
        return Vec::new();
    };
    stores
        .sources(&ctx.resolver())
        .into_iter()
        .filter(|g| {
            g.source.spec.bindings.iter().any(|b| {
                b.target
                    .service
                    .as_ref()
                    .is_some_and(|s| s.name == service.name && s.namespace == service.namespace)
            })
        })
        .filter_map(|g| g.edge_nodes.ok())
        .flatten()
        .collect()
}

/// Tells the Gateway actor to decide the statuses again.
fn gateways_changed(ctx: &Context) {
    if let Some(actor) = protocol::gateway(ctx) {
        let _ = actor.send_message(protocol::GatewayMsg::Changed);
    }
}

/// Tells an EdgeNode actor that something it uses changed (a parked one stays parked).
fn changed(ctx: &Context, node: &ObjectKey) {
    if let Some(actor) = protocol::edge_node(ctx, node) {
        let _ = actor.send_message(NodeMsg::Changed);
    }
}

/// Tells the EdgeNode(s) of uplink StatefulSet `sts` that it changed or went.
fn tell_owners_of_uplink_set(ctx: &Context, sts: &ObjectKey) {
    for node in routes::owners_of_uplink_set(sts, &ctx.stores.edge_nodes.state()) {
        changed(ctx, &node);
    }
}

/// Tells EdgeNode `node` how one of its sources is now. A source that may not use that
/// EdgeNode (no grant) takes part in nothing: the EdgeNode never hears of it.
fn tell(ctx: &Context, node: &ObjectKey, source: &SourceKey, seen: Seen) {
    let allowed = crate::plan::bindings::may_use_edge_node(
        &ctx.resolver(),
        source.kind,
        &source.key.namespace,
        (&node.namespace, &node.name),
    )
    .is_ok();
    if !allowed {
        return;
    }
    if let Some(actor) = protocol::edge_node(ctx, node) {
        let _ = actor.send_message(NodeMsg::Source {
            source: source.clone(),
            seen,
        });
    }
}

/// Makes the LoadBalancer actors of the Services served by `node` decide again (their
/// EdgeNode went or is going: `EdgeNodeNotFound`, no address).
fn upsert_load_balancers_of(
    state: &ManagerState,
    node: &ObjectKey,
) -> Result<(), ActorProcessingErr> {
    for (svc, seen) in &state.svc_seen {
        if seen.edge_nodes.contains(node) {
            state
                .load_balancers
                .send_message(SupervisorMsg::Upsert(svc.clone()))?;
        }
    }
    Ok(())
}

/// Routes every Service the Manager knows of or sees now ([`route_service`]).
fn route_services(state: &mut ManagerState, tell_nodes: bool) -> Result<(), ActorProcessingErr> {
    let mut keys: std::collections::BTreeSet<ObjectKey> = state
        .ctx
        .stores
        .services
        .state()
        .iter()
        .filter(|s| {
            load_balancer::is_ours(s, state.ctx.load_balancers) || load_balancer::has_finalizer(s)
        })
        .map(|s| ObjectKey::of(s.as_ref()))
        .collect();
    keys.extend(state.svc_seen.keys().cloned());
    keys.extend(state.lb_heard.keys().cloned());
    for key in keys {
        route_service(state, &key, tell_nodes)?;
    }
    Ok(())
}

/// A Service as a source: its EdgeNode (old and new) hears how it is, when that changed
/// (`tell_nodes` false at start-up, when the first passes read it anyway); its LoadBalancer
/// actor hears of it when it is ours or carries our finalizer and something it reads changed.
fn route_service(
    state: &mut ManagerState,
    key: &ObjectKey,
    tell_nodes: bool,
) -> Result<(), ActorProcessingErr> {
    let ctx = state.ctx.clone();
    let svc = ctx
        .stores
        .services
        .get(&reflector::ObjectRef::new(&key.name).within(&key.namespace));
    let ours = svc
        .as_ref()
        .is_some_and(|s| load_balancer::is_ours(s, ctx.load_balancers));
    let version = svc.as_deref().map(load_balancer::version);
    let now = svc
        .as_ref()
        .filter(|s| ours && s.metadata.deletion_timestamp.is_none())
        .and_then(|s| {
            let nodes = load_balancer::edge_nodes_of(s, &ctx.stores.edge_nodes.state()).ok()?;
            Some(routes::SourceSeen {
                generation: version,
                edge_nodes: nodes.into_iter().collect(),
            })
        });
    let before = state.svc_seen.get(key);
    if tell_nodes {
        for (node, how) in routes::source(before, now.as_ref()) {
            tell(&ctx, &node, &SourceKey::service(key.clone()), how);
        }
    }
    match now {
        Some(n) => state.svc_seen.insert(key.clone(), n),
        None => state.svc_seen.remove(key),
    };
    let Some(svc) = svc else {
        if state.lb_heard.remove(key).is_some() {
            state
                .load_balancers
                .send_message(SupervisorMsg::Remove(key.clone()))?;
        }
        return Ok(());
    };
    let heard = (
        version.unwrap_or_default(),
        load_balancer::has_finalizer(&svc),
        ours,
    );
    let wanted = ours || heard.1;
    if !wanted && !state.lb_heard.contains_key(key) {
        return Ok(());
    }
    if state.lb_heard.get(key) != Some(&heard) {
        state.lb_heard.insert(key.clone(), heard);
        state
            .load_balancers
            .send_message(SupervisorMsg::Upsert(key.clone()))?;
    }
    Ok(())
}

/// Makes the PortBinding actors of `node` decide again (their EdgeNode went or is going).
fn upsert_port_bindings_of(
    ctx: &Context,
    supervisor: &ActorRef<SupervisorMsg>,
    node: &ObjectKey,
) -> Result<(), ActorProcessingErr> {
    for pb in index::port_bindings_of(node, &ctx.stores.port_bindings.state()) {
        supervisor.send_message(SupervisorMsg::Upsert(ObjectKey::of(pb)))?;
    }
    Ok(())
}
