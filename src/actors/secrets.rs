//! The data of the Secrets a pass reads (security review M6). Secrets are watched as metadata
//! only ([`super::watches`]), so the operator's memory does not grow with every Secret of the
//! cluster; the few a pass needs (the EdgeNode's SSH Secret, the TLS Secrets of its
//! PortBindings) are fetched with a GET and kept by `resourceVersion`: a Secret whose
//! `resourceVersion` in the metadata cache is the one fetched is not fetched again. An entry
//! goes when its Secret leaves the metadata cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::object_key::ObjectKey;

use super::scoped_store::ScopedStore;

/// The metadata cache of Secrets.
pub type SecretMetadata = ScopedStore<PartialObjectMeta<Secret>>;

/// A Secret could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading Secret {secret}: {}", crate::api_write::api_words(source))]
pub struct SecretReadError {
    /// `namespace/name`.
    pub secret: String,
    /// The API's error.
    #[source]
    pub source: kube::Error,
}

impl SecretReadError {
    /// The stable UpperCamelCase reason.
    pub fn category(&self) -> &'static str {
        "SecretReadFailed"
    }
}

/// Secrets fetched, by `resourceVersion`.
#[derive(Debug, Default)]
pub struct SecretData {
    fetched: Mutex<BTreeMap<ObjectKey, Arc<Secret>>>,
}

/// Whether `cached` (what was fetched) is still the Secret the metadata cache has at
/// `resource_version`, pure.
pub fn fresh(cached: Option<&Secret>, resource_version: Option<&str>) -> bool {
    cached.is_some_and(|s| {
        resource_version.is_some() && s.metadata.resource_version.as_deref() == resource_version
    })
}

impl SecretData {
    /// Secret `key` with its data; `None` when the metadata cache does not have it (it does
    /// not exist, or its namespace is not watched).
    pub async fn get(
        &self,
        client: &kube::Client,
        metadata: &SecretMetadata,
        key: &ObjectKey,
    ) -> Result<Option<Arc<Secret>>, SecretReadError> {
        let Some(meta) = metadata.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
            self.forget(key);
            return Ok(None);
        };
        let rv = meta.metadata.resource_version.as_deref();
        if let Some(cached) = self.cached(key).filter(|c| fresh(Some(c), rv)) {
            return Ok(Some(cached));
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
        let found = api
            .get_opt(&key.name)
            .await
            .map_err(|source| SecretReadError {
                secret: key.to_string(),
                source,
            })?;
        let Some(mut secret) = found else {
            self.forget(key);
            return Ok(None);
        };
        secret.metadata.managed_fields = None;
        let secret = Arc::new(secret);
        if let Ok(mut fetched) = self.fetched.lock() {
            fetched.retain(|k, _| {
                metadata
                    .get(&ObjectRef::new(&k.name).within(&k.namespace))
                    .is_some()
            });
            fetched.insert(key.clone(), secret.clone());
        }
        Ok(Some(secret))
    }

    /// The Secrets `keys` with their data, as one pass reads them (missing ones absent).
    pub async fn snapshot(
        &self,
        client: &kube::Client,
        metadata: &SecretMetadata,
        keys: &BTreeSet<ObjectKey>,
    ) -> Result<BTreeMap<ObjectKey, Arc<Secret>>, SecretReadError> {
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(secret) = self.get(client, metadata, key).await? {
                out.insert(key.clone(), secret);
            }
        }
        Ok(out)
    }

    fn cached(&self, key: &ObjectKey) -> Option<Arc<Secret>> {
        self.fetched.lock().ok()?.get(key).cloned()
    }

    fn forget(&self, key: &ObjectKey) {
        if let Ok(mut fetched) = self.fetched.lock() {
            fetched.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_secret_is_fresh_while_its_resource_version_is_the_cached_one() {
        let secret: Secret =
            serde_json::from_value(serde_json::json!({"metadata": {"resourceVersion": "7"}}))
                .unwrap();
        assert!(fresh(Some(&secret), Some("7")));
        assert!(!fresh(Some(&secret), Some("8")), "changed since");
        assert!(!fresh(Some(&secret), None));
        assert!(!fresh(None, Some("7")), "never fetched");
    }

    #[test]
    fn a_refused_read_is_a_sentence_not_the_status_dump() {
        let e = SecretReadError {
            secret: "default/vps-ssh-secret".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure(
                    "secrets \"vps-ssh-secret\" is forbidden: User \"system:serviceaccount:tunnel-system:tunnel\" cannot get resource \"secrets\"",
                    "Forbidden",
                )
                .with_code(403),
            )),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("reading Secret default/vps-ssh-secret: the API server refused it (403 Forbidden): secrets \"vps-ssh-secret\" is forbidden"),
            "{text}"
        );
        assert!(
            text.ends_with("the operator's RBAC does not allow it"),
            "{text}"
        );
        assert!(
            !text.contains("Status {") && !text.contains("ApiError"),
            "{text}"
        );
    }
}
