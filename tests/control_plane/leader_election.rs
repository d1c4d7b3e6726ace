//! Leader election with real operator processes against one real API server. Each process
//! talks to the API server as its own user (impersonation), so the API server's audit log
//! tells exactly who wrote what:
//!
//! - two operators: exactly one writes (finalizer, status, Lease), the other writes nothing;
//! - the leader is killed: the other takes over after the lease duration, runs its pass and
//!   writes nothing that had not changed;
//! - the leader is paused (SIGSTOP) until another took the Lease and wrote a new status; when
//!   it resumes it writes nothing and exits non-zero.

#![allow(clippy::float_cmp)] // samples of counters and gauges are whole numbers

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use testbed::apiserver::AuditedWrite;
use testbed::metrics::{sample, scrape};
use testbed::operator::{Operator, OperatorBed};
use testbed::wait::wait_until;
use tunnel::crd::EdgeNode;

const LEASE: &str = "6f1468a9.achetronic.com";
// Whole seconds (the Lease stores seconds); short so the test is quick.
const LEASE_SECONDS: u64 = 6;

/// The identity `operator` writes into the Lease ends with this: `<host>_<pid>`.
fn identity_suffix(operator: &Operator) -> String {
    format!("_{}", operator.process.pid())
}

/// Its plain-HTTP metrics port.
fn metrics(operator: &Operator) -> u16 {
    operator.metrics_port.unwrap()
}

/// Starts `tunnel run` as `user` (a system:masters member), plain-HTTP metrics on a free
/// loopback port, short leader-election timings.
fn start_operator(bed: &OperatorBed, user: &str) -> Operator {
    let lease = format!("{LEASE_SECONDS}s");
    bed.operator()
        .name(user)
        .user(user)
        .unwrap()
        .metrics()
        .flags(&[
            "--metrics-secure=false",
            "--leader-elect-namespace",
            "default",
            "--leader-elect-lease-duration",
            &lease,
            "--leader-elect-renew-deadline",
            "4s",
            "--leader-elect-retry-period",
            "1s",
        ])
        .start()
        .unwrap()
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

fn writes_by<'a>(all: &'a [AuditedWrite], user: &str) -> Vec<&'a AuditedWrite> {
    all.iter()
        .filter(|w| w.user == user && w.succeeded())
        .collect()
}

fn describe(writes: &[&AuditedWrite]) -> Vec<String> {
    writes
        .iter()
        .map(|w| format!("{} {}/{} {}", w.verb, w.resource, w.subresource, w.name))
        .collect()
}

