//! `UplinksReady` follows a user deleting an uplink pod of a healthy EdgeNode at once, not at
//! the drift pass (issue 25, item 5): README Example 1 served through a real nspawn VPS, the
//! operator with `--resync-period 1h` (so no drift pass can be what tells), and the uplink pod
//! deleted. The bed has no kubelet or StatefulSet controller: the test writes what they would,
//! in their order (kube-controller-manager v1.34, `computeReplicaStatus`): the pod object
//! Terminating (a finalizer holds it, as a kubelet stopping it would), the StatefulSet status
//! `currentReplicas`/`updatedReplicas` dropped; then the pod gone and `replicas`,
//! `readyReplicas` dropped; then the replacement Running and Ready and every count back. The
//! uplink agent keeps running, so the relay's handshake stays fresh: only the operator hearing
//! of the StatefulSet's status can make the condition say it. Before the watch of the uplink
//! StatefulSets routed their status, the condition stayed `True` for the hour. (The first
//! step is the proof: a healthy EdgeNode schedules no re-check. Once it is unhealthy its
//! re-checks (3 s, backing off) would also see the later steps; they check the words.)

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use testbed::objects::{condition, until_ready};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;
use tunnel::crd::EdgeNode;
use tunnel::workload::UplinkNames;

use crate::operator_support::{apply_example1, logs_of};

const LONG: Duration = Duration::from_secs(180);
/// A finalizer of the test's own, holding the deleted pod Terminating.
const HOLD: &str = "tunnel.test/hold";

/// The StatefulSet controller's status write: (replicas, ready, current and updated).
async fn set_status(
    sets: &Api<StatefulSet>,
    name: &str,
    (replicas, ready, current): (i32, i32, i32),
) {
    sets.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": current
        }})),
    )
    .await
    .unwrap();
}

/// The uplink pod, created Running (as the kubelet reports it), with `finalizers`.
async fn running_pod(pods: &Api<Pod>, name: &str, finalizers: &[&str]) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"containers": [{"name": "uplink", "image": "uplink:test"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uplinks_ready_follows_a_deleted_uplink_pod_before_the_drift_pass() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let operator = bed
        .operator()
        .flags(&["--resync-period", "1h"])
        .start()
        .unwrap();
    apply_example1(&client, &net.vps).await;
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", &net.pods)
        .await
        .unwrap();
    let describe = || logs_of(&operator, &uplinks);
    let workload = UplinkNames::for_node("default", "edge-node").workload;
    let pod = format!("{workload}-0");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "tunnel");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "tunnel");
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    // The pod is Running and Ready: the controller counts it.
    set_status(&sets, &workload, (1, 1, 1)).await;
    pods.patch(
        &pod,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": [HOLD]}})),
    )
    .await
    .unwrap();
    until_ready(&nodes, "edge-node", describe).await;
    let uplinks_ready = async |status: &str, needle: &str| {
        eventually(
            &format!("UplinksReady={status} saying {needle:?}"),
            LONG,
            async || {
                let st = nodes.get("edge-node").await.ok()?.status?;
                condition(&st.conditions, "UplinksReady")
                    .filter(|c| c.0 == status && c.2.contains(needle))
            },
            describe,
        )
        .await
    };
    uplinks_ready("True", "").await;

    // `kubectl delete pod`: Terminating, and the controller no longer counts it current.
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    set_status(&sets, &workload, (1, 1, 0)).await;
    let (_, reason, _) =
        uplinks_ready("False", &format!("uplink 0: pod {pod} is being deleted")).await;
    assert_eq!(reason, "UplinksNotReady");

    // Gone: no pod at all, none counted.
    pods.patch(
        &pod,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    set_status(&sets, &workload, (0, 0, 0)).await;
    uplinks_ready("False", &format!("uplink 0: pod {pod} does not exist")).await;

    // The controller's replacement, Running and Ready.
    running_pod(&pods, &pod, &[]).await;
    set_status(&sets, &workload, (1, 1, 1)).await;
    uplinks_ready("True", "").await;
    let ready = until_ready(&nodes, "edge-node", describe).await;
    assert_eq!(ready.1, "AllHealthy");
}
