//! Scale: many EdgeNodes on as many VPSes, each with many PortBindings, applied at once,
//! through the real operator (on the operator tests' bed, `testbed::operator::OperatorBed`:
//! real API server, nspawn VPSes, Envoy, uplink agents run by the harness). It reports
//! - the time from applying everything until every PortBinding is `Ready` and a client on
//!   the internet gets an answer through every EdgeNode,
//! - the latency of one more change under that load (a PortBinding moved to a new port →
//!   first connection on it), p50 and p99, next to the same change on an idle operator with
//!   one EdgeNode measured in the same run (the reference),
//! - the operator's resident memory idle, at its peak while converging, and after,
//! - how many SSH commands ran at once across all VPSes, read from each VPS's own sshd log
//!   (`LogLevel VERBOSE`: every exec channel's start and close), against
//!   `--max-concurrent-reconciles`.
//!
//! `cargo bench -p tunnel --bench operator_scale -- [nodes] [bindings-per-node] [changes]`
//! (default 20 20 20; needs root and the test bed: `bash tests/testbed/setup.sh`). Not in CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use testbed::netns::in_ns;

use support::{answers, percentile};
use testbed::objects::{apply_yaml, ready, ssh_secret};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::vps::Vps;
use testbed::wait::eventually;
use tunnel::crd::{EdgeNode, PortBinding};

/// The operator's limit on SSH passes at once, given explicitly.
const LIMIT: usize = 5;

/// How late sshd may log a channel's close after the client saw the command end.
const LAG_US: u64 = 50_000;

/// Resident memory of `pid` in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The `tunnel` process itself: the spawned `ip netns exec` and `env` exec into it, so it
/// keeps the spawned PID once they have.
fn operator_pid(spawned: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let comm = std::fs::read_to_string(format!("/proc/{spawned}/comm")).unwrap_or_default();
        if comm.trim() == "tunnel" {
            return spawned;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("PID {spawned} never became the operator");
}

/// Samples the RSS peak of `pid` until stopped.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let kib = (rss_mib(pid) * 1024.0) as u64;
            peak.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// One exec channel as sshd logged it: microseconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Channel {
    start: u64,
    end: u64,
}

/// The exec channels of one VPS, from `journalctl -u ssh -o short-unix` with VERBOSE sshd:
/// `<secs.micros> host sshd[pid]: Starting session: command for root from A port P id N`
/// and `... sshd[pid]: Close session: user root from A port P id N`.
fn channels(journal: &str) -> Vec<Channel> {
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in journal.lines() {
        let mut words = line.split_whitespace();
        let Some(stamp) = words.next() else { continue };
        let Some(micros) = stamp
            .split_once('.')
            .and_then(|(s, us)| Some(s.parse::<u64>().ok()? * 1_000_000 + us.parse::<u64>().ok()?))
        else {
            continue;
        };
        let pid = words.nth(1).unwrap_or_default().to_owned();
        let id = line.rsplit(" id ").next().unwrap_or_default().to_owned();
        if line.contains("Starting session: command") {
            open.insert((pid, id), micros);
        } else if line.contains("Close session:")
            && let Some(start) = open.remove(&(pid, id))
        {
            out.push(Channel { start, end: micros });
        }
    }
    out
}

