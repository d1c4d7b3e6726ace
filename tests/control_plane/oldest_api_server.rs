//! The chart's `kubeVersion` floor (issue 25), proved on that API server: the set-up script
//! builds the oldest kube-apiserver the chart claims (`kube-apiserver-oldest`), and on it the
//! README's `helm install` succeeds (so `kubeVersion` admits it and the server accepts every
//! object: the CRDs with their CEL rules, the ValidatingAdmissionPolicy and its binding, ...),
//! README Examples 1 to 5 apply, every document of the CRD admission table gets the same
//! answer and message as on the current server, the immutable field holds, and the uplink
//! admission policy enforces. One minor below the floor, `helm` refuses the chart.
//!
//! The floor is tight: one-off runs of the chart's CRDs on kube-apiserver v1.31.14 and v1.30.14
//! (built with the same recipe, not by `setup.sh`; 2026-12-06) refused both CRDs. 1.31 estimates
//! `cidr(self).masked() == cidr(self)` as unboundedly expensive ("exceeds budget by factor of
//! more than 100x"); 1.30 does not know `isIP`/`isCIDR` in new CRDs. Before 1.34 a CEL rule on
//! the int-or-string `target.service.port` was refused too (cost 22.1x on 1.32.13), hence its
//! OpenAPI checks (`rules::service_port`).

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use testbed::apiserver::ApiServer;
use testbed::operator::{CHART_SA_GROUPS, CHART_SA_USER};

use crate::chart::{helm, ok, readme_install};
use crate::crd_admission::{
    admission_failures, apply_readme_examples, assert_updates_of_the_valid_edge_node,
    document_cases,
};
use crate::uplink_policy::assert_the_policy_bites;

/// The floor of the chart's `kubeVersion` (`>=1.X.0-0`), as (1, X).
fn chart_floor() -> (u32, u32) {
    let chart = std::fs::read_to_string("charts/tunnel/Chart.yaml").unwrap();
    let constraint = chart
        .lines()
        .find_map(|l| l.strip_prefix("kubeVersion:"))
        .expect("Chart.yaml states a kubeVersion")
        .trim()
        .trim_matches('"');
    let version = constraint
        .strip_prefix(">=")
        .and_then(|v| v.strip_suffix(".0-0"))
        .unwrap_or_else(|| panic!("kubeVersion {constraint} is not of the form >=1.X.0-0"));
    let (major, minor) = version.split_once('.').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installs_and_its_rules_hold_on_the_oldest_api_server_it_claims() {
    let (major, minor) = chart_floor();
    let server = ApiServer::start_oldest().await.unwrap();
    let version = server.version().await.unwrap();
    assert!(
        version.starts_with(&format!("v{major}.{minor}.")),
        "the oldest API server is {version}, the chart's floor {major}.{minor}: \
         set K8S_OLDEST_VERSION in tests/testbed/setup.sh to the floor"
    );
    let homes = tempfile::tempdir().unwrap();

    // One minor below, helm refuses the chart: the floor is what this test proves.
    let below = format!("{major}.{}.0", minor - 1);
    let refused = helm(
        None,
        &["template", "t", "charts/tunnel", "--kube-version", &below],
        homes.path(),
    );
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("incompatible with Kubernetes"),
        "the chart renders for {below}"
    );

    // The README's install command.
    let args = readme_install();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let install = helm(Some(&server), &args, homes.path());
    ok(&install, &format!("README helm install on {version}"));
    // The server knows every field of every object (an unknown one is dropped with a warning,
    // which helm prints).
    let warnings = String::from_utf8_lossy(&install.stderr);
    assert!(
        !warnings.contains("unknown field"),
        "{version} dropped fields of the chart's objects:\n{warnings}"
    );
    server
        .wait_crds_established(
            &tunnel::crd::crds()
                .iter()
                .map(|c| c.metadata.name.clone().unwrap())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let admin = server.client().await.unwrap();

    apply_readme_examples(&admin).await;

    let cases = document_cases();
    let failures = admission_failures(&admin, &cases).await;
    assert!(
        failures.is_empty(),
        "on {version}, {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_updates_of_the_valid_edge_node(&admin).await;

    let operator = server
        .client_as(CHART_SA_USER, &CHART_SA_GROUPS)
        .await
        .unwrap();
    assert_the_policy_bites(&Api::<StatefulSet>::namespaced(operator, "tunnel")).await;
}
