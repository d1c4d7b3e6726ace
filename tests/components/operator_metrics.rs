//! The operator's per-EdgeNode and SSH metrics against the real chain: README Example 1 on a
//! real nspawn VPS with a real uplink pod, traffic through it, then `/metrics` (plain HTTP,
//! `--metrics-secure=false`, inside the operator's network namespace) shows the VPS healthy,
//! one uplink with a fresh handshake and its handshake age from the relay's status, the
//! binding planned, the SSH commands and enrollment passes that ran, and the actors alive.

#![allow(clippy::float_cmp)] // samples of counters and gauges are whole numbers

use std::time::Duration;

use kube::api::Api;
use tunnel::crd::EdgeNode;

use testbed::metrics::{sample, scrape, total};
use testbed::netns::in_ns;
use testbed::objects::until_ready;
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;

use crate::operator_support::{apply_example1, logs_of};

const LONG: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn edge_node_and_ssh_metrics_follow_a_served_vps() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let operator = bed
        .operator()
        .metrics()
        .flags(&["--metrics-secure=false", "--leader-elect=false"])
        .start()
        .unwrap();
    let port = operator.metrics_port.unwrap();
    apply_example1(&client, vps).await;
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", pods)
        .await
        .unwrap();
    let describe = || logs_of(&operator, &uplinks);
    until_ready(&nodes, "edge-node", describe).await;

    // The pass that found it healthy is the one the metrics report.
    let node = "namespace=\"default\",name=\"edge-node\"";
    let metrics = eventually(
        "metrics of a healthy VPS",
        LONG,
        async || {
            in_ns(internet, || scrape(port)).filter(|m| {
                sample(m, &format!("tunnel_edge_node_vps_healthy{{{node}}}")) == Some(1.0)
            })
        },
        describe,
    )
    .await;
    assert_eq!(
        sample(
            &metrics,
            &format!("tunnel_edge_node_uplinks_fresh_handshake{{{node}}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    let age = sample(
        &metrics,
        &format!("tunnel_uplink_last_handshake_seconds{{{node},ordinal=\"0\"}}"),
    )
    .unwrap_or_else(|| panic!("no handshake age of uplink 0:\n{metrics}"));
    assert!(age >= 0.0, "{age}");
    assert_eq!(
        sample(
            &metrics,
            &format!("tunnel_bindings{{{node},outcome=\"planned\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("tunnel_bindings{{{node},outcome=\"conflict\"}}")
        ),
        Some(0.0)
    );
    // The SSH work behind it: commands of both kinds, at least one enrollment pass.
    assert!(
        sample(
            &metrics,
            "tunnel_ssh_commands_total{access=\"write\",result=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "tunnel_ssh_commands_total{access=\"read\",result=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(total(&metrics, "tunnel_ssh_command_duration_seconds_count") >= 2.0);
    assert!(
        sample(
            &metrics,
            "tunnel_enrollment_pass_duration_seconds_count{work=\"converge\",result=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    for kind in ["EdgeNode", "PortBinding", "SSHSession"] {
        assert_eq!(
            sample(&metrics, &format!("tunnel_actors_alive{{kind=\"{kind}\"}}")),
            Some(1.0),
            "{kind}: {metrics}"
        );
    }
    assert!(
        sample(
            &metrics,
            "tunnel_reconcile_passes_total{kind=\"EdgeNode\",result=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(total(&metrics, "tunnel_actor_restarts_total"), 0.0);
}