/// The most channels open at one instant across all VPSes, counting a channel as closed
/// `lag` microseconds before sshd logged its close: sshd logs a close only after the client
/// has seen the command end and closed its side, so the next command (on any VPS) may start
/// a moment before the previous one's close is logged.
fn max_overlap(all: &[Channel], lag: u64) -> usize {
    let mut edges: Vec<(u64, i32)> = all
        .iter()
        .flat_map(|c| [(c.start, 1), (c.end.saturating_sub(lag).max(c.start), -1)])
        .collect();
    // Ends before starts at the same instant: touching intervals do not overlap.
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// When more than `limit` channels are open at once (raw), the longest any such excess
/// lasted, in microseconds: a lag of sshd's close log is a few milliseconds at most.
fn tightest_excess(all: &[Channel], limit: usize) -> Option<u64> {
    let mut edges: Vec<(u64, i32)> = all
        .iter()
        .flat_map(|c| [(c.start, 1), (c.end, -1)])
        .collect();
    edges.sort_unstable();
    let (mut now, mut since, mut longest) = (0i32, None::<u64>, None::<u64>);
    for (t, d) in edges {
        now += d;
        let over = usize::try_from(now).unwrap_or(0) > limit;
        match (over, since) {
            (true, None) => since = Some(t),
            (false, Some(start)) => {
                longest = longest.max(Some(t - start));
                since = None;
            }
            _ => {}
        }
    }
    longest
}

fn edge_node_yaml(name: &str, address: Ipv4Addr) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: {address}\n  ssh: {{secretRef: {{name: {name}-ssh}}}}\n"
    )
}

fn binding_yaml(name: &str, node: &str, port: u16) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  edgeNodeRef: {{name: {node}}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
    )
}

