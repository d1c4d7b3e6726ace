//! The operator's metrics scraped by a real Prometheus (Debian's package, installed by the
//! set-up script) over HTTPS, with the certificate given by `--metrics-cert-path` (Prometheus
//! verifies it against the test's CA) and a ServiceAccount token allowed `get /metrics`:
//! Prometheus's HTTP API shows the actor metrics moving, and the failed passes of an EdgeNode
//! whose SSH Secret is missing in the error counters (restarts and parking are proven
//! in-process, with a child that panics: src/actors/tree_tests.rs). Two more scrape jobs of the same
//! Prometheus are refused: one without a token (401), one with a token of a ServiceAccount
//! not allowed `/metrics` (403). A flood of random tokens costs the API server no more
//! TokenReviews than the review rations allow (counted in its audit log), is answered 429, and
//! Prometheus's own scrapes stay up meanwhile.

#![allow(clippy::float_cmp)] // samples of counters and gauges are whole numbers

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
use testbed::apiserver::ApiServer;
use testbed::free_port;
use testbed::operator::OperatorBed;
use testbed::process::Process;
use testbed::wait::wait_until;
use tunnel::crd::EdgeNode;
use tunnel::telemetry::reviews::{SOURCE_REVIEW_BURST, SOURCE_REVIEWS_PER_SECOND};

async fn create<K>(api: &Api<K>, json: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(json).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// A token of a new ServiceAccount `monitoring/<name>`.
async fn token(server: &ApiServer, client: &kube::Client, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "monitoring");
    create(
        &sas,
        serde_json::json!({"metadata": {"name": name, "namespace": "monitoring"}}),
    )
    .await;
    server
        .service_account_token("monitoring", name)
        .await
        .unwrap()
}

/// A CA and a serving certificate for 127.0.0.1, written as `tls.crt`/`tls.key` (+ `ca.crt`).
fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

fn get(port: u16, path_and_query: &str) -> serde_json::Value {
    // Null until Prometheus listens.
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let mut out = String::new();
    if write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .and_then(|()| stream.read_to_string(&mut out))
    .is_err()
    {
        return serde_json::Value::Null;
    }
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Prometheus may answer chunked; its API bodies are one JSON document.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end]).unwrap_or(serde_json::Value::Null)
}

