//! `helm upgrade` from chart 0.1.0 to this chart on the real node, under traffic (issue 25;
//! docs/operations.md, "Install and upgrade"): 0.1.0 installed (its CRDs in `crds/`, its own
//! uplink namespace labels), README Example 1 served through the VPS, then the documented
//! upgrade (`--reset-then-reuse-values --take-ownership`) while a client on the "internet"
//! keeps asking the VPS: every request is answered, the CRDs are upgraded (the `tunnel`
//! category is new), the new operator takes the Lease and serves a change (Example 2).
//!
//! Both charts run this build's images (an older operator image cannot be built here without
//! a second compile of an older tree), so what the upgrade changes is the chart: the CRDs, the
//! RBAC, the Deployment (the operator pod replaced), the namespaces' ownership. This build's
//! operator needs a few grants 0.1.0's RBAC lacks ([`BRIDGE`]) while it runs under the old
//! chart; they are removed after the upgrade, before the change the new operator serves. A change of the
//! operator that rolls the uplinks is `node_e2e`'s stage "uplink pod replaced under traffic".

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use testbed::images;
use testbed::node::{Node, VPS_IP};

use crate::node_support::{
    LONG, OPERATOR_NS, eventually, fixture, http_attempt, http_get, kubectl, operator_logs,
    operator_pods, operator_rolled_out, ready_status, try_kubectl,
};

/// Requests answered after the upgrade, before the client stops.
const AFTER: usize = 20;

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What this build's operator needs beyond chart 0.1.0's RBAC, for the time it runs under it.
const BRIDGE: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: tunnel-upgrade-bridge}
rules:
  - apiGroups: [""]
    resources: [secrets, services, configmaps]
    verbs: [get]
  - apiGroups: [""]
    resources: [services, services/status]
    verbs: [patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, patch, delete]
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: tunnel-upgrade-bridge}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tunnel-upgrade-bridge}
subjects:
  - {kind: ServiceAccount, name: tunnel, namespace: tunnel-system}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_from_0_1_0_keeps_every_binding_serving() {
    let bins = testbed::tools::agent_binary("tunnel").unwrap();
    let node = Node::start(&images::standard(bins.parent().unwrap()).unwrap())
        .await
        .unwrap();
    let (internet, vps) = node.internet_with_vps().unwrap();
    let logs = || operator_logs(&node, OPERATOR_NS);
    let helm = |args: &[&str]| {
        let out = node
            .helm()
            .unwrap()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
    };

    // Chart 0.1.0, as it installs: it creates and labels the uplink namespace itself.
    helm(&[
        "install",
        "tunnel",
        "tests/fixtures/chart/tunnel-0.1.0.tgz",
        "-n",
        OPERATOR_NS,
        "--create-namespace",
    ]);
    operator_rolled_out(&node);
    // This build's operator reads more than 0.1.0's RBAC grants (one Secret by GET, where
    // 0.1.0's operator listed them; uplink pods and their objects by GET; Services of type
    // LoadBalancer): the bridge grants it while it runs under the old chart, and goes once the
    // new chart's RBAC is in place.
    kubectl(&node, &["apply", "-f", "-"], Some(BRIDGE));
    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&testbed::echo::manifests()),
    );
    vps.wait_ready(&internet, Duration::from_secs(120)).unwrap();
    node.create_ssh_secret(&vps, "vps-ssh-secret").unwrap();
    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&fixture("example1").replace("203.0.113.10", &VPS_IP.to_string())),
    );
    eventually(
        "EdgeNode edge-node Ready under chart 0.1.0",
        LONG,
        || ready_status(&node, None, "edgenode", "edge-node").filter(|s| s == "True"),
        logs,
    );
    let public = std::net::SocketAddr::from((VPS_IP, 80));
    eventually(
        "HTTP through the VPS's :80 under chart 0.1.0",
        Duration::from_secs(90),
        || http_get(&internet, public),
        logs,
    );
    let categories = || {
        kubectl(
            &node,
            &[
                "get",
                "crd",
                "edgenodes.tunnel.achetronic.com",
                "-o",
                "jsonpath={.spec.names.categories}",
            ],
            None,
        )
    };
    assert_eq!(categories(), "", "0.1.0's CRDs have no category");
    let old_operator = operator_pods(&node, "{.items[0].metadata.name}").unwrap();

    // A client asks :80 one request after another until told to stop.
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Stops the client when this scope ends, by a failed assertion too (the scope waits
        // for its threads before it lets the panic go on).
        let _stop = StopOnDrop(&stop);
        let client = scope.spawn(|| {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match http_attempt(&internet, public) {
                    Ok(a) if a.starts_with("HTTP/1.0 200") => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            failures
        });

        // The documented upgrade from 0.1.0.
        helm(&[
            "upgrade",
            "tunnel",
            "charts/tunnel",
            "-n",
            OPERATOR_NS,
            "--reset-then-reuse-values",
            "--take-ownership",
        ]);
        operator_rolled_out(&node);
        assert_eq!(categories(), "[\"tunnel\"]", "the CRDs upgraded");
        // The category, once the API server's discovery has the new CRDs.
        eventually(
            "kubectl get tunnel to list the EdgeNode",
            Duration::from_secs(60),
            || {
                try_kubectl(&node, &["get", "tunnel", "-A", "--no-headers"], None)
                    .ok()
                    .filter(|l| l.contains("edge-node"))
            },
            logs,
        );
        kubectl(&node, &["delete", "-f", "-"], Some(BRIDGE));
        // The new operator leads (its pod holds the Lease) and serves a change.
        let new_operator = eventually(
            "the new operator to hold the Lease",
            Duration::from_secs(120),
            || {
                let pods = operator_pods(&node, "{.items[*].metadata.name}").ok()?;
                let holder = try_kubectl(
                    &node,
                    &[
                        "-n",
                        OPERATOR_NS,
                        "get",
                        "lease",
                        tunnel::leader::LEASE_NAME,
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ],
                    None,
                )
                .ok()?;
                pods.split_whitespace()
                    .find(|p| *p != old_operator && holder.contains(p))
                    .map(str::to_owned)
            },
            logs,
        );
        eprintln!("[node upgrade] operator {old_operator} -> {new_operator}");
        kubectl(&node, &["apply", "-f", "-"], Some(&fixture("example2")));
        eventually(
            "PortBinding public-edge Ready under the new chart",
            LONG,
            || ready_status(&node, None, "pb", "public-edge").filter(|s| s == "True"),
            logs,
        );
        assert_eq!(
            ready_status(&node, None, "edgenode", "edge-node").as_deref(),
            Some("True")
        );
        let mark = answered.load(Ordering::SeqCst);
        eventually(
            "the client to be answered after the upgrade",
            Duration::from_secs(60),
            || (answered.load(Ordering::SeqCst) >= mark + AFTER).then_some(()),
            logs,
        );
        stop.store(true, Ordering::SeqCst);
        let failures = client.join().unwrap();
        let total = answered.load(Ordering::SeqCst);
        eprintln!("[node upgrade] {total} requests answered through the upgrade");
        assert!(
            failures.is_empty(),
            "requests that failed during the upgrade ({total} answered): {failures:#?}"
        );
    });

    kubectl(
        &node,
        &[
            "delete",
            "edgenode",
            "edge-node",
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    );
    helm(&["uninstall", "tunnel", "-n", OPERATOR_NS, "--wait"]);
}
