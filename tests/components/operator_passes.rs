//! Passes counted on the real bed from the operator's own pass metric (issue 22, "one route per
//! change"): two EdgeNodes, each served on its own nspawn VPS with a real uplink; a restarted
//! operator runs exactly one pass per EdgeNode, and one PortBinding change costs exactly one
//! more. Before the route was one, an EdgeNode change re-upserted its PortBindings and their
//! changes arrived while the pass ran: a second full pass per change and at start-up.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use testbed::objects::{apply_yaml, ssh_secret};
use testbed::vps::Vps;
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::metrics::{sample, scrape};
use testbed::netns::{Netns, in_ns};
use testbed::objects::until_ready;
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;

const LONG: Duration = Duration::from_secs(180);
/// The EdgeNodes, one per VPS.
const NODES: [&str; 2] = ["n0", "n1"];

/// EdgeNode passes so far, whatever their result (the counters are printed as integers).
fn passes(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("tunnel_reconcile_passes_total{kind=\"EdgeNode\","))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether every EdgeNode's VPS is healthy with a fresh handshake (a healthy pass schedules
/// no re-check).
fn all_healthy(metrics: &str) -> bool {
    NODES.iter().all(|node| {
        let labels = format!("namespace=\"default\",name=\"{node}\"");
        sample(
            metrics,
            &format!("tunnel_edge_node_vps_healthy{{{labels}}}"),
        ) == Some(1.0)
            && sample(
                metrics,
                &format!("tunnel_edge_node_uplinks_fresh_handshake{{{labels}}}"),
            ) == Some(1.0)
    })
}

/// Waits until every VPS is healthy and no pass has started for longer than the first
/// re-check delay (3 s) — the precondition for counting; returns the count.
async fn settled(ns: &Netns, port: u16, describe: impl Fn() -> String) -> u64 {
    let read = || in_ns(ns, || scrape(port));
    eventually(
        "every VPS healthy",
        LONG,
        async || read().filter(|m| all_healthy(m)),
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

fn binding(name: &str, node: &str, port: u16) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  edgeNodeRef: {{name: {node}}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_is_one_pass_per_edge_node_and_a_port_binding_change_exactly_one_more() {
    let bed = OperatorBed::builder()
        .vps(NODES.len())
        .more_vpses(NODES.len() - 1)
        .my_web()
        .start()
        .await
        .unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, pods) = (&net.internet, &net.pods);
    let vpses: Vec<&Vps> = std::iter::once(&net.vps).chain(&bed.more_vpses).collect();
    let flags = ["--metrics-secure=false", "--leader-elect=false"];
    let first = bed
        .operator()
        .name("first")
        .metrics()
        .flags(&flags)
        .start()
        .unwrap();
    let mut uplinks = Vec::new();
    for (i, (node, vps)) in NODES.iter().zip(&vpses).enumerate() {
        ssh_secret(&client, "default", &format!("{node}-ssh"), vps)
            .await
            .unwrap();
        apply_yaml::<EdgeNode>(
            &client,
            &format!(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {node}, namespace: default}}\nspec:\n  address: {}\n  ssh: {{secretRef: {{name: {node}-ssh}}}}\n",
                vps.address()
            ),
        )
        .await
        .unwrap();
        apply_yaml::<PortBinding>(&client, &binding(&format!("{node}-web"), node, 80))
            .await
            .unwrap();
        uplinks.push(
            Uplinks::start(&client, "tunnel", node, &pods[i..=i])
                .await
                .unwrap(),
        );
    }
    let uplink_logs = || uplinks.iter().map(Uplinks::logs).collect::<String>();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    for node in NODES {
        until_ready(&nodes, node, || {
            format!("{}\n{}", first.log_text(), uplink_logs())
        })
        .await;
    }
    settled(internet, first.metrics_port.unwrap(), || first.log_text()).await;
    drop(first);

    // A restart over converged VPSes: one pass per EdgeNode, and no other.
    let second = bed
        .operator()
        .name("second")
        .metrics()
        .flags(&flags)
        .start()
        .unwrap();
    let port = second.metrics_port.unwrap();
    let describe = || format!("{}\n{}", second.log_text(), uplink_logs());
    let at_start = settled(internet, port, describe).await;
    assert_eq!(at_start, NODES.len() as u64, "{}", describe());

    // One PortBinding change: exactly one more pass.
    let bindings: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let patch = serde_json::json!({"spec": {"bindings": [{
        "name": "http", "protocol": "TCP", "listenPort": 8088,
        "target": {"service": {"name": "my-web", "namespace": "default", "port": 8080}}
    }]}});
    let changed = bindings
        .patch("n0-web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    eventually(
        "the change is served",
        LONG,
        async || {
            let pb = bindings.get("n0-web").await.ok()?;
            let observed = pb.status.as_ref()?.observed_generation;
            (observed == generation).then_some(())
        },
        describe,
    )
    .await;
    let after = settled(internet, port, describe).await;
    assert_eq!(after, at_start + 1, "{}", describe());
}
