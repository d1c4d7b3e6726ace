//! The watch cache of a kind the operator may be allowed to read only in some namespaces
//! (`--watch-namespaces`, the chart's `watchNamespaces`): one reflector store per namespace,
//! each listed and watched on its own, or one store for the whole cluster. Per namespace
//! rather than one store fed by merged watches: a relist of one namespace would replace the
//! whole store and drop the other namespaces' objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher;

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