async fn wait_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ready_message(api: &Api<EdgeNode>) -> Option<String> {
    let n = api.get("edge-node").await.ok()?;
    n.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_writes_a_killed_leader_is_replaced_a_paused_one_writes_nothing() {
    let bed = OperatorBed::builder().start().await.unwrap();
    let (server, client) = (&bed.server, bed.client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");

    let mut a = start_operator(&bed, "operator-a");
    // `a` leads before `b` starts, so the roles are known.
    let first = wait_async("a to hold the Lease", Duration::from_secs(60), || async {
        holder(&leases).await
    })
    .await;
    assert!(first.ends_with(&identity_suffix(&a)), "{first}");
    let mut b = start_operator(&bed, "operator-b");

    let node: EdgeNode = serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "edge-node", "namespace": "default"},
        "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let message = wait_async("the leader's status", Duration::from_secs(60), || async {
        ready_message(&nodes).await
    })
    .await;
    assert!(message.contains("default/vps-ssh-secret"), "{message}");
    // b is up (serving metrics as a standby) and has had time to try.
    wait_until("b's metrics", Duration::from_secs(30), || {
        scrape(metrics(&b)).is_some()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Exactly one wrote: a, its finalizer, its status and its Lease; b nothing at all.
    let writes = server.audited_writes();
    let by_a = writes_by(&writes, "operator-a");
    let by_b = writes_by(&writes, "operator-b");
    assert!(
        by_a.iter()
            .any(|w| w.resource == "edgenodes" && w.subresource == "status"),
        "{:?}",
        describe(&by_a)
    );
    assert!(by_a.iter().any(|w| w.resource == "leases"));
    assert!(by_b.is_empty(), "the standby wrote: {:?}", describe(&by_b));
    assert_eq!(
        sample(&scrape(metrics(&b)).unwrap(), "tunnel_leader"),
        Some(0.0)
    );
    assert_eq!(
        sample(&scrape(metrics(&a)).unwrap(), "tunnel_leader"),
        Some(1.0)
    );
    let version_before = nodes
        .get("edge-node")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // Kill the leader: b takes over after the lease duration.
    a.process.signal("KILL");
    let killed = Instant::now();
    let _ = a.process.wait_exit(Duration::from_secs(10));
    let taken = wait_async(
        "b to take the Lease",
        Duration::from_secs(LEASE_SECONDS * 4),
        || async {
            holder(&leases)
                .await
                .filter(|h| h.ends_with(&identity_suffix(&b)))
        },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after the leader was killed: {takeover:?} ({taken})");
    assert!(
        takeover >= Duration::from_secs(LEASE_SECONDS - 1),
        "b took a Lease that had not expired: {takeover:?}"
    );
    // b runs its pass (an EdgeNode pass is counted) and has nothing to change.
    wait_until("b's first EdgeNode pass", Duration::from_secs(60), || {
        scrape(metrics(&b)).is_some_and(|m| {
            sample(
                &m,
                "tunnel_reconcile_passes_total{kind=\"EdgeNode\",result=\"error\"}",
            )
            .is_some_and(|n| n >= 1.0)
        })
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = server.audited_writes();
    let by_b = writes_by(&writes, "operator-b");
    let unexpected: Vec<&AuditedWrite> = by_b
        .iter()
        .copied()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(
        unexpected.is_empty(),
        "the new leader redid unchanged work: {:?}",
        describe(&unexpected)
    );
    assert_eq!(
        nodes
            .get("edge-node")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version_before
    );

    // Pause b (the leader now); c takes over and writes a status for a changed spec.
    b.process.signal("STOP");
    let mut c = start_operator(&bed, "operator-c");
    wait_async(
        "c to take the Lease",
        Duration::from_secs(LEASE_SECONDS * 6),
        || async {
            holder(&leases)
                .await
                .filter(|h| h.ends_with(&identity_suffix(&c)))
        },
    )
    .await;
    let patch = serde_json::json!({"spec": {"ssh": {"secretRef": {"name": "other-ssh-secret"}}}});
    nodes
        .patch("edge-node", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_async("c's new status", Duration::from_secs(60), || async {
        ready_message(&nodes)
            .await
            .filter(|m| m.contains("other-ssh-secret"))
    })
    .await;
    let b_before = writes_by(&server.audited_writes(), "operator-b").len();

    // b resumes: its watches deliver the change it would have written, but its fence is
    // shut; it notices the loss and exits non-zero.
    b.process.signal("CONT");
    let code = b.process.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("LeaderLost"), "{log}");
    let writes = server.audited_writes();
    let after: Vec<&AuditedWrite> = writes_by(&writes, "operator-b")
        .into_iter()
        .skip(b_before)
        .collect();
    assert!(
        after.is_empty(),
        "the paused leader wrote after it resumed: {:?}",
        describe(&after)
    );
    assert!(
        ready_message(&nodes)
            .await
            .unwrap()
            .contains("other-ssh-secret")
    );
    assert!(c.process.is_running());

    // SIGTERM lets the Lease go at once.
    c.process.signal("TERM");
    assert_eq!(
        c.process.wait_exit(Duration::from_secs(30)).unwrap(),
        Some(0)
    );
    assert_eq!(holder(&leases).await, None);
}
