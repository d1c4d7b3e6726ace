//! Every flag of `tunnel run` is listed by `--help`, the seed's webhook-only flags are refused
//! by name, and the operator started with non-default values shows each one's effect against
//! a real API server: the uplink image from `--image-repo`/`--image-tag`, the Envoy download
//! mode from `--envoy-dir` (none), `--envoy-version`, `--envoy-download-url` and
//! `--envoy-sha256` (as the operator announces it at start), no Lease with
//! `--leader-elect=false`, the Lease in `--leader-elect-namespace`, plain HTTP metrics with
//! `--metrics-secure=false`, HTTPS with a self-signed certificate by default, HTTP/2 only with
//! `--enable-http2`, a standby serving metrics, `--max-concurrent-reconciles` (which does not
//! limit how many never-answering VPSes are dialled at once: dialling holds no slot), and
//! `LOG_FORMAT`/`LOG_LEVEL`.
//! (`--allow-restricted-targets` and `--cross-namespace-targets` show their effect in
//! `tests/pure/plan_targets.rs` and `tests/components/trust_references.rs`; the uplink pod
//! policy flags in `workload.rs` and the settings unit tests.)

#![allow(clippy::float_cmp)] // samples of gauges are whole numbers

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use testbed::free_port;
use testbed::metrics::{sample, scrape};
use testbed::operator::OperatorBed;
use testbed::wait::wait_until;
use tunnel::crd::EdgeNode;

/// Every flag a user can set (the seed's table without the webhook flags, and the operator's).
const FLAGS: &[&str] = &[
    "--envoy-version",
    "--envoy-dir",
    "--envoy-download-url",
    "--envoy-sha256",
    "--ssh-keepalive-interval",
    "--tunnelctl-dir",
    "--image-repo",
    "--image-tag",
    "--uplink-priority-class-name",
    "--uplink-image-pull-secrets",
    "--uplink-node-selector",
    "--uplink-tolerations",
    "--uplink-namespace",
    "--uplink-pod-label-prefixes",
    "--uplink-pod-annotation-prefixes",
    "--uplink-pod-toleration-keys",
    "--edge-node-placement",
    "--max-concurrent-reconciles",
    "--resync-period",
    "--allow-restricted-targets",
    "--cross-namespace-targets",
    "--load-balancer-classless",
    "--watch-namespaces",
    "--leader-elect",
    "--leader-elect-namespace",
    "--leader-elect-lease-duration",
    "--leader-elect-renew-deadline",
    "--leader-elect-retry-period",
    "--health-probe-bind-address",
    "--metrics-bind-address",
    "--metrics-secure",
    "--metrics-cert-path",
    "--metrics-cert-name",
    "--metrics-cert-key",
    "--enable-http2",
];

fn tunnel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tunnel"))
}

/// `curl -k` to the metrics port: the HTTP version spoken and the status code.
fn curl(port: u16, http2: bool) -> String {
    let out = Command::new(testbed::tools::bin("curl").unwrap())
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port that accepts SSH connections and never answers (no banner): the client
/// waits for it until its connect timeout (holding no SSH slot meanwhile). Counts the
/// connections open right now.
fn tarpit() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0_u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// The most tarpits holding a connection at once, sampled for `window` (or until `enough`).
fn most_at_once(pits: &[&Arc<AtomicUsize>], window: Duration, enough: usize) -> usize {
    let deadline = std::time::Instant::now() + window;
    let mut most = 0;
    while std::time::Instant::now() < deadline && most < enough {
        let now = pits.iter().filter(|p| p.load(Ordering::SeqCst) > 0).count();
        most = most.max(now);
        std::thread::sleep(Duration::from_millis(50));
    }
    most
}

pub fn ssh_key(dir: &Path) -> (String, String) {
    let path = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    )
}

