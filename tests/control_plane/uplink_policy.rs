//! The chart's ValidatingAdmissionPolicy on the uplink template (review 2026-12, L1), enforced
//! by the real API server: writes by the operator's ServiceAccount keep the template the
//! operator builds (its real StatefulSet for README Example 1 is admitted), and anything a
//! stolen token would want — another image, another container, a privileged agent, an added
//! capability, a host namespace, a host path, a changed pod spec, a user's Service changed
//! beyond its finalizers — is refused with the
//! policy's message. Nobody else's writes are affected.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Pod, PodSpec, Service, Volume};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::apiserver::ApiServer;
use testbed::operator::{CHART_INSTALL, CHART_SA_GROUPS, CHART_SA_USER};

use crate::chart::{example1_statefulset, helm, ok};

const IMAGE: &str = "ghcr.io/achetronic/tunnel/uplink:0.1.0";

/// `Ok(())` if the server admits creating `sts` (dry run), else the refusal's text.
async fn create(api: &Api<StatefulSet>, sts: &StatefulSet) -> Result<(), String> {
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&dry, sts)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn template(sts: &mut StatefulSet) -> &mut PodSpec {
    sts.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
}

fn agent(spec: &mut PodSpec) -> &mut Container {
    spec.containers
        .iter_mut()
        .find(|c| c.name == "uplink")
        .unwrap()
}

