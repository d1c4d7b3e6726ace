//! Which uplink objects are this EdgeNode's. A name is no proof (security review M8: names
//! once carried 32 bits of a hash, which a tenant could match by brute force): an object under
//! one of the EdgeNode's names is its own only when its labels carry the EdgeNode's owner
//! labels ([`owns`]: `app.kubernetes.io/name=uplink`, `app.kubernetes.io/instance` and
//! `tunnel.achetronic.com/owner-namespace`, the StatefulSet's selector labels).
//!
//! Before a pass writes, [`read_existing`] reads what is under the EdgeNode's names: one that
//! is not its own stops the pass ([`ExistingError::NameTaken`]), nothing written. It also
//! looks under the names of the 32-bit scheme ([`UplinkNames::legacy`]), where an older
//! operator left this EdgeNode's objects: those it owns are migrated (the keys are carried to
//! the new Secrets, so the VPS keeps its peers; the old objects are deleted once the new
//! workload is applied), and anything else there is left alone. Deletion ([`delete_owned`],
//! [`delete_workload`]) deletes only objects it owns, with their UID as a precondition.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, Preconditions};
use kube::{Client, Resource};

use crate::api_write::{ApiError, ApiStep};

use super::labels::owner_labels;
use super::{StoredKeys, UplinkNames};

/// Whether labels `labels` say the object belongs to EdgeNode `node_namespace/node`, whose
/// names (current or legacy) are `names`.
pub fn owns(
    labels: Option<&BTreeMap<String, String>>,
    node: &str,
    node_namespace: &str,
    names: &UplinkNames,
) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    owner_labels(node, node_namespace, &names.base)
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The kinds of the uplink objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The uplink pods' StatefulSet.
    StatefulSet,
    /// Its headless Service.
    Service,
    /// The uplink document.
    ConfigMap,
    /// A key Secret.
    Secret,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::StatefulSet => "StatefulSet",
            Self::Service => "Service",
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// An object of this EdgeNode found in the API: what deleting it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace (the uplink namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID: it is deleted only if it is still this object.
    pub uid: Option<String>,
}

/// What a pass finds under the EdgeNode's names before it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// The WireGuard keys: from the current key Secrets, or, where one is missing, from this
    /// EdgeNode's own Secret under the legacy name (then flagged, so it is written anew).
    pub keys: StoredKeys,
    /// This EdgeNode's objects under the legacy names: deleted once the workload under the
    /// current names is applied.
    pub legacy: Vec<Found>,
}

/// Why the objects under an EdgeNode's names could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExistingError {
    /// Reading them failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An object under one of the EdgeNode's names is not its own: the operator did not make
    /// it for this EdgeNode. It is neither read, nor written, nor deleted. The message does not
    /// say whose it is (another namespace's EdgeNode, perhaps).
    #[error(
        "{kind} {namespace}/{name} already exists and is not this EdgeNode's (its labels app.kubernetes.io/instance and tunnel.achetronic.com/owner-namespace do not name it): the operator leaves it alone and applies nothing for this EdgeNode; rename or remove that object, or rename the EdgeNode"
    )]
    NameTaken {
        /// The object's kind.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl ExistingError {
    /// The stable UpperCamelCase reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(e) => e.category(),
            Self::NameTaken { .. } => "UplinkNameTaken",
        }
    }
}

/// One object under one name, read for its owner (and its data, for Secrets).
struct Look {
    kind: Kind,
    name: String,
    meta: Option<ObjectMeta>,
    data: Option<BTreeMap<String, String>>,
}

/// Reads the objects under `names` in `namespace`: their metadata, and the data of the two
/// key Secrets.
async fn read_under(
    client: &Client,
    namespace: &str,
    names: &UplinkNames,
) -> Result<Vec<Look>, ApiError> {
    let meta = |kind, name: &String, meta| Look {
        kind,
        name: name.clone(),
        meta,
        data: None,
    };
    let mut found = vec![
        meta(
            Kind::StatefulSet,
            &names.workload,
            metadata::<StatefulSet>(client, namespace, &names.workload).await?,
        ),
        meta(
            Kind::Service,
            &names.workload,
            metadata::<Service>(client, namespace, &names.workload).await?,
        ),
        meta(
            Kind::ConfigMap,
            &names.config_map,
            metadata::<ConfigMap>(client, namespace, &names.config_map).await?,
        ),
    ];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in [&names.vps_key_secret, &names.keys_secret] {
        let secret = secrets.get_opt(name).await.map_err(ApiError::at(
            ApiStep::Keys,
            format!("reading Secret {namespace}/{name}"),
        ))?;
        let (meta, data) = match secret {
            Some(s) => (Some(s.metadata), Some(text_data(s.data))),
            None => (None, None),
        };
        found.push(Look {
            kind: Kind::Secret,
            name: name.clone(),
            meta,
            data,
        });
    }
    Ok(found)
}

