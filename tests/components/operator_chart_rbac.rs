//! The operator with the Helm chart's least privilege, for real: the chart installed with the
//! real `helm` into the real API server, the operator run on the chart's ServiceAccount token
//! only (a TokenRequest, no admin certificate), and README Example 1 driven to traffic through
//! a real nspawn VPS and a real uplink pod. The chart's admission policy on the uplink template
//! is on (the default): what the operator really writes passes it.

use std::path::Path;

use kube::api::Api;
use testbed::apiserver::ApiServer;
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::netns::until_in;
use testbed::network::tcp_exchange;
use testbed::objects::until_ready;
use testbed::operator::{CHART_INSTALL, CHART_UPLINK_IMAGE, OperatorBed};
use testbed::uplinks::Uplinks;

use crate::operator_support::{apply_example1, logs_of};

fn helm_install(server: &ApiServer, homes: &Path) {
    // The bed created the CRDs already (as `kubectl apply` of `tunnel crds` would): the
    // release leaves them alone instead of refusing to adopt them.
    let install = [&CHART_INSTALL[..], &["--set", "crds.install=false"]].concat();
    let out = testbed::tools::helm(&install, homes, Some(&server.kubeconfig_path())).unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_example_1_to_traffic_on_the_charts_service_account_token() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let homes = tempfile::tempdir().unwrap();
    helm_install(&bed.server, homes.path());
    let kubeconfig = bed
        .server
        .service_account_kubeconfig("tunnel-system", "tunnel")
        .await
        .unwrap();

    // As the chart runs it: the Lease in the release namespace (POD_NAMESPACE there), and the
    // uplink image the chart names (its admission policy admits only that one).
    let operator = bed
        .operator()
        .kubeconfig(&kubeconfig)
        .flags(&["--leader-elect-namespace", "tunnel-system"])
        .flags(&CHART_UPLINK_IMAGE)
        .start()
        .unwrap();
    apply_example1(&client, vps).await;
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let pbs: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", pods)
        .await
        .unwrap();
    let describe = || logs_of(&operator, &uplinks);
    let node = until_ready(&nodes, "edge-node", describe).await;
    assert_eq!(node.1, "AllHealthy");
    until_ready(&pbs, "public-web", describe).await;
    let public = vps.address();
    let through_vps = until_in(internet, move || {
        tcp_exchange((public, 80).into(), b"hello\n").is_some_and(|a| a == "my-web: hello\n")
    });
    assert!(through_vps, "TCP :80 through the VPS\n{}", describe());
    // Nothing was refused along the way.
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refused something:\n{log}"
    );
}