fn query(port: u16, promql: &str) -> Vec<serde_json::Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    get(port, &format!("/api/v1/query?query={encoded}"))["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(result: &[serde_json::Value]) -> f64 {
    result
        .first()
        .and_then(|r| r["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// TokenReviews created so far, as the API server's audit log says.
fn token_reviews(server: &ApiServer) -> u64 {
    let n = server
        .audited_writes()
        .iter()
        .filter(|w| w.resource == "tokenreviews")
        .count();
    u64::try_from(n).unwrap()
}

/// `count` scrapes of `/metrics`, each with a fresh random bearer token, by one curl over
/// kept-alive connections from 127.0.0.1; the status codes.
fn random_token_scrapes(port: u16, count: usize, dir: &Path) -> Vec<String> {
    let stamp = format!("{:?}", Instant::now());
    let mut config = String::new();
    for n in 0..count {
        if n > 0 {
            config.push_str("next\n");
        }
        let token = tunnel::hash::sha256_hex(format!("{stamp}-{n}").as_bytes());
        writeln!(
            config,
            "url = \"https://127.0.0.1:{port}/metrics\"\ninsecure\nsilent\noutput = \"/dev/null\"\n\
             write-out = \"%{{http_code}}\\n\"\nheader = \"Authorization: Bearer {token}\""
        )
        .unwrap();
    }
    let path = dir.join("flood.curlrc");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(testbed::tools::bin("curl").unwrap())
        .arg("-K")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_over_https_with_a_token_allowed_metrics_and_others_are_refused() {
    let bed = OperatorBed::builder().start().await.unwrap();
    let (server, client) = (&bed.server, bed.client.clone());
    let dir = tempfile::tempdir().unwrap();

    // Who may scrape: the `prometheus` ServiceAccount, by a ClusterRole on `/metrics`.
    create(
        &Api::<Namespace>::all(client.clone()),
        serde_json::json!({"metadata": {"name": "monitoring"}}),
    )
    .await;
    create(
        &Api::<ClusterRole>::all(client.clone()),
        serde_json::json!({"metadata": {"name": "tunnel-metrics-reader"},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        serde_json::json!({"metadata": {"name": "prometheus-tunnel-metrics"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tunnel-metrics-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]}),
    )
    .await;
    let allowed = token(server, &client, "prometheus").await;
    let other = token(server, &client, "intruder").await;
    std::fs::write(dir.path().join("allowed.token"), &allowed).unwrap();
    std::fs::write(dir.path().join("other.token"), &other).unwrap();

    // An EdgeNode whose SSH Secret does not exist: failed passes to count.
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    create(
        &nodes,
        serde_json::json!({
            "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": "crashy", "namespace": "default"},
            "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}}),
    )
    .await;

    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    certificates(&certs);
    let operator = bed
        .operator()
        .metrics()
        .flags(&["--metrics-cert-path", certs.to_str().unwrap()])
        .flags(&["--leader-elect=false"])
        .start()
        .unwrap();
    let metrics_port = operator.metrics_port.unwrap();

    let target = format!("127.0.0.1:{metrics_port}");
    let ca = certs.join("ca.crt");
    let job = |name: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n{auth}    static_configs:\n      - targets: ['{target}']\n",
            ca = ca.display()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}{}",
        job(
            "tunnel",
            &format!(
                "    authorization:\n      credentials_file: {}\n",
                dir.path().join("allowed.token").display()
            )
        ),
        job(
            "not-allowed",
            &format!(
                "    authorization:\n      credentials_file: {}\n",
                dir.path().join("other.token").display()
            )
        ),
        job("anonymous", ""),
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_port = free_port().unwrap();
    let mut prom_cmd = Command::new("prometheus");
    prom_cmd
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prometheus = Process::spawn(
        "prometheus",
        &mut prom_cmd,
        Some(&dir.path().join("prometheus.log")),
    )
    .unwrap();

    // The allowed job is up, and the actor metrics move: messages handled, failed passes.
    wait_until("the tunnel job up", Duration::from_secs(90), || {
        value(&query(prom_port, "up{job=\"tunnel\"}")) == 1.0
    });
    wait_until(
        "the EdgeNode's failed pass in Prometheus",
        Duration::from_secs(90),
        || {
            value(&query(
                prom_port,
                "tunnel_errors_total{job=\"tunnel\",kind=\"EdgeNode\",category=\"SSHSecretNotFound\"}",
            )) >= 1.0
        },
    );
    assert!(
        value(&query(
            prom_port,
            "tunnel_reconcile_passes_total{job=\"tunnel\",kind=\"EdgeNode\",result=\"error\"}",
        )) >= 1.0
    );
    assert!(
        value(&query(
            prom_port,
            "tunnel_actor_messages_total{job=\"tunnel\",kind=\"EdgeNode\"}"
        )) >= 1.0
    );
    assert!(
        value(&query(
            prom_port,
            "tunnel_actor_handler_duration_seconds_count{job=\"tunnel\",kind=\"PortBinding\"} or tunnel_actor_handler_duration_seconds_count{job=\"tunnel\",kind=\"EdgeNode\"}"
        )) >= 1.0
    );
    assert_eq!(
        value(&query(prom_port, "tunnel_leader{job=\"tunnel\"}")),
        1.0
    );

    // The other two jobs are refused, and Prometheus says why.
    wait_until("the refused jobs' errors", Duration::from_secs(60), || {
        let targets = get(prom_port, "/api/v1/targets");
        let error_of = |job: &str| {
            targets["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["labels"]["job"] == job)
                .and_then(|t| t["lastError"].as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        error_of("not-allowed").contains("403") && error_of("anonymous").contains("401")
    });
    assert_eq!(value(&query(prom_port, "up{job=\"not-allowed\"}")), 0.0);
    assert_eq!(value(&query(prom_port, "up{job=\"anonymous\"}")), 0.0);

    // A flood of random tokens from one address (by count: at least three times what the
    // rations allow in the time it took, so without them the bound would break).
    let bound = |elapsed: Duration| {
        SOURCE_REVIEW_BURST + SOURCE_REVIEWS_PER_SECOND * (elapsed.as_secs() + 2)
    };
    let reviews_before = token_reviews(server);
    let started = Instant::now();
    let mut codes = Vec::new();
    while codes.len() < 300 || u64::try_from(codes.len()).unwrap() < 3 * bound(started.elapsed()) {
        codes.extend(random_token_scrapes(metrics_port, 100, dir.path()));
        assert!(
            codes.len() < 100_000,
            "the flood never got ahead of the bound"
        );
    }
    let reviews = token_reviews(server) - reviews_before;
    let elapsed = started.elapsed();
    let busy = codes.iter().filter(|c| *c == "429").count();
    let refused = codes.iter().filter(|c| *c == "401").count();
    eprintln!(
        "{} random-token scrapes in {elapsed:.1?}: {busy} got 429, {refused} got 401; \
         {reviews} TokenReviews (bound {})",
        codes.len(),
        bound(elapsed)
    );
    assert_eq!(busy + refused, codes.len(), "{codes:?}");
    assert!(busy > 0);
    assert!(
        reviews <= bound(elapsed),
        "{reviews} TokenReviews for {} scrapes in {elapsed:?} (bound {})",
        codes.len(),
        bound(elapsed)
    );
    // Right after it, with the rations spent, Prometheus's token is still served (its verdict
    // cached, or still good within the grace).
    let out = Command::new(testbed::tools::bin("curl").unwrap())
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {allowed}"))
        .arg(format!("https://127.0.0.1:{metrics_port}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}