/// After the chart's install: the operator's identity (`as_operator`, in the uplink
/// namespace) is refused a StatefulSet with another image, with the policy's message, and
/// admitted the one the operator really writes for Example 1.
pub(crate) async fn assert_the_policy_bites(as_operator: &Api<StatefulSet>) {
    let mut other_image = example1_statefulset(IMAGE);
    agent(template(&mut other_image)).image = Some("registry.example/anything:1".into());
    // The policy is compiled and picked up shortly after it is created: wait until it bites.
    let mut refused = Err(String::new());
    for _ in 0..100 {
        refused = create(as_operator, &other_image).await;
        if refused.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = refused.expect_err("the policy never refused another image");
    assert!(
        refused.contains("runs only the containers init and uplink of"),
        "{refused}"
    );

    // What the operator really writes is admitted.
    create(as_operator, &example1_statefulset(IMAGE))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_identity_can_write_only_the_uplink_template() {
    let server = ApiServer::start().await.unwrap();
    let homes = tempfile::tempdir().unwrap();
    ok(
        &helm(Some(&server), &CHART_INSTALL, homes.path()),
        "helm install",
    );
    let admin = server.client().await.unwrap();
    let operator = server
        .client_as(CHART_SA_USER, &CHART_SA_GROUPS)
        .await
        .unwrap();
    let as_operator: Api<StatefulSet> = Api::namespaced(operator.clone(), "tunnel");
    let as_admin: Api<StatefulSet> = Api::namespaced(admin.clone(), "tunnel");
    assert_the_policy_bites(&as_operator).await;

    let mut tampered: Vec<(&str, StatefulSet, &str)> = Vec::new();
    let mut extra = example1_statefulset(IMAGE);
    let mut shell = agent(template(&mut extra)).clone();
    shell.name = "shell".into();
    template(&mut extra).containers.push(shell);
    tampered.push(("another container", extra, "runs only the containers"));
    let mut privileged = example1_statefulset(IMAGE);
    let context = agent(template(&mut privileged))
        .security_context
        .as_mut()
        .unwrap();
    context.privileged = Some(true);
    context.allow_privilege_escalation = None;
    tampered.push(("a privileged agent", privileged, "unprivileged"));
    let mut capability = example1_statefulset(IMAGE);
    agent(template(&mut capability))
        .security_context
        .as_mut()
        .unwrap()
        .capabilities
        .as_mut()
        .unwrap()
        .add = Some(vec!["NET_ADMIN".into(), "SYS_ADMIN".into()]);
    tampered.push(("an added capability", capability, "NET_ADMIN only"));
    let mut host = example1_statefulset(IMAGE);
    template(&mut host).host_network = Some(true);
    tampered.push(("the host's network", host, "no host namespace"));
    let mut root = example1_statefulset(IMAGE);
    template(&mut root)
        .volumes
        .get_or_insert_default()
        .push(Volume {
            name: "root".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..HostPathVolumeSource::default()
            }),
            ..Volume::default()
        });
    tampered.push(("the host's root", root, "mounts only"));
    for (what, sts, message) in &tampered {
        let answer = create(&as_operator, sts).await;
        let refusal = answer.expect_err(&format!("{what} was admitted for the operator"));
        assert!(refusal.contains(message), "{what}: {refusal}");
        // The policy holds the operator's identity only.
        create(&as_admin, sts)
            .await
            .unwrap_or_else(|e| panic!("{what} refused for the admin: {e}"));
    }

    // An uplink pod: the operator may annotate it (its configuration's hash), not change it.
    let spec = example1_statefulset(IMAGE)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("edge-node-0".into()),
            ..Default::default()
        },
        spec: Some(spec),
        ..Pod::default()
    };
    let (admin_client, operator_client) = (admin.clone(), operator.clone());
    let pods_admin: Api<Pod> = Api::namespaced(admin, "tunnel");
    pods_admin
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(operator, "tunnel");
    let annotate = json!({"metadata": {"annotations": {"tunnel.achetronic.com/config-hash": "x"}}});
    pods.patch(
        "edge-node-0",
        &PatchParams::default(),
        &Patch::Merge(&annotate),
    )
    .await
    .unwrap();
    let swap = json!({"spec": {"containers": [{"name": "uplink", "image": "registry.example/anything:1"}]}});
    let refusal = pods
        .patch(
            "edge-node-0",
            &PatchParams::default(),
            &Patch::Strategic(&swap),
        )
        .await
        .expect_err("the operator changed an uplink pod's image");
    assert!(
        refusal.to_string().contains("only the metadata"),
        "{refusal}"
    );

    // A user's Service of type LoadBalancer: the operator may add and remove its finalizer
    // (and write its status, a subresource), nothing else; the admin may.
    let user_svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "game", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "tunnel.achetronic.com/edge-node",
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "tcp", "port": 7000, "protocol": "TCP"}]}
    }))
    .unwrap();
    let services_admin: Api<Service> = Api::namespaced(admin_client.clone(), "default");
    services_admin
        .create(&PostParams::default(), &user_svc)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(operator_client.clone(), "default");
    let finalizer = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "game", "finalizers": ["tunnel.achetronic.com/load-balancer"]}});
    services
        .patch(
            "game",
            &PatchParams::apply("tunnel-loadbalancer-finalizer").force(),
            &Patch::Apply(&finalizer),
        )
        .await
        .unwrap();
    let status = json!({"apiVersion": "v1", "kind": "Service",
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10", "ipMode": "Proxy"}]}}});
    services
        .patch_status(
            "game",
            &PatchParams::apply("tunnel-loadbalancer").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    for (what, change) in [
        (
            "ports",
            json!({"spec": {"ports": [{"name": "tcp", "port": 22, "protocol": "TCP"}]}}),
        ),
        ("selector", json!({"spec": {"selector": {"app": "mine"}}})),
        ("labels", json!({"metadata": {"labels": {"stolen": "yes"}}})),
        (
            "ports, labelled as if it were ours",
            json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "tunnel"}},
                   "spec": {"ports": [{"name": "tcp", "port": 23, "protocol": "TCP"}]}}),
        ),
    ] {
        let refusal = services
            .patch("game", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .expect_err(&format!("the operator changed a user's Service's {what}"));
        assert!(
            refusal.to_string().contains("only the finalizers"),
            "{what}: {refusal}"
        );
        services_admin
            .patch("game", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap_or_else(|e| panic!("{what} refused for the admin: {e}"));
    }
    let release = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "game"}});
    services
        .patch(
            "game",
            &PatchParams::apply("tunnel-loadbalancer-finalizer").force(),
            &Patch::Apply(&release),
        )
        .await
        .unwrap();
    let after = services_admin.get("game").await.unwrap();
    assert!(
        after.metadata.finalizers.unwrap_or_default().is_empty(),
        "the finalizer is removed by applying without it"
    );
}
