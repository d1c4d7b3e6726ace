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
use k8s_openapi::api::authorization::v1::NonResourceAttributes;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize as _;
use serde_json::json;
use testbed::apiserver::{ApiServer, RESTRICTED_BY_DEFAULT};
use testbed::free_port;
use testbed::operator::{
    CHART_INSTALL, CHART_SA_GROUPS, CHART_SA_USER, CHART_UPLINK_IMAGE, OperatorBed,
};
use testbed::process::Process;
use testbed::promql::{self, RULES};
use tunnel::crd::{EdgeNode, PortBinding};

const CHART_CRDS: &str = "charts/tunnel/files/crds.yaml";

/// README Example 1's EdgeNode, as the fixture holds it.
fn example1_node() -> EdgeNode {
    serde_yaml::from_str(
        std::fs::read_to_string("tests/fixtures/readme/example1.yaml")
            .unwrap()
            .split("\n---\n")
            .next()
            .unwrap(),
    )
    .unwrap()
}

/// The uplink StatefulSet the operator builds for Example 1's EdgeNode, with `image`.
pub(crate) fn example1_statefulset(image: &str) -> k8s_openapi::api::apps::v1::StatefulSet {
    let node = example1_node();
    tunnel::workload::statefulset(&tunnel::workload::UplinkWorkload {
        node: "edge-node",
        node_namespace: "default",
        spec: &node.spec.uplink,
        image,
        log_format: "json",
        log_level: "info",
        pod_options: &tunnel::workload::UplinkPodOptions::default(),
    })
}

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
pub(crate) fn helm(server: Option<&ApiServer>, args: &[&str], homes: &Path) -> Output {
    let kubeconfig = server.map(ApiServer::kubeconfig_path);
    testbed::tools::helm(args, homes, kubeconfig.as_deref()).unwrap()
}

pub(crate) fn ok(out: &Output, what: &str) -> String {
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
            "--kube-version",
            "1.34.0",
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
            "metrics.serviceMonitor.tlsConfig.insecureSkipVerify=true",
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
    chart_upgrades_and_monitors(&render);
}

