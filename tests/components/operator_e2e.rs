//! The operator end to end, as a user drives it: README Examples 1 and 2 applied (only the
//! address and the Secret pointed at a real nspawn VPS) to a real API server, the `tunnel run`
//! binary reconciling them, the uplink pods run from the objects it wrote, and real clients on
//! the "internet" reaching the targets through the VPS. Then what a user does next: add and
//! remove a binding while a session on another stays open, a port conflict, a reference to a
//! missing EdgeNode and Secret, an operator killed and restarted, restart-envoy, and deletion.
//!
//! One bed (a VPS boot, an API server) carries every step: each step is a function named for
//! the one behaviour it asserts, run in order by the test (a later step starts from the state
//! the earlier ones left, as a user's next action does), and announced on stderr
//! (`operator_e2e step: <name>`) so a failure says which behaviour broke.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use testbed::netns::{Netns, in_ns, until_in};
use testbed::network::tcp_exchange;
use testbed::objects::{apply_yaml, condition, events_of, namespace, ready, service, until_ready};
use testbed::operator::{Operator, OperatorBed};
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;
use tunnel::crd::{EdgeNode, PortBinding};

use crate::operator_support::{
    logs_of, readme_example, run_example1, serve_udp_echo, udp_exchange,
};

const LONG: Duration = Duration::from_secs(180);

/// A PROXY-protocol server: answers `ingress saw <source address>` after the header.
fn serve_proxy_protocol(ns: &Netns, addr: &'static str) {
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() {
                    return;
                }
                let source = header.split_whitespace().nth(2).unwrap_or("-").to_owned();
                let mut s = stream;
                let _ = s.write_all(format!("ingress saw {source}\n").as_bytes());
            });
        }
    });
}

