//! The uplink workload objects in a real API server: they are accepted as built, carry the
//! selector, owner and user labels without letting a user label break the selector, default to
//! one uplink per node, and match the README's PodMonitor.

use std::collections::BTreeMap;

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
    // No affinity in the spec: one uplink per node.
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti
        .required_during_scheduling_ignored_during_execution
        .unwrap()[0];
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
