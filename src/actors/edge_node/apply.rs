//! The apply stage of a pass: the API writes a decision asks for, in order. The uplink
//! namespace, the key Secrets that changed (even when the pass stops after them), then the
//! uplink workload, then (once it is applied) this EdgeNode's objects under the legacy names
//! are deleted. The SSH job that follows is handed to the session actor by the shell.
//! Also the EdgeNode's own metadata writes: the finalizer and the one-shot restart annotation.

use std::collections::BTreeMap;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use crate::api_write::{ApiError, ApiStep};
use crate::crd::{ANNOTATION_RESTART_ENVOY, EdgeNode};
use crate::enroll::{DesiredState, Request};
use crate::plan::SourceKey;
use crate::workload;

use super::super::Context;
use super::super::FINALIZER;
use super::super::error::ReconcileError;
use super::super::status::SourceReport;
use super::decide::{Decision, PassFacts, Refused};

/// What goes to the SSH session after the API writes.
#[derive(Debug)]
pub struct Applied {
    /// The VPS's desired state.
    pub desired: Box<DesiredState>,
    /// Requests of this pass.
    pub request: Request,
    /// The status facts.
    pub facts: PassFacts,
    /// One report per PortBinding.
    pub reports: BTreeMap<SourceKey, SourceReport>,
    /// The uplink workload could not be applied: the VPS is enrolled all the same, and the
    /// status says so.
    pub workload_error: Option<ReconcileError>,
    /// The uplink pod deleted because it kept the rollout from going on (`workload::rollout`).
    pub unblocked: Option<workload::Unblock>,
}

/// Writes what `decision` asks for; stops at the first failure, except the uplink workload's:
/// a refused workload does not keep the VPS from being enrolled (it is reported with the pass).
/// `legacy` (this EdgeNode's objects under the legacy names) is deleted once the workload is
/// applied under the current names; a failure there is retried by the next pass.
pub async fn apply(
    ctx: &Context,
    uplink_namespace: &str,
    decision: Decision,
    legacy: &[workload::Found],
) -> Result<Applied, Refused> {
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
    let planned = decision.outcome?;
    let (unblocked, workload_error) =
        match workload::apply_workload(&ctx.client, &planned.workload).await {
            Ok(unblocked) => (unblocked, None),
            Err(e) => (None, Some(ReconcileError::from(e))),
        };
    if workload_error.is_none() && !legacy.is_empty() {
        match workload::delete_owned(&ctx.client, legacy).await {
            Ok(()) => info!(
                namespace = uplink_namespace,
                objects = legacy.len(),
                "uplink objects migrated from the legacy (32-bit) names; the old ones are deleted"
            ),
            Err(e) => {
                warn!(error = %e, "deleting uplink objects under the legacy names; the next pass retries");
            }
        }
    }
    match planned.desired {
        Ok(desired) => Ok(Applied {
            desired,
            request: planned.request,
            facts: planned.facts,
            reports: planned.reports,
            workload_error,
            unblocked,
        }),
        Err(error) => Err(Refused {
            error,
            reports: planned.reports,
        }),
    }
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
