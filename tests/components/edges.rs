//! Several edges per binding (issue 20), end to end with the real operator binary, the API
//! server, two nspawn VPSes and their uplinks, and clients on the "internet". One bed carries
//! every step, in order, announced on stderr (`edges step: <name>`):
//! - a PortBinding naming two EdgeNodes (`edgeNodeRefs`) and a LoadBalancer Service naming
//!   both in its annotation are served on both VPSes; the PortBinding's `edges[]` says
//!   `Serving` for each and `addresses` lists both (one VPS with its IPv4 and IPv6
//!   addresses, reached over each); the Service's ingress has them all;
//! - a port held on one edge only by an older PortBinding: the new one is served on the other
//!   edge, `Degraded` with the conflict on the first, and published only where it is served;
//! - one VPS powered off: the check from outside takes it out of the PortBinding's addresses
//!   and the Service's ingress (its EdgeNode's kept SSH connection is not checked for a
//!   minute, so this is the check, not the pass: the edge says `Unhealthy`), while a client
//!   keeps being served by the other; powered on, it comes back with no one touching anything;
//! - a drained EdgeNode under a long-lived connection: it leaves the addresses first, its
//!   `Drained` condition counts the open connection, its deletion waits; the connection
//!   finishes with its answer, then the EdgeNode is torn down and goes.
//!
//! DNS throughout: an unmodified external-dns (`testbed::external_dns`: built from its Go
//! module, RFC2136 into a real Knot DNS server) publishes the Service by its hostname
//! annotation and the PortBinding through the `DNSEndpoint` the operator writes for its
//! hostname annotation; each step checks the records follow the statuses (both edges; the dead
//! one dropped, a client resolving the name still served; back; the drained one dropped while
//! its connection is still open).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::net::IpAddr;

use testbed::external_dns::{DnsServer, ExternalDns, Source, ZONE};
use testbed::netns::{in_ns, until_in};
use testbed::network::{serve_greeting, tcp_exchange};
use testbed::objects::{apply_yaml, ready, ssh_secret};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;
use tunnel::crd::{EdgeNode, PortBinding};

const LONG: Duration = Duration::from_secs(180);

fn step(name: &str) {
    eprintln!("edges step: {name}");
}

/// An EdgeNode on `address`, listing `public` as its public addresses when there are any.
fn node_yaml(name: &str, address: Ipv4Addr, public: &[String], secret: &str) -> String {
    let public = if public.is_empty() {
        String::new()
    } else {
        format!("  publicAddresses: ['{}']\n", public.join("', '"))
    };
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  address: {address}\n{public}  ssh: {{secretRef: {{name: {secret}}}, connectTimeout: 5s}}\n"
    )
}

/// A PortBinding of one TCP binding on `port` to `my-web`, on `nodes`.
fn binding_yaml(name: &str, nodes: &[&str], port: u16) -> String {
    let refs = if let [one] = nodes {
        format!("  edgeNodeRef: {{name: {one}}}\n")
    } else {
        let list: Vec<String> = nodes.iter().map(|n| format!("{{name: {n}}}")).collect();
        format!("  edgeNodeRefs: [{}]\n", list.join(", "))
    };
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{refs}  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: my-web, namespace: default, port: 8080}}}}\n"
    )
}

const LB: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: game\n  namespace: default\n  annotations:\n    tunnel.achetronic.com/edge-node: a,b\n    external-dns.alpha.kubernetes.io/hostname: game.edge.test\nspec:\n  type: LoadBalancer\n  loadBalancerClass: tunnel.achetronic.com/edge-node\n  clusterIP: 10.96.0.40\n  allocateLoadBalancerNodePorts: false\n  ports:\n  - {name: game, port: 7000, protocol: TCP}\n";

/// A PortBinding's status as JSON.
async fn pb_status(api: &Api<PortBinding>, name: &str) -> Value {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|pb| serde_json::to_value(pb.status).ok())
        .unwrap_or(Value::Null)
}

