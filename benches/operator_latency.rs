//! Control-plane latency: a PortBinding applied → the first successful connection through the
//! VPS, over many bindings, on the operator tests' bed (`testbed::operator::OperatorBed`: real
//! API server, nspawn VPS, Envoy, uplink agents). The reference, measured in the same run on the same
//! changes, is Envoy's own part: from the moment the operator's pass wrote `lds.yaml` on the
//! VPS (its log line) to the first connection. What is left is ours (watch, plan, SSH).
//!
//! `cargo bench -p tunnel --bench operator_latency -- [bindings]` (default 50; needs root and
//! the test bed: `bash tests/testbed/setup.sh`). Not part of CI.
//!
//! A/B: with `BENCH_OPERATOR_BASE=<path to another build's tunnel binary>` (an older commit,
//! say), the same run measures both, in alternating rounds on fresh beds (base, ours, base,
//! ours; `BENCH_ROUNDS`, default 2), each round applying `bindings` PortBindings, and prints
//! each one's percentiles over all its rounds and the ratios.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use testbed::netns::in_ns;

use support::{answers, percentile};
use testbed::objects::{apply_yaml, until_ready};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use tunnel::crd::{EdgeNode, PortBinding};

/// The wall-clock time of the last `write /etc/envoy/lds.yaml` step in the operator's log.
fn last_lds_write(log: &str) -> Option<SystemTime> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("enrollment step") && l.contains("lds.yaml"))?;
    let stamp = line.split_whitespace().next()?;
    let t: k8s_openapi::jiff::Timestamp = stamp.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(t.as_nanosecond()).ok()?))
}

/// Apply → first connection, and Envoy's part of it, for each binding (seconds).
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    envoy: Vec<f64>,
    /// (applied, connected) per binding, for lining up with the operator's log.
    stamps: Vec<(SystemTime, SystemTime)>,
}

/// One round on a fresh bed: `count` PortBindings applied one after the other to an operator
/// running `binary` (the bed's own build when `None`).
async fn round(binary: Option<&Path>, count: u16) -> Samples {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let mut builder = bed.operator();
    if let Some(binary) = binary {
        builder = builder.binary(binary);
    }
    if let Ok(level) = std::env::var("BENCH_LOG_LEVEL") {
        builder = builder.env("LOG_LEVEL", &level);
    }
    let operator = builder.start().unwrap();
    apply_yaml::<EdgeNode>(
        &client,
        &format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: edge-node, namespace: default}}\nspec:\n  address: {}\n  ssh: {{secretRef: {{name: vps-ssh-secret}}}}\n",
            vps.address()
        ),
    )
    .await
    .unwrap();
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", pods)
        .await
        .unwrap();
    let nodes = kube::Api::<EdgeNode>::namespaced(client.clone(), "default");
    until_ready(&nodes, "edge-node", || {
        operator.log_text() + &uplinks.logs()
    })
    .await;

    let public = vps.address();
    let mut samples = Samples::default();
    for i in 0..count {
        let port = 10_000 + i;
        let yaml = format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: pb-{i}, namespace: default}}\nspec:\n  edgeNodeRef: {{name: edge-node}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
        );
        let applied = Instant::now();
        let applied_at = SystemTime::now();
        apply_yaml::<PortBinding>(&client, &yaml).await.unwrap();
        let connected = in_ns(internet, move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if answers((public, port)) {
                    return Some(SystemTime::now());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
        .unwrap_or_else(|| panic!("binding {i} never answered:\n{}", operator.log_text()));
        samples.total.push(applied.elapsed().as_secs_f64());
        samples.stamps.push((applied_at, connected));
        if let Some(written) = last_lds_write(&operator.log_text()) {
            samples.envoy.push(
                connected
                    .duration_since(written)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }
    if let Some(dir) = std::env::var_os("BENCH_OPERATOR_LOG") {
        let name = format!(
            "operator-{}.log",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let dir = PathBuf::from(dir);
        std::fs::write(dir.join(&name), operator.log_text()).unwrap();
        let micros = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros()
        };
        let mut stamps = String::new();
        for (a, c) in &samples.stamps {
            writeln!(stamps, "{} {}", micros(*a), micros(*c)).unwrap();
        }
        std::fs::write(dir.join(format!("{name}.stamps")), stamps).unwrap();
    }
    drop(uplinks);
    samples
}

/// Prints one build's percentiles; returns its (p50, p99) of apply → first connection.
fn report(name: &str, mut s: Samples) -> (f64, f64) {
    s.total.sort_by(f64::total_cmp);
    s.envoy.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&s.total, 50.0), percentile(&s.total, 99.0));
    let (e50, e99) = (percentile(&s.envoy, 50.0), percentile(&s.envoy, 99.0));
    println!("{name}: {} bindings", s.total.len());
    println!("  apply → first connection: p50 {p50:.3} s, p99 {p99:.3} s");
    println!(
        "  of which Envoy (lds.yaml written → first connection): p50 {e50:.3} s, p99 {e99:.3} s"
    );
    println!(
        "  the operator's share at p50: {:.3} s ({:.0}%)",
        p50 - e50,
        100.0 * (p50 - e50) / p50
    );
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let count: u16 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let Some(base) = std::env::var_os("BENCH_OPERATOR_BASE").map(PathBuf::from) else {
        report("ours", round(None, count).await);
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let mut theirs = Samples::default();
    let mut ours = Samples::default();
    for r in 0..rounds {
        eprintln!("round {}: base {}", r + 1, base.display());
        let s = round(Some(&base), count).await;
        theirs.total.extend(s.total);
        theirs.envoy.extend(s.envoy);
        eprintln!("round {}: ours", r + 1);
        let s = round(None, count).await;
        ours.total.extend(s.total);
        ours.envoy.extend(s.envoy);
    }
    let (b50, b99) = report(&format!("base ({})", base.display()), theirs);
    let (o50, o99) = report("ours", ours);
    println!("ours / base: p50 {:.2}, p99 {:.2}", o50 / b50, o99 / b99);
}
