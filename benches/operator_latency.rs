//! Control-plane latency, on the operator tests' bed (`testbed::operator::OperatorBed`: real
//! API server, nspawn VPS, Envoy, uplink agents), one EdgeNode and one operator per round:
//! 1. Bindings: a PortBinding applied → the first successful connection through the VPS, over
//!    many bindings. The reference, measured in the same run on the same changes, is Envoy's
//!    own part: from the moment the operator's pass wrote `lds.yaml` on the VPS (its log line)
//!    to the first connection. What is left is ours (watch, plan, SSH).
//! 2. TLS rotation: a PortBinding terminating TLS at Envoy (`mode: offload`) with the
//!    `kubernetes.io/tls` Secret `default/web-tls`; once it serves, the Secret's certificate
//!    is replaced (new key, new serial, same CA) again and again, each timed from the Secret's
//!    update until a TLS client on the internet is shown the new certificate (its DER) and
//!    gets `my-web`'s answer through it. Envoy's part: from the operator's log line for the
//!    `.sds.yaml` file to that. Envoy's PID and `NRestarts` (systemd) are read before the
//!    first rotation and after the last: the bench fails if Envoy restarted.
//!
//! `cargo bench -p tunnel --bench operator_latency -- [bindings] [rotations]` (defaults 50
//! and 10; 0 skips a phase; needs root and the test bed: `bash tests/testbed/setup.sh`). Not
//! part of CI.
//!
//! A/B: with `BENCH_OPERATOR_BASE=<path to another build's tunnel binary>` (an older commit,
//! say), the same run measures both, in alternating rounds on fresh beds (base, ours, base,
//! ours; `BENCH_ROUNDS`, default 2), each round applying `bindings` PortBindings and making
//! `rotations` rotations, and prints each one's percentiles over all its rounds and the
//! ratios. Extra operator flags and environment: `benches/support/mod.rs`.

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
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use testbed::netns::{Netns, in_ns};

use support::{answers, p50_p99};
use testbed::objects::{apply_yaml, tls_secret, until_ready};
use testbed::operator::OperatorBed;
use testbed::tls::{Ca, exchange, pem_der};
use testbed::uplinks::Uplinks;
use testbed::vps::Vps;
use tunnel::crd::{EdgeNode, PortBinding};

/// The name the rotated certificates are for, and the client's SNI.
const SNI: &str = "web.example.test";
/// The public port of the TLS binding.
const TLS_PORT: u16 = 9443;

/// The TLS binding: README Example 3's `https-offload`, alone in its PortBinding.
const TLS_BINDING: &str = "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: public-tls, namespace: default}\nspec:\n  edgeNodeRef: {name: edge-node}\n  bindings:\n  - name: https-offload\n    protocol: TCP\n    listenPort: 9443\n    tls: {mode: offload, secretRef: {name: web-tls, namespace: default}}\n    target: {service: {name: my-web, namespace: default, port: 8080}}\n";

/// The wall-clock time of the last enrollment step in the operator's log that names a file
/// ending in `suffix` (`lds.yaml`, `.sds.yaml`).
fn last_write(log: &str, suffix: &str) -> Option<SystemTime> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("enrollment step") && l.contains(suffix))?;
    let stamp = line.split_whitespace().next()?;
    let t: k8s_openapi::jiff::Timestamp = stamp.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(t.as_nanosecond()).ok()?))
}

/// Apply → first connection, and Envoy's part of it, for each binding (seconds); Secret
/// rotated → new certificate served, and Envoy's part, for each rotation.
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    envoy: Vec<f64>,
    /// (applied, connected) per binding, for lining up with the operator's log.
    stamps: Vec<(SystemTime, SystemTime)>,
    rotation: Vec<f64>,
    rotation_envoy: Vec<f64>,
    /// Envoy restarts seen across the rotations.
    envoy_restarts: u32,
}

impl Samples {
    fn extend(&mut self, other: Self) {
        self.total.extend(other.total);
        self.envoy.extend(other.envoy);
        self.stamps.extend(other.stamps);
        self.rotation.extend(other.rotation);
        self.rotation_envoy.extend(other.rotation_envoy);
        self.envoy_restarts += other.envoy_restarts;
    }
}