/// The rendered documents of `text` as YAML values.
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Issue 25's chart: CRDs as templates with a keep policy, kubeVersion, Pod Security labels
/// only on uplink namespaces, PodDisruptionBudgets, current monitor fields with TLS verified,
/// the uplinks' NetworkPolicy, the PrometheusRule and the dashboard.
fn chart_upgrades_and_monitors(render: &dyn Fn(&[&str]) -> Output) {
    // The CRDs are templates (so `helm upgrade` upgrades them), kept by Helm, in the category
    // `tunnel`; crds.install=false leaves them out.
    let docs = documents(&ok(&render(&[]), "render defaults"));
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 3);
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    for name in ["edgenodes", "portbindings"] {
        let crd = crds
            .iter()
            .find(|c| c["metadata"]["name"] == format!("{name}.tunnel.achetronic.com").as_str())
            .unwrap();
        assert_eq!(crd["spec"]["names"]["categories"][0], "tunnel", "{name}");
    }
    // The template carries `tunnel crds` unchanged but for the metadata.
    let rendered: CustomResourceDefinition = serde_yaml::from_value((*crds[0]).clone()).unwrap();
    let mut rendered = rendered;
    rendered.metadata.labels = None;
    rendered.metadata.annotations = None;
    assert!(tunnel::crd::crds().contains(&rendered));
    let text = ok(&render(&["crds.install=false"]), "render crds off");
    assert!(!text.contains("kind: CustomResourceDefinition"));

    // kubeVersion: the CEL IP/CIDR rules need an API server of 1.32 or newer (proved on that
    // version by oldest_api_server).
    for (version, accepted) in [("1.31.14", false), ("1.32.0", true), ("v1.34.4+k3s1", true)] {
        let mut args = vec!["template", "t", "charts/tunnel", "--kube-version", version];
        args.extend(["--namespace", "tunnel-system"]);
        let homes = tempfile::tempdir().unwrap();
        let out = helm(None, &args, homes.path());
        assert_eq!(out.status.success(), accepted, "kube {version}: {out:?}");
        if !accepted {
            assert!(String::from_utf8_lossy(&out.stderr).contains("kubeVersion"));
        }
    }

    // Pod Security: the uplink namespaces, and only they, are privileged (enforce, audit,
    // warn). (A release namespace that is also an uplink namespace: the restricted test.)
    let docs = documents(&ok(
        &render(&["uplinkNamespaces={tunnel,edge}"]),
        "render namespaces",
    ));
    let namespaces = of_kind(&docs, "Namespace");
    assert_eq!(namespaces.len(), 2);
    for ns in namespaces {
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                ns["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}").as_str()],
                "privileged"
            );
        }
    }

    // PodDisruptionBudgets: one per uplink namespace over its uplink pods; the operator's only
    // with a standby (one replica with maxUnavailable 1 would be pointless).
    let pdbs_of = |sets: &[&str]| {
        let docs = documents(&ok(&render(sets), "render pdb"));
        of_kind(&docs, "PodDisruptionBudget")
            .into_iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pdbs_of(&["uplinkNamespaces={tunnel,edge}"]),
        ["tunnel/t-tunnel-uplinks", "edge/t-tunnel-uplinks"]
    );
    assert_eq!(
        pdbs_of(&[
            "replicaCount=2",
            "uplinks.podDisruptionBudget.enabled=false"
        ]),
        ["tunnel-system/t-tunnel"]
    );
    let docs = documents(&ok(&render(&[]), "render"));
    let pdb = of_kind(&docs, "PodDisruptionBudget")[0];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "uplink"
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // The operator's and the uplinks' pod settings: priority class and pull secrets.
    let text = ok(
        &render(&[
            "priorityClassName=ops-critical",
            "imagePullSecrets[0].name=regcred",
            "uplinks.priorityClassName=edge-critical",
            "uplinks.imagePullSecrets[0].name=regcred",
            "uplinks.imagePullSecrets[1].name=mirror",
        ]),
        "render pod settings",
    );
    let docs = documents(&text);
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "ops-critical");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--uplink-priority-class-name=edge-critical"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--uplink-image-pull-secrets=regcred,mirror"),
        "{args:?}"
    );
    let plain = ok(&render(&[]), "render");
    assert!(
        !plain.contains("--uplink-priority-class-name")
            && !plain.contains("--uplink-image-pull-secrets")
    );

    // ServiceMonitor: TLS verified unless told otherwise, no deprecated bearerTokenFile.
    let out = render(&["metrics.serviceMonitor.enabled=true"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("metrics.certSecret"),
        "a ServiceMonitor that cannot verify the self-signed certificate is refused"
    );
    let text = ok(
        &render(&[
            "metrics.serviceMonitor.enabled=true",
            "metrics.certSecret=tunnel-metrics-cert",
            "metrics.serviceMonitor.tlsConfig.ca.secret.name=tunnel-metrics-cert",
            "metrics.serviceMonitor.tlsConfig.ca.secret.key=ca.crt",
            "metrics.podMonitor.enabled=true",
        ]),
        "render monitors",
    );
    let docs = documents(&text);
    let sm = of_kind(&docs, "ServiceMonitor")[0];
    let endpoint = &sm["spec"]["endpoints"][0];
    assert!(endpoint.get("bearerTokenFile").is_none(), "deprecated");
    assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], false);
    assert_eq!(
        endpoint["tlsConfig"]["serverName"],
        "t-tunnel-metrics.tunnel-system.svc"
    );
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["key"], "ca.crt");
    assert_eq!(endpoint["authorization"]["type"], "Bearer");
    let token_secret = endpoint["authorization"]["credentials"]["name"]
        .as_str()
        .unwrap();
    let secret = of_kind(&docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == token_secret)
        .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    let binding = of_kind(&docs, "ClusterRoleBinding")
        .into_iter()
        .find(|b| b["subjects"][0]["name"] == token_secret)
        .unwrap();
    assert_eq!(binding["roleRef"]["name"], "t-tunnel-metrics-reader");
    let pm = of_kind(&docs, "PodMonitor")[0];
    assert!(
        pm["spec"]["podMetricsEndpoints"][0]
            .get("targetPort")
            .is_none(),
        "deprecated"
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    // The port the PodMonitor names is the uplink container's.
    let sts = example1_statefulset("u");
    let ports = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some("admin") && p.container_port == 40600)
    );

    // The uplinks' NetworkPolicy, on by default (review L2): from pods, :40600 only from the
    // namespaces named, and nothing else (the probe port :40500 is the kubelet's and the
    // tunnel's), per uplink namespace.
    let docs = documents(&ok(
        &render(&["uplinkNamespaces={tunnel,edge}"]),
        "render uplink policy",
    ));
    let policies = of_kind(&docs, "NetworkPolicy");
    assert_eq!(policies.len(), 2);
    for policy in policies {
        let rules = policy["spec"]["ingress"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1, "one rule: {rules:?}");
        let admin = &rules[0];
        assert_eq!(admin["ports"].as_sequence().unwrap().len(), 1);
        assert_eq!(admin["ports"][0]["port"], 40600);
        assert_eq!(
            admin["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "monitoring"
        );
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "uplink"
        );
    }

    // No peers: nothing reaches the uplinks from pods; turned off: no policy.
    let docs = documents(&ok(
        &render(&["uplinks.networkPolicy.adminFrom=null"]),
        "render closed uplink policy",
    ));
    let closed = of_kind(&docs, "NetworkPolicy");
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0]["spec"]["ingress"].as_sequence().map(Vec::len),
        Some(0)
    );
    let docs = documents(&ok(
        &render(&["uplinks.networkPolicy.enabled=false"]),
        "render without uplink policy",
    ));
    assert!(of_kind(&docs, "NetworkPolicy").is_empty());

    // The PrometheusRule and the dashboard: optional, off by default.
    let docs = documents(&ok(&render(&[]), "render"));
    assert!(of_kind(&docs, "PrometheusRule").is_empty());
    assert!(of_kind(&docs, "ConfigMap").is_empty());
    let docs = documents(&ok(
        &render(&[
            "metrics.prometheusRule.enabled=true",
            "metrics.dashboard.enabled=true",
        ]),
        "render rule and dashboard",
    ));
    let rule = of_kind(&docs, "PrometheusRule")[0];
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    let dashboard = of_kind(&docs, "ConfigMap")[0];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["tunnel.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "tunnel-overview");
}

