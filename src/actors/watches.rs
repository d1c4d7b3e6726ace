//! The watches, in one room: a kube-runtime reflector per kind the tree reads (EdgeNodes,
//! PortBindings, Secrets (metadata only) and Services in the watched namespaces, the uplink
//! StatefulSets (each change, deletion and relist: their status follows the uplink pods),
//! ReferenceGrants (ours, and Gateway API's when served: [`super::grants`]), the API server's
//! own Service and EndpointSlices, and Gateway API's classes, Gateways, routes and the
//! namespaces' labels when served: [`super::gateway_api`]), each feeding its cache
//! and turning its events into [`ManagerMsg`]s. `/readyz` follows their health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use ractor::ActorRef;
use tracing::{info, warn};

use crate::crd::{EdgeNode, GatewayReferenceGrant, PortBinding, ReferenceGrant};
use crate::object_key::ObjectKey;

use super::Stores;
use super::gateway_api::GatewayStores;
use super::grants::GrantStores;
use super::protocol::{Listed, ManagerMsg};
use super::resolver::{API_SERVER_SERVICE, API_SERVER_SLICES, ApiServerStores};
use super::scoped_store::ScopedStore;

/// Starts every watch (Gateway API's ReferenceGrants only when `gateway_grants`: the API
/// server serves them); the caches fill in the background ([`filled`] waits for them).
pub fn start(
    client: &Client,
    watch_namespaces: &[String],
    (gateway_grants, gateway_api): (bool, bool),
    ready: &Arc<AtomicBool>,
    manager: &ActorRef<ManagerMsg>,
) -> (Stores, Vec<tokio::task::JoinHandle<()>>) {
    let cfg = watcher::Config::default;
    let (edge_nodes, t1) = pump(
        Api::<EdgeNode>::all(client.clone()),
        cfg(),
        ready.clone(),
        manager.clone(),
        lifecycle(
            ManagerMsg::EdgeNode,
            ManagerMsg::EdgeNodeGone,
            Listed::EdgeNodes,
        ),
    );
    let (port_bindings, t2) = pump(
        Api::<PortBinding>::all(client.clone()),
        cfg(),
        ready.clone(),
        manager.clone(),
        lifecycle(
            ManagerMsg::PortBinding,
            ManagerMsg::PortBindingGone,
            Listed::PortBindings,
        ),
    );
    // Secrets as metadata only (review M6; `Api<PartialObjectMeta<_>>` lists and watches
    // metadata only): the data of the few a pass reads is fetched then (`super::secrets`), so
    // other Secrets, however many and large, cost their metadata.
    let (secrets, t3) = pump_scoped::<PartialObjectMeta<Secret>, _>(
        client,
        watch_namespaces,
        &cfg(),
        ready.clone(),
        manager.clone(),
        each_change(ManagerMsg::Secret),
    );
    let (services, t4) = pump_scoped::<Service, _>(
        client,
        watch_namespaces,
        &cfg(),
        ready.clone(),
        manager.clone(),
        |e| match e {
            // The end of a relist: LoadBalancer Services gone meanwhile are found then.
            watcher::Event::InitDone => vec![ManagerMsg::Relisted(Listed::Services)],
            other => each_change(ManagerMsg::Service)(other),
        },
    );
    let (stateful_sets, t5) = pump(
        Api::<StatefulSet>::all(client.clone()),
        cfg().labels("app.kubernetes.io/managed-by=tunnel"),
        ready.clone(),
        manager.clone(),
        lifecycle(
            ManagerMsg::StatefulSet,
            ManagerMsg::StatefulSetGone,
            Listed::StatefulSets,
        ),
    );
    let (grants, t6) = pump(
        Api::<ReferenceGrant>::all(client.clone()),
        cfg(),
        ready.clone(),
        manager.clone(),
        grant_changed::<ReferenceGrant>,
    );
    let mut tasks = Vec::new();
    let gateway_grants = gateway_grants.then(|| {
        let (store, task) = pump(
            Api::<GatewayReferenceGrant>::all(client.clone()),
            cfg(),
            ready.clone(),
            manager.clone(),
            grant_changed::<GatewayReferenceGrant>,
        );
        tasks.push(task);
        store
    });
    let gateway_api = gateway_api.then(|| {
        let mut watch = Watcher {
            client,
            ready,
            manager,
            tasks: &mut tasks,
        };
        GatewayStores {
            classes: watch.all(),
            gateways: watch.all(),
            tcp: watch.all(),
            udp: watch.all(),
            tls: watch.all(),
            namespaces: watch.all(),
        }
    });
    let (api_service, t7) = pump(
        Api::<Service>::namespaced(client.clone(), API_SERVER_SERVICE.0),
        cfg().fields(&format!("metadata.name={}", API_SERVER_SERVICE.1)),
        ready.clone(),
        manager.clone(),
        api_server_changed::<Service>,
    );
    let (api_slices, t8) = pump(
        Api::<EndpointSlice>::namespaced(client.clone(), API_SERVER_SERVICE.0),
        cfg().labels(API_SERVER_SLICES),
        ready.clone(),
        manager.clone(),
        api_server_changed::<EndpointSlice>,
    );
    let stores = Stores {
        edge_nodes,
        port_bindings,
        secrets,
        services,
        stateful_sets,
        grants: GrantStores {
            tunnel: grants,
            gateway: gateway_grants,
        },
        api_server: ApiServerStores {
            service: api_service,
            slices: api_slices,
        },
        gateway_api,
    };
    tasks.extend([t1, t2, t3, t4, t5, t6, t7, t8]);
    (stores, tasks)
}

