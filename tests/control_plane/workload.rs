//! The uplink workload objects in a real API server: they are accepted as built, carry the
//! selector, owner and user labels without letting a user label break the selector, default to
//! one uplink per node, and match the README's PodMonitor.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use testbed::apiserver::ApiServer;
use tunnel::crd::EdgeNode;
use tunnel::workload::{self, UplinkNames, UplinkWorkload};

fn example4() -> EdgeNode {
    let text = std::fs::read_to_string("tests/fixtures/readme/example4.yaml").unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[tokio::test]
async fn uplink_objects_are_accepted_and_labelled() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let params = PatchParams::apply("tunnel").force();

    let mut node = example4();
    // A user label alongside the README's; the operator's own labels are refused at admission.
    node.spec.uplink.labels.insert("team".into(), "edge".into());
    let w = UplinkWorkload {
        node: "edge-node",
        node_namespace: "default",
        spec: &node.spec.uplink,
        image: "ghcr.io/achetronic/tunnel/uplink:0.1.0",
        log_format: "json",
        log_level: "info",
        pod_options: &tunnel::workload::UplinkPodOptions::default(),
    };
    let names = UplinkNames::for_node("default", "edge-node");
    let ns = &node.spec.uplink.namespace;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(ns, &params, &Patch::Apply(workload::namespace(ns)))
        .await
        .unwrap();
    let keys = BTreeMap::from([(0, "k0".to_string()), (1, "k1".into()), (2, "k2".into())]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .patch(
            &names.keys_secret,
            &params,
            &Patch::Apply(workload::keys_secret(&w, &keys)),
        )
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    maps.patch(
        &names.config_map,
        &params,
        &Patch::Apply(workload::config_map(&w, "{\"version\":1}")),
    )
    .await
    .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .patch(
            &names.workload,
            &params,
            &Patch::Apply(workload::headless_service(&w)),
        )
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let stored = sets
        .patch(
            &names.workload,
            &params,
            &Patch::Apply(workload::statefulset(&w)),
        )
        .await
        .expect("the API server accepts the StatefulSet as built");

    // Applying the same objects again changes nothing (no spurious rollout).
    let again = sets
        .patch(
            &names.workload,
            &params,
            &Patch::Apply(workload::statefulset(&w)),
        )
        .await
        .unwrap();
    assert_eq!(stored.metadata.generation, again.metadata.generation);

    let spec = stored.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some(names.workload.as_str()));
    let template = spec.template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod_labels["app.kubernetes.io/name"], "uplink");
    assert_eq!(pod_labels["app.kubernetes.io/instance"], "edge-node");
    assert_eq!(
        pod_labels["tunnel.achetronic.com/owner-namespace"],
        "default"
    );
    assert_eq!(pod_labels["environment"], "production");
    assert_eq!(pod_labels["team"], "edge");
    // The selector matches the pod labels.
    for (k, v) in spec.selector.match_labels.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v), "selector label {k}");
    }
    let pod = template.spec.unwrap();
    assert_eq!(
        pod.node_selector.unwrap()["node-role.kubernetes.io/edge"],
        "true"
    );
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    // No affinity in the spec: uplinks prefer distinct nodes, nothing required.
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0]
        .pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let container = &pod.containers[0];
    assert_eq!(
        container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0,
        "512Mi"
    );
    let env: Vec<_> = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains(&"POD_NAME"));
    let mounts: Vec<_> = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/etc/tunnel") && mounts.contains(&"/etc/wireguard/keys"));
    // containerd creates no /dev/net/tun: the agent gets the host's device node, checked to
    // be a character device (tests/components/node_e2e.rs runs these pods on a real kubelet).
    assert!(mounts.contains(&"/dev/net/tun"));
    let tun = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "tun")
        .and_then(|v| v.host_path.as_ref())
        .unwrap();
    assert_eq!(
        (tun.path.as_str(), tun.type_.as_deref()),
        ("/dev/net/tun", Some("CharDevice"))
    );

    // The README's PodMonitor selects these pods and scrapes a declared port 40600.
    let monitor: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string("tests/fixtures/readme/podmonitor.yaml").unwrap(),
    )
    .unwrap();
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (k, v) in wanted {
        assert_eq!(
            pod_labels.get(k.as_str().unwrap()).map(String::as_str),
            v.as_str(),
            "PodMonitor label {k:?}"
        );
    }
    let port = monitor["spec"]["podMetricsEndpoints"][0]["targetPort"]
        .as_i64()
        .unwrap();
    assert!(
        container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| i64::from(p.container_port) == port)
    );

    // The headless Service and the Secret.
    let svc = services.get(&names.workload).await.unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let secret = secrets.get(&names.keys_secret).await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        ["priv-0", "priv-1", "priv-2"]
    );
    assert_eq!(
        namespaces.get(ns).await.unwrap().metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn an_explicit_affinity_replaces_the_default() {
    let mut node = example4();
    node.spec.uplink.affinity = Some(k8s_openapi::api::core::v1::Affinity::default());
    let w = UplinkWorkload {
        node: "edge-node",
        node_namespace: "default",
        spec: &node.spec.uplink,
        image: "img",
        log_format: "json",
        log_level: "info",
        pod_options: &tunnel::workload::UplinkPodOptions::default(),
    };
    let set = workload::statefulset(&w);
    let affinity = set.spec.unwrap().template.spec.unwrap().affinity.unwrap();
    assert!(affinity.pod_anti_affinity.is_none());
}

/// The Ready condition's reason and message.
pub(crate) async fn ready_of(api: &Api<EdgeNode>, name: &str) -> Option<(String, String)> {
    testbed::objects::ready(api, name)
        .await
        .map(|(_, r, m)| (r, m))
}

/// Waits until the Ready reason of `name` is `reason` with a message holding `needle`; the
/// message.
async fn wait_reason(
    api: &Api<EdgeNode>,
    name: &str,
    (reason, needle): (&str, &str),
    log: &std::path::Path,
) -> String {
    for _ in 0..120 {
        if let Some((r, message)) = ready_of(api, name).await
            && r == reason
            && message.contains(needle)
        {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "EdgeNode {name}: no Ready reason {reason} with {needle:?} (last: {:?})\noperator:\n{}",
        ready_of(api, name).await,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The pod template of the StatefulSet of EdgeNode `default/name` once its pod
/// annotations satisfy `done`.
async fn template_when(
    sets: &Api<StatefulSet>,
    name: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    let workload = UplinkNames::for_node("default", name).workload;
    for _ in 0..120 {
        if let Some(set) = sets.get_opt(&workload).await.unwrap() {
            let template = set.spec.unwrap().template;
            let annotations = template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            if done(&annotations) {
                return template;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no StatefulSet {workload} as expected");
}

/// Security review M9: the settings of the review's story (AppArmor unconfined, a Multus
/// network, a Calico fixed IP, a control-plane toleration) do not reach the uplink pods by
/// default: the pass is refused naming the fields and writes nothing; an ordinary label,
/// annotation and toleration (README Example 4's) do; a refused change keeps the running
/// StatefulSet as it was; the operator's flags allow a key explicitly, and an uplink
/// namespace is open only to the EdgeNode namespaces the admin named.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn tenant_pod_settings_reach_the_uplink_pods_only_as_the_operator_allows() {
    use super::operator_flags::ssh_key;
    use kube::api::PostParams;
    use testbed::operator::OperatorBed;

    let bed = OperatorBed::builder().start().await.unwrap();
    let client = bed.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let start_operator =
        |name: &str, flags: &[&str]| bed.operator().name(name).flags(flags).start().unwrap();
    // The VPS is a closed loopback port: each pass applies the workload, then SSH fails.
    let closed = testbed::free_port().unwrap();
    let (private, public) = ssh_key(dir.path());
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vps-ssh-secret", "namespace": "default"},
        "stringData": {"privateKey": private, "knownHosts": format!("[127.0.0.1]:{closed} {public}")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let create = async |name: &str, uplink: serde_json::Value| {
        let node: EdgeNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"address": "127.0.0.1", "ssh": {"port": closed, "secretRef": {"name": "vps-ssh-secret"}},
                     "uplink": uplink}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    };
    let hostile = serde_json::json!({
        "annotations": {
            "container.apparmor.security.beta.kubernetes.io/uplink": "unconfined",
            "k8s.v1.cni.cncf.io/networks": "management-vlan",
            "cni.projectcalico.org/ipAddrs": "[\"10.0.0.5\"]"
        },
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    });
    let ordinary = serde_json::json!({
        "labels": {"environment": "production"},
        "annotations": {"prometheus.io/scrape": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
        "affinity": {}
    });
    create("hostile", hostile).await;
    create("ordinary", ordinary).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "tunnel");

    // The operator with its defaults.
    let mut operator = start_operator("defaults", &["--leader-elect=false"]);
    let message = wait_reason(
        &nodes,
        "hostile",
        ("UplinkPodSettingRefused", "spec.uplink."),
        &operator.log,
    )
    .await;
    for field in [
        r#"spec.uplink.annotations["cni.projectcalico.org/ipAddrs"] (and 2 more)"#,
        r#"spec.uplink.tolerations[0].key "node-role.kubernetes.io/control-plane""#,
        "--uplink-pod-annotation-prefixes=*",
    ] {
        assert!(message.contains(field), "{field} not in: {message}");
    }
    let template = template_when(&sets, "ordinary", |a| {
        a.contains_key("prometheus.io/scrape")
    })
    .await;
    let meta = template.metadata.unwrap();
    assert_eq!(meta.labels.unwrap()["environment"], "production");
    let tolerations = template.spec.unwrap().tolerations.unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
    // Nothing of the refused EdgeNode was written: no StatefulSet, no key Secret.
    let hostile_names = UplinkNames::for_node("default", "hostile");
    assert!(
        sets.get_opt(&hostile_names.workload)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), "tunnel")
            .get_opt(&hostile_names.keys_secret)
            .await
            .unwrap()
            .is_none()
    );

    // A refused change of a running EdgeNode: refused, and its StatefulSet stays as it was.
    let before = sets
        .get(&UplinkNames::for_node("default", "ordinary").workload)
        .await
        .unwrap();
    nodes
        .patch(
            "ordinary",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"uplink": {"annotations": {"k8s.v1.cni.cncf.io/networks": "management-vlan"}}}})),
        )
        .await
        .unwrap();
    wait_reason(
        &nodes,
        "ordinary",
        (
            "UplinkPodSettingRefused",
            r#"spec.uplink.annotations["k8s.v1.cni.cncf.io/networks"]"#,
        ),
        &operator.log,
    )
    .await;
    let after = sets
        .get(&before.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "untouched"
    );
    operator.process.stop(Duration::from_secs(10));

    // The admin allows Multus networks by name, and opens the uplink namespace `tunnel-x`
    // only to EdgeNodes of namespace `other`.
    create("elsewhere", serde_json::json!({"namespace": "tunnel-x"})).await;
    let operator = start_operator(
        "allowing",
        &[
            "--leader-elect=false",
            "--uplink-pod-annotation-prefixes=*,k8s.v1.cni.cncf.io/networks",
            "--uplink-namespace=tunnel",
            "--uplink-namespace=tunnel-x=other",
        ],
    );
    template_when(&sets, "ordinary", |a| {
        a.get("k8s.v1.cni.cncf.io/networks").map(String::as_str) == Some("management-vlan")
            && a.contains_key("prometheus.io/scrape")
    })
    .await;
    // Still refused: AppArmor, Calico and the control-plane toleration.
    wait_reason(
        &nodes,
        "hostile",
        (
            "UplinkPodSettingRefused",
            r#"spec.uplink.annotations["cni.projectcalico.org/ipAddrs"] (and 1 more)"#,
        ),
        &operator.log,
    )
    .await;
    let message = wait_reason(
        &nodes,
        "elsewhere",
        (
            "UplinkNamespaceNotAllowed",
            r#"spec.uplink.namespace "tunnel-x" is not open to EdgeNodes of namespace "default""#,
        ),
        &operator.log,
    )
    .await;
    assert!(message.contains("it may use: tunnel"), "{message}");
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("tunnel-x")
            .await
            .unwrap()
            .is_none(),
        "a refused uplink namespace is not even created"
    );
}
