//! Fault isolation of the operator's actor tree, with the real binary, API server and VPSes:
//! an EdgeNode whose VPS never answers fails and is retried with backoff while an EdgeNode on
//! a VPS keeps serving traffic (a panicking actor, restarted then parked, is proven in-process
//! in src/actors/tree_tests.rs: no real component can be made to panic); a second VPS powered off
//! makes only its own EdgeNode `Ready=False` as soon as its kept SSH connection is lost (the
//! drift pass is an hour away; the reason says SSH), and once it is powered on again it is
//! served without anyone touching the operator.

use std::time::Duration;

use kube::api::Api;
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::netns::{in_ns, until_in};
use testbed::network::tcp_exchange;
use testbed::objects::{apply_yaml, ready, ssh_secret};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;

const LONG: Duration = Duration::from_secs(180);

fn node_yaml(name: &str, address: &str, secret: &str) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: {address}\n  ssh: {{secretRef: {{name: {secret}}}, connectTimeout: 5s}}\n"
    )
}

fn binding_yaml(name: &str, node: &str, port: u16) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  edgeNodeRef: {{name: {node}}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_edge_node_never_stops_the_others() {
    let mut bed = OperatorBed::builder()
        .vps(2)
        .more_vpses(1)
        .my_web()
        .ssh_secret("ssh-a")
        .start()
        .await
        .unwrap();
    let client = bed.client.clone();
    let mut vps_b = bed.more_vpses.remove(0);
    let net = bed.net();
    let (internet, vps_a, pods) = (&net.internet, &net.vps, &net.pods);
    let operator = bed
        .operator()
        .flags(&["--resync-period", "1h", "--ssh-keepalive-interval", "2s"])
        .start()
        .unwrap();
    ssh_secret(&client, "default", "ssh-b", &vps_b)
        .await
        .unwrap();
    apply_yaml::<EdgeNode>(
        &client,
        &node_yaml("a", &vps_a.address().to_string(), "ssh-a"),
    )
    .await
    .unwrap();
    apply_yaml::<EdgeNode>(
        &client,
        &node_yaml("b", &vps_b.address().to_string(), "ssh-b"),
    )
    .await
    .unwrap();
    apply_yaml::<EdgeNode>(&client, &node_yaml("broken", "192.0.2.77", "ssh-a"))
        .await
        .unwrap();
    apply_yaml::<PortBinding>(&client, &binding_yaml("web-a", "a", 80))
        .await
        .unwrap();
    apply_yaml::<PortBinding>(&client, &binding_yaml("web-b", "b", 80))
        .await
        .unwrap();
    let uplinks_a = Uplinks::start(&client, "tunnel", "a", &pods[0..1])
        .await
        .unwrap();
    let uplinks_b = Uplinks::start(&client, "tunnel", "b", &pods[1..2])
        .await
        .unwrap();
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let describe = || {
        format!(
            "operator:\n{}\nuplinks a:\n{}\nuplinks b:\n{}",
            operator.log_text(),
            uplinks_a.logs(),
            uplinks_b.logs()
        )
    };
    for name in ["a", "b"] {
        eventually(
            &format!("EdgeNode {name} Ready=True"),
            LONG,
            async || ready(&nodes, name).await.filter(|c| c.0 == "True"),
            describe,
        )
        .await;
    }
    let (a, b) = (vps_a.address(), vps_b.address());
    let answers = |addr: std::net::Ipv4Addr| {
        until_in(internet, move || {
            tcp_exchange((addr, 80).into(), b"hi\n").is_some_and(|g| g == "my-web: hi\n")
        })
    };
    assert!(answers(a) && answers(b), "both VPSes serve\n{}", describe());

    // The EdgeNode whose VPS never answers fails on its own, with a reason that says SSH, and
    // is retried; `a` serves throughout.
    let broken = eventually(
        "EdgeNode broken to report its VPS unreachable",
        LONG,
        async || {
            assert!(
                in_ns(internet, move || tcp_exchange((a, 80).into(), b"hi\n"))
                    .is_some_and(|g| g == "my-web: hi\n"),
                "a stopped serving while broken was failing"
            );
            ready(&nodes, "broken")
                .await
                .filter(|c| c.0 == "False" && c.1.starts_with("SSH"))
        },
        describe,
    )
    .await;
    assert!(broken.2.contains("192.0.2.77"), "names the VPS: {broken:?}");
    assert_eq!(
        ready(&nodes, "a").await.unwrap().0,
        "True",
        "a is untouched by broken's failures"
    );

    // VPS b powered off: b reports SSH, a keeps serving.
    vps_b.stop();
    let down = eventually(
        "EdgeNode b to report its VPS down",
        LONG,
        async || ready(&nodes, "b").await.filter(|c| c.0 == "False"),
        describe,
    )
    .await;
    assert!(down.1.starts_with("SSH"), "the reason says SSH: {down:?}");
    assert!(
        operator
            .log_text()
            .contains("SSH connection to the VPS lost"),
        "noticed through the kept connection, not a drift pass\n{}",
        describe()
    );
    assert!(down.2.contains(&b.to_string()), "names the VPS: {down:?}");
    assert!(answers(a), "a serves while b is down\n{}", describe());
    assert_eq!(ready(&nodes, "a").await.unwrap().0, "True");

    // Powered on again: served again, with no operator action.
    vps_b.power_on(internet).unwrap();
    eventually(
        "EdgeNode b Ready=True again",
        LONG,
        async || ready(&nodes, "b").await.filter(|c| c.0 == "True"),
        describe,
    )
    .await;
    assert!(answers(b), "b serves again\n{}", describe());
    drop((uplinks_a, uplinks_b));
}
