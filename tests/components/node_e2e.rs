//! The whole system on a real node, driven as a user drives it (issue 13; docs/testing.md,
//! "The node"): the images written offline and imported into containerd, `helm install` of
//! the chart, the operator as a real pod under its ServiceAccount, an nspawn VPS reached from
//! the pod network, real echo pods behind ClusterIP Services, README Examples 1 and 2 applied
//! with `kubectl apply -f` (only the address and the Secret adjusted), the uplink StatefulSet's
//! pods running as real pods, and a client on the "internet" reaching the echo pods through
//! the VPS over TCP (plain and PROXY protocol) and UDP, over IPv4 and, once the EdgeNode lists
//! both public addresses, over IPv6 (issue 20), and a Service of type LoadBalancer
//! served the same way; several edges (issue 20): a second VPS and EdgeNode, a PortBinding
//! and a LoadBalancer Service on both published by an unmodified external-dns into a real
//! DNS server, one VPS powered off and on, a drain under an open connection; then what a user
//! looks at and does
//! next with kubectl, up to `helm uninstall`.
//!
//! Needs the node's binaries (`tests/testbed/setup.d/30-node.sh`) and
//! `cargo build -p uplink -p testbed --bins`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testbed::external_dns::{DnsServer, ExternalDns, Source, ZONE};
use testbed::images;
use testbed::netns::{Netns, in_ns};
use testbed::node::{INTERNET_IP, Node, VPS_IP};

use crate::node_support::{
    self, LONG, OPERATOR_NS, eventually, fixture, helm_install_chart, http_attempt, http_get,
    kubectl, operator_pods, ready_status, sni_ask, try_kubectl, udp_ask,
};