/// Moves PortBinding `name` to `port` and returns the seconds until it answers there.
async fn change_latency(
    pbs: &Api<PortBinding>,
    internet: &testbed::netns::Netns,
    name: &str,
    public: Ipv4Addr,
    port: u16,
) -> f64 {
    let patch = serde_json::json!({"spec": {"bindings": [{"name": "http", "protocol": "TCP", "listenPort": port, "target": {"service": {"name": "my-web", "namespace": "default", "port": 8080}}}]}});
    let applied = Instant::now();
    pbs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let ok = in_ns(internet, move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if answers((public, port)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(ok, "{name} never answered on {port}");
    applied.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::too_many_lines)]
async fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let nodes = numbers.next().unwrap_or(20);
    let per_node = numbers.next().unwrap_or(20);
    let changes = numbers.next().unwrap_or(20);

    let started = Instant::now();
    let bed = OperatorBed::builder()
        .vps(nodes)
        .more_vpses(nodes - 1)
        .my_web()
        .start()
        .await
        .unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, first, pods) = (&net.internet, &net.vps, &net.pods);
    let vpses: Vec<&Vps> = std::iter::once(first).chain(&bed.more_vpses).collect();
    println!(
        "the bed with {nodes} VPSes up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for vps in &vpses {
        vps.ssh(
            internet,
            "echo 'LogLevel VERBOSE' > /etc/ssh/sshd_config.d/zz-bench.conf && systemctl reload ssh",
        )
        .unwrap();
    }

    let limit = LIMIT.to_string();
    let operator = bed
        .operator()
        .flags(&["--max-concurrent-reconciles", &limit])
        .start()
        .unwrap();
    let pid = operator_pid(operator.process.pid());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = rss_mib(pid);

    // The reference: one EdgeNode's change latency on an otherwise idle operator.
    let edges: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let pbs: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    for (i, vps) in vpses.iter().enumerate() {
        ssh_secret(&client, "default", &format!("n{i}-ssh"), vps)
            .await
            .unwrap();
    }
    apply_yaml::<EdgeNode>(&client, &edge_node_yaml("n0", vpses[0].address()))
        .await
        .unwrap();
    apply_yaml::<PortBinding>(&client, &binding_yaml("n0-pb-0", "n0", 10_000))
        .await
        .unwrap();
    let mut uplinks = vec![
        Uplinks::start(&client, "tunnel", "n0", &pods[0..1])
            .await
            .unwrap(),
    ];
    eventually(
        "the reference EdgeNode serving",
        Duration::from_secs(300),
        async || {
            let public = vpses[0].address();
            in_ns(internet, move || answers((public, 10_000))).then_some(())
        },
        || operator.log_text(),
    )
    .await;
    let mut reference = Vec::new();
    for k in 0..changes {
        let port = 30_000 + k as u16;
        reference.push(change_latency(&pbs, internet, "n0-pb-0", vpses[0].address(), port).await);
    }
    reference.sort_by(f64::total_cmp);

    // Everything at once.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    sample_peak(pid, stop.clone(), peak.clone());
    let applied = Instant::now();
    for (i, vps) in vpses.iter().enumerate() {
        let node = format!("n{i}");
        if i > 0 {
            apply_yaml::<EdgeNode>(&client, &edge_node_yaml(&node, vps.address()))
                .await
                .unwrap();
        }
        for j in usize::from(i == 0)..per_node {
            let port = 10_000 + j as u16;
            apply_yaml::<PortBinding>(
                &client,
                &binding_yaml(&format!("{node}-pb-{j}"), &node, port),
            )
            .await
            .unwrap();
        }
    }
    let applying = applied.elapsed().as_secs_f64();
    for i in 1..nodes {
        uplinks.push(
            Uplinks::start(&client, "tunnel", &format!("n{i}"), &pods[i..=i])
                .await
                .unwrap(),
        );
    }
    eventually(
        "every PortBinding Ready and every EdgeNode answering",
        Duration::from_secs(1800),
        async || {
            for (i, vps) in vpses.iter().enumerate() {
                let node = format!("n{i}");
                ready(&edges, &node).await.filter(|c| c.0 == "True")?;
                for j in 1..per_node {
                    ready(&pbs, &format!("{node}-pb-{j}"))
                        .await
                        .filter(|c| c.0 == "True")?;
                }
                let public = vps.address();
                let port = 10_000 + per_node as u16 - 1;
                in_ns(internet, move || answers((public, port))).then_some(())?;
            }
            Some(())
        },
        || operator.log_text(),
    )
    .await;
    let converged = applied.elapsed().as_secs_f64();
    let peak_converging = peak.load(Ordering::Relaxed) as f64 / 1024.0;

    // One change at a time under that load, spread over the EdgeNodes.
    let mut loaded = Vec::new();
    for k in 0..changes {
        let i = k % nodes;
        let port = 40_000 + k as u16;
        let name = format!("n{i}-pb-1");
        loaded.push(change_latency(&pbs, internet, &name, vpses[i].address(), port).await);
    }
    loaded.sort_by(f64::total_cmp);
    stop.store(true, Ordering::Relaxed);
    let after = rss_mib(pid);

    let mut all = Vec::new();
    for vps in &vpses {
        let journal = vps
            .ssh(
                internet,
                "journalctl -u ssh.service -o short-unix --no-pager",
            )
            .unwrap();
        all.extend(channels(&String::from_utf8_lossy(&journal.stdout)));
    }
    let raw = max_overlap(&all, 0);
    if let Some(slack) = tightest_excess(&all, LIMIT) {
        println!(
            "  beyond {LIMIT} at once, the extra channel overlapped the others by at most {:.1} ms",
            slack as f64 / 1000.0
        );
    }
    let most = max_overlap(&all, LAG_US);

    println!("EdgeNodes (VPSes): {nodes}, PortBindings each: {per_node}, changes: {changes}");
    println!(
        "applied everything in {applying:.1} s; all served {converged:.1} s after the first apply"
    );
    println!(
        "one change (move a PortBinding to a new port → first answer), p50 / p99:\n  idle, 1 EdgeNode (reference): {:.3} / {:.3} s\n  under load, {nodes} EdgeNodes:    {:.3} / {:.3} s",
        percentile(&reference, 50.0),
        percentile(&reference, 99.0),
        percentile(&loaded, 50.0),
        percentile(&loaded, 99.0),
    );
    println!(
        "operator RSS: idle {idle:.1} MiB, peak while converging {peak_converging:.1} MiB, after {after:.1} MiB"
    );
    println!(
        "SSH exec channels seen by the VPSes' sshd: {}, at most {most} at once (--max-concurrent-reconciles {LIMIT}); {raw} when a close logged up to {} ms late counts as still open",
        all.len(),
        LAG_US / 1000
    );
    assert!(
        most <= LIMIT,
        "more SSH commands at once than --max-concurrent-reconciles"
    );
    drop(uplinks);
}