fn text_data(data: Option<BTreeMap<String, k8s_openapi::ByteString>>) -> BTreeMap<String, String> {
    data.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect()
}

async fn metadata<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, ApiError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_metadata_opt(name)
        .await
        .map(|m| m.map(|m| m.metadata))
        .map_err(ApiError::at(
            ApiStep::Workload,
            format!("reading {} {namespace}/{name}", K::kind(&())),
        ))
}

/// Reads what is under the names of EdgeNode `node_namespace/node` in `namespace` (its
/// `spec.uplink.namespace`), current and legacy; see the module's documentation.
pub async fn read_existing(
    client: &Client,
    namespace: &str,
    node_namespace: &str,
    node: &str,
) -> Result<Existing, ExistingError> {
    let names = UplinkNames::for_node(node_namespace, node);
    let current = read_under(client, namespace, &names).await?;
    let legacy_names = UplinkNames::legacy(node_namespace, node);
    let legacy = if legacy_names.base == names.base {
        Vec::new()
    } else {
        read_under(client, namespace, &legacy_names).await?
    };
    decide_existing(namespace, node_namespace, node, current, legacy)
}

/// The pure part of [`read_existing`]: refuses a current name that is not ours, adopts our
/// legacy keys where the current Secret is missing, lists our legacy objects.
fn decide_existing(
    namespace: &str,
    node_namespace: &str,
    node: &str,
    current: Vec<Look>,
    legacy: Vec<Look>,
) -> Result<Existing, ExistingError> {
    let names = UplinkNames::for_node(node_namespace, node);
    let legacy_names = UplinkNames::legacy(node_namespace, node);
    let mut existing = Existing::default();
    for look in current {
        let Some(meta) = &look.meta else { continue };
        if !owns(meta.labels.as_ref(), node, node_namespace, &names) {
            return Err(ExistingError::NameTaken {
                kind: look.kind.name(),
                namespace: namespace.to_owned(),
                name: look.name,
            });
        }
        if look.name == names.vps_key_secret {
            existing.keys.relay = look.data;
        } else if look.name == names.keys_secret {
            existing.keys.uplinks = look.data;
        }
    }
    for look in legacy {
        let Some(meta) = &look.meta else { continue };
        if !owns(meta.labels.as_ref(), node, node_namespace, &legacy_names) {
            continue;
        }
        if look.name == legacy_names.vps_key_secret && existing.keys.relay.is_none() {
            existing.keys.relay = look.data;
            existing.keys.relay_from_legacy = true;
        } else if look.name == legacy_names.keys_secret && existing.keys.uplinks.is_none() {
            existing.keys.uplinks = look.data;
            existing.keys.uplinks_from_legacy = true;
        }
        existing.legacy.push(Found {
            kind: look.kind,
            namespace: namespace.to_owned(),
            name: look.name,
            uid: meta.uid.clone(),
        });
    }
    Ok(existing)
}

/// Deletes `found` (this EdgeNode's objects), each only if its UID is still the one read;
/// those already gone are fine.
pub async fn delete_owned(client: &Client, found: &[Found]) -> Result<(), ApiError> {
    for f in found {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: f.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let (ns, name) = (f.namespace.as_str(), f.name.as_str());
        let result = match f.kind {
            Kind::StatefulSet => delete::<StatefulSet>(client, ns, name, &dp).await,
            Kind::Service => delete::<Service>(client, ns, name, &dp).await,
            Kind::ConfigMap => delete::<ConfigMap>(client, ns, name, &dp).await,
            Kind::Secret => delete::<Secret>(client, ns, name, &dp).await,
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(ApiError::at(
                    ApiStep::Cleanup,
                    format!("deleting {} {ns}/{name}", f.kind.name()),
                )(e));
            }
        }
    }
    Ok(())
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    dp: &DeleteParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, dp)
        .await
        .map(|_| ())
}

/// What deleting an EdgeNode's uplink objects did not delete: objects under its names that
/// are not its own (`Kind namespace/name`), left alone.
pub type LeftAlone = Vec<String>;