/// The series names an OpenMetrics text exposes (`_total`, `_bucket`, ... included).
fn exposed_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The alerts and every dashboard query are valid PromQL (`promtool check rules`) and read
/// only metrics that exist: the operator's, as its `/metrics` encodes them, and Envoy's, as a
/// real Envoy (the one the VPSes run) serves them on `/stats/prometheus`.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_dashboard_queries_are_valid_and_read_real_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let promtool = |file: &Path| {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool {file:?}: {out:?}");
    };
    promtool(Path::new(RULES));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let queries = promql::panels(repo).unwrap();
    assert!(queries.len() >= 10);
    let rules = serde_json::json!({"groups": [{"name": "dashboard", "rules":
        queries.iter().enumerate().map(|(i, q)| json!({"record": format!("panel_{i}"), "expr": q.expr})).collect::<Vec<_>>()}]});
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rules).unwrap()).unwrap();
    promtool(&file);

    // The names each expression reads.
    let mut exprs = promql::alerts(repo).unwrap();
    assert!(exprs.len() >= 5);
    exprs.extend(queries);

    let operator = exposed_names(&operator_metrics());
    let envoy = envoy_stats(dir.path()).await;
    let envoy = exposed_names(&envoy);
    let mut unknown = Vec::new();
    for promql::Query { name: what, expr } in &exprs {
        let names = promql::metric_names(expr).unwrap();
        assert!(!names.is_empty(), "{what}: {expr} reads no metric");
        for name in names {
            let known = if name.starts_with("tunnel_") {
                &operator
            } else {
                &envoy
            };
            if !known.contains(&name) {
                unknown.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics that do not exist:\n{}",
        unknown.join("\n")
    );
}

/// The operator's `/metrics` text with a sample in every family (an empty family is not
/// encoded), produced through the same calls the actors make.
fn operator_metrics() -> String {
    use tunnel::enroll::health::{Health, PeerStatus, RelayStatus};
    let m = tunnel::telemetry::metrics::Metrics::new();
    m.actor_started("EdgeNode");
    m.actor_restarted("EdgeNode");
    m.actor_parked("EdgeNode", true);
    drop(m.handling("EdgeNode"));
    m.pass("EdgeNode", Some("SSHUnreachable"));
    m.pass("PortBinding", None);
    m.ssh_commands(&[tunnel::ssh::LoggedCommand {
        command: "true".into(),
        access: tunnel::ssh::Access::Read,
        stdin_bytes: 0,
        status: Some(0),
        duration: Duration::from_millis(5),
    }]);
    m.enrollment_pass(false, true, Duration::from_secs(1));
    let key = tunnel::object_key::ObjectKey::new("default", "edge-node");
    m.bindings(&key, []);
    let health = Health {
        relay_status: Some(RelayStatus {
            ready: true,
            peers: vec![PeerStatus {
                public_key: "k".into(),
                last_handshake_seconds_ago: Some(3),
                handshake_fresh: true,
            }],
            interface: "wg-relay".into(),
        }),
        ..Health::default()
    };
    m.vps_health(
        &key,
        &health,
        &[tunnel::crd::UplinkStatus {
            ordinal: 0,
            tunnel_ip: "10.200.0.2".into(),
            public_key: "k".into(),
        }],
    );
    m.set_leader(true);
    m.encode()
}

/// `/stats/prometheus` of a real Envoy with one TCP listener and one cluster (the shape the
/// planner renders for a binding), on loopback.
async fn envoy_stats(dir: &Path) -> String {
    let (admin, listen, upstream) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "tcp_80", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "default_public-web_http", "cluster": "default_public-web_http"}}]}]}],
            "clusters": [{"name": "default_public-web_http", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "default_public-web_http", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}]
        }
    });
    let config = dir.join("envoy.json");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let mut cmd = Command::new(testbed::tools::envoy().unwrap());
    cmd.arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--base-id-path"])
        .arg(dir.join("base-id"))
        .args(["--use-dynamic-base-id", "-l", "warning"]);
    let mut envoy = Process::spawn("envoy", &mut cmd, Some(&dir.join("envoy.log"))).unwrap();
    let url = format!("http://127.0.0.1:{admin}/stats/prometheus");
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(out) = Command::new(testbed::tools::bin("curl").unwrap())
            .args(["-sf", &url])
            .output()
            && out.status.success()
        {
            text = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    envoy.stop(Duration::from_secs(5));
    assert!(
        text.contains("envoy_cluster_membership_healthy"),
        "no stats from Envoy: {}",
        std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
    );
    text
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_the_chart_its_rbac_is_least_privilege_and_the_operator_runs_on_its_token() {
    // The CRDs come with the chart.
    let bed = OperatorBed::builder().without_crds().start().await.unwrap();
    let server = &bed.server;
    let homes = tempfile::tempdir().unwrap();
    ok(
        &helm(Some(server), &CHART_INSTALL, homes.path()),
        "helm install",
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
        .client_as(CHART_SA_USER, &CHART_SA_GROUPS)
        .await
        .unwrap();
    assert_eq!(LEASE, format!("leases@{}", tunnel::leader::LEASE_NAME));
    let must = [
        ("list", "tunnel.achetronic.com", "edgenodes", None),
        ("watch", "tunnel.achetronic.com", "portbindings", None),
        ("watch", "tunnel.achetronic.com", "referencegrants", None),
        ("list", "gateway.networking.k8s.io", "referencegrants", None),
        (
            "watch",
            "gateway.networking.k8s.io",
            "referencegrants",
            None,
        ),
        // The Gateway API controller: its objects read, their statuses written.
        ("watch", "gateway.networking.k8s.io", "gatewayclasses", None),
        ("list", "gateway.networking.k8s.io", "gateways", None),
        ("watch", "gateway.networking.k8s.io", "tcproutes", None),
        ("watch", "gateway.networking.k8s.io", "udproutes", None),
        ("watch", "gateway.networking.k8s.io", "tlsroutes", None),
        (
            "patch",
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            None,
        ),
        (
            "patch",
            "gateway.networking.k8s.io",
            "gateways/status",
            Some("default"),
        ),
        (
            "patch",
            "gateway.networking.k8s.io",
            "tlsroutes/status",
            Some("default"),
        ),
        ("watch", "", "namespaces", None),
        // PortBindings' DNSEndpoints for external-dns.
        (
            "create",
            "externaldns.k8s.io",
            "dnsendpoints",
            Some("default"),
        ),
        (
            "patch",
            "externaldns.k8s.io",
            "dnsendpoints",
            Some("default"),
        ),
        (
            "delete",
            "externaldns.k8s.io",
            "dnsendpoints",
            Some("default"),
        ),
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
        // Secrets are watched as metadata only; the referenced ones are read with get.
        ("get", "", "secrets", Some("default")),
        ("watch", "", "services", None),
        // LoadBalancer Services: their status, and our finalizer (the admission policy lets
        // the operator change nothing else of a Service it does not own).
        ("patch", "", "services/status", Some("default")),
        ("patch", "", "services", Some("default")),
        ("watch", "apps", "statefulsets", None),
        ("get", "", "namespaces", None),
        ("get", "", "secrets", Some("tunnel")),
        ("patch", "", "secrets", Some("tunnel")),
        ("delete", "", "secrets", Some("tunnel")),
        ("patch", "", "configmaps", Some("tunnel")),
        ("patch", "", "services", Some("tunnel")),
        ("patch", "apps", "statefulsets", Some("tunnel")),
        // Read before written or deleted: whose they are (owner labels).
        ("get", "", "configmaps", Some("tunnel")),
        ("get", "", "services", Some("tunnel")),
        ("get", "apps", "statefulsets", Some("tunnel")),
        ("delete", "apps", "statefulsets", Some("tunnel")),
        // The configuration-hash annotation on the uplink pods, and their state.
        ("patch", "", "pods", Some("tunnel")),
        ("get", "", "pods", Some("tunnel")),
        // One that blocks the uplink StatefulSet's rollout.
        ("delete", "", "pods", Some("tunnel")),
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
        // Consent is the namespaces' to give: never a grant of Gateway API's, nor its routes.
        (
            "create",
            "gateway.networking.k8s.io",
            "referencegrants",
            Some("default"),
        ),
        (
            "patch",
            "gateway.networking.k8s.io",
            "referencegrants",
            Some("default"),
        ),
        ("list", "gateway.networking.k8s.io", "httproutes", None),
        // Statuses only: never a Gateway's or a route's spec.
        (
            "patch",
            "gateway.networking.k8s.io",
            "gateways",
            Some("default"),
        ),
        (
            "patch",
            "gateway.networking.k8s.io",
            "tcproutes",
            Some("default"),
        ),
        (
            "create",
            "gateway.networking.k8s.io",
            "gateways",
            Some("default"),
        ),
        ("patch", "gateway.networking.k8s.io", "gatewayclasses", None),
        // No writes outside the uplink namespaces, kube-system above all.
        ("patch", "", "configmaps", Some("kube-system")),
        ("create", "", "configmaps", Some("kube-system")),
        ("patch", "", "secrets", Some("kube-system")),
        ("create", "", "secrets", Some("kube-system")),
        ("delete", "", "secrets", Some("default")),
        ("patch", "apps", "statefulsets", Some("default")),
        ("create", "apps", "statefulsets", Some("kube-system")),
        ("create", "", "services", Some("default")),
        ("delete", "", "services", Some("default")),
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
    let kubeconfig = server
        .service_account_kubeconfig("tunnel-system", "tunnel")
        .await
        .unwrap();
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

    let mut operator = bed
        .operator()
        .kubeconfig(&kubeconfig)
        .metrics()
        .flags(&CHART_UPLINK_IMAGE)
        .env("POD_NAMESPACE", "tunnel-system")
        .start()
        .unwrap();
    let log = operator.log.clone();

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
        refused = super::workload::ready_of(&nodes, "elsewhere").await;
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
            Some(server),
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
    operator.process.stop(Duration::from_secs(10));

    // watchNamespaces: Secrets and Services readable only there.
    ok(
        &helm(
            Some(server),
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
        ("get", "secrets", Some("default"), true),
        ("get", "secrets", Some("other"), false),
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
    let mut operator = bed
        .operator()
        .name("operator-watch")
        .kubeconfig(&kubeconfig)
        .flags(&["--watch-namespaces", "default"])
        .flags(&CHART_UPLINK_IMAGE)
        .env("POD_NAMESPACE", "tunnel-system")
        .start()
        .unwrap();
    let log = operator.log.clone();
    let mut hidden = None;
    for _ in 0..120 {
        hidden = super::workload::ready_of(&other_nodes, "outside").await;
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
    operator.process.stop(Duration::from_secs(10));

    // Uninstall: the CRDs, the user's objects and the uplink namespaces stay.
    ok(
        &helm(
            Some(server),
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

/// The `helm install` line of the README, as words.
pub(crate) fn readme_install() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("helm install "))
        .expect("the README has a `helm install` line");
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// A Pod made from `template`, created with a server-side dry run (admission runs, nothing
/// is stored): Pod Security's verdict on it.
async fn admitted(
    client: &kube::Client,
    namespace: &str,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Result<(), String> {
    let pod = k8s_openapi::api::core::v1::Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("probe".into()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Issue 25: the README's install command on a cluster whose API server enforces Pod
/// Security `restricted` by default: the operator's pod is admitted in its namespace (which
/// the chart leaves alone), the uplink pod in the uplink namespace the chart labels
/// privileged, and nowhere else: not in the operator's namespace, not under `baseline`.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_install_works_where_pod_security_enforces_restricted() {
    let server = ApiServer::start_with_admission(Some(RESTRICTED_BY_DEFAULT))
        .await
        .unwrap();
    let homes = tempfile::tempdir().unwrap();
    let args = readme_install();
    assert_eq!(args[..2], ["install", "tunnel"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(
        &helm(Some(&server), &args, homes.path()),
        "README helm install",
    );
    let namespace = args
        .windows(2)
        .find(|w| w[0] == "-n" || w[0] == "--namespace")
        .map(|w| w[1])
        .unwrap();
    assert_ne!(
        namespace, "tunnel",
        "the operator has a namespace of its own"
    );
    let admin = server.client().await.unwrap();

    let namespaces = Api::<Namespace>::all(admin.clone());
    let labels = |ns: Namespace| ns.metadata.labels.unwrap_or_default();
    let release = labels(namespaces.get(namespace).await.unwrap());
    assert!(
        !release.keys().any(|k| k.starts_with("pod-security")),
        "the release namespace keeps the cluster's default: {release:?}"
    );
    let uplink = labels(namespaces.get("tunnel").await.unwrap());
    assert_eq!(uplink["pod-security.kubernetes.io/enforce"], "privileged");

    // Installing into an uplink namespace: the notes warn that the chart cannot label it.
    let notes = ok(
        &helm(
            Some(&server),
            &[
                "install",
                "t2",
                "charts/tunnel",
                "--dry-run=server",
                "--namespace",
                "tunnel",
                "--set",
                "crds.install=false",
            ],
            homes.path(),
        ),
        "dry-run install into the uplink namespace",
    );
    assert!(notes.contains("WARNING: the release namespace tunnel is also an uplink namespace"));

    // The operator's pod, as the Deployment makes it.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), namespace)
        .get("tunnel")
        .await
        .unwrap();
    let operator = deployment.spec.unwrap().template;
    admitted(&admin, namespace, &operator).await.unwrap();

    // The uplink pod, as the operator builds it for Example 1.
    let sts = example1_statefulset("ghcr.io/achetronic/tunnel/uplink:0.1.0");
    let uplink_pod = sts.spec.unwrap().template;
    admitted(&admin, "tunnel", &uplink_pod).await.unwrap();
    let refused = admitted(&admin, namespace, &uplink_pod).await.unwrap_err();
    assert!(refused.contains("violates PodSecurity"), "{refused}");
    // baseline is not enough either: privileged is the level it needs.
    let baseline: Namespace = serde_json::from_value(json!({"metadata": {"name": "baseline-ns",
        "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &baseline)
        .await
        .unwrap();
    let refused = admitted(&admin, "baseline-ns", &uplink_pod)
        .await
        .unwrap_err();
    assert!(
        refused.contains("privileged") && refused.contains("NET_ADMIN"),
        "{refused}"
    );
}

/// Issue 25: `helm upgrade` from the 0.1.0 chart (CRDs in crds/, which Helm never upgrades)
/// to this one (CRDs as templates) takes the CRDs over and changes them (the category is
/// new), with the user's objects kept; uninstall then keeps the CRDs.
#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_from_0_1_0_takes_over_and_upgrades_the_crds() {
    let server = ApiServer::start().await.unwrap();
    let homes = tempfile::tempdir().unwrap();
    let ns = ["--namespace", "tunnel-system"];
    let mut install = vec!["install", "tunnel", "tests/fixtures/chart/tunnel-0.1.0.tgz"];
    install.extend(ns);
    install.push("--create-namespace");
    ok(
        &helm(Some(&server), &install, homes.path()),
        "install 0.1.0",
    );
    let admin = server.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let before = crds.get("edgenodes.tunnel.achetronic.com").await.unwrap();
    assert_eq!(before.spec.names.categories, None);
    let node = example1_node();
    let nodes: Api<EdgeNode> = Api::namespaced(admin.clone(), "default");
    let mut created = false;
    for _ in 0..50 {
        if nodes.create(&PostParams::default(), &node).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(created);

    // Without taking them over, Helm refuses CRDs it did not create (docs say so).
    let mut upgrade = vec![
        "upgrade",
        "tunnel",
        "charts/tunnel",
        "--reset-then-reuse-values",
    ];
    upgrade.extend(ns);
    let out = helm(Some(&server), &upgrade, homes.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ownership"),
        "{out:?}"
    );
    upgrade.push("--take-ownership");
    ok(
        &helm(Some(&server), &upgrade, homes.path()),
        "upgrade to this chart",
    );
    let after = crds.get("edgenodes.tunnel.achetronic.com").await.unwrap();
    assert_eq!(after.spec.names.categories, Some(vec!["tunnel".to_owned()]));
    let annotations = after.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert_eq!(annotations["meta.helm.sh/release-name"], "tunnel");
    assert!(nodes.get("edge-node").await.is_ok());

    // A later upgrade needs nothing special; uninstall keeps the CRDs and the objects.
    let mut again = vec![
        "upgrade",
        "tunnel",
        "charts/tunnel",
        "--reset-then-reuse-values",
    ];
    again.extend(ns);
    ok(&helm(Some(&server), &again, homes.path()), "second upgrade");
    let mut uninstall = vec!["uninstall", "tunnel"];
    uninstall.extend(ns);
    ok(&helm(Some(&server), &uninstall, homes.path()), "uninstall");
    assert!(crds.get("edgenodes.tunnel.achetronic.com").await.is_ok());
    assert!(crds.get("portbindings.tunnel.achetronic.com").await.is_ok());
    assert!(nodes.get("edge-node").await.is_ok());
}
