//! The Helm chart: its CRDs are exactly what `tunnel crds` prints; `helm lint` passes and the
//! schema refuses bad values; it installs with the real `helm` into the real API server; its
//! RBAC grants the operator what it needs and no more (checked with access reviews, then for
//! real: the operator runs on the chart's ServiceAccount token, not an admin kubeconfig, and
//! reconciles); an EdgeNode in an uplink namespace the chart was not told about gets a
//! condition that says how to allow it, and `helm upgrade` with that namespace added lets it
//! through; `helm uninstall` keeps the CRDs and the user's objects.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::NonResourceAttributes;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use testbed::apiserver::ApiServer;
use testbed::free_port;
use testbed::process::Process;
use tunnel::crd::{EdgeNode, PortBinding};

use super::leader_election::agents_dir;

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

/// The operator's Lease, as [`allowed`] names one object (checked against the operator's
/// constant in the test).
const LEASE: &str = "leases@6f1468a9.achetronic.com";

/// Whether `client` may `verb` the `resource` (`plural`, `plural/subresource`, or
/// `plural@name` for one object by name) of `group` in `namespace`.
async fn allowed(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, name) = match resource.split_once('@') {
        Some((r, n)) => (r, Some(n.to_string())),
        None => (resource, None),
    };
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
                name,
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