/// Deletes every uplink object of EdgeNode `node_namespace/node` from `namespace`, under its
/// current and its legacy names, but only those it owns; the others are returned.
pub async fn delete_workload(
    client: &Client,
    namespace: &str,
    node_namespace: &str,
    node: &str,
) -> Result<LeftAlone, ApiError> {
    let mut ours = Vec::new();
    let mut left_alone = Vec::new();
    let current = UplinkNames::for_node(node_namespace, node);
    let legacy = UplinkNames::legacy(node_namespace, node);
    for (names, is_legacy) in [(&current, false), (&legacy, true)] {
        if is_legacy && legacy.base == current.base {
            continue;
        }
        for look in read_under(client, namespace, names).await? {
            let Some(meta) = look.meta else { continue };
            if owns(meta.labels.as_ref(), node, node_namespace, names) {
                ours.push(Found {
                    kind: look.kind,
                    namespace: namespace.to_owned(),
                    name: look.name,
                    uid: meta.uid,
                });
            } else if !is_legacy {
                // Under a legacy name, another EdgeNode's object is no news: two EdgeNodes
                // could share those names.
                left_alone.push(format!("{} {namespace}/{}", look.kind.name(), look.name));
            }
        }
    }
    delete_owned(client, &ours).await?;
    Ok(left_alone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(kind: Kind, name: &str, labels: Option<BTreeMap<String, String>>, key: &str) -> Look {
        Look {
            kind,
            name: name.to_owned(),
            meta: Some(ObjectMeta {
                name: Some(name.to_owned()),
                labels,
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            }),
            data: (kind == Kind::Secret)
                .then(|| BTreeMap::from([("priv".to_owned(), key.to_owned())])),
        }
    }

    fn ours(names: &UplinkNames) -> BTreeMap<String, String> {
        owner_labels("edge", "team", &names.base)
    }

    #[test]
    fn only_the_owner_labels_make_an_object_ours() {
        let names = UplinkNames::for_node("team", "edge");
        assert!(owns(Some(&ours(&names)), "edge", "team", &names));
        assert!(!owns(None, "edge", "team", &names), "no labels");
        let other_ns = owner_labels("edge", "other", &names.base);
        assert!(!owns(Some(&other_ns), "edge", "team", &names));
        let other_name = owner_labels("edge2", "team", &names.base);
        assert!(!owns(Some(&other_name), "edge", "team", &names));
        // A long name's instance label is the base, so the legacy base does not match it.
        let long = "e".repeat(64);
        let (new, old) = (
            UplinkNames::for_node("team", &long),
            UplinkNames::legacy("team", &long),
        );
        let old_labels = owner_labels(&long, "team", &old.base);
        assert!(owns(Some(&old_labels), &long, "team", &old));
        assert!(!owns(Some(&old_labels), &long, "team", &new));
    }

    #[test]
    fn a_current_name_that_is_not_ours_stops_everything() {
        let names = UplinkNames::for_node("team", "edge");
        let theirs = Some(owner_labels("someone", "elsewhere", &names.base));
        let e = decide_existing(
            "tunnel",
            "team",
            "edge",
            vec![
                look(Kind::ConfigMap, &names.config_map, Some(ours(&names)), ""),
                look(Kind::Secret, &names.keys_secret, theirs, "their key"),
            ],
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.category(), "UplinkNameTaken");
        let text = e.to_string();
        assert!(
            text.contains(&format!("Secret tunnel/{}", names.keys_secret)),
            "{text}"
        );
        assert!(
            !text.contains("someone") && !text.contains("elsewhere"),
            "{text}"
        );
        assert!(!text.contains("their key"), "{text}");
    }

    #[test]
    fn our_legacy_objects_are_migrated_and_others_left_alone() {
        let (names, old) = (
            UplinkNames::for_node("team", "edge"),
            UplinkNames::legacy("team", "edge"),
        );
        let existing = decide_existing(
            "tunnel",
            "team",
            "edge",
            vec![look(
                Kind::Secret,
                &names.vps_key_secret,
                Some(ours(&names)),
                "new relay",
            )],
            vec![
                look(
                    Kind::Secret,
                    &old.vps_key_secret,
                    Some(ours(&old)),
                    "old relay",
                ),
                look(
                    Kind::Secret,
                    &old.keys_secret,
                    Some(ours(&old)),
                    "old uplinks",
                ),
                look(Kind::StatefulSet, &old.workload, Some(ours(&old)), ""),
                look(
                    Kind::ConfigMap,
                    &old.config_map,
                    Some(owner_labels("edge", "other", &old.base)),
                    "",
                ),
            ],
        )
        .unwrap();
        // The current relay Secret wins over the legacy one; the missing uplinks Secret is
        // adopted from the legacy name and flagged for writing.
        assert_eq!(existing.keys.relay.as_ref().unwrap()["priv"], "new relay");
        assert!(!existing.keys.relay_from_legacy);
        assert_eq!(
            existing.keys.uplinks.as_ref().unwrap()["priv"],
            "old uplinks"
        );
        assert!(existing.keys.uplinks_from_legacy);
        let deleted: Vec<&str> = existing.legacy.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            deleted,
            [
                old.vps_key_secret.as_str(),
                old.keys_secret.as_str(),
                old.workload.as_str()
            ],
            "ours only: the ConfigMap of another namespace's EdgeNode is left alone"
        );
        assert_eq!(
            existing.legacy[2].uid.as_deref(),
            Some(format!("uid-{}", old.workload).as_str())
        );
    }
}
