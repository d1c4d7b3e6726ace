//! Passes counted on the real bed from the operator's own pass metric (issue 22, "one route per
//! change"): README Example 1 served on a real VPS with a real uplink; a restarted operator
//! runs exactly one pass for its one EdgeNode, and one PortBinding change costs exactly one
//! more. Before the route was one, an EdgeNode change re-upserted its PortBindings and their
//! changes arrived while the pass ran: a second full pass per change and at start-up.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::metrics::{sample, scrape};
use testbed::netns::{Netns, in_ns};
use testbed::objects::until_ready;
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;

use crate::operator_support::apply_example1;

const LONG: Duration = Duration::from_secs(180);
const NODE: &str = "namespace=\"default\",name=\"edge-node\"";

/// EdgeNode passes so far, whatever their result (the counters are printed as integers).
fn passes(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("tunnel_reconcile_passes_total{kind=\"EdgeNode\","))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the VPS is healthy with a fresh handshake (a healthy pass schedules no
/// re-check) and no pass has started for longer than the first re-check delay (3 s) — the
/// precondition for counting; returns the count.
async fn settled(ns: &Netns, port: u16, describe: impl Fn() -> String) -> u64 {
    let read = || in_ns(ns, || scrape(port));
    eventually(
        "a healthy VPS",
        LONG,
        async || {
            read().filter(|m| {
                sample(m, &format!("tunnel_edge_node_vps_healthy{{{NODE}}}")) == Some(1.0)
                    && sample(
                        m,
                        &format!("tunnel_edge_node_uplinks_fresh_handshake{{{NODE}}}"),
                    ) == Some(1.0)
            })
        },
        &describe,
    )
    .await;
    let mut last = None;
    for _ in 0..30 {
        let now = read().map(|m| passes(&m));
        if now.is_some() && now == last {
            return now.unwrap_or_default();
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    panic!("passes never settled (last {last:?}):\n{}", describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_is_one_pass_per_edge_node_and_a_port_binding_change_exactly_one_more() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let flags = ["--metrics-secure=false", "--leader-elect=false"];
    let first = bed
        .operator()
        .name("first")
        .metrics()
        .flags(&flags)
        .start()
        .unwrap();
    apply_example1(&client, vps).await;
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", pods)
        .await
        .unwrap();
    until_ready(&nodes, "edge-node", || {
        format!("{}\n{}", first.log_text(), uplinks.logs())
    })
    .await;
    settled(internet, first.metrics_port.unwrap(), || first.log_text()).await;
    drop(first);

    // A restart over a converged VPS: one pass for the one EdgeNode, and no other.
    let second = bed
        .operator()
        .name("second")
        .metrics()
        .flags(&flags)
        .start()
        .unwrap();
    let port = second.metrics_port.unwrap();
    let describe = || format!("{}\n{}", second.log_text(), uplinks.logs());
    let at_start = settled(internet, port, describe).await;
    assert_eq!(at_start, 1, "{}", describe());

    // One PortBinding change: exactly one more pass.
    let bindings: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let patch = serde_json::json!({"spec": {"bindings": [{
        "name": "http", "protocol": "TCP", "listenPort": 8088,
        "target": {"service": {"name": "my-web", "namespace": "default", "port": 8080}}
    }]}});
    let changed = bindings
        .patch("public-web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    eventually(
        "the change is served",
        LONG,
        async || {
            let pb = bindings.get("public-web").await.ok()?;
            let observed = pb.status.as_ref()?.observed_generation;
            (observed == generation).then_some(())
        },
        describe,
    )
    .await;
    let after = settled(internet, port, describe).await;
    assert_eq!(after, at_start + 1, "{}", describe());
}