/// Waits until every cache has had its first list.
pub async fn filled(stores: &Stores) -> Result<(), reflector::store::WriterDropped> {
    stores.edge_nodes.wait_until_ready().await?;
    stores.port_bindings.wait_until_ready().await?;
    stores.secrets.wait_until_ready().await?;
    stores.services.wait_until_ready().await?;
    stores.stateful_sets.wait_until_ready().await?;
    stores.grants.wait_until_ready().await?;
    stores.api_server.service.wait_until_ready().await?;
    stores.api_server.slices.wait_until_ready().await?;
    if let Some(g) = &stores.gateway_api {
        g.wait_until_ready().await?;
    }
    Ok(())
}

fn key_of<K: Resource>(object: &K) -> ObjectKey {
    ObjectKey::of(object)
}

/// A change or deletion of an object some EdgeNodes depend on (relists add nothing: the
/// objects were there before the pass that read them).
fn each_change<K: Resource>(
    changed: fn(ObjectKey) -> ManagerMsg,
) -> impl Fn(watcher::Event<K>) -> Vec<ManagerMsg> {
    move |e| match e {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => vec![changed(key_of(&o))],
        _ => Vec::new(),
    }
}

/// The events of a kind the Manager follows object by object: added or changed, gone, and
/// the end of a relist (what it knew of objects not listed goes: their actors stop, their
/// EdgeNodes hear of it).
fn lifecycle<K: Resource>(
    changed: fn(Arc<K>) -> ManagerMsg,
    gone: fn(ObjectKey) -> ManagerMsg,
    listed: Listed,
) -> impl Fn(watcher::Event<K>) -> Vec<ManagerMsg> {
    move |e| match e {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![changed(Arc::new(o))],
        watcher::Event::Delete(o) => vec![gone(key_of(&o))],
        watcher::Event::InitDone => vec![ManagerMsg::Relisted(listed)],
        watcher::Event::Init => Vec::new(),
    }
}

/// A change of either kind of ReferenceGrant (by value: `pump`'s signature): every EdgeNode
/// plans again.
#[allow(clippy::needless_pass_by_value)]
fn grant_changed<K>(e: watcher::Event<K>) -> Vec<ManagerMsg> {
    match e {
        watcher::Event::Apply(_) | watcher::Event::Delete(_) => vec![ManagerMsg::Grant],
        _ => Vec::new(),
    }
}

/// Starts watches of Gateway API's kinds, each event telling the Manager.
struct Watcher<'a> {
    client: &'a Client,
    ready: &'a Arc<AtomicBool>,
    manager: &'a ActorRef<ManagerMsg>,
    tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
}

impl Watcher<'_> {
    /// Every object of kind `K` in the cluster.
    fn all<K>(&mut self) -> Store<K>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (store, task) = pump(
            Api::all(self.client.clone()),
            watcher::Config::default(),
            self.ready.clone(),
            self.manager.clone(),
            gateway_api_changed::<K>,
        );
        self.tasks.push(task);
        store
    }
}

/// A change of a Gateway API object or a namespace (by value: `pump`'s signature); the
/// initial list too (the Gateway actor writes the statuses of objects made while the operator
/// was down).
#[allow(clippy::needless_pass_by_value)]
fn gateway_api_changed<K>(e: watcher::Event<K>) -> Vec<ManagerMsg> {
    match e {
        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone => {
            vec![ManagerMsg::GatewayApi]
        }
        _ => Vec::new(),
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

async fn forward<K, F>(
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

/// Watches `K` in `namespaces` (empty: the whole cluster) into a [`ScopedStore`], forwarding
/// every event to the Manager from one task; `/readyz` follows the watches' health.
pub fn pump_scoped<K, F>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
    ready: Arc<std::sync::atomic::AtomicBool>,
    manager: ActorRef<ManagerMsg>,
    to_msg: F,
) -> (ScopedStore<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Fn(watcher::Event<K>) -> Vec<ManagerMsg> + Send + 'static,
{
    if namespaces.is_empty() {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<K>::all(client.clone()), config.clone()).default_backoff(),
        );
        let task = tokio::spawn(forward(stream, ready, manager, to_msg));
        return (ScopedStore::Cluster(store), task);
    }
    let mut stores = BTreeMap::new();
    let mut streams = Vec::new();
    for namespace in namespaces {
        let (store, writer) = reflector::store();
        let api = Api::<K>::namespaced(client.clone(), namespace);
        streams.push(
            reflector::reflector(writer, watcher(api, config.clone()).default_backoff()).boxed(),
        );
        stores.insert(namespace.clone(), store);
    }
    let merged = futures::stream::select_all(streams);
    let task = tokio::spawn(forward(merged, ready, manager, to_msg));
    (ScopedStore::Namespaces(stores), task)
}
