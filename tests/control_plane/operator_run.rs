//! `tunnel run` against a real API server: refuses clearly without its agent binaries and
//! without the CRDs, becomes ready with them, acts on an EdgeNode created afterwards (its
//! finalizer, and a condition naming the missing SSH Secret), every log line JSON, and stops
//! cleanly on SIGTERM.

use std::io::{Read, Write};
use std::time::Duration;

use kube::api::{Api, PostParams};
use testbed::free_port;
use testbed::operator::OperatorBed;
use testbed::wait::wait_until;
use tunnel::crd::EdgeNode;

fn probe(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(60), f);
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_needs_the_crds_then_watches_and_stops_on_sigterm() {
    let bed = OperatorBed::builder().without_crds().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Without the agent binaries: a clear error naming the flag.
    let out = bed
        .operator()
        .flags(&["--tunnelctl-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[TunnelctlMissing]") && stderr.contains("--tunnelctl-dir"),
        "{stderr}"
    );

    // Without the CRDs: a clear error, non-zero exit.
    let out = bed.operator().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the EdgeNode CRD is not served by the cluster"),
        "{stderr}"
    );

    // A bad LOG_FORMAT names the variable.
    let out = bed.operator().env("LOG_FORMAT", "yaml").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG_FORMAT=\"yaml\""));

    // With the CRDs: ready (the probes on every interface), and it sees an EdgeNode created
    // afterwards.
    bed.install_crds().await.unwrap();
    let port = free_port().unwrap();
    let mut operator = bed
        .operator()
        .flags(&["--health-probe-bind-address", &format!(":{port}")])
        .env("LOG_FORMAT", "json")
        .start()
        .unwrap();
    let log = operator.log.clone();
    // `/readyz` is also 200 while a candidate waits for the Lease (a standby must not hold
    // a rollout), so the leader's tree is awaited by its log line first.
    wait_for("the actor tree runs", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("the actor tree runs"))
    });
    wait_for("/readyz 200", || {
        probe(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(probe(port, "/healthz").unwrap().starts_with("HTTP/1.1 200"));
    // Ready without Gateway API's CRDs: their ReferenceGrants are not watched (issue 19).
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("Gateway API (gateway.networking.k8s.io/v1) not served"),
        "{text}"
    );

    let api: Api<EdgeNode> = Api::namespaced(bed.client.clone(), "default");
    let node: EdgeNode = serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "edge-node", "namespace": "default"},
        "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let mut seen = None;
    for _ in 0..120 {
        let n = api.get("edge-node").await.unwrap();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        if let Some(c) = ready {
            seen = Some((n.metadata.finalizers.unwrap_or_default(), c));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (finalizers, ready) = seen.expect("the operator wrote the EdgeNode's status");
    assert_eq!(
        finalizers,
        vec!["tunnel.achetronic.com/teardown".to_owned()]
    );
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SSHSecretNotFound")
    );
    assert!(
        ready.message.contains("default/vps-ssh-secret"),
        "{}",
        ready.message
    );
    // Every log line is JSON.
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    operator.process.signal("TERM");
    assert_eq!(
        operator.process.wait_exit(Duration::from_secs(20)).unwrap(),
        Some(0),
        "clean exit on SIGTERM"
    );
}
