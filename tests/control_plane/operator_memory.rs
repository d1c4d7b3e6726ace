//! Security review M6: the operator watched every Secret of the cluster with its data, so
//! anyone who may create Secrets could grow its memory past its limit. With 400 unrelated
//! Secrets of 256 KiB (100 MiB of data) in the cluster, the operator started against a real
//! API server lists them all (it is ready), runs a pass of an EdgeNode whose SSH Secret it
//! reads, and its resident memory stays below 64 MiB: Secrets are watched as metadata only and
//! the one it needs is fetched. Measured on the test bed (debug build): 47 612 KiB; on the old
//! code, which cached every Secret with its data, 212 088 KiB (the test fails there).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use testbed::free_port;
use testbed::operator::OperatorBed;
use tunnel::crd::EdgeNode;

/// Unrelated Secrets, and the size of each one's data.
const SECRETS: usize = 400;
const SECRET_BYTES: usize = 256 * 1024;
/// The bound on the operator's resident memory, well under the 100 MiB of Secret data.
const MAX_RSS_KIB: u64 = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn many_large_unrelated_secrets_do_not_grow_the_operator() {
    let bed = OperatorBed::builder().start().await.unwrap();
    let client = bed.client.clone();
    let bulk: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "bulk"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &bulk)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "bulk");
    let created: Vec<()> = futures::stream::iter(0..SECRETS)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                // Incompressible-looking data: each byte from a simple generator.
                let data: Vec<u8> = (0..SECRET_BYTES)
                    .map(|j| u8::try_from((i * 7919 + j * 104_729) % 251).unwrap())
                    .collect();
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("unrelated-{i}")),
                        ..Default::default()
                    },
                    data: Some([("blob".to_owned(), k8s_openapi::ByteString(data))].into()),
                    ..Secret::default()
                };
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(created.len(), SECRETS);

    // An EdgeNode whose pass reads its SSH Secret (its VPS is a closed port); the Secret comes
    // once the operator runs.
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = super::operator_flags::ssh_key(dir.path());
    let closed = free_port().unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let node: EdgeNode = serde_json::from_value(serde_json::json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": "edge-node", "namespace": "default"},
        "spec": {"address": "127.0.0.1", "ssh": {"port": closed, "connectTimeout": "2s",
                 "secretRef": {"name": "vps-ssh-secret"}}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let mut operator = bed
        .operator()
        .metrics()
        .flags(&["--leader-elect=false"])
        .start()
        .unwrap();
    let log = operator.log.clone();
    let concluded = async |unlike: &str| {
        for _ in 0..240 {
            let ready = nodes.get("edge-node").await.unwrap().status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready" && c.reason != "Enrolling" && c.reason != unlike)
            });
            if let Some(c) = ready {
                return (c.reason, c.message);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "no pass concluded\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    let (reason, _) = concluded("").await;
    assert_eq!(reason, "SSHSecretNotFound");
    // The SSH Secret appears: the EdgeNode hears of it (metadata watch, then a fetch) and its
    // next pass reads it: the caches were filled (every Secret listed) and the Secret fetched.
    let ssh: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vps-ssh-secret", "namespace": "default"},
        "stringData": {"privateKey": private, "knownHosts": format!("[127.0.0.1]:{closed} {public}")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &ssh)
        .await
        .unwrap();
    let (reason, message) = concluded("SSHSecretNotFound").await;
    assert!(
        !reason.starts_with("SSHSecret") && reason != "SecretReadFailed",
        "the SSH Secret was not read: {reason}: {message}"
    );
    let rss = rss_kib(operator.process.pid());
    eprintln!(
        "operator VmRSS with {SECRETS} Secrets of {} KiB: {rss} KiB",
        SECRET_BYTES / 1024
    );
    assert!(
        rss < MAX_RSS_KIB,
        "the operator holds {rss} KiB with {SECRETS} unrelated Secrets of {} KiB",
        SECRET_BYTES / 1024
    );
    operator.process.signal("TERM");
    let _ = operator.process.wait_exit(Duration::from_secs(20));
}
