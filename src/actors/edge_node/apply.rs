//! The apply stage of a pass: the API writes a decision asks for. First the uplink namespace
//! and the key Secrets that changed (even when the pass stops after them); then the shell
//! hands the SSH job to the session actor and, while it runs, the uplink workload is applied
//! and (once it is) this EdgeNode's objects under the legacy names are deleted.
//! Also the EdgeNode's own metadata writes: the finalizer and the one-shot restart annotation.

use std::collections::BTreeMap;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use crate::api_write::{ApiError, ApiStep};
use crate::crd::{ANNOTATION_RESTART_ENVOY, EdgeNode};
use crate::workload;

use super::super::Context;
use super::super::FINALIZER;
use super::super::error::ReconcileError;
use super::decide::{Decision, Planned, Refused};

/// Writes what `decision` asks for before the SSH job: the uplink namespace and the key
/// Secrets that changed (even when the pass stops after them). Returns the plan, or why the
/// pass stops.
pub async fn write_keys(
    ctx: &Context,
    uplink_namespace: &str,
    decision: Decision,
) -> Result<Planned, Refused> {
    let no_reports = |error: ReconcileError| Refused {
        error,
        reports: BTreeMap::new(),
    };
    // Refused before any write (e.g. an uplink namespace this EdgeNode may not use): not even
    // the namespace is made.
    let decision = match decision {
        Decision {
            key_writes,
            outcome: Err(refused),
        } if key_writes.is_empty() => return Err(refused),
        d => d,
    };
    workload::ensure_namespace(&ctx.client, uplink_namespace)
        .await
        .map_err(|e| no_reports(e.into()))?;
    let writes: Vec<_> = decision.key_writes.iter().collect();
    workload::apply_keys(&ctx.client, &writes)
        .await
        .map_err(|e| no_reports(e.into()))?;
    decision.outcome
}

/// How applying the uplink workload went.
#[derive(Debug, Default)]
pub struct WorkloadApplied {
    /// The uplink pod deleted because it kept the rollout from going on (`workload::rollout`).
    pub unblocked: Option<workload::Unblock>,
    /// The workload could not be applied: the VPS is enrolled all the same, and the status
    /// says so.
    pub error: Option<ReconcileError>,
}

/// Applies the uplink document's ConfigMap, before the SSH job: the pods start following a
/// new binding's forward while the VPS is told about it (Envoy sends it traffic only once an
/// uplink says it forwards the port: its per-port `/ready`).
pub async fn apply_config(
    ctx: &Context,
    objects: &workload::UplinkObjects,
) -> Result<(), ReconcileError> {
    workload::apply_config(&ctx.client, objects)
        .await
        .map_err(ReconcileError::from)
}

/// Applies the rest of the uplink workload after `config` (the result of [`apply_config`]);
/// it runs while the SSH job does. `legacy` (this EdgeNode's objects under the legacy names)
/// is deleted once the workload is applied under the current names; a failure there is
/// retried by the next pass.
pub async fn apply_workload(
    ctx: &Context,
    config: Result<(), ReconcileError>,
    objects: &workload::UplinkObjects,
    legacy: &[workload::Found],
) -> WorkloadApplied {
    let applied = match config {
        Ok(()) => workload::apply_workload(&ctx.client, objects)
            .await
            .map_err(ReconcileError::from),
        Err(e) => Err(e),
    };
    let (unblocked, error) = match applied {
        Ok(unblocked) => (unblocked, None),
        Err(e) => (None, Some(e)),
    };
    if error.is_none() && !legacy.is_empty() {
        match workload::delete_owned(&ctx.client, legacy).await {
            Ok(()) => info!(
                namespace = %objects.namespace,
                objects = legacy.len(),
                "uplink objects migrated from the legacy (32-bit) names; the old ones are deleted"
            ),
            Err(e) => {
                warn!(error = %e, "deleting uplink objects under the legacy names; the next pass retries");
            }
        }
    }
    WorkloadApplied { unblocked, error }
}

/// Adds (or removes) our finalizer, owned by its own field manager so no one else's goes.
pub async fn set_finalizer(
    api: &Api<EdgeNode>,
    name: &str,
    present: bool,
) -> Result<(), ReconcileError> {
    let finalizers: Vec<&str> = if present { vec![FINALIZER] } else { Vec::new() };
    let patch = serde_json::json!({
        "apiVersion": EdgeNode::api_version(&()),
        "kind": EdgeNode::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        name,
        &PatchParams::apply("tunnel-finalizer").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        ApiError::at(
            ApiStep::Metadata,
            format!("setting the finalizer of EdgeNode {name}"),
        )(e)
        .into()
    })
}

/// Removes the one-shot restart-envoy annotation after the restart it asked for.
pub async fn clear_restart_request(api: &Api<EdgeNode>, name: &str) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_RESTART_ENVOY: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