fn addresses(status: &Value) -> Vec<String> {
    status["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn edge_state(status: &Value, node: &str) -> String {
    status["edges"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == format!("default/{node}")))
        .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

async fn ingress_ips(api: &Api<Service>) -> Vec<String> {
    let svc = api.get_opt("game").await.ok().flatten();
    svc.and_then(|s| s.status?.load_balancer?.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

const GAME: &str = "game.edge.test";
const WEB: &str = "web.edge.test";

/// Waits until `name` resolves to exactly `expected` (A and AAAA); fails with what the DNS
/// server answered and external-dns's log.
async fn resolves(dns: &DnsServer, external_dns: &ExternalDns, name: &str, expected: &[String]) {
    let expected: Vec<IpAddr> = expected.iter().map(|a| a.parse().unwrap()).collect();
    if let Err(e) = dns
        .wait_for_addresses(name, &expected, Duration::from_secs(90))
        .await
    {
        panic!(
            "{e}\nexternal-dns log (end):\n{}",
            external_dns.log_tail(40)
        );
    }
}

fn strings(addrs: &[&dyn ToString]) -> Vec<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::too_many_lines)] // one bed, the steps in order
async fn a_binding_on_two_edges_survives_one_and_drains_the_other() {
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
    net.cluster.addr("lo", "10.96.0.40/32").unwrap();
    assert_eq!(ZONE, "edge.test");
    let dns = DnsServer::start(ZONE).await.unwrap();
    let external_dns = ExternalDns::start(&bed.server, &dns, &[Source::Service, Source::Crd])
        .await
        .unwrap();
    serve_greeting(&net.cluster, "10.96.0.40:7000", b"game: ").unwrap();
    // The kept SSH connections are checked once a minute and the drift pass is an hour away:
    // an edge that goes down is noticed by the check from outside first.
    let operator = bed
        .operator()
        .flags(&["--resync-period", "1h", "--ssh-keepalive-interval", "60s"])
        .start()
        .unwrap();
    ssh_secret(&client, "default", "ssh-b", &vps_b)
        .await
        .unwrap();
    let (a, b) = (vps_a.address(), vps_b.address());
    // a has an IPv6 address too: statuses carry both of its addresses.
    let a6 = vps_a.address6();
    apply_yaml::<EdgeNode>(&client, &node_yaml("a", a, &strings(&[&a, &a6]), "ssh-a"))
        .await
        .unwrap();
    apply_yaml::<EdgeNode>(&client, &node_yaml("b", b, &[], "ssh-b"))
        .await
        .unwrap();
    let web = binding_yaml("web", &["a", "b"], 80).replace(
        "metadata: {name: web, namespace: default}",
        "metadata: {name: web, namespace: default, annotations: {external-dns.alpha.kubernetes.io/hostname: web.edge.test}}",
    );
    apply_yaml::<PortBinding>(&client, &web).await.unwrap();
    apply_yaml::<Service>(&client, LB).await.unwrap();
    let uplinks_a = Uplinks::start(&client, "tunnel", "a", &pods[0..1])
        .await
        .unwrap();
    let uplinks_b = Uplinks::start(&client, "tunnel", "b", &pods[1..2])
        .await
        .unwrap();
    let pbs: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let describe = || {
        format!(
            "operator:\n{}\nuplinks a:\n{}\nuplinks b:\n{}",
            operator.log_text(),
            uplinks_a.logs(),
            uplinks_b.logs()
        )
    };
    let answers = |addr: Ipv4Addr, port: u16, want: &'static str| {
        until_in(internet, move || {
            tcp_exchange((addr, port).into(), b"hi\n").is_some_and(|g| g == want)
        })
    };

    step("served on both edges");
    let both = eventually(
        "PortBinding web served on both edges, both published",
        LONG,
        async || {
            let st = pb_status(&pbs, "web").await;
            (addresses(&st) == strings(&[&a, &a6, &b])
                && edge_state(&st, "a") == "Serving"
                && edge_state(&st, "b") == "Serving")
                .then_some(st)
        },
        describe,
    )
    .await;
    assert_eq!(both["conditions"][0]["reason"], "Served", "{both}");
    assert!(
        answers(a, 80, "my-web: hi\n") && answers(b, 80, "my-web: hi\n"),
        "both VPSes serve the PortBinding\n{}",
        describe()
    );
    assert!(
        until_in(internet, move || {
            tcp_exchange((a6, 80).into(), b"hi\n").is_some_and(|g| g == "my-web: hi\n")
        }),
        "a serves over its IPv6 address\n{}",
        describe()
    );
    eventually(
        "the Service's ingress lists both VPSes",
        LONG,
        async || (ingress_ips(&services).await == strings(&[&a, &a6, &b])).then_some(()),
        describe,
    )
    .await;
    assert!(
        answers(a, 7000, "game: hi\n") && answers(b, 7000, "game: hi\n"),
        "both VPSes serve the Service\n{}",
        describe()
    );
    resolves(&dns, &external_dns, GAME, &strings(&[&a, &a6, &b])).await;
    resolves(&dns, &external_dns, WEB, &strings(&[&a, &a6, &b])).await;

    step("a conflict on one edge refuses the binding there only");
    apply_yaml::<PortBinding>(&client, &binding_yaml("held", &["b"], 8081))
        .await
        .unwrap();
    eventually(
        "PortBinding held Ready",
        LONG,
        async || ready(&pbs, "held").await.filter(|c| c.0 == "True"),
        describe,
    )
    .await;
    apply_yaml::<PortBinding>(&client, &binding_yaml("wide", &["a", "b"], 8081))
        .await
        .unwrap();
    let wide = eventually(
        "PortBinding wide served on a, refused on b",
        LONG,
        async || {
            let st = pb_status(&pbs, "wide").await;
            (edge_state(&st, "a") == "Serving" && edge_state(&st, "b") == "NotServing")
                .then_some(st)
        },
        describe,
    )
    .await;
    assert_eq!(
        addresses(&wide),
        strings(&[&a, &a6]),
        "published where served: {wide}"
    );
    assert_eq!(wide["conditions"][0]["status"], "True", "{wide}");
    assert_eq!(
        wide["conditions"][0]["reason"], "SomeEdgesNotServing",
        "{wide}"
    );
    let b_entry = wide["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "default/b")
        .unwrap();
    assert_eq!(b_entry["reason"], "PortConflict", "{wide}");
    assert!(
        b_entry["message"]
            .as_str()
            .unwrap()
            .contains("default/held"),
        "names the holder: {wide}"
    );
    assert!(answers(a, 8081, "my-web: hi\n"), "a serves wide");

    step("one VPS powered off leaves the addresses; the other keeps serving");
    let off = Instant::now();
    vps_b.stop();
    let dropped = eventually(
        "b out of web's addresses and the Service's ingress",
        LONG,
        async || {
            let st = pb_status(&pbs, "web").await;
            (addresses(&st) == strings(&[&a, &a6])
                && ingress_ips(&services).await == strings(&[&a, &a6]))
            .then_some(st)
        },
        describe,
    )
    .await;
    eprintln!(
        "edges: b left the addresses {:.1} s after it was powered off",
        off.elapsed().as_secs_f64()
    );
    assert_eq!(
        edge_state(&dropped, "b"),
        "Unhealthy",
        "the check from outside took it out, not a pass: {dropped}"
    );
    assert!(
        in_ns(internet, move || tcp_exchange((a, 80).into(), b"hi\n"))
            .is_some_and(|g| g == "my-web: hi\n"),
        "a serves while b is down\n{}",
        describe()
    );
    assert!(
        operator
            .log_text()
            .contains("edge check from outside changed"),
        "{}",
        describe()
    );
    resolves(&dns, &external_dns, GAME, &strings(&[&a, &a6])).await;
    resolves(&dns, &external_dns, WEB, &strings(&[&a, &a6])).await;
    eprintln!(
        "edges: b left DNS {:.1} s after it was powered off",
        off.elapsed().as_secs_f64()
    );
    // A client that resolves the name and connects is served.
    for ip in dns.addresses(WEB).unwrap() {
        assert!(
            in_ns(internet, move || tcp_exchange((ip, 80).into(), b"hi\n"))
                .is_some_and(|g| g == "my-web: hi\n"),
            "{ip}, from DNS, serves while b is down\n{}",
            describe()
        );
    }

    step("powered on again, it comes back");
    vps_b.power_on(internet).unwrap();
    eventually(
        "b back in web's addresses and the Service's ingress",
        LONG,
        async || {
            let st = pb_status(&pbs, "web").await;
            (addresses(&st) == strings(&[&a, &a6, &b])
                && ingress_ips(&services).await == strings(&[&a, &a6, &b]))
            .then_some(())
        },
        describe,
    )
    .await;
    assert!(
        answers(b, 80, "my-web: hi\n"),
        "b serves again\n{}",
        describe()
    );
    resolves(&dns, &external_dns, GAME, &strings(&[&a, &a6, &b])).await;
    resolves(&dns, &external_dns, WEB, &strings(&[&a, &a6, &b])).await;

    step("drain a under a long-lived connection, then delete it");
    // A connection through a that stays open: the backend answers once it reads a line.
    let mut open = in_ns(internet, move || {
        let s = TcpStream::connect_timeout(&(a, 80).into(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    });
    let patch = json!({"metadata": {"annotations": {
        "tunnel.achetronic.com/drain": "true",
        "tunnel.achetronic.com/drain-timeout": "10m",
    }}});
    nodes
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let drained_out = eventually(
        "a out of web's addresses, Draining",
        LONG,
        async || {
            let st = pb_status(&pbs, "web").await;
            (addresses(&st) == strings(&[&b]) && edge_state(&st, "a") == "Draining").then_some(st)
        },
        describe,
    )
    .await;
    assert_eq!(
        ingress_ips(&services).await,
        strings(&[&b]),
        "out of the Service's ingress too: {drained_out}"
    );
    let drained = |status: &'static str| {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get_opt("a").await.ok()??;
            let c = node
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Drained")?;
            (c.status == status).then_some(c)
        }
    };
    // The first count may still see a probe's connection: the check stops probing a drained
    // edge from that pass on.
    let waiting = eventually(
        "a's Drained condition counting the one open connection",
        LONG,
        async || {
            drained("False")
                .await
                .filter(|c| c.message.contains("waiting for 1 connection "))
        },
        describe,
    )
    .await;
    assert_eq!(waiting.reason, "Draining");
    // Out of DNS while its connection is still open.
    resolves(&dns, &external_dns, WEB, &strings(&[&b])).await;
    resolves(&dns, &external_dns, GAME, &strings(&[&b])).await;
    nodes.delete("a", &DeleteParams::default()).await.unwrap();
    // The deletion waits for the connection: the EdgeNode is still there, its VPS still
    // serves the open connection.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        nodes.get_opt("a").await.unwrap().is_some(),
        "the deletion waits for the drain\n{}",
        describe()
    );
    let reply = tokio::task::block_in_place(|| {
        open.write_all(b"bye\n").unwrap();
        let mut out = String::new();
        let _ = open.read_to_string(&mut out);
        out
    });
    assert_eq!(
        reply, "my-web: bye\n",
        "the open connection finished with its answer"
    );
    drop(open);
    eventually(
        "EdgeNode a torn down and gone once its connection ended",
        LONG,
        async || nodes.get_opt("a").await.ok().filter(Option::is_none),
        describe,
    )
    .await;
    assert!(answers(b, 80, "my-web: hi\n"), "b serves throughout");
    let after = pb_status(&pbs, "web").await;
    assert_eq!(addresses(&after), strings(&[&b]), "{after}");
    drop((uplinks_a, uplinks_b));
    drop(external_dns);
    drop(dns);
}
