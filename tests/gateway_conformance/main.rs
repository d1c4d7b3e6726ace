//! The upstream Gateway API conformance suite against the real node (issue 19; docs/testing.md
//! "Gateway API conformance"): not part of `cargo test` (its target has `test = false`; a full
//! run takes long), run by `tests/gateway-conformance.sh`.
//!
//! The node and the VPS as `node_e2e` has them: the project's images written offline, the chart
//! installed with helm, the "internet" and the VPS behind it, README Example 1's EdgeNode
//! enrolled. Then the Gateway API CRDs (Standard channel, the pinned version), the GatewayClass
//! `tunnel` of the controller `tunnel.achetronic.com/gateway-controller` whose `parametersRef`
//! names that EdgeNode, the suite's images (`testbed::gateway_conformance`), a check that the
//! suite's backends run on this node (its base manifests applied, every Deployment Available,
//! then removed again for the suite to make), and the suite itself, run from the host (which
//! reaches the VPS's public address through the "internet", as pods do) with the node's admin
//! kubeconfig. Its ConformanceReport is copied to `docs/gateway-api/conformance-report.yaml`
//! and its output to `target/gateway-conformance/` (the path is printed).
//!
//! Environment: `GATEWAY_CONFORMANCE_RUN_TEST` runs one test (`--run-test`),
//! `GATEWAY_CONFORMANCE_CAP_SECONDS` caps the suite's wall-clock time (default 3600),
//! `GATEWAY_CONFORMANCE_EXTRA` adds suite flags (space-separated).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../components/node_support.rs"]
mod node_support;

use std::path::Path;
use std::time::{Duration, Instant};

use testbed::gateway_conformance::{self as suite, Options};
use testbed::images;
use testbed::node::{Node, VPS_IP};

use node_support::{
    LONG, OPERATOR_NS, eventually, fixture, helm_install_chart, kubectl, operator_logs,
    ready_status, try_kubectl,
};

/// The GatewayClass under test, served by README Example 1's EdgeNode, and that namespace's
/// consent to the suite's Gateways.
const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tunnel}
spec:
  controllerName: tunnel.achetronic.com/gateway-controller
  parametersRef: {group: tunnel.achetronic.com, kind: EdgeNode, name: edge-node, namespace: default}
---
# The suite's Gateways live in gateway-conformance-infra; the EdgeNode's namespace consents.
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: conformance-gateways, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]
  to: [{group: tunnel.achetronic.com, kind: EdgeNode, name: edge-node}]
";

