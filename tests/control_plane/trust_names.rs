//! Trust boundary 7 (issue 12): two EdgeNodes called `edge-node` in two namespaces share one
//! uplink namespace. In a real API server both workloads are applied; neither clobbers the
//! other (distinct StatefulSets, Services, ConfigMaps and key Secrets, each with its own
//! content), and neither's selector selects the other's pods. The longest names the API
//! allows are accepted too.

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

async fn apply(client: &kube::Client, w: &UplinkWorkload<'_>, doc: &str, key: &str) {
    let params = PatchParams::apply("tunnel").force();
    let ns = &w.spec.namespace;
    let names = UplinkNames::for_node(w.node_namespace, w.node);
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            &names.keys_secret,
            &params,
            &Patch::Apply(workload::keys_secret(w, &BTreeMap::from([(0, key.into())]))),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            &names.config_map,
            &params,
            &Patch::Apply(workload::config_map(w, doc)),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            &names.workload,
            &params,
            &Patch::Apply(workload::headless_service(w)),
        )
        .await
        .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .patch(
            &names.workload,
            &params,
            &Patch::Apply(workload::statefulset(w)),
        )
        .await
        .expect("the API server accepts the StatefulSet");
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tokio::test]
async fn same_named_edge_nodes_of_two_namespaces_share_an_uplink_namespace() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let node = example4();
    let uplink_ns = node.spec.uplink.namespace.clone();
    Api::<Namespace>::all(client.clone())
        .patch(
            &uplink_ns,
            &PatchParams::apply("tunnel").force(),
            &Patch::Apply(workload::namespace(&uplink_ns)),
        )
        .await
        .unwrap();
    let pod_options = tunnel::workload::UplinkPodOptions::default();
    let workload_of = |ns: &'static str| UplinkWorkload {
        node: "edge-node",
        node_namespace: ns,
        spec: &node.spec.uplink,
        image: "ghcr.io/achetronic/tunnel/uplink:0.1.0",
        log_format: "json",
        log_level: "info",
        pod_options: &pod_options,
    };
    let (a, b) = (workload_of("team-a"), workload_of("team-b"));
    apply(&client, &a, "{\"version\":1,\"a\":1}", "key-a").await;
    apply(&client, &b, "{\"version\":1,\"b\":1}", "key-b").await;

    let (na, nb) = (
        UplinkNames::for_node("team-a", "edge-node"),
        UplinkNames::for_node("team-b", "edge-node"),
    );
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &uplink_ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &uplink_ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &uplink_ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &uplink_ns);
    let (sa, sb) = (
        sets.get(&na.workload).await.unwrap(),
        sets.get(&nb.workload).await.unwrap(),
    );
    assert_ne!(na.workload, nb.workload);
    assert!(services.get(&na.workload).await.is_ok());
    assert!(services.get(&nb.workload).await.is_ok());
    assert!(maps.get(&na.config_map).await.unwrap().data.unwrap()["uplink.json"].contains("\"a\""));
    assert!(maps.get(&nb.config_map).await.unwrap().data.unwrap()["uplink.json"].contains("\"b\""));
    assert_eq!(
        secrets.get(&na.keys_secret).await.unwrap().data.unwrap()["priv-0"].0,
        b"key-a"
    );
    assert_eq!(
        secrets.get(&nb.keys_secret).await.unwrap().data.unwrap()["priv-0"].0,
        b"key-b"
    );
    // Each selector selects its own pods only.
    let selector = |s: &StatefulSet| s.spec.clone().unwrap().selector.match_labels.unwrap();
    let pods = |s: &StatefulSet| {
        s.spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap()
    };
    assert!(selects(&selector(&sa), &pods(&sa)));
    assert!(selects(&selector(&sb), &pods(&sb)));
    assert!(!selects(&selector(&sa), &pods(&sb)));
    assert!(!selects(&selector(&sb), &pods(&sa)));

    // The longest EdgeNode name and namespace still give names the API server accepts.
    let long_name = "e".repeat(253);
    let long = UplinkWorkload {
        node: &long_name,
        node_namespace: "n23456789012345678901234567890123456789012345678901234567890123",
        ..workload_of("x")
    };
    apply(&client, &long, "{\"version\":1}", "k").await;
}