#[test]
fn help_lists_every_flag_and_the_webhook_flags_are_not_there() {
    let out = tunnel().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in FLAGS {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    // The test-only fault flag is gone (a panicking child in the in-process tests replaced it).
    assert!(!help.contains("--fault-panic-edge-node"));
    let refused = tunnel()
        .args(["run", "--fault-panic-edge-node", "default/x"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unexpected argument"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Admission is CEL in the CRDs: there is no webhook server, so no webhook flags.
    let out = tunnel()
        .args(["run", "--webhook-cert-path", "/tmp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--webhook-cert-path"));
    // Bad values are refused by name.
    let out = tunnel()
        .args(["run", "--max-concurrent-reconciles", "0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-concurrent-reconciles"));
    let out = tunnel()
        .args(["run", "--metrics-bind-address", "somewhere"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-bind-address"));
    let out = tunnel()
        .args(["run", "--cross-namespace-targets", "sometimes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--cross-namespace-targets") && stderr.contains("require-grant"),
        "{stderr}"
    );
    // Its default, and what the other value does, are in the help.
    assert!(help.contains("[default: allow]"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_default_flags_have_their_effect() {
    let bed = OperatorBed::builder().start().await.unwrap();
    let client = bed.client.clone();
    let dir = tempfile::tempdir().unwrap();

    // Bad leader-election timings are refused before anything starts.
    let out = bed
        .operator()
        .flags(&["--leader-elect-renew-deadline", "20s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--leader-elect-renew-deadline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A certificate directory without the certificate: refused at start, naming the file.
    let out = bed
        .operator()
        .metrics()
        .flags(&["--metrics-cert-path", dir.path().to_str().unwrap()])
        .flags(&["--metrics-cert-name", "mine.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[MetricsCertificateUnreadable]") && stderr.contains("mine.pem"),
        "{stderr}"
    );

    // An EdgeNode whose pass gets as far as the uplink workload (its VPS is a closed
    // loopback port, so the SSH step fails after the workload was applied).
    let (private, public) = ssh_key(dir.path());
    let closed = free_port().unwrap();
    // Two more EdgeNodes whose VPSes never answer: how many SSH passes run at once.
    let ((port_a, pit_a), (port_b, pit_b)) = (tarpit(), tarpit());
    let known = [closed, port_a, port_b]
        .iter()
        .map(|p| format!("[127.0.0.1]:{p} {public}"))
        .collect::<Vec<_>>()
        .concat();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vps-ssh-secret", "namespace": "default"},
        "stringData": {"privateKey": private, "knownHosts": known}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let node: EdgeNode = serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "edge-node", "namespace": "default"},
        "spec": {"address": "127.0.0.1", "ssh": {"port": closed, "secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    for (name, port) in [("tarpit-a", port_a), ("tarpit-b", port_b)] {
        let node: EdgeNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"address": "127.0.0.1", "ssh": {"port": port, "connectTimeout": "2s",
                     "secretRef": {"name": "vps-ssh-secret"}}}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }

    // 1: no leader election, the uplink image, plain-HTTP metrics, text logs at debug.
    let no_envoy = dir.path().join("no-envoy").display().to_string();
    let mut one = bed
        .operator()
        .name("tunnel-one")
        .metrics()
        .flags(&["--leader-elect=false"])
        .flags(&["--image-repo", "registry.example/acme", "--image-tag", "v9"])
        .flags(&["--uplink-priority-class-name", "edge-critical"])
        .flags(&["--uplink-image-pull-secrets", "regcred,mirror"])
        // The download mode (no binaries to push), a mirror and a digest of our own.
        .flags(&["--envoy-dir", &no_envoy])
        .flags(&["--envoy-version", "1.39.1"])
        .flags(&[
            "--envoy-download-url",
            "https://mirror.example/envoy/{version}/envoy-{arch}",
        ])
        .flags(&["--envoy-sha256", &format!("arm64={}", "ab".repeat(32))])
        .flags(&["--max-concurrent-reconciles", "1"])
        .flags(&["--metrics-secure=false"])
        .env("LOG_LEVEL", "debug")
        .start()
        .unwrap();
    let (plain, log) = (one.metrics_port.unwrap(), one.log.clone());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "tunnel");
    let mut pod = None;
    for _ in 0..120 {
        if let Some(set) = sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
        {
            pod = set.spec.unwrap().template.spec;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pod = pod.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/acme/uplink:v9")
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some("edge-critical"));
    let pull: Vec<String> = pod
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(pull, ["regcred", "mirror"]);
    wait_until("plain-HTTP metrics", Duration::from_secs(30), || {
        scrape(plain).is_some_and(|m| sample(&m, "tunnel_leader") == Some(1.0))
    });
    let all_leases: Api<Lease> = Api::all(client.clone());
    assert!(
        all_leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|l| l.metadata.name.as_deref() != Some("6f1468a9.achetronic.com")),
        "--leader-elect=false took a Lease"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEBUG"), "LOG_LEVEL=debug: {text}");
    let envoy = text
        .lines()
        .find(|l| l.contains("Envoy install"))
        .unwrap_or_else(|| panic!("no Envoy install line: {text}"));
    for want in [
        "download",
        "1.39.1",
        "https://mirror.example/envoy/{version}/envoy-{arch}",
        "aarch64",
    ] {
        assert!(
            envoy.contains(want),
            "--envoy-* flags: {want:?} missing in {envoy}"
        );
    }
    assert!(
        serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap_or("")).is_err(),
        "LOG_FORMAT=text"
    );
    // --max-concurrent-reconciles 1 bounds the passes talking to a VPS, not the dialling:
    // connecting takes no slot (security review M2), so both never-answering VPSes are
    // dialled at once even with one slot. (The bound on passes at once is counted on real
    // VPSes by `benches/operator_scale.rs`.)
    let most =
        tokio::task::block_in_place(|| most_at_once(&[&pit_a, &pit_b], Duration::from_secs(60), 2));
    assert_eq!(
        most, 2,
        "--max-concurrent-reconciles 1: dialling holds no slot"
    );
    one.process.stop(Duration::from_secs(10));

    // 2 and 3: the Lease in another namespace, HTTPS metrics with a self-signed certificate,
    // HTTP/2 only where enabled; 3 is the standby and serves metrics all the same.
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "leases"}})).unwrap(),
        )
        .await
        .unwrap();
    let start = |name: &str, extra: &[&str]| {
        bed.operator()
            .name(name)
            .metrics()
            .flags(&["--leader-elect-namespace", "leases"])
            .flags(extra)
            .start()
            .unwrap()
    };
    let two = start("tunnel-two", &["--enable-http2"]);
    let h2 = two.metrics_port.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "leases");
    let mut held = None;
    for _ in 0..120 {
        held = leases
            .get_opt("6f1468a9.achetronic.com")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity);
        if held.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(held.is_some(), "no Lease in --leader-elect-namespace");
    // The default (5): both never-answering VPSes are dialled at once.
    let most =
        tokio::task::block_in_place(|| most_at_once(&[&pit_a, &pit_b], Duration::from_secs(60), 2));
    assert_eq!(most, 2, "the default --max-concurrent-reconciles");
    let three = start("tunnel-three", &[]);
    let h1 = three.metrics_port.unwrap();
    // No token: 401, over HTTP/2 where enabled and HTTP/1.1 otherwise.
    wait_until("HTTP/2 metrics", Duration::from_secs(30), || {
        curl(h2, true) == "2 401"
    });
    wait_until(
        "HTTP/1.1 metrics on the standby",
        Duration::from_secs(30),
        || curl(h1, true) == "1.1 401",
    );
}
