//! SSH costs a tenant controls, against the real operator binary, API server and nspawn VPS
//! (security review 2026-12, H2 and M2):
//! - an SSH Secret whose encrypted `privateKey` asks for a ruinous key derivation (scrypt
//!   N=2^30, r=2: 256 GiB; bcrypt with 2^32-1 rounds: years of CPU) gets a clear
//!   `SSHKeyKdfTooExpensive` condition, the operator stays up, and another EdgeNode converges;
//! - VPSes that accept TCP and never speak (tarpits), more of them than
//!   `--max-concurrent-reconciles`, do not keep another EdgeNode from converging: a slot is
//!   held only while talking to a VPS, not while connecting.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use testbed::keys::{PASSPHRASE, bcrypt_bomb, scrypt_bomb};
use testbed::netns::Netns;
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::objects::{apply_yaml, ready, until_ready};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;

const LONG: Duration = Duration::from_secs(180);
/// Tarpit EdgeNodes, one more than the operator's SSH slots in the test.
const TARPITS: usize = 3;

fn node_yaml(name: &str, address: &str, port: u16, secret: &str, connect_timeout: &str) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: {address}\n  ssh: {{secretRef: {{name: {secret}}}, port: {port}, connectTimeout: {connect_timeout}}}\n"
    )
}

fn binding_yaml(node: &str) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: web-{node}, namespace: default}}\nspec:\n  edgeNodeRef: {{name: {node}}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: 80\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
    )
}

/// An SSH Secret with `privateKey` and its passphrase, pinning the VPS's host key.
async fn encrypted_key_secret(client: &Client, name: &str, key: &str, known_hosts: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"privateKey": key, "passphrase": PASSPHRASE, "knownHosts": known_hosts}
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&secret),
    )
    .await
    .unwrap();
}

/// A TCP listener in `ns` on loopback that accepts every connection and never sends a byte
/// (the connections are kept open); its port and the count of connections accepted.
fn tarpit(ns: &Netns) -> (u16, Arc<AtomicUsize>) {
    let listener = ns
        .enter(|| TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            held.lock().unwrap().push(stream);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_derivation_bombs_get_a_condition_and_the_operator_serves_the_others() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (vps, pods) = (&net.vps, &net.pods);
    let mut operator = bed
        .operator()
        .flags(&["--resync-period", "1h"])
        .start()
        .unwrap();
    let address = vps.address().to_string();
    let known_hosts = vps.known_hosts_line().unwrap();

    // Both bombs point at the real VPS with its host key pinned: on the old code the
    // connection is made, then the key is decrypted with the file's own cost.
    encrypted_key_secret(
        &client,
        "bomb-scrypt",
        &scrypt_bomb().unwrap(),
        &known_hosts,
    )
    .await;
    encrypted_key_secret(
        &client,
        "bomb-bcrypt",
        &bcrypt_bomb().unwrap(),
        &known_hosts,
    )
    .await;
    for name in ["bomb-scrypt", "bomb-bcrypt"] {
        apply_yaml::<EdgeNode>(&client, &node_yaml(name, &address, 22, name, "5s"))
            .await
            .unwrap();
    }
    apply_yaml::<EdgeNode>(
        &client,
        &node_yaml("good", &address, 22, "vps-ssh-secret", "5s"),
    )
    .await
    .unwrap();
    apply_yaml::<PortBinding>(&client, &binding_yaml("good"))
        .await
        .unwrap();

    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let log = || operator.log_text();
    for (name, parameter) in [
        ("bomb-scrypt", "N=1073741824, r=2"),
        ("bomb-bcrypt", "rounds=4294967295"),
    ] {
        let (status, _, message) = eventually(
            &format!("EdgeNode {name} refused with SSHKeyKdfTooExpensive"),
            LONG,
            async || {
                ready(&nodes, name)
                    .await
                    .filter(|c| c.1 == "SSHKeyKdfTooExpensive")
            },
            log,
        )
        .await;
        assert_eq!(status, "False");
        assert!(
            message.contains(&format!("default/{name}"))
                && message.contains("privateKey")
                && message.contains(parameter),
            "the message names the Secret, its key and the parameter: {message}"
        );
    }

    let uplinks = Uplinks::start(&client, "tunnel", "good", &pods[0..1])
        .await
        .unwrap();
    until_ready(&nodes, "good", || {
        format!("{}\nuplinks:\n{}", operator.log_text(), uplinks.logs())
    })
    .await;
    assert!(
        operator.process.is_running(),
        "the operator is still up\n{}",
        operator.log_text()
    );
    // The refusal is a condition, not a crash or a stuck pass, and it stays so.
    for name in ["bomb-scrypt", "bomb-bcrypt"] {
        assert_eq!(
            ready(&nodes, name).await.map(|c| c.1).as_deref(),
            Some("SSHKeyKdfTooExpensive")
        );
    }
    drop(uplinks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tarpit_vpses_do_not_starve_the_ssh_slots() {
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, pods) = (&net.internet, &net.vps, &net.pods);
    let (port, accepted) = tarpit(internet);
    let operator = bed
        .operator()
        .flags(&["--max-concurrent-reconciles", "2", "--resync-period", "1h"])
        .start()
        .unwrap();

    // Three tarpits (more than the two slots), each with the longest connect timeout
    // admission allows: on the old code two of them hold both slots for their whole
    // connection attempts (5 × 60 s) and the third queues for one.
    for i in 0..TARPITS {
        apply_yaml::<EdgeNode>(
            &client,
            &node_yaml(
                &format!("tarpit-{i}"),
                "127.0.0.1",
                port,
                "vps-ssh-secret",
                "60s",
            ),
        )
        .await
        .unwrap();
    }
    eventually(
        "the tarpit to hold two connections",
        LONG,
        async || (accepted.load(Ordering::SeqCst) >= 2).then_some(()),
        || operator.log_text(),
    )
    .await;

    let address = vps.address().to_string();
    apply_yaml::<EdgeNode>(
        &client,
        &node_yaml("good", &address, 22, "vps-ssh-secret", "5s"),
    )
    .await
    .unwrap();
    apply_yaml::<PortBinding>(&client, &binding_yaml("good"))
        .await
        .unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let uplinks = Uplinks::start(&client, "tunnel", "good", &pods[0..1])
        .await
        .unwrap();
    until_ready(&nodes, "good", || {
        format!(
            "tarpit connections: {}\n{}\nuplinks:\n{}",
            accepted.load(Ordering::SeqCst),
            operator.log_text(),
            uplinks.logs()
        )
    })
    .await;
    // Every tarpit is being connected to at once (none waits for a slot to connect), and
    // none of them is Ready.
    assert!(
        accepted.load(Ordering::SeqCst) >= TARPITS,
        "{}",
        operator.log_text()
    );
    for i in 0..TARPITS {
        let name = format!("tarpit-{i}");
        assert_ne!(
            ready(&nodes, &name).await.map(|c| c.0).as_deref(),
            Some("True")
        );
    }
    drop(uplinks);
}
