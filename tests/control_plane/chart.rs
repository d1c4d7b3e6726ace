//! The Helm chart: its CRDs are exactly what `tunnel crds` prints, it installs with the real
//! `helm` into the real API server, and its RBAC grants the operator what it needs and no more.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use testbed::apiserver::ApiServer;

const CHART_CRDS: &str = "charts/tunnel/crds/tunnel.achetronic.com.yaml";

#[test]
fn chart_crds_match_the_rust_types() {
    let chart = std::fs::read_to_string(CHART_CRDS).unwrap();
    let rendered = tunnel::crd::crds_yaml().unwrap();
    assert!(
        chart == rendered,
        "{CHART_CRDS} drifted from the Rust types; regenerate it with `cargo run -- crds > {CHART_CRDS}`"
    );
}

async fn allowed(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (resource.to_string(), None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource),
                subresource,
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn helm_installs_the_chart_and_its_rbac_is_least_privilege() {
    let server = ApiServer::start().await.unwrap();
    let helm = testbed::tools::bin("helm").unwrap();
    let out = std::process::Command::new(&helm)
        .args([
            "install",
            "tunnel",
            "charts/tunnel",
            "--namespace",
            "tunnel",
            "--create-namespace",
            "--kubeconfig",
        ])
        .arg(server.kubeconfig_path())
        .env("HELM_CACHE_HOME", tempfile::tempdir().unwrap().path())
        .env("HELM_CONFIG_HOME", tempfile::tempdir().unwrap().path())
        .env("HELM_DATA_HOME", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CRDs came with the chart: the README's Example 1 applies.
    let admin = server.client().await.unwrap();
    let en_res = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tunnel.achetronic.com", "v1alpha1", "EdgeNode"),
        "edgenodes",
    );
    let edge_nodes: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "default", &en_res);
    let mut created = None;
    for _ in 0..50 {
        let node: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": "edge-node", "namespace": "default"},
            "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}
        }))
        .unwrap();
        match edge_nodes.create(&PostParams::default(), &node).await {
            Ok(n) => {
                created = Some(n);
                break;
            }
            // Discovery of a just-installed CRD can take a moment.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    assert!(
        created.is_some(),
        "EdgeNode could not be created after helm installed the CRDs"
    );

    // The operator's identity: what the chart's ServiceAccount may and may not do.
    let sa = server
        .client_as(
            "system:serviceaccount:tunnel:tunnel",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:tunnel",
                "system:authenticated",
            ],
        )
        .await
        .unwrap();
    let must = [
        ("list", "tunnel.achetronic.com", "edgenodes", None),
        ("watch", "tunnel.achetronic.com", "portbindings", None),
        (
            "patch",
            "tunnel.achetronic.com",
            "edgenodes/status",
            Some("default"),
        ),
        (
            "patch",
            "tunnel.achetronic.com",
            "portbindings/status",
            Some("default"),
        ),
        (
            "update",
            "tunnel.achetronic.com",
            "edgenodes/finalizers",
            Some("default"),
        ),
        ("get", "", "secrets", Some("default")),
        ("create", "", "secrets", Some("tunnel")),
        ("watch", "", "services", None),
        ("create", "", "configmaps", Some("tunnel")),
        ("create", "apps", "statefulsets", Some("tunnel")),
        ("create", "", "namespaces", None),
        ("create", "", "events", Some("default")),
        ("create", "events.k8s.io", "events", Some("default")),
        ("update", "coordination.k8s.io", "leases", Some("tunnel")),
    ];
    let must_not = [
        (
            "create",
            "tunnel.achetronic.com",
            "edgenodes",
            Some("default"),
        ),
        (
            "delete",
            "tunnel.achetronic.com",
            "portbindings",
            Some("default"),
        ),
        ("create", "coordination.k8s.io", "leases", Some("default")),
        ("delete", "", "namespaces", None),
        ("list", "", "nodes", None),
        ("create", "", "pods", Some("tunnel")),
        ("create", "", "pods/exec", Some("tunnel")),
        ("patch", "apps", "deployments", Some("tunnel")),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("update", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some("tunnel"),
        ),
    ];
    let mut wrong = Vec::new();
    for (verb, group, resource, ns) in must {
        if !allowed(&sa, verb, group, resource, ns).await {
            wrong.push(format!(
                "denied but needed: {verb} {group}/{resource} in {ns:?}"
            ));
        }
    }
    for (verb, group, resource, ns) in must_not {
        if allowed(&sa, verb, group, resource, ns).await {
            wrong.push(format!(
                "allowed but not needed: {verb} {group}/{resource} in {ns:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // And for real: the ServiceAccount lists EdgeNodes and writes a status with server-side apply.
    let as_operator: Api<DynamicObject> = Api::namespaced_with(sa.clone(), "default", &en_res);
    assert_eq!(
        as_operator
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let status = json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "status": {"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "False", "reason": "Enrolling", "message": "enrolling the VPS",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    });
    as_operator
        .patch_status(
            "edge-node",
            &PatchParams::apply("tunnel").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("the operator writes EdgeNode status");
    let back = as_operator.get("edge-node").await.unwrap();
    assert_eq!(back.data["status"]["conditions"][0]["reason"], "Enrolling");
    assert!(
        as_operator
            .delete("edge-node", &kube::api::DeleteParams::default())
            .await
            .is_err(),
        "the operator never deletes EdgeNodes"
    );
}
