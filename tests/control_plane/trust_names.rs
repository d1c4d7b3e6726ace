//! Trust boundary 7 (issue 12): two EdgeNodes called `edge-node` in two namespaces share one
//! uplink namespace. In a real API server both workloads are applied; neither clobbers the
//! other (distinct StatefulSets, Services, ConfigMaps and key Secrets, each with its own
//! content), and neither's selector selects the other's pods. The longest names the API
//! allows are accepted too. And (security review M8) a name is no proof of ownership: an
//! EdgeNode whose names collided with another's under the old 32-bit scheme cannot read,
//! overwrite or delete that EdgeNode's objects, and an object under a current name that is
//! not the EdgeNode's own stops its pass.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use testbed::apiserver::ApiServer;
use testbed::operator::OperatorBed;
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

/// The victim of the M8 story (docs/security.md §7): its `<name>-<namespace>` is long enough
/// that the old scheme's readable part is all of the attacker's too.
const VICTIM: (&str, &str) = ("team-payments", "production-ingress-gateway-eu");
/// An EdgeNode name in another namespace whose names were the victim's under the old (32-bit)
/// scheme, found by `tests/tools/uplink_name_collision.c` (2^32 SHA-256s, minutes natively).
const ATTACKER: (&str, &str) = ("mallory", ATTACKER_NAME);
const ATTACKER_NAME: &str = "production-ingress-gateway-eu-team-p-45299bf6";
/// An EdgeNode whose current names are taken by an object that is not its own.
const SQUATTED: (&str, &str) = ("team-b", "edge-node");

fn edge_node(namespace: &str, name: &str, ssh_port: u16) -> EdgeNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"address": "127.0.0.1", "ssh": {"port": ssh_port, "connectTimeout": "2s",
                 "secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap()
}

