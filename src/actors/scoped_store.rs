//! The watch cache of a kind the operator may be allowed to read only in some namespaces
//! (`--watch-namespaces`, the chart's `watchNamespaces`): one reflector store per namespace,
//! each listed and watched on its own, or one store for the whole cluster. Per namespace
//! rather than one store fed by merged watches: a relist of one namespace would replace the
//! whole store and drop the other namespaces' objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource};
use ractor::ActorRef;

use super::manager::{ManagerMsg, forward};

/// A watch cache over the cluster or over some namespaces.
#[derive(Clone)]
pub enum ScopedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Every namespace.
    Cluster(Store<K>),
    /// Only these namespaces.
    Namespaces(BTreeMap<String, Store<K>>),
}

impl<K> std::fmt::Debug for ScopedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster(_) => f.write_str("ScopedStore::Cluster"),
            Self::Namespaces(stores) => f
                .debug_tuple("ScopedStore::Namespaces")
                .field(&stores.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl<K> ScopedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The object, if it is in a watched namespace and exists.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        match self {
            Self::Cluster(store) => store.get(key),
            Self::Namespaces(stores) => stores.get(key.namespace.as_deref()?)?.get(key),
        }
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        match self {
            Self::Cluster(store) => store.state(),
            Self::Namespaces(stores) => stores.values().flat_map(Store::state).collect(),
        }
    }

    /// Whether objects of `namespace` are watched at all.
    pub fn watches(&self, namespace: &str) -> bool {
        match self {
            Self::Cluster(_) => true,
            Self::Namespaces(stores) => stores.contains_key(namespace),
        }
    }

    /// Waits until every store has had its first list.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        match self {
            Self::Cluster(store) => store.wait_until_ready().await,
            Self::Namespaces(stores) => {
                for store in stores.values() {
                    store.wait_until_ready().await?;
                }
                Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    fn secret(ns: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn objects_are_found_only_in_watched_namespaces() {
        let (a, mut wa) = reflector::store::<Secret>();
        let (b, mut wb) = reflector::store::<Secret>();
        wa.apply_watcher_event(&watcher::Event::Apply(secret("a", "s")));
        wb.apply_watcher_event(&watcher::Event::Apply(secret("b", "s")));
        let scoped =
            ScopedStore::Namespaces(BTreeMap::from([("a".to_owned(), a), ("b".to_owned(), b)]));
        assert!(scoped.get(&ObjectRef::new("s").within("a")).is_some());
        assert!(scoped.get(&ObjectRef::new("s").within("b")).is_some());
        assert!(scoped.get(&ObjectRef::new("s").within("c")).is_none());
        assert!(scoped.watches("a") && !scoped.watches("c"));
        assert_eq!(scoped.state().len(), 2);
    }
}