/// Envoy's main PID and systemd's count of its automatic restarts, read over SSH.
fn envoy_process(vps: &Vps, internet: &Netns) -> (String, u32) {
    let out = vps
        .ssh(
            internet,
            "systemctl show -p MainPID -p NRestarts tunnel-envoy.service",
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let pid = field("MainPID=");
    assert!(
        !pid.is_empty() && pid != "0",
        "Envoy is not running on the VPS: {text}"
    );
    (pid, field("NRestarts=").parse().unwrap_or(0))
}

/// Waits (60 s at most) until a TLS client on the internet is shown `want` at
/// `public:TLS_PORT` and gets `my-web`'s answer through it; when it was.
fn until_served(internet: &Netns, public: Ipv4Addr, ca: &str, want: &[u8]) -> Option<SystemTime> {
    in_ns(internet, move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if exchange((public, TLS_PORT).into(), SNI, ca, b"x\n")
                .is_ok_and(|(cert, reply)| cert == want && reply == "my-web: x\n")
            {
                return Some(SystemTime::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
}

/// One round on a fresh bed, on an operator running `binary` (the bed's own build when
/// `None`): `count` PortBindings applied one after the other, then `rotations` rotations of a
/// TLS binding's Secret.
async fn round(binary: Option<&Path>, count: u16, rotations: u16) -> Samples {
    support::select_build(binary);
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let operator = support::operator(&bed, binary).start().unwrap();
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
        if let Some(written) = last_write(&operator.log_text(), "lds.yaml") {
            samples.envoy.push(
                connected
                    .duration_since(written)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }

    if rotations > 0 {
        let ca = Ca::new().unwrap();
        let (cert, key) = ca.leaf(&[SNI]).unwrap();
        tls_secret(&client, "default", "web-tls", &cert, &key, None)
            .await
            .unwrap();
        apply_yaml::<PortBinding>(&client, TLS_BINDING)
            .await
            .unwrap();
        let first = pem_der(&cert).unwrap();
        until_served(internet, public, &ca.pem, &first).unwrap_or_else(|| {
            panic!(
                "the TLS binding never served its certificate:\n{}",
                operator.log_text()
            )
        });
        let (pid, restarts) = envoy_process(vps, internet);
        for k in 0..rotations {
            let (cert, key) = ca.leaf(&[SNI]).unwrap();
            let want = pem_der(&cert).unwrap();
            let updated = Instant::now();
            tls_secret(&client, "default", "web-tls", &cert, &key, None)
                .await
                .unwrap();
            let seen = until_served(internet, public, &ca.pem, &want).unwrap_or_else(|| {
                panic!(
                    "rotation {k}: the new certificate was never served:\n{}",
                    operator.log_text()
                )
            });
            samples.rotation.push(updated.elapsed().as_secs_f64());
            if let Some(written) = last_write(&operator.log_text(), ".sds.yaml") {
                samples.rotation_envoy.push(
                    seen.duration_since(written)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
            }
        }
        let (pid_after, restarts_after) = envoy_process(vps, internet);
        samples.envoy_restarts = restarts_after
            .saturating_sub(restarts)
            .max(u32::from(pid_after != pid));
    }

    if let Some(log) = support::keep_log(&operator.log_text()) {
        let micros = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros()
        };
        let stamps = samples
            .stamps
            .iter()
            .fold(String::new(), |mut out, (a, c)| {
                let _ = writeln!(out, "{} {}", micros(*a), micros(*c));
                out
            });
        std::fs::write(log.with_extension("log.stamps"), stamps).unwrap();
    }
    drop(uplinks);
    samples
}

/// What one build's report gives for the ratios: (p50, p99) of apply → first connection and
/// of rotation → new certificate served, when measured.
struct Figures {
    bindings: Option<(f64, f64)>,
    rotation: Option<(f64, f64)>,
}

/// Prints one build's percentiles.
fn report(name: &str, s: &Samples) -> Figures {
    let bindings = p50_p99(&s.total);
    if let Some((p50, p99)) = bindings {
        println!("{name}: {} bindings", s.total.len());
        println!("  apply → first connection: p50 {p50:.3} s, p99 {p99:.3} s");
        if let Some((e50, e99)) = p50_p99(&s.envoy) {
            println!(
                "  of which Envoy (lds.yaml written → first connection): p50 {e50:.3} s, p99 {e99:.3} s"
            );
            println!(
                "  the operator's share at p50: {:.3} s ({:.0}%)",
                p50 - e50,
                100.0 * (p50 - e50) / p50
            );
        }
    }
    let rotation = p50_p99(&s.rotation);
    if let Some((p50, p99)) = rotation {
        println!("{name}: {} TLS Secret rotations", s.rotation.len());
        println!("  Secret updated → new certificate served: p50 {p50:.3} s, p99 {p99:.3} s");
        if let Some((e50, e99)) = p50_p99(&s.rotation_envoy) {
            println!(
                "  of which Envoy (.sds.yaml written → new certificate): p50 {e50:.3} s, p99 {e99:.3} s"
            );
        }
        println!("  Envoy restarts: {}", s.envoy_restarts);
    }
    Figures { bindings, rotation }
}

/// `ours / base: <what> p50 r, p99 r` when both measured it.
fn ratios(what: &str, ours: Option<(f64, f64)>, base: Option<(f64, f64)>) {
    if let (Some((o50, o99)), Some((b50, b99))) = (ours, base) {
        println!(
            "ours / base, {what}: p50 {:.2}, p99 {:.2}",
            o50 / b50,
            o99 / b99
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let count: u16 = numbers.next().unwrap_or(50);
    let rotations: u16 = numbers.next().unwrap_or(10);
    let Some(base) = support::base() else {
        let ours = round(None, count, rotations).await;
        report("ours", &ours);
        assert_eq!(
            ours.envoy_restarts, 0,
            "Envoy restarted during the rotations"
        );
        return;
    };
    let rounds = support::rounds(2);
    let mut theirs = Samples::default();
    let mut ours = Samples::default();
    for r in 0..rounds {
        eprintln!("round {}: base {}", r + 1, base.display());
        theirs.extend(round(Some(&base), count, rotations).await);
        eprintln!("round {}: ours", r + 1);
        ours.extend(round(None, count, rotations).await);
    }
    let b = report(&format!("base ({})", base.display()), &theirs);
    let o = report("ours", &ours);
    ratios("apply → first connection", o.bindings, b.bindings);
    ratios("rotation → new certificate", o.rotation, b.rotation);
    assert_eq!(
        (theirs.envoy_restarts, ours.envoy_restarts),
        (0, 0),
        "Envoy restarted during the rotations (base, ours)"
    );
}