/// The `Ready` condition of an EdgeNode once a pass has concluded (not `Enrolling`).
async fn concluded(api: &Api<EdgeNode>, name: &str) -> (String, String) {
    for _ in 0..240 {
        let ready = api.get_opt(name).await.unwrap().and_then(|n| {
            n.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason != "Enrolling")
        });
        if let Some(c) = ready {
            return (c.reason, c.message);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("EdgeNode {name}: no pass concluded");
}

/// Security review M8: uplink names carried 32 bits of a hash, and a pass reused, overwrote
/// and deleted whatever was under its names. With the operator running against a real API
/// server: the victim's objects, left under the old names by an older operator, are not
/// touched by an attacker whose old names are the same (a precomputed collision): the
/// attacker gets its own keys, the victim's ConfigMap, StatefulSet and key Secrets stay as
/// they were, also after the attacker's EdgeNode is deleted. The victim's own pass then
/// migrates them: the same keys under the new names, the old objects gone. An EdgeNode whose
/// current name holds an object that is not its own is refused with `UplinkNameTaken`, and
/// that object is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_name_cannot_touch_another_edge_nodes_uplink_objects() {
    use tunnel_contract::key::PrivateKey;
    let (victim_names, attacker_names) = (
        UplinkNames::legacy(VICTIM.0, VICTIM.1),
        UplinkNames::legacy(ATTACKER.0, ATTACKER.1),
    );
    assert_eq!(
        victim_names, attacker_names,
        "the pair collides on the old scheme"
    );

    let bed = OperatorBed::builder().start().await.unwrap();
    let client = bed.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [VICTIM.0, ATTACKER.0, SQUATTED.0, "tunnel"] {
        namespaces
            .patch(
                ns,
                &PatchParams::apply("test").force(),
                &Patch::Apply(workload::namespace(ns)),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // The VPS is a closed loopback port: each pass gets as far as SSH, after the API writes.
    let (private, public) = super::operator_flags::ssh_key(dir.path());
    let closed = testbed::free_port().unwrap();
    for ns in [VICTIM.0, ATTACKER.0, SQUATTED.0] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vps-ssh-secret", "namespace": ns},
            "stringData": {"privateKey": private,
                           "knownHosts": format!("[127.0.0.1]:{closed} {public}")}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    // The victim's objects as an older operator left them: under the old names, with the
    // victim's owner labels.
    let node = edge_node(VICTIM.0, VICTIM.1, closed);
    let pod_options = tunnel::workload::UplinkPodOptions::default();
    let victim = UplinkWorkload {
        node: VICTIM.1,
        node_namespace: VICTIM.0,
        spec: &node.spec.uplink,
        image: "ghcr.io/achetronic/tunnel/uplink:0.1.0",
        log_format: "json",
        log_level: "info",
        pod_options: &pod_options,
    };
    let relay = PrivateKey::generate().unwrap();
    let uplink = PrivateKey::generate().unwrap().to_base64();
    let renamed = |mut meta: kube::api::ObjectMeta, name: &str| {
        meta.name = Some(name.to_owned());
        meta
    };
    let params = PatchParams::apply("tunnel-edgenode").force();
    let (secrets, maps, sets, services) = (
        Api::<Secret>::namespaced(client.clone(), "tunnel"),
        Api::<ConfigMap>::namespaced(client.clone(), "tunnel"),
        Api::<StatefulSet>::namespaced(client.clone(), "tunnel"),
        Api::<Service>::namespaced(client.clone(), "tunnel"),
    );
    let mut relay_secret = workload::relay_key_secret(
        &victim,
        &BTreeMap::from([
            ("priv".to_owned(), relay.to_base64()),
            ("pub".to_owned(), relay.public_key().to_string()),
        ]),
    );
    relay_secret.metadata = renamed(relay_secret.metadata, &victim_names.vps_key_secret);
    let mut keys_secret = workload::keys_secret(&victim, &BTreeMap::from([(0, uplink.clone())]));
    keys_secret.metadata = renamed(keys_secret.metadata, &victim_names.keys_secret);
    let mut config_map = workload::config_map(&victim, "{\"version\":1,\"victim\":true}");
    config_map.metadata = renamed(config_map.metadata, &victim_names.config_map);
    let mut service = workload::headless_service(&victim);
    service.metadata = renamed(service.metadata, &victim_names.workload);
    let mut statefulset = workload::statefulset(&victim);
    statefulset.metadata = renamed(statefulset.metadata, &victim_names.workload);
    for s in [&relay_secret, &keys_secret] {
        let name = s.metadata.name.clone().unwrap();
        secrets
            .patch(&name, &params, &Patch::Apply(s))
            .await
            .unwrap();
    }
    maps.patch(
        &victim_names.config_map,
        &params,
        &Patch::Apply(&config_map),
    )
    .await
    .unwrap();
    services
        .patch(&victim_names.workload, &params, &Patch::Apply(&service))
        .await
        .unwrap();
    sets.patch(&victim_names.workload, &params, &Patch::Apply(&statefulset))
        .await
        .unwrap();
    let before = |secrets: &Api<Secret>, maps: &Api<ConfigMap>, sets: &Api<StatefulSet>| {
        let (secrets, maps, sets) = (secrets.clone(), maps.clone(), sets.clone());
        let names = victim_names.clone();
        async move {
            (
                secrets.get(&names.vps_key_secret).await.unwrap().data,
                secrets.get(&names.keys_secret).await.unwrap().data,
                maps.get(&names.config_map).await.unwrap().data,
                sets.get(&names.workload).await.unwrap().metadata.uid,
            )
        }
    };
    let victim_state = before(&secrets, &maps, &sets).await;

    // Something under the third EdgeNode's current ConfigMap name that is not its own.
    let squatted = UplinkNames::for_node(SQUATTED.0, SQUATTED.1);
    let mut intruder = workload::config_map(&victim, "{\"squatter\":true}");
    intruder.metadata = renamed(intruder.metadata, &squatted.config_map);
    maps.patch(&squatted.config_map, &params, &Patch::Apply(&intruder))
        .await
        .unwrap();

    let mut operator = bed
        .operator()
        .metrics()
        .flags(&["--leader-elect=false"])
        .start()
        .unwrap();
    let log = operator.log.clone();
    let operator_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The attacker's pass: its own keys, nothing of the victim's touched.
    let attackers: Api<EdgeNode> = Api::namespaced(client.clone(), ATTACKER.0);
    attackers
        .create(
            &PostParams::default(),
            &edge_node(ATTACKER.0, ATTACKER.1, closed),
        )
        .await
        .unwrap();
    let (reason, message) = concluded(&attackers, ATTACKER.1).await;
    let own = UplinkNames::for_node(ATTACKER.0, ATTACKER.1);
    let attacker_relay = secrets
        .get(&own.vps_key_secret)
        .await
        .unwrap_or_else(|e| panic!("{e}: {reason}: {message}\n{}", operator_log()))
        .data
        .unwrap();
    assert!(
        attacker_relay["priv"].0 != relay.to_base64().into_bytes(),
        "the attacker got the victim's relay key"
    );
    assert_eq!(
        before(&secrets, &maps, &sets).await,
        victim_state,
        "the attacker's pass changed the victim's objects"
    );

    // Deleting the attacker deletes its own objects only.
    let skip = serde_json::json!({"metadata": {"annotations": {
        tunnel::crd::ANNOTATION_SKIP_DEPROVISION: "true"
    }}});
    attackers
        .patch(ATTACKER.1, &PatchParams::default(), &Patch::Merge(skip))
        .await
        .unwrap();
    attackers
        .delete(ATTACKER.1, &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..240 {
        if attackers.get_opt(ATTACKER.1).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        attackers.get_opt(ATTACKER.1).await.unwrap().is_none(),
        "{}",
        operator_log()
    );
    assert!(
        secrets
            .get_opt(&own.vps_key_secret)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        before(&secrets, &maps, &sets).await,
        victim_state,
        "deleting the attacker deleted or changed the victim's objects"
    );

    // The victim's pass migrates its objects: the same keys under the new names.
    let victims: Api<EdgeNode> = Api::namespaced(client.clone(), VICTIM.0);
    victims.create(&PostParams::default(), &node).await.unwrap();
    let (reason, message) = concluded(&victims, VICTIM.1).await;
    let current = UplinkNames::for_node(VICTIM.0, VICTIM.1);
    let migrated = |name: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .data
                .unwrap()
        }
    };
    assert!(
        migrated(current.vps_key_secret.clone()).await["priv"].0 == relay.to_base64().into_bytes(),
        "the relay key was not kept: {reason}: {message}"
    );
    assert!(
        migrated(current.keys_secret.clone()).await["priv-0"].0 == uplink.clone().into_bytes(),
        "the uplink key was not kept"
    );
    assert!(sets.get_opt(&current.workload).await.unwrap().is_some());
    assert!(maps.get_opt(&current.config_map).await.unwrap().is_some());
    for name in [&victim_names.vps_key_secret, &victim_names.keys_secret] {
        assert!(secrets.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    assert!(
        maps.get_opt(&victim_names.config_map)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        services
            .get_opt(&victim_names.workload)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sets.get_opt(&victim_names.workload)
            .await
            .unwrap()
            .is_none()
    );

    // A current name held by an object that is not the EdgeNode's own: refused, nothing
    // written, the object as it was.
    let squatters: Api<EdgeNode> = Api::namespaced(client.clone(), SQUATTED.0);
    squatters
        .create(
            &PostParams::default(),
            &edge_node(SQUATTED.0, SQUATTED.1, closed),
        )
        .await
        .unwrap();
    let (reason, message) = concluded(&squatters, SQUATTED.1).await;
    assert_eq!(reason, "UplinkNameTaken", "{message}");
    assert!(
        message.contains(&format!("ConfigMap tunnel/{}", squatted.config_map)),
        "{message}"
    );
    assert!(
        !message.contains(VICTIM.0),
        "whose it is stays untold: {message}"
    );
    assert!(
        maps.get(&squatted.config_map).await.unwrap().data.unwrap()["uplink.json"]
            .contains("squatter")
    );
    assert!(
        secrets
            .get_opt(&squatted.vps_key_secret)
            .await
            .unwrap()
            .is_none()
    );
    assert!(sets.get_opt(&squatted.workload).await.unwrap().is_none());

    operator.process.signal("TERM");
    let _ = operator
        .process
        .wait_exit(std::time::Duration::from_secs(20));
}