/// Runs `helm` with its own state directories and `args`.
fn helm(server: Option<&ApiServer>, args: &[&str], homes: &Path) -> Output {
    let mut cmd = Command::new(testbed::tools::bin("helm").unwrap());
    cmd.args(args)
        .env("HELM_CACHE_HOME", homes.join("cache"))
        .env("HELM_CONFIG_HOME", homes.join("config"))
        .env("HELM_DATA_HOME", homes.join("data"));
    if let Some(server) = server {
        cmd.arg("--kubeconfig").arg(server.kubeconfig_path());
    }
    cmd.output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn helm_lint_passes_and_the_schema_and_templates_refuse_bad_values() {
    let homes = tempfile::tempdir().unwrap();
    ok(
        &helm(None, &["lint", "charts/tunnel"], homes.path()),
        "helm lint",
    );
    let render = |sets: &[&str]| {
        let mut args = vec![
            "template",
            "t",
            "charts/tunnel",
            "--namespace",
            "tunnel-system",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        helm(None, &args, homes.path())
    };
    for (bad, field) in [
        ("flags.metricsBindAddress=anywhere", "metricsBindAddress"),
        ("flags.resyncPeriod=5", "resyncPeriod"),
        ("flags.maxConcurrentReconciles=0", "maxConcurrentReconciles"),
        ("logFormat=yaml", "logFormat"),
        ("uplinkNamespaces={Bad_Name}", "uplinkNamespaces"),
        ("flags.noSuchFlag=1", "noSuchFlag"),
    ] {
        let out = render(&[bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(field),
            "{bad}: {stderr}"
        );
    }
    let out = render(&["replicaCount=2", "flags.leaderElect=false"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs flags.leaderElect"));

    // Ports follow the flags; metrics off: no port, Service or review rights.
    let text = ok(
        &render(&[
            "flags.healthProbeBindAddress=:9091",
            "flags.metricsBindAddress=:9443",
        ]),
        "render",
    );
    assert!(text.contains("containerPort: 9091") && text.contains("containerPort: 9443"));
    assert!(
        text.contains("--image-tag=0.1.0"),
        "imageTag defaults to the chart's"
    );
    let text = ok(
        &render(&["flags.metricsBindAddress=0"]),
        "render metrics off",
    );
    assert!(!text.contains("name: metrics"));
    assert!(!text.contains("-metrics-auth") && !text.contains("kind: Service\n"));
    // Optional monitors and policy.
    let text = ok(
        &render(&[
            "metrics.serviceMonitor.enabled=true",
            "metrics.podMonitor.enabled=true",
            "networkPolicy.enabled=true",
            "flags.imageTag=v9",
            "flags.envoySha256={amd64=0000000000000000000000000000000000000000000000000000000000000000}",
        ]),
        "render",
    );
    for kind in ["ServiceMonitor", "PodMonitor", "NetworkPolicy"] {
        assert!(text.contains(&format!("kind: {kind}")), "{kind}");
    }
    assert!(text.contains("--image-tag=v9"));
    assert!(text.contains("--envoy-sha256=amd64=0000"));
    assert!(text.contains("--ssh-keepalive-interval=15s"));
    assert!(text.contains("path: /stats/prometheus"));
}

/// A kubeconfig that authenticates with `token` only.
fn token_kubeconfig(server: &ApiServer, token: &str, path: &Path) {
    let admin = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    config["users"][0]["user"] = serde_yaml::to_value(json!({ "token": token })).unwrap();
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
}

async fn condition_of(api: &Api<EdgeNode>, name: &str) -> Option<(String, String)> {
    let n = api.get(name).await.ok()?;
    n.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason, c.message))
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_the_chart_its_rbac_is_least_privilege_and_the_operator_runs_on_its_token() {
    let server = ApiServer::start().await.unwrap();
    let homes = tempfile::tempdir().unwrap();
    let install = [
        "install",
        "tunnel",
        "charts/tunnel",
        "--namespace",
        "tunnel-system",
        "--create-namespace",
    ];
    ok(&helm(Some(&server), &install, homes.path()), "helm install");

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
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        created.is_some(),
        "EdgeNode could not be created after helm installed the CRDs"
    );
    // The uplink namespace was created, labelled for the uplinks' privileged init container.
    let ns = Api::<Namespace>::all(admin.clone())
        .get("tunnel")
        .await
        .unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );

    // The operator's identity: what the chart's ServiceAccount may and may not do.
    let sa = server
        .client_as(
            "system:serviceaccount:tunnel-system:tunnel",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:tunnel-system",
                "system:authenticated",
            ],
        )
        .await
        .unwrap();
    assert_eq!(LEASE, format!("leases@{}", tunnel::leader::LEASE_NAME));
    let must = [
        ("list", "tunnel.achetronic.com", "edgenodes", None),
        ("watch", "tunnel.achetronic.com", "portbindings", None),
        ("watch", "tunnel.achetronic.com", "referencegrants", None),
        (
            "patch",
            "tunnel.achetronic.com",
            "edgenodes",
            Some("default"),
        ),
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
        ("list", "", "secrets", None),
        ("watch", "", "services", None),
        ("watch", "apps", "statefulsets", None),
        ("get", "", "namespaces", None),
        ("get", "", "secrets", Some("tunnel")),
        ("patch", "", "secrets", Some("tunnel")),
        ("delete", "", "secrets", Some("tunnel")),
        ("patch", "", "configmaps", Some("tunnel")),
        ("patch", "", "services", Some("tunnel")),
        ("patch", "apps", "statefulsets", Some("tunnel")),
        ("delete", "apps", "statefulsets", Some("tunnel")),
        // The configuration-hash annotation on the uplink pods, and their state.
        ("patch", "", "pods", Some("tunnel")),
        ("get", "", "pods", Some("tunnel")),
        ("create", "events.k8s.io", "events", Some("default")),
        // The one Lease, by name (create cannot be limited by name).
        ("get", "coordination.k8s.io", LEASE, Some("tunnel-system")),
        (
            "update",
            "coordination.k8s.io",
            LEASE,
            Some("tunnel-system"),
        ),
        (
            "create",
            "coordination.k8s.io",
            "leases",
            Some("tunnel-system"),
        ),
        ("create", "authentication.k8s.io", "tokenreviews", None),
        (
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
        ),
    ];
    let must_not = [
        // Never the user's objects themselves.
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
        (
            "update",
            "tunnel.achetronic.com",
            "edgenodes",
            Some("default"),
        ),
        (
            "patch",
            "tunnel.achetronic.com",
            "referencegrants",
            Some("default"),
        ),
        // No writes outside the uplink namespaces, kube-system above all.
        ("patch", "", "configmaps", Some("kube-system")),
        ("create", "", "configmaps", Some("kube-system")),
        ("patch", "", "secrets", Some("kube-system")),
        ("create", "", "secrets", Some("kube-system")),
        ("delete", "", "secrets", Some("default")),
        ("patch", "apps", "statefulsets", Some("default")),
        ("create", "apps", "statefulsets", Some("kube-system")),
        ("patch", "", "services", Some("default")),
        ("patch", "", "pods", Some("kube-system")),
        ("patch", "", "pods", Some("default")),
        // No escalation: no pods, exec, tokens, impersonation, role bindings or role edits.
        ("create", "", "pods", Some("tunnel")),
        ("create", "", "pods/exec", Some("tunnel")),
        ("create", "", "serviceaccounts/token", Some("tunnel-system")),
        ("impersonate", "", "users", None),
        ("patch", "apps", "deployments", Some("tunnel-system")),
        ("create", "apps", "daemonsets", Some("tunnel")),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some("tunnel"),
        ),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            Some("tunnel"),
        ),
        ("update", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        // Nothing else of the cluster.
        ("create", "", "namespaces", None),
        ("delete", "", "namespaces", None),
        ("list", "", "nodes", None),
        ("create", "coordination.k8s.io", "leases", Some("default")),
        // Other Leases of its namespace (another controller's election) are not its own.
        (
            "update",
            "coordination.k8s.io",
            "leases@another-controller",
            Some("tunnel-system"),
        ),
        (
            "get",
            "coordination.k8s.io",
            "leases@another-controller",
            Some("tunnel-system"),
        ),
        (
            "delete",
            "coordination.k8s.io",
            "leases",
            Some("tunnel-system"),
        ),
        ("create", "", "events", Some("default")),
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
    // Nobody may scrape by default; the metrics-reader ClusterRole is there to bind.
    let scrape = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(sa.clone())
        .create(&PostParams::default(), &scrape)
        .await
        .unwrap();
    if answer.status.is_some_and(|s| s.allowed) {
        wrong.push("the operator's own ServiceAccount may scrape /metrics".into());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // For real: the operator on the chart's ServiceAccount token only. An SSH Secret whose
    // VPS is a closed loopback port: each pass gets as far as the uplink workload.
    let dir = tempfile::tempdir().unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), "tunnel-system")
        .create_token_request("tunnel", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let kubeconfig = dir.path().join("kubeconfig");
    token_kubeconfig(&server, &token, &kubeconfig);
    let key = dir.path().join("id");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let closed = free_port().unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vps-ssh-secret", "namespace": "default"},
        "stringData": {
            "privateKey": std::fs::read_to_string(&key).unwrap(),
            "knownHosts": format!("[127.0.0.1]:{closed} {}", std::fs::read_to_string(key.with_extension("pub")).unwrap()),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(admin.clone(), "default");
    let point = json!({"spec": {"address": "127.0.0.1", "ssh": {"port": closed, "secretRef": {"name": "vps-ssh-secret"}}}});
    nodes
        .patch("edge-node", &PatchParams::default(), &Patch::Merge(&point))
        .await
        .unwrap();
    // One in a namespace the chart was not told about.
    let elsewhere: EdgeNode = serde_json::from_value(json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "elsewhere", "namespace": "default"},
        "spec": {"address": "127.0.0.1", "ssh": {"port": closed, "secretRef": {"name": "vps-ssh-secret"}},
                 "uplink": {"namespace": "edge"}}
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &elsewhere)
        .await
        .unwrap();
    let pb: PortBinding = serde_json::from_value(json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "PortBinding",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"edgeNodeRef": {"name": "edge-node"}, "bindings": [
            {"name": "http", "protocol": "TCP", "listenPort": 80,
             "target": {"address": "10.96.0.20", "port": 8080}}]}
    }))
    .unwrap();
    Api::<PortBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &pb)
        .await
        .unwrap();

    let log = dir.path().join("operator.log");
    let metrics_port = free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnel"));
    cmd.args(["run", "--tunnelctl-dir", &agents_dir(dir.path())])
        .args([
            "--health-probe-bind-address",
            &format!("127.0.0.1:{}", free_port().unwrap()),
        ])
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "tunnel-system")
        .env("LOG_FORMAT", "text");
    let mut operator = Process::spawn("tunnel", &mut cmd, Some(&log)).unwrap();

    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "tunnel");
    let configs: Api<ConfigMap> = Api::namespaced(admin.clone(), "tunnel");
    let pbs: Api<PortBinding> = Api::namespaced(admin.clone(), "default");
    let mut seen = false;
    for _ in 0..120 {
        let node = nodes.get("edge-node").await.unwrap();
        let finalized = node
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tunnel.achetronic.com/teardown".to_owned());
        let workload = !sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && !configs
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=tunnel"))
                .await
                .unwrap()
                .items
                .is_empty();
        let statuses = node.status.is_some()
            && pbs
                .get("web")
                .await
                .unwrap()
                .status
                .is_some_and(|s| !s.conditions.is_empty());
        if finalized && workload && statuses {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        seen,
        "the operator on the chart's token did not reconcile:\n{text}"
    );
    let lease = Api::<Lease>::namespaced(admin.clone(), "tunnel-system")
        .get("6f1468a9.achetronic.com")
        .await
        .unwrap();
    assert!(lease.spec.unwrap().holder_identity.is_some());
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(admin.clone(), "default");
    let mut any_event = false;
    for _ in 0..40 {
        any_event = !events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty();
        if any_event {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(any_event, "no Event published:\n{text}");

    // The unlisted uplink namespace: a condition that says how to allow it.
    let mut refused = None;
    for _ in 0..120 {
        refused = condition_of(&nodes, "elsewhere").await;
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (reason, message) = refused.unwrap();
    assert_eq!(reason, "UplinkNamespaceNotAllowed", "{message}");
    assert!(message.contains("uplinkNamespaces"), "{message}");

    // helm upgrade with the namespace added (and another flag): it goes through.
    ok(
        &helm(
            Some(&server),
            &[
                "upgrade",
                "tunnel",
                "charts/tunnel",
                "--namespace",
                "tunnel-system",
                "--reuse-values",
                "--set",
                "uplinkNamespaces={tunnel,edge}",
                "--set",
                "flags.resyncPeriod=1m",
            ],
            homes.path(),
        ),
        "helm upgrade",
    );
    let deployment = Api::<Deployment>::namespaced(admin.clone(), "tunnel-system")
        .get("tunnel")
        .await
        .unwrap();
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--resync-period=1m".to_owned()), "{args:?}");
    // A change of the EdgeNode starts a pass at once (no waiting out the retry backoff).
    let nudge = json!({"metadata": {"annotations": {"nudge": "1"}}});
    nodes
        .patch("elsewhere", &PatchParams::default(), &Patch::Merge(&nudge))
        .await
        .unwrap();
    let edge_sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "edge");
    let mut through = false;
    for _ in 0..120 {
        through = !edge_sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty();
        if through {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        through,
        "the uplink workload never reached namespace edge:\n{text}"
    );
    operator.stop(Duration::from_secs(10));

    // watchNamespaces: Secrets and Services readable only there.
    ok(
        &helm(
            Some(&server),
            &[
                "upgrade",
                "tunnel",
                "charts/tunnel",
                "--namespace",
                "tunnel-system",
                "--reuse-values",
                "--set",
                "watchNamespaces={default}",
            ],
            homes.path(),
        ),
        "helm upgrade watchNamespaces",
    );
    let mut wrong = Vec::new();
    for (verb, resource, ns, expected) in [
        ("list", "secrets", None, false),
        ("watch", "secrets", Some("kube-system"), false),
        ("list", "secrets", Some("other"), false),
        ("list", "secrets", Some("default"), true),
        ("watch", "services", Some("default"), true),
        ("list", "services", None, false),
        // The uplink namespace's own key Secrets stay readable.
        ("get", "secrets", Some("tunnel"), true),
    ] {
        if allowed(&sa, verb, "", resource, ns).await != expected {
            wrong.push(format!("{verb} {resource} in {ns:?}: expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let args = Api::<Deployment>::namespaced(admin.clone(), "tunnel-system")
        .get("tunnel")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--watch-namespaces=default".to_owned()),
        "{args:?}"
    );
    // The operator, on the same token, with the chart's new flag: it runs (its watches are
    // allowed) and an EdgeNode whose SSH Secret is in an unwatched namespace does not see it.
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut other_secret = secret.clone();
    other_secret.metadata.namespace = Some("other".into());
    other_secret.metadata.resource_version = None;
    Api::<Secret>::namespaced(admin.clone(), "other")
        .create(&PostParams::default(), &other_secret)
        .await
        .unwrap();
    let outside: EdgeNode = serde_json::from_value(json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "outside", "namespace": "other"},
        "spec": {"address": "127.0.0.1", "ssh": {"port": closed, "secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    let other_nodes: Api<EdgeNode> = Api::namespaced(admin.clone(), "other");
    other_nodes
        .create(&PostParams::default(), &outside)
        .await
        .unwrap();
    let log = dir.path().join("operator-watch.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnel"));
    cmd.args(["run", "--tunnelctl-dir", &agents_dir(dir.path())])
        .args([
            "--health-probe-bind-address",
            &format!("127.0.0.1:{}", free_port().unwrap()),
        ])
        .args(["--watch-namespaces", "default"])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "tunnel-system")
        .env("LOG_FORMAT", "text");
    let mut operator = Process::spawn("tunnel", &mut cmd, Some(&log)).unwrap();
    let mut hidden = None;
    for _ in 0..120 {
        hidden = condition_of(&other_nodes, "outside").await;
        if hidden.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (reason, message) =
        hidden.unwrap_or_else(|| panic!("no condition on other/outside:\n{text}"));
    assert_eq!(reason, "SSHSecretNotFound", "{text}");
    assert!(
        message.contains("--watch-namespaces"),
        "says the namespace is not watched: {message}"
    );
    assert!(text.contains("the actor tree runs"), "{text}");
    assert!(!text.contains("forbidden"), "{text}");
    operator.stop(Duration::from_secs(10));

    // Uninstall: the CRDs, the user's objects and the uplink namespaces stay.
    ok(
        &helm(
            Some(&server),
            &["uninstall", "tunnel", "--namespace", "tunnel-system"],
            homes.path(),
        ),
        "helm uninstall",
    );
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    assert!(crds.get("edgenodes.tunnel.achetronic.com").await.is_ok());
    assert!(crds.get("portbindings.tunnel.achetronic.com").await.is_ok());
    assert!(nodes.get("edge-node").await.is_ok());
    assert!(pbs.get("web").await.is_ok());
    assert!(
        Api::<Namespace>::all(admin.clone())
            .get("tunnel")
            .await
            .is_ok()
    );
}