/// The Gateway API objects of the node test: a class of ours naming README Example 1's
/// EdgeNode, a Gateway with TCP, UDP and TLS passthrough listeners, a TCPRoute and a UDPRoute
/// to the echo pods, two TLSRoutes by SNI (one to `networking`, granted there).
const GATEWAY_API: &str = r"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tunnel}
spec:
  controllerName: tunnel.achetronic.com/gateway-controller
  parametersRef: {group: tunnel.achetronic.com, kind: EdgeNode, name: edge-node, namespace: default}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: tunnel
  listeners:
  - {name: tcp, protocol: TCP, port: 7100}
  - {name: udp, protocol: UDP, port: 7101}
  - {name: tls, protocol: TLS, port: 7443, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: my-web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: udp}]
  rules: [{backendRefs: [{name: dns-echo, port: 53}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: one, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [one.example.test]
  rules: [{backendRefs: [{name: my-web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: two, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [two.example.test]
  rules: [{backendRefs: [{name: internal-ingress, namespace: networking, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: tlsroutes-from-default, namespace: networking}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: default}]
  to: [{group: '', kind: Service}]
";

/// Streams `<reason>: <message>` of the EdgeNodes' condition `type_`, a line per change.
fn watch_condition(node: &Node, type_: &str) -> std::process::Child {
    let path = format!(
        "jsonpath={{.status.conditions[?(@.type==\"{type_}\")].reason}}: {{.status.conditions[?(@.type==\"{type_}\")].message}}{{\"\\n\"}}"
    );
    node.kubectl()
        .unwrap()
        .args(["get", "edgenodes", "--watch", "-o", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What a watch of [`watch_condition`] streamed until now (it is stopped).
fn watched(mut watch: std::process::Child) -> String {
    watch.kill().unwrap();
    let mut seen = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = watch.wait();
    seen
}

/// The several-edges stage's objects: README's "Several edges" PortBinding on Example 1's
/// EdgeNode and `edge-b`, to the echo pods, with a DNS name; and a LoadBalancer Service on
/// both, with another.
const WEB_HA: &str = r"apiVersion: tunnel.achetronic.com/v1alpha1
kind: PortBinding
metadata:
  name: web-ha
  namespace: default
  annotations: {external-dns.alpha.kubernetes.io/hostname: web-ha.edge.test}
spec:
  edgeNodeRefs: [{name: edge-node}, {name: edge-b}]
  bindings:
    - {name: http, protocol: TCP, listenPort: 8088, target: {service: {name: my-web, namespace: default, port: 8080}}}
---
apiVersion: v1
kind: Service
metadata:
  name: echo-ha
  namespace: default
  annotations:
    tunnel.achetronic.com/edge-node: edge-node,edge-b
    external-dns.alpha.kubernetes.io/hostname: game-ha.edge.test
spec:
  type: LoadBalancer
  loadBalancerClass: tunnel.achetronic.com/edge-node
  selector: {app: echo}
  ports:
  - {name: http, port: 8090, targetPort: 8080, protocol: TCP}
";

/// The names [`WEB_HA`] publishes, with their public ports.
const HA_NAMES: [(&str, u16); 2] = [("web-ha.edge.test", 8088), ("game-ha.edge.test", 8090)];

/// The addresses in `kind/name`'s status at `path` (a jsonpath), sorted.
fn status_addresses(node: &Node, kind: &str, name: &str, path: &str) -> Vec<IpAddr> {
    let text = try_kubectl(
        node,
        &["get", kind, name, "-o", &format!("jsonpath={{{path}}}")],
        None,
    )
    .unwrap_or_default();
    let mut addresses: Vec<IpAddr> = text
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect();
    addresses.sort();
    addresses
}

/// Whether `web-ha`'s addresses and `echo-ha`'s ingress are exactly `want` (sorted).
fn published_on(node: &Node, want: &[IpAddr]) -> bool {
    status_addresses(node, "pb", "web-ha", ".status.addresses[*]") == want
        && status_addresses(node, "svc", "echo-ha", ".status.loadBalancer.ingress[*].ip") == want
}

/// `web-ha`'s state on `default/<edge>` (`Serving`, `Unhealthy`, `Draining`, ...).
fn edge_state(node: &Node, edge: &str) -> String {
    try_kubectl(
        node,
        &[
            "get",
            "pb",
            "web-ha",
            "-o",
            &format!("jsonpath={{.status.edges[?(@.name==\"default/{edge}\")].state}}"),
        ],
        None,
    )
    .unwrap_or_default()
}

/// Waits until both of [`HA_NAMES`] resolve to exactly `want`; fails with what the DNS server
/// answered, external-dns's and the operator's logs.
async fn both_resolve(node: &Node, dns: &DnsServer, external_dns: &ExternalDns, want: &[IpAddr]) {
    for (name, _) in HA_NAMES {
        if let Err(e) = dns
            .wait_for_addresses(name, want, Duration::from_secs(90))
            .await
        {
            panic!(
                "{e}\nexternal-dns log (end):\n{}\n{}",
                external_dns.log_tail(40),
                node_support::operator_logs(node, OPERATOR_NS)
            );
        }
    }
}

/// A client on the internet resolves each of [`HA_NAMES`] and is answered by the echo pods
/// through every address it gets (a request retried up to twice, as a client would).
fn served_by_name(node: &Node, internet: &Netns, dns: &DnsServer) {
    for (name, port) in HA_NAMES {
        for ip in dns.addresses(name).unwrap() {
            let addr = SocketAddr::from((ip, port));
            let answer = (0..3).find_map(|_| http_get(internet, addr));
            assert!(
                answer.is_some_and(|a| a.contains("hello from echo-")),
                "{name} ({addr}, from DNS) serves: last {:?}\n{}",
                http_attempt(internet, addr),
                node_support::operator_logs(node, OPERATOR_NS)
            );
        }
    }
}

/// Several edges (issue 20) on the real node: a second VPS and EdgeNode `edge-b` (its uplink a
/// real pod), an unmodified external-dns publishing [`WEB_HA`]'s names into a real Knot DNS
/// server; both VPSes (and the first one's IPv6 address) published and serving; the second
/// powered off, out of the statuses and DNS while a client resolving the names is served,
/// back once powered on; then drained under an open connection: out of DNS while it is open,
/// its deletion waits for it, the connection finishes with its answer, and the EdgeNode goes.
/// Leaves Example 1 and 2 and `edge-node` as they were.
#[allow(clippy::too_many_lines)] // one stage, its steps in order
async fn several_edges(node: &Node, internet: &Netns, v6: Ipv6Addr) {
    let operator_logs = || node_support::operator_logs(node, OPERATOR_NS);
    let mut vps_b = node.another_vps(internet, 1).unwrap();
    vps_b
        .wait_ready(internet, Duration::from_secs(120))
        .unwrap();
    let b = vps_b.address();
    node.create_ssh_secret(&vps_b, "vps-b-ssh-secret").unwrap();
    kubectl(
        node,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: edge-b, namespace: default}}\nspec:\n  address: {b}\n  ssh: {{secretRef: {{name: vps-b-ssh-secret}}}}\n"
        )),
    );
    eventually(
        "EdgeNode edge-b Ready",
        LONG,
        || ready_status(node, None, "edgenode", "edge-b").filter(|s| s == "True"),
        operator_logs,
    );
    let names_b = tunnel::workload::UplinkNames::for_node("default", "edge-b");
    let pod_b = format!("{}-0", names_b.workload);
    eventually(
        "edge-b's uplink pod Running and Ready on the node",
        LONG,
        || {
            try_kubectl(
                node,
                &["-n", "tunnel", "get", "pod", &pod_b, "-o", "jsonpath={.status.phase} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status}"],
                None,
            )
            .ok()
            .filter(|s| s == "Running tbnode True")
        },
        operator_logs,
    );

    let dns = DnsServer::start(ZONE).await.unwrap();
    let external_dns = ExternalDns::start_with_kubeconfig(
        &node.kubeconfig_path(),
        &dns,
        &[Source::Service, Source::Crd],
    )
    .await
    .unwrap();
    kubectl(node, &["apply", "-f", "-"], Some(WEB_HA));
    let mut all: Vec<IpAddr> = vec![VPS_IP.into(), v6.into(), b.into()];
    all.sort();
    let mut first_only: Vec<IpAddr> = vec![VPS_IP.into(), v6.into()];
    first_only.sort();
    let statuses = || {
        format!(
            "web-ha: {}\necho-ha: {}\n{}",
            try_kubectl(
                node,
                &["get", "pb", "web-ha", "-o", "jsonpath={.status}"],
                None
            )
            .unwrap_or_default(),
            try_kubectl(
                node,
                &["get", "svc", "echo-ha", "-o", "jsonpath={.status}"],
                None
            )
            .unwrap_or_default(),
            operator_logs()
        )
    };
    eventually(
        "web-ha and echo-ha published on both edges (the first with IPv4 and IPv6)",
        LONG,
        || published_on(node, &all).then_some(()),
        statuses,
    );
    assert_eq!(edge_state(node, "edge-b"), "Serving", "{}", statuses());
    both_resolve(node, &dns, &external_dns, &all).await;
    eventually(
        "an answer through each published address",
        Duration::from_secs(90),
        || {
            HA_NAMES
                .iter()
                .all(|(_, port)| {
                    all.iter()
                        .all(|ip| http_get(internet, SocketAddr::from((*ip, *port))).is_some())
                })
                .then_some(())
        },
        statuses,
    );
    served_by_name(node, internet, &dns);

    // Powered off: the check from outside takes edge-b out, DNS follows, clients resolving
    // the names are served by the first VPS; powered on, it comes back by itself.
    let off = Instant::now();
    vps_b.stop();
    eventually(
        "edge-b out of web-ha's addresses and echo-ha's ingress",
        LONG,
        || published_on(node, &first_only).then_some(()),
        statuses,
    );
    eprintln!(
        "[node e2e] edge-b left the statuses {:.1} s after its VPS was powered off",
        off.elapsed().as_secs_f64()
    );
    assert_eq!(
        edge_state(node, "edge-b"),
        "Unhealthy",
        "the check from outside took it out: {}",
        statuses()
    );
    both_resolve(node, &dns, &external_dns, &first_only).await;
    eprintln!(
        "[node e2e] edge-b left DNS {:.1} s after its VPS was powered off",
        off.elapsed().as_secs_f64()
    );
    served_by_name(node, internet, &dns);
    vps_b.power_on(internet).unwrap();
    let on = Instant::now();
    eventually(
        "edge-b back in web-ha's addresses and echo-ha's ingress",
        LONG,
        || published_on(node, &all).then_some(()),
        statuses,
    );
    both_resolve(node, &dns, &external_dns, &all).await;
    eprintln!(
        "[node e2e] edge-b back in DNS {:.1} s after its VPS was up again",
        on.elapsed().as_secs_f64()
    );
    // Envoy accepts (the check from outside passes) before the uplink's tunnel to the
    // rebooted VPS is up again: its first connections may close unanswered.
    eventually(
        "edge-b answering again through its tunnel",
        Duration::from_secs(90),
        || {
            HA_NAMES
                .iter()
                .all(|(_, port)| http_get(internet, SocketAddr::from((b, *port))).is_some())
                .then_some(())
        },
        statuses,
    );
    eprintln!(
        "[node e2e] edge-b answering again {:.1} s after its VPS was up again",
        on.elapsed().as_secs_f64()
    );
    served_by_name(node, internet, &dns);

    // Drained under a long-lived connection through edge-b (the echo pod answers once the
    // request comes): out of the statuses and DNS while it is open, the deletion waits for it.
    let mut open = in_ns(internet, move || {
        let s = TcpStream::connect_timeout(&(b, 8088).into(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    });
    let drain_at = Instant::now();
    kubectl(
        node,
        &[
            "annotate",
            "edgenode",
            "edge-b",
            "tunnel.achetronic.com/drain=true",
            "tunnel.achetronic.com/drain-timeout=10m",
        ],
        None,
    );
    eventually(
        "edge-b out of the statuses, Draining",
        LONG,
        || {
            (published_on(node, &first_only) && edge_state(node, "edge-b") == "Draining")
                .then_some(())
        },
        statuses,
    );
    let drained = || {
        try_kubectl(
            node,
            &["get", "edgenode", "edge-b", "-o", "jsonpath={.status.conditions[?(@.type==\"Drained\")].status} {.status.conditions[?(@.type==\"Drained\")].reason}: {.status.conditions[?(@.type==\"Drained\")].message}"],
            None,
        )
        .unwrap_or_default()
    };
    // The first count may still see a probe's connection: a drained edge is not probed from
    // that pass on.
    eventually(
        "edge-b's Drained condition counting the one open connection",
        LONG,
        || {
            let now = drained();
            (now.starts_with("False Draining: ") && now.contains("waiting for 1 connection "))
                .then_some(())
        },
        || format!("Drained: {}\n{}", drained(), operator_logs()),
    );
    both_resolve(node, &dns, &external_dns, &first_only).await;
    eprintln!(
        "[node e2e] drained edge-b left DNS {:.1} s after the annotation, its connection open",
        drain_at.elapsed().as_secs_f64()
    );
    kubectl(
        node,
        &["delete", "edgenode", "edge-b", "--wait=false"],
        None,
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        try_kubectl(node, &["get", "edgenode", "edge-b", "-o", "name"], None).is_ok(),
        "the deletion waits for the drained connection\n{}",
        operator_logs()
    );
    let reply = tokio::task::block_in_place(|| {
        open.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = open.read_to_string(&mut out);
        out
    });
    assert!(
        reply.starts_with("HTTP/1.0 200") && reply.contains("hello from echo-"),
        "the open connection finished with its answer: {reply:?}"
    );
    drop(open);
    eventually(
        "EdgeNode edge-b torn down and gone once its connection ended",
        LONG,
        || {
            try_kubectl(node, &["get", "edgenodes", "-o", "name"], None)
                .ok()
                .filter(|l| !l.contains("/edge-b"))
        },
        || format!("Drained: {}\n{}", drained(), operator_logs()),
    );
    eventually(
        "edge-b's uplink StatefulSet and pod gone",
        LONG,
        || {
            try_kubectl(
                node,
                &["-n", "tunnel", "get", "sts,pods", "-o", "name"],
                None,
            )
            .ok()
            .filter(|l| !l.contains(&names_b.workload))
        },
        operator_logs,
    );
    assert!(
        http_get(internet, SocketAddr::from((VPS_IP, 8088))).is_some(),
        "the first VPS serves web-ha throughout"
    );

    kubectl(
        node,
        &["delete", "-f", "-", "--wait=true", "--timeout=60s"],
        Some(WEB_HA),
    );
    kubectl(node, &["delete", "secret", "vps-b-ssh-secret"], None);
    both_resolve(node, &dns, &external_dns, &[]).await;
    eventually(
        "web-ha's and echo-ha's ports closed on the first VPS",
        Duration::from_secs(60),
        || {
            HA_NAMES
                .iter()
                .all(|(_, port)| http_get(internet, SocketAddr::from((VPS_IP, *port))).is_none())
                .then_some(())
        },
        operator_logs,
    );
    drop(external_dns);
    drop(dns);
    drop(vps_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_system_runs_on_a_real_node_driven_by_kubectl_and_helm() {
    let started = Instant::now();
    let stage = |name: &str| {
        eprintln!(
            "[node e2e {:>5.1}s] {name}",
            started.elapsed().as_secs_f64()
        );
    };
    let bins = testbed::tools::agent_binary("tunnel").unwrap();
    let bin_dir = bins.parent().unwrap();
    let node = Node::start(&images::test_only(bin_dir).unwrap())
        .await
        .unwrap();
    stage("node Ready");

    // 0. The README's first command: `deploy/images.sh` builds the operator and uplink images
    // with no container engine (the project's OCI writer, `--builder oci`) and loads them
    // where the cluster's runtime finds them: here the node's containerd (`--load containerd`
    // with CONTAINERD_ADDRESS; the README's `--load k3s` is the same import through k3s's
    // ctr). The binaries are this build's debug ones (`--bin-dir`, `--debug`; a release build
    // would cost the run a second compile), Envoy the test bed's. Whatever an earlier run left
    // under those names is removed first: the pods below can only run what the script loaded.
    node.remove_images(&[images::OPERATOR, images::UPLINK])
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let script = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/images.sh"))
        .args(["--load", "containerd", "--builder", "oci", "--debug"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--envoy")
        .arg(testbed::tools::envoy().unwrap())
        .arg("--out")
        .arg(out_dir.path())
        .env("CONTAINERD_ADDRESS", node.containerd_address())
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "deploy/images.sh: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    let loaded = node.image_names().unwrap();
    for image in [images::OPERATOR, images::UPLINK] {
        assert!(
            loaded.iter().any(|l| l == image),
            "{image} loaded: {loaded:?}"
        );
    }
    stage("images built and loaded by deploy/images.sh");

    // The "internet": a namespace routed from the host, the VPS behind it.
    let (internet, vps) = node.internet_with_vps().unwrap();

    // Gateway API's Standard-channel CRDs, installed before the operator as
    // docs/gateway-api.md says (it looks for them when it starts).
    let (gateway_crds, _) = testbed::tools::gateway_api_crds().unwrap();
    kubectl(
        &node,
        &[
            "apply",
            "--server-side",
            "-f",
            gateway_crds.to_str().unwrap(),
        ],
        None,
    );

    // 1. helm install: the operator pod Running and Ready under its ServiceAccount (the
    // README's command, word for word; the README does not wait, the test does, to go on).
    helm_install_chart(&node);
    let operator_logs = || node_support::operator_logs(&node, OPERATOR_NS);
    stage("helm install");
    let pod = operator_pods(&node, "{.items[0].spec.serviceAccountName} {.items[0].status.phase} {.items[0].status.conditions[?(@.type==\"Ready\")].status}").unwrap();
    assert_eq!(pod, "tunnel Running True", "{}", operator_logs());
    let logs = eventually(
        "the operator's log",
        Duration::from_secs(30),
        || {
            try_kubectl(&node, &["-n", OPERATOR_NS, "logs", "deploy/tunnel"], None)
                .ok()
                .filter(|l| !l.trim().is_empty())
        },
        operator_logs,
    );
    assert!(
        logs.contains("INFO") || logs.contains("\"level\""),
        "{logs}"
    );

    // 2. The targets, the SSH Secret, README Examples 1 and 2.
    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&testbed::echo::manifests()),
    );
    kubectl(
        &node,
        &[
            "wait",
            "--for=condition=Available",
            "deploy/echo",
            "-n",
            "default",
            "--timeout=120s",
        ],
        None,
    );
    vps.wait_ready(&internet, Duration::from_secs(120)).unwrap();
    stage("VPS booted, echo available");
    node.create_ssh_secret(&vps, "vps-ssh-secret").unwrap();
    let example1 = fixture("example1").replace("203.0.113.10", &VPS_IP.to_string());
    // Every `Ready` message of the first enrollment, as a watch streams them (none missed).
    let watch = watch_condition(&node, "Ready");
    kubectl(&node, &["apply", "-f", "-"], Some(&example1));
    eventually(
        "EdgeNode edge-node Ready",
        LONG,
        || ready_status(&node, None, "edgenode", "edge-node").filter(|s| s == "True"),
        operator_logs,
    );
    let seen = watched(watch);
    eprintln!("Ready during the first enrollment:\n{seen}");
    for phase in [
        "connecting over SSH",
        "starting the relay, step ",
        "uploading Envoy (",
        "starting Envoy, step ",
    ] {
        assert!(
            seen.lines()
                .any(|l| l.starts_with("Enrolling: enrolling VPS") && l.contains(phase)),
            "the first enrollment says it is {phase:?}:\n{seen}"
        );
    }
    stage("EdgeNode Ready");
    let uplinks = kubectl(
        &node,
        &[
            "-n",
            "tunnel",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=uplink",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(
        uplinks.lines().count() == 1 && uplinks.lines().all(|l| l.ends_with("Running tbnode")),
        "one uplink pod, Running on the node: {uplinks}"
    );
    let public = |port| SocketAddr::from((VPS_IP, port));
    let answer = eventually(
        "HTTP through the VPS's :80",
        Duration::from_secs(60),
        || http_get(&internet, public(80)),
        operator_logs,
    );
    assert!(answer.contains("hello from echo-"), "{answer}");

    kubectl(&node, &["apply", "-f", "-"], Some(&fixture("example2")));
    eventually(
        "PortBinding public-edge Ready",
        LONG,
        || ready_status(&node, None, "pb", "public-edge").filter(|s| s == "True"),
        operator_logs,
    );
    // PortBinding Ready says Envoy serves the ports; the uplink pods get the new forwards when
    // the kubelet refreshes their ConfigMap volume. The operator annotates each uplink pod with
    // the hash of the configuration it should have, so the kubelet syncs the pod (volumes
    // included) at once rather than at its periodic sync (71 s measured before the nudge).
    let names = tunnel::workload::UplinkNames::for_node("default", "edge-node");
    let config = kubectl(
        &node,
        &[
            "-n",
            "tunnel",
            "get",
            "configmap",
            &names.config_map,
            "-o",
            "jsonpath={.data.uplink\\.json}",
        ],
        None,
    );
    let want = tunnel::hash::sha256_hex(config.as_bytes())[..16].to_owned();
    let pod = format!("{}-0", names.workload);
    eventually(
        "the uplink pod annotated with its configuration's hash",
        Duration::from_secs(60),
        || {
            try_kubectl(
                &node,
                &[
                    "-n",
                    "tunnel",
                    "get",
                    "pod",
                    &pod,
                    "-o",
                    "jsonpath={.metadata.annotations.tunnel\\.achetronic\\.com/uplink-config}",
                ],
                None,
            )
            .ok()
            .filter(|got| *got == want)
        },
        operator_logs,
    );
    let ready_at = Instant::now();
    let proxied = eventually(
        "PROXY protocol through :443",
        Duration::from_secs(150),
        || http_get(&internet, public(443)),
        || {
            format!(
                "last: {:?}\n{}",
                http_attempt(&internet, public(443)),
                operator_logs()
            )
        },
    );
    eprintln!(
        "[node e2e] Example 2's first answer {:.1} s after its PortBinding was Ready",
        ready_at.elapsed().as_secs_f64()
    );
    assert!(
        proxied.contains(&format!("PROXY TCP4 {INTERNET_IP} {VPS_IP} ")),
        "the ingress sees the client's real address: {proxied}"
    );
    let udp = eventually(
        "UDP through :53",
        Duration::from_secs(60),
        || udp_ask(&internet, public(53), b"ping"),
        operator_logs,
    );
    assert!(
        udp.starts_with("hello from echo-") && udp.ends_with(": ping"),
        "{udp}"
    );
    stage("Examples 1 and 2 served over TCP and UDP");

    // 4a. IPv6 at the edge (issue 20): the EdgeNode lists the VPS's IPv4 and IPv6 addresses;
    // a client on the internet reaches Examples 1 and 2 over the VPS's IPv6 address (TCP,
    // PROXY protocol naming the client's IPv6 address, UDP), and still over IPv4.
    let v6 = vps.address6();
    kubectl(
        &node,
        &[
            "patch",
            "edgenode",
            "edge-node",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"publicAddresses":["{VPS_IP}","{v6}"]}}}}"#),
        ],
        None,
    );
    let public6 = |port| SocketAddr::from((v6, port));
    let answer = eventually(
        "HTTP through the VPS's IPv6 :80",
        Duration::from_secs(120),
        || http_get(&internet, public6(80)),
        || {
            format!(
                "last: {:?}\n{}",
                http_attempt(&internet, public6(80)),
                operator_logs()
            )
        },
    );
    assert!(answer.contains("hello from echo-"), "{answer}");
    let proxied6 = eventually(
        "PROXY protocol through the IPv6 :443",
        Duration::from_secs(60),
        || http_get(&internet, public6(443)),
        operator_logs,
    );
    assert!(
        proxied6.contains("PROXY TCP6 ") && proxied6.contains(&format!(" {v6} ")),
        "the ingress sees the client's IPv6 address: {proxied6}"
    );
    let udp6 = eventually(
        "UDP through the IPv6 :53",
        Duration::from_secs(60),
        || udp_ask(&internet, public6(53), b"ping6"),
        operator_logs,
    );
    assert!(udp6.ends_with(": ping6"), "{udp6}");
    assert!(
        http_get(&internet, public(80)).is_some(),
        "IPv4 still served"
    );
    stage("Examples 1 and 2 served over IPv6 too");

    // 4b. A Service of type LoadBalancer of our class (issue 18), served by the same
    // EdgeNode: `kubectl get svc` shows the VPS's address, TCP and UDP reach the echo pods.
    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo-lb\n  namespace: default\n  annotations: {{tunnel.achetronic.com/edge-node: edge-node}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: {}\n  selector: {{app: echo}}\n  ports:\n  - {{name: http, port: 8088, targetPort: 8080, protocol: TCP}}\n  - {{name: dns, port: 5354, targetPort: 5353, protocol: UDP}}\n",
            tunnel::plan::load_balancer::CLASS
        )),
    );
    let external = eventually(
        "kubectl get svc echo-lb shows the VPS's address",
        LONG,
        || {
            try_kubectl(
                &node,
                &["get", "svc", "echo-lb", "--no-headers", "-o", "custom-columns=IP:.status.loadBalancer.ingress[0].ip,MODE:.status.loadBalancer.ingress[0].ipMode"],
                None,
            )
            .ok()
            .filter(|l| l.starts_with(&VPS_IP.to_string()))
        },
        operator_logs,
    );
    assert_eq!(
        external.split_whitespace().nth(1),
        Some("Proxy"),
        "{external}"
    );
    let table = kubectl(&node, &["get", "svc", "echo-lb", "--no-headers"], None);
    // The EdgeNode lists its IPv6 address since the stage above: both are the Service's.
    assert!(
        table.split_whitespace().nth(3) == Some(&*format!("{VPS_IP},{v6}")),
        "the EXTERNAL-IP column (both public addresses of the EdgeNode): {table}"
    );
    let answer = eventually(
        "HTTP through the VPS's :8088 (the LoadBalancer Service)",
        Duration::from_secs(90),
        || http_get(&internet, public(8088)),
        operator_logs,
    );
    assert!(answer.contains("hello from echo-"), "{answer}");
    let udp = eventually(
        "UDP through :5354 (the LoadBalancer Service)",
        Duration::from_secs(60),
        || udp_ask(&internet, public(5354), b"ping"),
        operator_logs,
    );
    assert!(udp.ends_with(": ping"), "{udp}");
    kubectl(
        &node,
        &["delete", "svc", "echo-lb", "--wait=true", "--timeout=60s"],
        None,
    );
    eventually(
        "the LoadBalancer Service's port closed",
        Duration::from_secs(60),
        || http_get(&internet, public(8088)).is_none().then_some(()),
        operator_logs,
    );
    stage("a LoadBalancer Service served, shown by kubectl, deleted");

    // 4c. Gateway API (issue 19): a GatewayClass of ours naming the EdgeNode, a Gateway with
    // a TCP, a UDP and a TLS passthrough listener, two TLSRoutes on one port by SNI (one to
    // a Service in another namespace, granted there by Gateway API's ReferenceGrant).
    kubectl(&node, &["apply", "-f", "-"], Some(GATEWAY_API));
    eventually(
        "kubectl wait: Gateway edge Programmed",
        LONG,
        || {
            try_kubectl(
                &node,
                &[
                    "wait",
                    "--for=condition=Programmed",
                    "gateway/edge",
                    "-n",
                    "default",
                    "--timeout=10s",
                ],
                None,
            )
            .ok()
        },
        operator_logs,
    );
    let gw = kubectl(
        &node,
        &[
            "get",
            "gateway",
            "edge",
            "-n",
            "default",
            "-o",
            "jsonpath={.status.addresses[0].value} {.status.listeners[*].attachedRoutes}",
        ],
        None,
    );
    assert_eq!(gw, format!("{VPS_IP} 1 1 2"), "address and attached routes");
    assert_eq!(
        kubectl(
            &node,
            &[
                "get",
                "gatewayclass",
                "tunnel",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}"
            ],
            None
        ),
        "True"
    );
    for route in [
        "tcproute/echo",
        "udproute/echo",
        "tlsroute/one",
        "tlsroute/two",
    ] {
        let parent = kubectl(
            &node,
            &[
                "get",
                route,
                "-n",
                "default",
                "-o",
                "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status} {.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].status}",
            ],
            None,
        );
        assert_eq!(parent, "True True", "{route}");
    }
    let answer = eventually(
        "HTTP through the Gateway's TCP listener :7100",
        Duration::from_secs(90),
        || http_get(&internet, public(7100)),
        operator_logs,
    );
    assert!(answer.contains("hello from echo-"), "{answer}");
    let udp = eventually(
        "UDP through the Gateway's UDP listener :7101",
        Duration::from_secs(60),
        || udp_ask(&internet, public(7101), b"ping"),
        operator_logs,
    );
    assert!(udp.ends_with(": ping"), "{udp}");
    let pods_of = |ns: &str| {
        kubectl(
            &node,
            &[
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                "app=echo",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
    };
    let (default_pods, networking_pods) = (pods_of("default"), pods_of("networking"));
    let answered_by = |reply: &str, pods: &str| {
        pods.split_whitespace()
            .any(|p| reply.contains(&format!("hello from {p}")))
    };
    let one = eventually(
        "SNI one.example.test through :7443",
        Duration::from_secs(60),
        || sni_ask(&internet, public(7443), "one.example.test"),
        operator_logs,
    );
    assert!(
        answered_by(&one, &default_pods),
        "one.example.test reaches default's echo pods: {one}"
    );
    let two = eventually(
        "SNI two.example.test through :7443",
        Duration::from_secs(60),
        || sni_ask(&internet, public(7443), "two.example.test"),
        operator_logs,
    );
    assert!(
        answered_by(&two, &networking_pods),
        "two.example.test reaches networking's echo pod: {two}"
    );
    // Deleting a route closes its path only.
    kubectl(&node, &["delete", "tlsroute", "two", "-n", "default"], None);
    eventually(
        "SNI two.example.test closed",
        Duration::from_secs(60),
        || {
            sni_ask(&internet, public(7443), "two.example.test")
                .is_none()
                .then_some(())
        },
        operator_logs,
    );
    // The other name is served on (new connections, once Envoy took the new listener).
    eventually(
        "SNI one.example.test still served",
        Duration::from_secs(30),
        || {
            sni_ask(&internet, public(7443), "one.example.test")
                .filter(|r| answered_by(r, &default_pods))
        },
        operator_logs,
    );
    kubectl(
        &node,
        &["delete", "-f", "-", "--ignore-not-found"],
        Some(GATEWAY_API),
    );
    eventually(
        "the Gateway's ports closed",
        Duration::from_secs(60),
        || http_get(&internet, public(7100)).is_none().then_some(()),
        operator_logs,
    );
    stage("a Gateway with TCP, UDP and TLS routes served, a route deleted");

    // 4d. Several edges (issue 20): a second VPS, DNS by external-dns, one VPS powered off, a
    // drain.
    several_edges(&node, &internet, v6).await;
    stage("several edges: a second VPS, DNS by external-dns, one VPS powered off, a drain");

    // 5. A user's mistake, as a failing pass: an EdgeNode whose SSH Secret does not exist
    // says so, and counts in tunnel_errors_total (what the dashboard's "Errors by category"
    // and the TunnelReconcileErrors alert read).
    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: no-secret\n  namespace: default\nspec:\n  address: {INTERNET_IP}\n  ssh:\n    secretRef:\n      name: missing-ssh-secret\n"
        )),
    );
    eventually(
        "EdgeNode no-secret says its SSH Secret is missing",
        Duration::from_secs(60),
        || {
            try_kubectl(
                &node,
                &[
                    "get",
                    "edgenode",
                    "no-secret",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
                ],
                None,
            )
            .ok()
            .filter(|r| r == "SSHSecretNotFound")
        },
        operator_logs,
    );

    // 6. The chart's dashboard and alerts against a real Prometheus (Debian's package) after
    // the traffic above. It scrapes what the chart's monitors select: the operator's metrics
    // port over HTTPS, authenticated with the token of a ServiceAccount bound to the chart's
    // metrics-reader ClusterRole (as the ServiceMonitor's scraper), the certificate verified
    // (the operator's own, for its pod's name); and Envoy's stats through the uplink pod, as
    // the PodMonitor does (label app.kubernetes.io/name=uplink, port 40600,
    // /stats/prometheus, the pod's namespace as `namespace`). Debian's build has no
    // Kubernetes service discovery (building one cost the cold set-up 7 minutes), so the pods
    // are static targets. Every panel's query returns series, and every alert is loaded,
    // evaluated without error, and each series it reads exists.
    let uplink_ip = kubectl(
        &node,
        &[
            "-n",
            "tunnel",
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    );
    let operator_pod =
        operator_pods(&node, "{.items[0].metadata.name} {.items[0].status.podIP}").unwrap();
    let (operator_name, operator_ip) = operator_pod.split_once(' ').unwrap();
    kubectl(
        &node,
        &["-n", OPERATOR_NS, "create", "serviceaccount", "scraper"],
        None,
    );
    kubectl(
        &node,
        &[
            "create",
            "clusterrolebinding",
            "tunnel-scraper",
            "--clusterrole=tunnel-metrics-reader",
            &format!("--serviceaccount={OPERATOR_NS}:scraper"),
        ],
        None,
    );
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(
        &token,
        kubectl(
            &node,
            &["-n", OPERATOR_NS, "create", "token", "scraper"],
            None,
        )
        .trim(),
    )
    .unwrap();
    let served = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("{operator_ip}:8443")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&served.stdout);
    let cert = served
        .find("-----BEGIN CERTIFICATE-----")
        .and_then(|a| {
            let end = "-----END CERTIFICATE-----";
            served[a..].find(end).map(|b| &served[a..a + b + end.len()])
        })
        .unwrap_or_else(|| panic!("the operator's certificate: {served}"));
    let ca = secrets.path().join("operator.crt");
    std::fs::write(&ca, format!("{cert}\n")).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let prometheus = testbed::prometheus::Prometheus::start(
        &format!(
            r#"  - job_name: tunnel-operator
    scheme: https
    authorization: {{credentials_file: "{}"}}
    tls_config: {{ca_file: "{}", server_name: "{operator_name}"}}
    static_configs:
      - targets: ["{operator_ip}:8443"]
        labels: {{namespace: {OPERATOR_NS}}}
  - job_name: uplink-envoy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: ["{uplink_ip}:40600"]
        labels: {{namespace: tunnel}}
"#,
            token.display(),
            ca.display()
        ),
        &[repo.join(testbed::promql::RULES)],
    )
    .unwrap();
    let series = eventually(
        "Prometheus to scrape Envoy's listener counters through the uplink pod",
        Duration::from_secs(90),
        || {
            let on_80: Vec<_> = prometheus
                .query("envoy_listener_downstream_cx_total")?
                .into_iter()
                .filter(|r| {
                    r["metric"].as_object().is_some_and(|m| {
                        m.values()
                            .any(|l| l.as_str().is_some_and(|s| s.ends_with("_80")))
                    }) && r["value"][1]
                        .as_str()
                        .and_then(|n| n.parse::<f64>().ok())
                        .unwrap_or(0.0)
                        > 0.0
                })
                .collect();
            (!on_80.is_empty()).then_some(on_80)
        },
        || prometheus.describe(),
    );
    eprintln!("Prometheus: {series:?}");
    assert!(
        series
            .iter()
            .all(|s| s["metric"]["instance"] == format!("{uplink_ip}:40600").as_str()),
        "scraped from the uplink pod {uplink_ip}:40600: {series:?}"
    );
    stage("Prometheus scrapes Envoy through an uplink pod");

    let (panels, alerts) = (
        testbed::promql::panels(repo).unwrap(),
        testbed::promql::alerts(repo).unwrap(),
    );
    let empty = |queries: &[String]| -> Vec<String> {
        queries
            .iter()
            .filter(|q| prometheus.query(q).is_none_or(|r| r.is_empty()))
            .cloned()
            .collect()
    };
    let mut wanted: Vec<String> = panels.iter().map(|p| p.expr.clone()).collect();
    for alert in &alerts {
        wanted.extend(testbed::promql::selectors(&alert.expr).unwrap());
    }
    // rate() needs two samples in its window; the first scrapes are a few seconds old.
    let missing = eventually(
        "every panel's query and every series an alert reads to return series",
        Duration::from_secs(60),
        || {
            let missing = empty(&wanted);
            missing.is_empty().then_some(missing)
        },
        || format!("empty: {:#?}\n{}", empty(&wanted), prometheus.describe()),
    );
    assert!(missing.is_empty());
    let rules = eventually(
        "Prometheus to evaluate every alert",
        Duration::from_secs(30),
        || {
            let rules = prometheus.rules();
            (rules.len() == alerts.len() && rules.iter().all(|r| r["health"] == "ok"))
                .then_some(rules)
        },
        || format!("rules: {:#?}", prometheus.rules()),
    );
    assert!(
        rules
            .iter()
            .all(|r| r["lastError"].as_str().unwrap_or_default().is_empty()),
        "{rules:#?}"
    );
    drop(prometheus);
    stage("the dashboard's queries and the alerts against a real Prometheus");

    kubectl(
        &node,
        &[
            "annotate",
            "edgenode",
            "no-secret",
            &format!("{}=true", tunnel::crd::ANNOTATION_SKIP_DEPROVISION),
        ],
        None,
    );
    kubectl(
        &node,
        &[
            "delete",
            "edgenode",
            "no-secret",
            "--wait=true",
            "--timeout=90s",
        ],
        None,
    );
    kubectl(
        &node,
        &["delete", "clusterrolebinding", "tunnel-scraper"],
        None,
    );

    // 3. What a user looks at.
    let table = kubectl(&node, &["get", "en,pb", "-o", "wide"], None);
    let en_row = table
        .lines()
        .find(|l| l.starts_with("edgenode.tunnel.achetronic.com/edge-node"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        en_row.contains(&VPS_IP.to_string()) && en_row.contains("True"),
        "{table}"
    );
    let pb_row = table
        .lines()
        .find(|l| l.starts_with("portbinding.tunnel.achetronic.com/public-edge"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        pb_row.contains("443/TCP") && pb_row.contains("53/UDP"),
        "{table}"
    );
    let explain = kubectl(&node, &["explain", "edgenode.spec.tunnel"], None);
    assert!(
        explain.contains("FIELDS") || explain.contains("DESCRIPTION"),
        "{explain}"
    );
    let describe = kubectl(&node, &["describe", "edgenode", "edge-node"], None);
    let events = describe.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("Normal") && !events.trim().starts_with("<none>"),
        "{describe}"
    );
    stage("kubectl get/explain/describe");

    // 4. Restart Envoy by annotation: Envoy restarts on the VPS (a new main PID), the
    // annotation disappears, traffic resumes.
    let envoy_pid = || {
        let out = vps
            .ssh(&internet, "systemctl show -p MainPID --value tunnel-envoy")
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let pid_before = envoy_pid();
    assert!(
        pid_before != "0" && !pid_before.is_empty(),
        "Envoy runs: {pid_before:?}"
    );
    kubectl(
        &node,
        &[
            "annotate",
            "edgenode",
            "edge-node",
            "tunnel.achetronic.com/restart-envoy=true",
        ],
        None,
    );
    eventually(
        "the restart-envoy annotation to be removed",
        LONG,
        || {
            try_kubectl(
                &node,
                &[
                    "get",
                    "edgenode",
                    "edge-node",
                    "-o",
                    "jsonpath={.metadata.annotations}",
                ],
                None,
            )
            .ok()
            .filter(|a| !a.contains("restart-envoy"))
        },
        operator_logs,
    );
    eventually(
        "HTTP through :80 after the Envoy restart",
        Duration::from_secs(60),
        || http_get(&internet, public(80)),
        operator_logs,
    );
    let pid_after = envoy_pid();
    assert!(
        pid_after != pid_before && pid_after != "0",
        "Envoy restarted: {pid_before} -> {pid_after}"
    );
    stage("restart-envoy");

    // 6. Two replicas on this one node (issue 25). The strict form (a required anti-affinity,
    // given explicitly) keeps the second replica Pending, and the EdgeNode names it with the
    // scheduler's reason; the default (preferred) runs both. Dropping the strict form is also
    // the rollout that cannot finish by itself: the second pod, recreated from the new
    // template, is kept off the node by the first pod's old required anti-affinity, and the
    // operator deletes that pod, then the second one, which the scheduler would not look at
    // again for minutes (Events `UplinkRolloutUnblocked`, `UplinkPodRescheduled`).
    let uplink_uid = |node: &Node| {
        try_kubectl(
            node,
            &["-n", "tunnel", "get", "pods", "-l", "app.kubernetes.io/name=uplink", "-o",
              "jsonpath={range .items[*]}{.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"],
            None,
        )
        .unwrap_or_default()
    };
    let patch_uplink = |uplink: &str| {
        kubectl(
            &node,
            &[
                "patch",
                "edgenode",
                "edge-node",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"uplink":{uplink}}}}}"#),
            ],
            None,
        )
    };
    let first = uplink_uid(&node);
    patch_uplink(
        r#"{"affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"uplink"}}}]}}}"#,
    );
    eventually(
        "the uplink pod replaced with the strict anti-affinity",
        LONG,
        || {
            let now = uplink_uid(&node);
            (now != first && now.lines().count() == 1 && now.trim_end().ends_with(" True"))
                .then_some(())
        },
        operator_logs,
    );
    patch_uplink(r#"{"replicas":2}"#);
    let uplinks_ready = || {
        try_kubectl(
            &node,
            &[
                "get",
                "edgenode",
                "edge-node",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"UplinksReady\")].status} {.status.conditions[?(@.type==\"UplinksReady\")].message}",
            ],
            None,
        )
        .unwrap_or_default()
    };
    let pending = eventually(
        "UplinksReady naming the Pending replica with the scheduler's reason",
        LONG,
        || {
            let now = uplinks_ready();
            (now.starts_with("False 1/2 uplinks are up")
                && now.contains("-1 is Pending, the scheduler says: 0/1 nodes are available")
                && now.contains("anti-affinity"))
            .then_some(now)
        },
        || format!("UplinksReady: {}\n{}", uplinks_ready(), operator_logs()),
    );
    eprintln!("UplinksReady: {pending}");
    stage("a Pending replica named with the scheduler's reason");
    let watch = watch_condition(&node, "UplinksReady");
    patch_uplink(r#"{"affinity":null}"#);
    eventually(
        "two uplink pods Ready",
        LONG,
        || {
            let now = uplink_uid(&node);
            (now.lines().filter(|l| l.ends_with(" True")).count() == 2).then_some(())
        },
        || format!("UplinksReady: {}\n{}", uplinks_ready(), operator_logs()),
    );
    let events = kubectl(
        &node,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=UplinkRolloutUnblocked",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    );
    assert!(
        events.contains("its required anti-affinity (an old revision)"),
        "the operator unblocked the rollout: {events:?}"
    );
    // The pod the operator deleted ran and had a fresh handshake (which stays fresh for
    // minutes): while it was gone or being replaced, it was not counted.
    let seen = watched(watch);
    eprintln!("UplinksReady while the rollout was freed:\n{seen}");
    assert!(
        seen.lines().any(|l| {
            l.starts_with("UplinksNotReady: ")
                && !l.contains(" 2/2 uplinks")
                && ["is being deleted", "does not exist", "is Pending"]
                    .iter()
                    .any(|why| l.contains(&format!("uplink 0: pod {}-0 {why}", names.workload)))
        }),
        "uplink 0 not counted while its pod was replaced:\n{seen}"
    );
    stage("two replicas on one node, the blocked rollout freed");
    // Both tunnels up: the EdgeNode has seen this generation, is Ready with two uplinks, and
    // both pods stay Ready and traffic flows for ten checks in a row.
    let mut streak = 0;
    eventually(
        "EdgeNode Ready with both uplinks, steadily",
        LONG,
        || {
            let status = try_kubectl(
                &node,
                &["get", "edgenode", "edge-node", "-o", "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type==\"Ready\")].status} {.status.uplink[*].ordinal}"],
                None,
            )
            .unwrap_or_default();
            let f: Vec<&str> = status.split_whitespace().collect();
            let good = f.len() == 5
                && f[0] == f[1]
                && f[2] == "True"
                && uplink_uid(&node)
                    .lines()
                    .filter(|l| l.ends_with(" True"))
                    .count()
                    == 2
                && http_get(&internet, public(80)).is_some();
            streak = if good { streak + 1 } else { 0 };
            (streak >= 10).then_some(())
        },
        operator_logs,
    );
    let victim = kubectl(
        &node,
        &[
            "-n",
            "tunnel",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=uplink",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    let uid = |node: &Node| {
        try_kubectl(
            node,
            &[
                "-n",
                "tunnel",
                "get",
                "pod",
                &victim,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
    };
    let before = uid(&node).unwrap();
    // What UplinksReady says while the pod is replaced (the StatefulSet's pod counts reach
    // the EdgeNode's pass at once, not at the drift pass).
    let watch = watch_condition(&node, "UplinksReady");
    kubectl(
        &node,
        &["-n", "tunnel", "delete", "pod", &victim, "--wait=false"],
        None,
    );
    // Served throughout: each of the next requests is answered (retried up to twice, as a
    // client would, for a connection cut while Envoy ejects the drained replica). A count of
    // requests, 200 ms apart, however long each takes on this machine.
    for _ in 0..60 {
        let ok = (0..3).find_map(|_| http_get(&internet, public(80)));
        assert!(
            ok.is_some(),
            "a request failed 3 times while {victim} was replaced (last: {:?})\n{}",
            http_attempt(&internet, public(80)),
            operator_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually(
        "the deleted uplink pod to come back Ready",
        LONG,
        || {
            let now = uid(&node).ok()?;
            let ready = ready_status(&node, Some("tunnel"), "pod", &victim)?;
            (now != before && ready == "True").then_some(())
        },
        operator_logs,
    );
    eventually(
        "UplinksReady True again with both uplinks",
        LONG,
        || {
            try_kubectl(
                &node,
                &[
                    "get",
                    "edgenode",
                    "edge-node",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"UplinksReady\")].message}",
                ],
                None,
            )
            .ok()
            .filter(|m| m.starts_with("2/2 uplinks are up"))
        },
        operator_logs,
    );
    let seen = watched(watch);
    eprintln!("UplinksReady while {victim} was replaced:\n{seen}");
    assert!(
        seen.lines()
            .any(|l| l.starts_with("UplinksNotReady: 1/2 uplinks are up")
                && l.contains(&format!("pod {victim} "))),
        "UplinksReady said the deleted pod was not up while it was replaced:\n{seen}"
    );
    stage("uplink pod replaced under traffic");

    // For the docs: the operator pod's peak memory as its cgroup (v1) counts it.
    let operator_uid = operator_pods(&node, "{.items[0].metadata.uid}").unwrap();
    let peak = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/kubepods/burstable/pod{operator_uid}/memory.max_usage_in_bytes"
    ))
    .unwrap_or_default();
    eprintln!("operator pod peak memory: {} bytes", peak.trim());

    // 7. Delete the EdgeNode: the VPS is torn down, the uplink objects go.
    kubectl(&node, &["delete", "pb", "--all"], None);
    kubectl(
        &node,
        &["delete", "edgenode", "edge-node", "--timeout=180s"],
        None,
    );
    eventually(
        "the uplink StatefulSet to be gone",
        LONG,
        || {
            try_kubectl(&node, &["-n", "tunnel", "get", "sts", "-o", "name"], None)
                .ok()
                .filter(|s| s.trim().is_empty())
        },
        operator_logs,
    );
    let left = vps
        .ssh(
            &internet,
            "ls -d /etc/tunnel /etc/envoy /usr/local/bin/tunnelctl 2>/dev/null; systemctl is-active tunnel-envoy tunnel-relay; true",
        )
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["inactive", "inactive"],
        "the VPS is torn down: no files, no units running"
    );
    assert!(
        http_get(&internet, public(80)).is_none(),
        "the VPS no longer serves :80"
    );

    let helm = node
        .helm()
        .unwrap()
        .args(["uninstall", "tunnel", "--namespace", OPERATOR_NS, "--wait"])
        .output()
        .unwrap();
    assert!(
        helm.status.success(),
        "{}",
        String::from_utf8_lossy(&helm.stderr)
    );
    eventually(
        "the operator pod to be gone",
        Duration::from_secs(60),
        || {
            try_kubectl(
                &node,
                &[
                    "-n",
                    OPERATOR_NS,
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/name=tunnel",
                    "-o",
                    "name",
                ],
                None,
            )
            .ok()
            .filter(|s| s.trim().is_empty())
        },
        operator_logs,
    );
    let crds = kubectl(&node, &["get", "crd", "-o", "name"], None);
    assert!(
        crds.contains("edgenodes.tunnel.achetronic.com"),
        "CRDs kept: {crds}"
    );
    stage("EdgeNode deleted, helm uninstall");
}