/// The certificates the base manifests' TLS backends mount, which the suite makes itself
/// (self-signed here: the check only needs the pods to start).
const BACKEND_SECRETS: [(&str, &str); 3] = [
    ("gateway-conformance-infra", "tls-checks-certificate"),
    (
        "gateway-conformance-infra",
        "tls-passthrough-checks-certificate",
    ),
    (
        "gateway-conformance-app-backend",
        "tls-passthrough-checks-certificate",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_conformance_suite_runs_against_the_real_node() {
    let started = Instant::now();
    let stage = |name: &str| {
        eprintln!(
            "[gateway conformance {:>6.1}s] {name}",
            started.elapsed().as_secs_f64()
        );
    };
    let bins = testbed::tools::agent_binary("tunnel").unwrap();
    let node = Node::start(&images::standard(bins.parent().unwrap()).unwrap())
        .await
        .unwrap();
    let loaded = suite::load_images(&node).unwrap();
    let names = node.image_names().unwrap();
    for image in &loaded {
        assert!(names.contains(image), "{image} loaded: {names:?}");
    }
    stage("node Ready, images loaded");

    let (internet, vps) = node.internet_with_vps().unwrap();
    // The CRDs first: the operator looks for Gateway API when it starts.
    let version = install_gateway_api_crds(&node);
    helm_install_chart(&node);
    stage(&format!("chart installed, Gateway API {version} CRDs"));
    vps.wait_ready(&internet, Duration::from_secs(120)).unwrap();
    readme_edge_node(&node, &vps);
    kubectl(&node, &["apply", "-f", "-"], Some(GATEWAY_CLASS));
    stage("VPS enrolled, GatewayClass tunnel applied");

    backends_run(&node);
    stage("the suite's backends ran on the node");

    let mut options = Options {
        run_test: std::env::var("GATEWAY_CONFORMANCE_RUN_TEST").ok(),
        ..Options::default()
    };
    if let Ok(cap) = std::env::var("GATEWAY_CONFORMANCE_CAP_SECONDS") {
        options.cap = Duration::from_secs(cap.parse().unwrap());
    }
    if let Ok(extra) = std::env::var("GATEWAY_CONFORMANCE_EXTRA") {
        options.extra = extra.split_whitespace().map(String::from).collect();
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gateway-conformance");
    let outcome = suite::run(&node.kubeconfig_path(), &out, &options).unwrap();
    let output = std::fs::read_to_string(&outcome.output).unwrap_or_default();
    let summary: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("--- ") || l.starts_with("FAIL") || l.starts_with("ok"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    stage(&format!(
        "suite done: exit {:?}, capped {}, {:.0} s; output {}",
        outcome.exit_code,
        outcome.capped,
        outcome.elapsed.as_secs_f64(),
        outcome.output.display()
    ));
    let report = outcome.report.unwrap_or_else(|| {
        panic!(
            "the suite wrote no ConformanceReport; its output ends:\n{}\n{}",
            tail(&output, 60),
            operator_logs(&node, OPERATOR_NS)
        )
    });
    let text = std::fs::read_to_string(&report).unwrap();
    let profiles = suite::report_profiles(&text).unwrap();
    // A report without profiles is what the suite writes when its Setup stopped (the
    // GatewayClass or the base Gateways never Accepted): nothing was tested, nothing is kept.
    assert!(
        !profiles.is_empty(),
        "the suite stopped in its Setup, no test ran; its output ends:\n{}\n{}",
        tail(&output, 40),
        operator_logs(&node, OPERATOR_NS)
    );
    for profile in &profiles {
        eprintln!(
            "{}: core {}; failed: {:?}",
            profile.name, profile.core, profile.failed
        );
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gateway-api");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("conformance-report.yaml"), &text).unwrap();
    eprintln!(
        "ConformanceReport written to {}",
        docs.join("conformance-report.yaml").display()
    );
}

/// The suite's base manifests applied (Gateways of class `tunnel`, namespaces labelled as the
/// suite labels them) with the certificates its TLS backends mount, every Deployment Available
/// (the images run, the Pod Security level admits them); then the namespaces are removed again,
/// since the suite creates what it applies.
fn backends_run(node: &Node) {
    kubectl(
        node,
        &["apply", "-f", "-"],
        Some(&suite::base_manifests("tunnel").unwrap()),
    );
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["abc.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    for (namespace, name) in BACKEND_SECRETS {
        kubectl(
            node,
            &[
                "-n",
                namespace,
                "create",
                "secret",
                "tls",
                name,
                &format!("--cert={}", cert_file.display()),
                &format!("--key={}", key_file.display()),
            ],
            None,
        );
    }
    let pods =
        || try_kubectl(node, &["get", "pods", "-A", "-o", "wide"], None).unwrap_or_else(|e| e);
    for namespace in suite::BASE_NAMESPACES {
        let deployments = kubectl(
            node,
            &["-n", namespace, "get", "deploy", "-o", "name"],
            None,
        );
        assert!(!deployments.trim().is_empty(), "Deployments in {namespace}");
        eventually(
            &format!("every Deployment in {namespace} Available"),
            Duration::from_secs(240),
            || {
                try_kubectl(
                    node,
                    &[
                        "-n",
                        namespace,
                        "wait",
                        "--for=condition=Available",
                        "deploy",
                        "--all",
                        "--timeout=10s",
                    ],
                    None,
                )
                .ok()
            },
            || {
                format!(
                    "{}\n{}",
                    pods(),
                    try_kubectl(
                        node,
                        &["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"],
                        None
                    )
                    .unwrap_or_else(|e| e)
                )
            },
        );
    }
    eprintln!("{}", pods());
    let mut args = vec!["delete", "namespace", "--wait=true", "--timeout=180s"];
    args.extend(suite::BASE_NAMESPACES);
    kubectl(node, &args, None);
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The EdgeNode `edge-node` of README Example 1 (in `default`, its SSH Secret `vps-ssh-secret`
/// made from `vps`'s keys) at [`VPS_IP`], applied; returns once it is Ready (enrolled).
fn readme_edge_node(node: &Node, vps: &testbed::vps::Vps) {
    node.create_ssh_secret(vps, "vps-ssh-secret").unwrap();
    let example1 = fixture("example1");
    let edge_node = example1
        .split("\n---")
        .find(|doc| doc.contains("kind: EdgeNode"))
        .unwrap()
        .replace("203.0.113.10", &VPS_IP.to_string());
    kubectl(node, &["apply", "-f", "-"], Some(&edge_node));
    eventually(
        "EdgeNode edge-node Ready",
        LONG,
        || ready_status(node, None, "edgenode", "edge-node").filter(|s| s == "True"),
        || operator_logs(node, OPERATOR_NS),
    );
}

/// The Gateway API CRDs (Standard channel, cached by `setup.d/50-gateway-api.sh`), applied
/// server-side (their size exceeds client-side apply's annotation) and Established.
fn install_gateway_api_crds(node: &Node) -> String {
    let (dir, version) = testbed::tools::gateway_api_crds().unwrap();
    kubectl(
        node,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            dir.to_str().unwrap(),
        ],
        None,
    );
    kubectl(
        node,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
        None,
    );
    version
}