/// A line echo that keeps the connection open.
fn serve_line_echo(ns: &Netns, addr: &'static str) {
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut s = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if s.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// The session kept open on `:7000` across the steps: its two halves.
type Session = (TcpStream, BufReader<TcpStream>);

/// What the steps share: the bed, the operators started so far (the last one runs), the
/// uplink pods, the open session.
/// (Fields drop in order: the session, the uplinks and the operators before the bed.)
struct E2e {
    session: Option<Session>,
    uplinks: Uplinks,
    operators: Vec<Operator>,
    nodes: Api<EdgeNode>,
    pbs: Api<PortBinding>,
    bed: OperatorBed,
    /// Lines of the first operator's log before `newer` was deleted.
    passes_before_delete: usize,
    /// Envoy's main PID on the VPS before the operator was restarted.
    envoy_pid_before: String,
}

/// Runs one step, announced by name.
macro_rules! step {
    ($e2e:expr, $step:ident) => {{
        eprintln!("operator_e2e step: {}", stringify!($step));
        $step($e2e).await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readme_examples_are_served_through_the_running_operator() {
    let e2e = &mut E2e::start().await;
    step!(e2e, example_1_enrolls_the_vps_and_serves_tcp);
    step!(e2e, example_2_carries_the_proxy_header_and_udp);
    step!(e2e, a_session_opens_on_a_binding_of_its_own);
    step!(
        e2e,
        a_port_conflict_names_the_older_binding_and_the_rest_is_served
    );
    step!(e2e, removing_a_binding_closes_its_port_only);
    step!(e2e, missing_edge_node_and_secret_are_reported);
    step!(
        e2e,
        a_restarted_operator_converges_without_changing_anything
    );
    step!(e2e, restart_envoy_restarts_envoy_and_traffic_returns);
    step!(e2e, no_secret_reaches_a_log_or_an_event);
    step!(e2e, deletion_tears_down_the_vps_and_the_uplink_objects);
}

impl E2e {
    /// The bed with two pods, the targets (my-web of Example 1; internal-ingress with PROXY
    /// protocol and a DNS-like UDP echo of Example 2; a long-lived echo for the session), the
    /// operator, README Example 1 with its SSH Secret, and its uplink pods.
    async fn start() -> Self {
        let bed = OperatorBed::example_1(2).await.unwrap();
        let client = bed.client.clone();
        let net = bed.net();
        net.cluster.addr("lo", "10.96.0.20/32").unwrap();
        net.cluster.addr("lo", "10.96.0.30/32").unwrap();
        serve_proxy_protocol(&net.cluster, "10.96.0.20:443");
        serve_udp_echo(&net.cluster, "10.96.0.10:53", "");
        serve_line_echo(&net.cluster, "10.96.0.30:7000");
        namespace(&client, "networking").await.unwrap();
        service(
            &client,
            "networking",
            "internal-ingress",
            "10.96.0.20",
            &[(443, "TCP")],
        )
        .await
        .unwrap();
        service(&client, "default", "echo", "10.96.0.30", &[(7000, "TCP")])
            .await
            .unwrap();
        let (operator, uplinks) = run_example1(&bed).await;
        Self {
            nodes: Api::namespaced(client.clone(), "default"),
            pbs: Api::namespaced(client, "default"),
            bed,
            operators: vec![operator],
            uplinks,
            session: None,
            passes_before_delete: 0,
            envoy_pid_before: String::new(),
        }
    }

    fn operator(&self) -> &Operator {
        self.operators.last().unwrap()
    }

    fn describe(&self) -> String {
        logs_of(self.operator(), &self.uplinks)
    }

    fn internet(&self) -> &Netns {
        &self.bed.net().internet
    }

    fn public(&self) -> std::net::Ipv4Addr {
        self.bed.net().vps.address()
    }

    /// Waits until PortBinding `name`'s `Ready` condition satisfies `want`; the condition.
    async fn binding(
        &self,
        name: &str,
        what: &str,
        want: impl Fn(&(String, String, String)) -> bool,
    ) -> (String, String, String) {
        eventually(
            &format!("PortBinding {name} {what}"),
            LONG,
            async || ready(&self.pbs, name).await.filter(&want),
            || self.describe(),
        )
        .await
    }

    /// Sends `text` on the open session; whether it came back.
    fn echo(&mut self, text: &str) -> bool {
        let (w, r) = self.session.as_mut().expect("the session is open");
        let mut line = String::new();
        w.write_all(text.as_bytes()).is_ok() && r.read_line(&mut line).is_ok() && line == text
    }

    fn envoy_pid(&self) -> String {
        let out = self
            .bed
            .net()
            .vps
            .ssh(
                self.internet(),
                "systemctl show -p MainPID --value tunnel-envoy.service",
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Served: Ready with every condition, the status filled in, the finalizer, the PortBinding
/// Served, and TCP :80 through the VPS.
async fn example_1_enrolls_the_vps_and_serves_tcp(e2e: &mut E2e) {
    let describe = || e2e.describe();
    let node_ready = until_ready(&e2e.nodes, "edge-node", describe).await;
    assert_eq!(node_ready.1, "AllHealthy");
    let node = e2e.nodes.get("edge-node").await.unwrap();
    let st = node.status.clone().unwrap();
    for type_ in ["Enrolled", "ConfigApplied", "UplinksReady"] {
        assert_eq!(
            condition(&st.conditions, type_).unwrap().0,
            "True",
            "{type_}"
        );
    }
    assert_eq!(st.observed_generation, node.metadata.generation);
    assert!(st.public_key.is_some());
    assert_eq!(
        st.uplink.len(),
        1,
        "Example 1 keeps the default of one replica"
    );
    assert_eq!(st.applied_bindings, vec!["default/public-web".to_owned()]);
    assert!(
        node.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tunnel.achetronic.com/teardown".to_owned())
    );
    let pb_ready = until_ready(&e2e.pbs, "public-web", describe).await;
    assert_eq!(pb_ready.1, "Served");
    let pb = e2e.pbs.get("public-web").await.unwrap().status.unwrap();
    assert_eq!(pb.ports.as_deref(), Some("80/TCP"));
    assert_eq!(pb.bindings[0].state, "Served");
    let public = e2e.public();
    assert!(
        until_in(e2e.internet(), move || tcp_exchange(
            (public, 80).into(),
            b"hello\n"
        )
        .is_some_and(|a| a == "my-web: hello\n")),
        "TCP :80 through the VPS\n{}",
        describe()
    );
}

/// Example 2 unchanged: PROXY protocol to a Service in another namespace (the backend sees
/// the client's address), UDP to an IP.
async fn example_2_carries_the_proxy_header_and_udp(e2e: &mut E2e) {
    let example2 = readme_example("example2");
    apply_yaml::<PortBinding>(&e2e.bed.client, &example2[0])
        .await
        .unwrap();
    e2e.binding("public-edge", "Ready=True", |c| c.0 == "True")
        .await;
    let public = e2e.public();
    let client_ip = {
        let [a, b, c, _] = public.octets();
        format!("{a}.{b}.{c}.1")
    };
    let expected = format!("ingress saw {client_ip}\n");
    assert!(
        until_in(e2e.internet(), move || tcp_exchange(
            (public, 443).into(),
            b""
        )
        .is_some_and(|a| a == expected)),
        "PROXY protocol carries the client's address\n{}",
        e2e.describe()
    );
    assert!(
        until_in(e2e.internet(), move || udp_exchange(
            (public, 53).into(),
            b"query"
        )
        .is_some_and(|a| a == b"query")),
        "UDP :53 through the VPS\n{}",
        e2e.describe()
    );
}

/// A long-lived session on a binding of its own, kept open while bindings come and go.
async fn a_session_opens_on_a_binding_of_its_own(e2e: &mut E2e) {
    apply_yaml::<PortBinding>(
        &e2e.bed.client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: session, namespace: default}\nspec:\n  edgeNodeRef: {name: edge-node}\n  bindings:\n  - name: echo\n    protocol: TCP\n    listenPort: 7000\n    target: {service: {name: echo, namespace: default, port: 7000}}\n",
    )
    .await
    .unwrap();
    e2e.binding("session", "Ready=True", |c| c.0 == "True")
        .await;
    let public = e2e.public();
    let session = in_ns(e2e.internet(), move || {
        for _ in 0..60 {
            if let Ok(s) =
                TcpStream::connect_timeout(&(public, 7000).into(), Duration::from_secs(2))
            {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                if w.write_all(b"one\n").is_ok()
                    && r.read_line(&mut line).is_ok()
                    && line == "one\n"
                {
                    return Some((w, r));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    });
    assert!(session.is_some(), "a session on :7000\n{}", e2e.describe());
    e2e.session = session;
}

/// A newer PortBinding that wants port 80 too: the older keeps it, the newer is told who
/// holds it, and its other binding (to the Service port by its name) is served; the session
/// survives a binding being added.
async fn a_port_conflict_names_the_older_binding_and_the_rest_is_served(e2e: &mut E2e) {
    apply_yaml::<PortBinding>(
        &e2e.bed.client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: newer, namespace: default}\nspec:\n  edgeNodeRef: {name: edge-node}\n  bindings:\n  - name: also-http\n    protocol: TCP\n    listenPort: 80\n    target: {service: {name: my-web, namespace: default, port: 8080}}\n  - name: other\n    protocol: TCP\n    listenPort: 8081\n    target: {service: {name: my-web, namespace: default, port: p8080-tcp}}\n",
    )
    .await
    .unwrap();
    let conflict = e2e
        .binding("newer", "to report the conflict", |c| c.1 == "PortConflict")
        .await;
    assert_eq!(conflict.0, "False");
    assert!(
        conflict.2.contains("public-web"),
        "names the winner: {}",
        conflict.2
    );
    let newer = e2e.pbs.get("newer").await.unwrap().status.unwrap();
    assert_eq!(newer.ports.as_deref(), Some("8081/TCP"));
    let public = e2e.public();
    assert!(
        until_in(e2e.internet(), move || tcp_exchange(
            (public, 8081).into(),
            b"x\n"
        )
        .is_some_and(|a| a == "my-web: x\n")),
        "the newer PortBinding's other binding, to a named Service port, is served\n{}",
        e2e.describe()
    );
    assert!(
        e2e.echo("two\n"),
        "the session survives a binding being added"
    );
}

/// Deleting a PortBinding closes its port only: the session and :80 are untouched.
async fn removing_a_binding_closes_its_port_only(e2e: &mut E2e) {
    e2e.passes_before_delete = e2e.operator().log_text().lines().count();
    e2e.pbs
        .delete("newer", &DeleteParams::default())
        .await
        .unwrap();
    let public = e2e.public();
    assert!(
        until_in(e2e.internet(), move || tcp_exchange(
            (public, 8081).into(),
            b"x\n"
        )
        .is_none()),
        "port 8081 closed after its PortBinding was deleted\n{}",
        e2e.describe()
    );
    assert!(
        e2e.echo("three\n"),
        "the session survives a binding being removed"
    );
    assert!(
        in_ns(e2e.internet(), move || tcp_exchange(
            (public, 80).into(),
            b"y\n"
        ))
        .is_some_and(|a| a == "my-web: y\n")
    );
}

/// Bad input admission cannot catch: a missing EdgeNode, a missing SSH Secret; each is told
/// on its own object (and an Event), and the served EdgeNode is not disturbed.
async fn missing_edge_node_and_secret_are_reported(e2e: &mut E2e) {
    let client = &e2e.bed.client;
    apply_yaml::<PortBinding>(
        client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: orphan, namespace: default}\nspec:\n  edgeNodeRef: {name: nope}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: 9000\n    target: {address: 10.96.0.10, port: 8080}\n",
    )
    .await
    .unwrap();
    let orphan = e2e
        .binding("orphan", "to report its missing EdgeNode", |_| true)
        .await;
    assert_eq!(
        (orphan.0.as_str(), orphan.1.as_str()),
        ("False", "EdgeNodeNotFound")
    );
    assert!(orphan.2.contains("default/nope"), "{}", orphan.2);
    apply_yaml::<EdgeNode>(
        client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: no-secret, namespace: default}\nspec:\n  address: 192.0.2.99\n  ssh: {secretRef: {name: not-there}}\n",
    )
    .await
    .unwrap();
    let broken = eventually(
        "EdgeNode no-secret to report its missing Secret",
        LONG,
        async || ready(&e2e.nodes, "no-secret").await,
        || e2e.describe(),
    )
    .await;
    assert_eq!(
        (broken.0.as_str(), broken.1.as_str()),
        ("False", "SSHSecretNotFound")
    );
    assert!(broken.2.contains("default/not-there"), "{}", broken.2);
    let events = events_of(client, "default", "no-secret").await.unwrap();
    assert!(
        events.iter().any(|e| e.starts_with("SSHSecretNotFound")),
        "{events:?}"
    );
    assert!(
        e2e.echo("four\n"),
        "a broken EdgeNode does not disturb the served one"
    );
}

/// The operator killed and started again: it converges without changing the VPS, rewrites no
/// unchanged status, leaves Envoy alone, and the session survives.
async fn a_restarted_operator_converges_without_changing_anything(e2e: &mut E2e) {
    e2e.envoy_pid_before = e2e.envoy_pid();
    // First, the last change is on the VPS: after the deletion, a pass that changed the VPS,
    // then one that found nothing to do. (The uplinks drop port 8081 before the VPS's pass
    // has finished, so the port looking closed does not say that; killed mid-pass, the
    // operator would leave work for the next one.)
    let first = e2e.operator();
    eventually(
        "the deletion applied, then a pass with nothing to do",
        LONG,
        async || {
            let log = first.log_text();
            let mut planned = log
                .lines()
                .skip(e2e.passes_before_delete)
                .filter(|l| l.contains("enrollment pass planned"));
            planned.by_ref().find(|l| !l.contains("steps=0"))?;
            planned.any(|l| l.contains("steps=0")).then_some(())
        },
        || first.log_text(),
    )
    .await;
    let killed = e2e.operators.last_mut().unwrap();
    killed.process.signal("KILL");
    let _ = killed.process.wait_exit(Duration::from_secs(10));
    let versions = async || {
        (
            e2e.nodes
                .get("edge-node")
                .await
                .unwrap()
                .metadata
                .resource_version,
            e2e.pbs
                .get("public-web")
                .await
                .unwrap()
                .metadata
                .resource_version,
        )
    };
    let statuses_before = versions().await;
    let second = e2e
        .bed
        .operator()
        .flags(&["--resync-period", "20s"])
        .start()
        .unwrap();
    eventually(
        "the new operator to finish a pass on edge-node",
        LONG,
        async || {
            second
                .log_text()
                .lines()
                .any(|l| l.contains("enrollment pass planned") && l.contains("steps=0"))
                .then_some(())
        },
        || second.log_text(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = second.log_text();
    assert!(
        !log.contains("enrollment step"),
        "the restarted operator changed the VPS:\n{log}"
    );
    assert_eq!(
        statuses_before,
        versions().await,
        "nothing unchanged was rewritten"
    );
    e2e.operators.push(second);
    assert_eq!(
        e2e.envoy_pid(),
        e2e.envoy_pid_before,
        "Envoy untouched by the new operator"
    );
    assert!(e2e.echo("five\n"), "sessions survive an operator restart");
}

/// restart-envoy: a new Envoy process (sessions through Envoy end with it), the annotation
/// consumed, and traffic served again.
async fn restart_envoy_restarts_envoy_and_traffic_returns(e2e: &mut E2e) {
    e2e.nodes
        .patch(
            "edge-node",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"tunnel.achetronic.com/restart-envoy": "true"}}})),
        )
        .await
        .unwrap();
    eventually(
        "the restart-envoy annotation to be consumed",
        LONG,
        async || {
            let n = e2e.nodes.get("edge-node").await.ok()?;
            (!n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("tunnel.achetronic.com/restart-envoy"))
            .then_some(())
        },
        || e2e.operator().log_text(),
    )
    .await;
    assert_ne!(e2e.envoy_pid_before, e2e.envoy_pid(), "Envoy was restarted");
    let public = e2e.public();
    assert!(
        until_in(e2e.internet(), move || tcp_exchange(
            (public, 80).into(),
            b"z\n"
        )
        .is_some_and(|a| a == "my-web: z\n")),
        "served again after the restart\n{}",
        e2e.operator().log_text()
    );
}

/// No secret reaches a log (of either operator) or an Event of any object the steps used.
async fn no_secret_reaches_a_log_or_an_event(e2e: &mut E2e) {
    let key = e2e.bed.net().vps.client_private_key().unwrap();
    let key_line = key.lines().nth(1).unwrap().to_owned();
    let mut everything: String = e2e.operators.iter().map(Operator::log_text).collect();
    for name in ["edge-node", "public-web", "no-secret", "orphan"] {
        everything.push_str(
            &events_of(&e2e.bed.client, "default", name)
                .await
                .unwrap()
                .join("\n"),
        );
    }
    assert!(
        !everything.contains(&key_line),
        "the SSH private key leaked"
    );
}

/// Deletion: Envoy and the relay stop, everything of ours leaves the VPS, then the uplink
/// objects, then the EdgeNode (a `TornDown` Event).
async fn deletion_tears_down_the_vps_and_the_uplink_objects(e2e: &mut E2e) {
    e2e.session = None;
    e2e.nodes
        .delete("edge-node", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the EdgeNode to be gone",
        LONG,
        async || {
            e2e.nodes
                .get_opt("edge-node")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
        || e2e.operator().log_text(),
    )
    .await;
    let left = e2e
        .bed
        .net()
        .vps
        .ssh(
            e2e.internet(),
            "for p in /etc/envoy /etc/tunnel /usr/local/bin/tunnelctl /usr/local/bin/envoy /etc/systemd/system/tunnel-relay.service /etc/systemd/system/tunnel-envoy.service; do [ -e $p ] && echo $p; done; ip link show wg-relay >/dev/null 2>&1 && echo wg-relay; true",
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "left on the VPS"
    );
    let client = &e2e.bed.client;
    let names = tunnel::workload::UplinkNames::for_node("default", "edge-node");
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), "tunnel");
    assert!(sts.get_opt(&names.workload).await.unwrap().is_none());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "tunnel");
    assert!(secrets.get_opt(&names.keys_secret).await.unwrap().is_none());
    assert!(
        secrets
            .get_opt(&names.vps_key_secret)
            .await
            .unwrap()
            .is_none()
    );
    let torn = events_of(client, "default", "edge-node").await.unwrap();
    assert!(torn.iter().any(|e| e.starts_with("TornDown")), "{torn:?}");
}
