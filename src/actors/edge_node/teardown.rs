//! Deleting an EdgeNode: the VPS is torn down over SSH (unless `skip-deprovision`), then the
//! uplink objects are deleted (only those whose owner labels name it, under its current and
//! legacy names), then the finalizer goes. A deletion that cannot proceed says
//! why on the EdgeNode and how to delete without cleaning the VPS.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use tracing::{info, warn};

use crate::crd::{ANNOTATION_SKIP_DEPROVISION, EdgeNode};
use crate::object_key::ObjectKey;
use crate::workload;

use super::super::Context;
use super::super::error::ReconcileError;
use super::super::index;
use super::super::protocol::Target;
use super::apply::set_finalizer;
use super::gather::target_of;
use super::report;

/// What deleting asks for next.
#[derive(Debug)]
pub enum Next {
    /// Our finalizer is not on it: nothing of ours to do, the actor stops.
    Gone,
    /// Tear the VPS down over SSH with this target.
    TearDown(Box<Target>),
    /// Skip the VPS: delete the in-cluster objects and drop the finalizer.
    Finish,
    /// Blocked (reported on the EdgeNode); retried.
    Blocked,
}

/// The first step of a deletion.
pub async fn begin(ctx: &Context, node: &EdgeNode) -> Next {
    if !node
        .finalizers()
        .iter()
        .any(|f| f == super::super::FINALIZER)
    {
        return Next::Gone;
    }
    let skip = node
        .annotations()
        .get(ANNOTATION_SKIP_DEPROVISION)
        .map(String::as_str)
        == Some("true");
    if skip {
        info!(node = %ObjectKey::of(node), "skip-deprovision: leaving the VPS as it is");
        return Next::Finish;
    }
    let secrets = match ctx
        .secrets(&index::secrets_of(
            node,
            &[] as &[Arc<crate::crd::PortBinding>],
            &[] as &[Arc<k8s_openapi::api::core::v1::Service>],
        ))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let e = ReconcileError::from(e);
            report::deletion_blocked(ctx, node, e.category(), &e.to_string()).await;
            return Next::Blocked;
        }
    };
    match target_of(ctx, &ctx.resolver(), node, &secrets) {
        Ok(target) => Next::TearDown(Box::new(target)),
        Err(e) => {
            report::deletion_blocked(ctx, node, e.category(), &e.to_string()).await;
            Next::Blocked
        }
    }
}

/// After the VPS (if any): the uplink objects, then the finalizer. `Ok(true)`: done.
pub async fn finish(ctx: &Context, node: &Arc<EdgeNode>) -> Result<bool, ReconcileError> {
    let key = ObjectKey::of(node.as_ref());
    match workload::delete_workload(
        &ctx.client,
        &node.spec.uplink.namespace,
        &key.namespace,
        &key.name,
    )
    .await
    {
        Ok(left_alone) => {
            if !left_alone.is_empty() {
                warn!(node = %key, objects = ?left_alone, "objects under this EdgeNode's uplink names are not its own: left alone");
            }
        }
        Err(e) => {
            let e = ReconcileError::from(e);
            report::deletion_blocked(ctx, node, e.category(), &e.to_string()).await;
            return Ok(false);
        }
    }
    let api: Api<EdgeNode> = Api::namespaced(ctx.client.clone(), &key.namespace);
    set_finalizer(&api, &key.name, false).await?;
    info!(node = %key, "EdgeNode deleted: VPS and uplink objects removed");
    Ok(true)
}

/// The answer of the teardown job.
pub async fn torn_down(
    ctx: &Context,
    node: &Arc<EdgeNode>,
    result: Result<(), ReconcileError>,
) -> Result<bool, ReconcileError> {
    match result {
        Ok(()) => {
            ctx.publish(
                &kube::Resource::object_ref(node.as_ref(), &()),
                false,
                "TornDown",
                format!("VPS {} torn down", node.spec.address),
                "Teardown",
            )
            .await;
            finish(ctx, node).await
        }
        Err(e) => {
            report::deletion_blocked(ctx, node, e.category(), &e.to_string()).await;
            Ok(false)
        }
    }
}
