//! The API side of the uplink workload: applying the namespace, the key Secrets and the
//! workload (server-side apply under the EdgeNode field manager) and nudging the pods to a new
//! configuration. Reading what exists first, and deleting, is [`super::ownership`]'s.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource};
use tracing::warn;

use crate::api_write::{ApiError, ApiStep};

use super::CONFIG_HASH_ANNOTATION;
use super::rollout::Unblock;

/// Field manager of the objects EdgeNode actors write.
pub const FIELD_MANAGER: &str = "tunnel-edgenode";

/// What the key Secrets hold now (`None`: the Secret does not exist), as
/// [`read_existing`](super::read_existing) found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredKeys {
    /// The relay's key Secret.
    pub relay: Option<BTreeMap<String, String>>,
    /// The uplinks' keys Secret.
    pub uplinks: Option<BTreeMap<String, String>>,
    /// `relay` was read from this EdgeNode's Secret under its legacy name: it is written
    /// under the current name.
    pub relay_from_legacy: bool,
    /// `uplinks` was read under the legacy name (see `relay_from_legacy`).
    pub uplinks_from_legacy: bool,
}

/// The uplink workload of one EdgeNode, built, ready to apply.
#[derive(Debug, Clone)]
pub struct UplinkObjects {
    /// The namespace they live in.
    pub namespace: String,
    /// The uplink document's ConfigMap.
    pub config_map: ConfigMap,
    /// The headless Service.
    pub service: Service,
    /// The StatefulSet.
    pub statefulset: StatefulSet,
    /// SHA-256 of the uplink document (the pods are annotated with its first 16 digits).
    pub config_hash: String,
    /// Replicas (the pods nudged).
    pub replicas: i32,
}

/// Creates the uplink namespace when it is missing (an existing one is left as it is).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), ApiError> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(ApiError::at(
            ApiStep::Workload,
            format!("reading namespace {name}"),
        ))?
        .is_some()
    {
        return Ok(());
    }
    match api
        .create(&PostParams::default(), &super::namespace(name))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(ApiError::at(
            ApiStep::Workload,
            format!("creating namespace {name}"),
        )(e)),
    }
}

/// Applies key Secrets (those that changed).
pub async fn apply_keys(client: &Client, secrets: &[&Secret]) -> Result<(), ApiError> {
    for secret in secrets {
        let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        apply(&api, secret, ApiStep::Keys).await?;
    }
    Ok(())
}

/// Applies the uplink document's ConfigMap: first, so the pods' forwards are on their way
/// before the VPS is told about a new binding.
pub async fn apply_config(client: &Client, objects: &UplinkObjects) -> Result<(), ApiError> {
    apply(
        &Api::namespaced(client.clone(), &objects.namespace),
        &objects.config_map,
        ApiStep::Workload,
    )
    .await
    .map(|_| ())
}

/// After [`apply_config`]: applies the headless Service and the StatefulSet, then nudges the
/// pods, and deletes the one pod that keeps the rollout from going on, if any
/// ([`super::rollout`]), and says which.
pub async fn apply_workload(
    client: &Client,
    objects: &UplinkObjects,
) -> Result<Option<Unblock>, ApiError> {
    let ns = objects.namespace.as_str();
    apply(
        &Api::namespaced(client.clone(), ns),
        &objects.service,
        ApiStep::Workload,
    )
    .await?;
    let applied = apply(
        &Api::namespaced(client.clone(), ns),
        &objects.statefulset,
        ApiStep::Workload,
    )
    .await?;
    let workload = objects
        .statefulset
        .metadata
        .name
        .as_deref()
        .unwrap_or_default();
    let pods = nudge_pods(client, ns, workload, objects.replicas, &objects.config_hash).await;
    let replicas = usize::try_from(objects.replicas).unwrap_or(0);
    let Some(unblock) = super::rollout::pod_in_the_way(&applied, &pods, replicas) else {
        return Ok(None);
    };
    let victim = unblock.pod();
    let uid = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(victim))
        .and_then(|p| p.metadata.uid.clone());
    let params = DeleteParams {
        // This very pod: never its replacement.
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), ns)
        .delete(victim, &params)
        .await
    {
        Ok(_) => Ok(Some(unblock)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(ApiError::at(
            ApiStep::Workload,
            format!("deleting uplink pod {ns}/{victim}, which blocks the rollout"),
        )(e)),
    }
}

/// Annotates each uplink pod with the hash of its configuration. A kubelet refreshes a
/// ConfigMap volume when it syncs the pod: on its periodic sync (a minute or more) or when the
/// pod object changes. Without this nudge a new forward reached the pods only after the next
/// periodic sync (71 s measured on the test bed's node), while Envoy served the port already.
/// A merge patch with an unchanged value writes nothing. A pod that does not exist yet is
/// skipped (it mounts the new ConfigMap when it starts); any other failure only delays the
/// refresh to the kubelet's own sync, so it is logged, and the pass goes on. Returns the pods
/// as patched (those that exist and could be patched).
async fn nudge_pods(
    client: &Client,
    namespace: &str,
    workload: &str,
    replicas: i32,
    hash: &str,
) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let short = hash.get(..16).unwrap_or(hash);
    let patch = serde_json::json!({
        "metadata": {"annotations": {CONFIG_HASH_ANNOTATION: short}}
    });
    let mut found = Vec::new();
    for ordinal in 0..replicas.max(0) {
        let name = format!("{workload}-{ordinal}");
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(pod) => found.push(pod),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(
                pod = %format!("{namespace}/{name}"),
                error = %e,
                "could not annotate the uplink pod with its new configuration; it picks the change up at the kubelet's next sync"
            ),
        }
    }
    found
}

/// Server-side apply of one object under [`FIELD_MANAGER`]; the object as applied.
async fn apply<K>(api: &Api<K>, object: &K, step: ApiStep) -> Result<K, ApiError>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.as_deref().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(ApiError::at(
        step,
        format!("applying {} {name}", K::kind(&())),
    ))
}
