//! `tunnel run` against a real API server: refuses clearly without the CRDs, becomes ready
//! with them, sees the resources, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use testbed::apiserver::ApiServer;
use testbed::process::Process;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn probe(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_needs_the_crds_then_watches_and_stops_on_sigterm() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Without the CRDs: a clear error, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args([
            "run",
            "--health-probe-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the EdgeNode CRD is not served by the cluster"),
        "{stderr}"
    );

    // A bad LOG_FORMAT names the variable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args(["run"])
        .env("LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG_FORMAT=\"yaml\""));

    // With the CRDs: ready, and it sees an EdgeNode created afterwards.
    server.install_crds(&tunnel::crd::crds()).await.unwrap();
    let port = free_port();
    let log = dir.path().join("operator.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel"));
    cmd.args([
        "run",
        "--health-probe-bind-address",
        &format!("127.0.0.1:{port}"),
    ])
    .env("KUBECONFIG", server.kubeconfig_path())
    .env("LOG_FORMAT", "json");
    let mut operator = Process::spawn("tunnel", &mut cmd, Some(&log)).unwrap();
    wait_for("/readyz 200", || {
        probe(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(probe(port, "/healthz").unwrap().starts_with("HTTP/1.1 200"));

    let client = server.client().await.unwrap();
    let res = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tunnel.achetronic.com", "v1alpha1", "EdgeNode"),
        "edgenodes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &res);
    let node: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "edge-node", "namespace": "default"},
        "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    wait_for("the EdgeNode in the log", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("EdgeNode seen") && l.contains("203.0.113.10"))
    });
    // Every log line is JSON.
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    operator.signal("TERM");
    assert_eq!(
        operator.wait_exit(Duration::from_secs(20)).unwrap(),
        Some(0),
        "clean exit on SIGTERM"
    );
}
