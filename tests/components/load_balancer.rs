//! Services of `type: LoadBalancer` served by an EdgeNode (issue 18), end to end: a real API
//! server, the `tunnel run` binary, README Example 1's EdgeNode on a real nspawn VPS, its
//! uplink pods, and clients on the "internet" reaching the Services' endpoints through the VPS.
//!
//! One bed carries every step, in order (each starts from the state the last one left, as a
//! user's next action does), announced on stderr (`load_balancer step: <name>`):
//! - a Service with a TCP and a UDP port is served on both, its status has the VPS's address
//!   with `ipMode: Proxy` and each port, its condition says so;
//! - `spec.loadBalancerSourceRanges` that leave the client out refuse it at the edge, over TCP
//!   and UDP; ranges that include it serve it again (changed live);
//! - `tunnel.achetronic.com/max-connections: 1`: a second concurrent client is refused at the
//!   edge, and served once the first leaves;
//! - a Service port that conflicts with a PortBinding's port: the older object (the
//!   PortBinding) keeps it, the Service says so in `ports[].error`, its condition and an Event;
//!   its other port is served next to the first Service's;
//! - Services without our class (none, or another's) are left alone;
//! - a port removed from a Service is closed, its other port still served;
//! - a Service whose type changes away from LoadBalancer has its port closed, the status we
//!   wrote cleared and our finalizer removed;
//! - a Service deleted while the operator is down is released by the next operator, which
//!   closes its ports.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use testbed::netns::{Netns, in_ns, until_in};
use testbed::network::{serve_greeting, tcp_exchange};
use testbed::objects::{apply_yaml, events_of, until_ready};
use testbed::operator::{Operator, OperatorBed};
use testbed::uplinks::Uplinks;
use testbed::wait::eventually;
use tunnel::crd::EdgeNode;

use crate::operator_support::{logs_of, run_example1, serve_udp_echo, udp_exchange};

const LONG: Duration = Duration::from_secs(180);
/// Our condition on a Service.
const READY: &str = "tunnel.achetronic.com/Ready";
/// The finalizer on the Services we serve.
const FINALIZER: &str = "tunnel.achetronic.com/load-balancer";

/// A Service of type LoadBalancer: `class` (None: no class), ClusterIP `ip`, `ports`
/// (`name`, port, protocol), extra metadata lines (annotations).
fn lb_yaml(
    name: &str,
    class: Option<&str>,
    ip: &str,
    ports: &[(&str, u16, &str)],
    annotations: &str,
) -> String {
    let class = class.map_or(String::new(), |c| format!("  loadBalancerClass: {c}\n"));
    let ports: String = ports.iter().fold(String::new(), |mut out, (n, p, proto)| {
        let _ = writeln!(out, "  - {{name: {n}, port: {p}, protocol: {proto}}}");
        out
    });
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n{annotations}spec:\n  type: LoadBalancer\n{class}  clusterIP: {ip}\n  allocateLoadBalancerNodePorts: false\n  ports:\n{ports}"
    )
}

const CLASS: &str = "tunnel.achetronic.com/edge-node";
const ON_EDGE_NODE: &str = "  annotations:\n    tunnel.achetronic.com/edge-node: edge-node\n";

/// `game` with `ranges` as its `spec.loadBalancerSourceRanges` (none: the field absent).
fn game(ranges: &[&str]) -> String {
    let yaml = lb_yaml(
        "game",
        Some(CLASS),
        "10.96.0.40",
        &[("game-tcp", 7000, "TCP"), ("game-udp", 7000, "UDP")],
        ON_EDGE_NODE,
    );
    if ranges.is_empty() {
        return yaml;
    }
    yaml.replace(
        "  type: LoadBalancer\n",
        &format!(
            "  type: LoadBalancer\n  loadBalancerSourceRanges: [{}]\n",
            ranges.join(", ")
        ),
    )
}

struct Lb {
    uplinks: Uplinks,
    operators: Vec<Operator>,
    services: Api<Service>,
    bed: OperatorBed,
}

macro_rules! step {
    ($lb:expr, $step:ident) => {{
        eprintln!("load_balancer step: {}", stringify!($step));
        $step($lb).await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_balancer_services_are_served_through_the_vps() {
    let lb = &mut Lb::start().await;
    step!(lb, a_tcp_and_udp_service_is_served_with_the_vps_address);
    step!(lb, source_ranges_refuse_other_clients_at_the_edge);
    step!(lb, a_connection_limit_refuses_the_one_over_it);
    step!(
        lb,
        a_port_conflict_leaves_the_port_to_the_older_port_binding
    );
    step!(lb, services_of_another_class_are_left_alone);
    step!(lb, removing_a_port_closes_that_port_only);
    step!(lb, a_service_that_stops_being_a_load_balancer_is_released);
    step!(lb, a_service_deleted_while_the_operator_is_down_is_released);
}

impl Lb {
    async fn start() -> Self {
        let bed = OperatorBed::example_1(1).await.unwrap();
        let client = bed.client.clone();
        let net = bed.net();
        for ip in ["10.96.0.40/32", "10.96.0.41/32"] {
            net.cluster.addr("lo", ip).unwrap();
        }
        serve_greeting(&net.cluster, "10.96.0.40:7000", b"game-tcp: ").unwrap();
        serve_udp_echo(&net.cluster, "10.96.0.40:7000", "game-udp: ");
        serve_greeting(&net.cluster, "10.96.0.41:7002", b"clash: ").unwrap();
        let (operator, uplinks) = run_example1(&bed).await;
        let lb = Self {
            services: Api::namespaced(client.clone(), "default"),
            bed,
            operators: vec![operator],
            uplinks,
        };
        let nodes: Api<EdgeNode> = Api::namespaced(client, "default");
        until_ready(&nodes, "edge-node", || lb.describe()).await;
        // README Example 1 is served before any Service comes (Envoy's first health checks).
        assert!(
            lb.until_tcp(80, b"y\n", "my-web: y\n"),
            "README Example 1 served\n{}",
            lb.describe()
        );
        lb
    }

    /// Whether TCP `port` of the VPS answers `send` with `want` within the wait.
    fn until_tcp(&self, port: u16, send: &'static [u8], want: &'static str) -> bool {
        let public = self.public();
        until_in(self.internet(), move || {
            tcp_exchange((public, port).into(), send).is_some_and(|a| a == want)
        })
    }

    /// Whether TCP `port` of the VPS is closed (no answer) within the wait.
    fn until_tcp_closed(&self, port: u16) -> bool {
        let public = self.public();
        until_in(self.internet(), move || {
            tcp_exchange((public, port).into(), b"x\n").is_none()
        })
    }

    /// TCP `port` of the VPS's answer to `send`, now.
    fn tcp_now(&self, port: u16, send: &'static [u8]) -> Option<String> {
        let public = self.public();
        in_ns(self.internet(), move || {
            tcp_exchange((public, port).into(), send)
        })
    }

    fn describe(&self) -> String {
        logs_of(self.operators.last().unwrap(), &self.uplinks)
    }

    fn internet(&self) -> &Netns {
        &self.bed.net().internet
    }

    fn public(&self) -> std::net::Ipv4Addr {
        self.bed.net().vps.address()
    }

    /// Waits until Service `name` satisfies `want`; the Service as JSON.
    async fn service(
        &self,
        name: &str,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(
            &format!("Service {name} {what}"),
            LONG,
            async || {
                let svc = self.services.get_opt(name).await.ok()??;
                let value = serde_json::to_value(svc).ok()?;
                want(&value).then_some(value)
            },
            || self.describe(),
        )
        .await
    }
}

/// Our condition of a Service (status, reason, message).
fn condition(svc: &serde_json::Value) -> Option<(String, String, String)> {
    svc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == READY)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

fn finalized(svc: &serde_json::Value) -> bool {
    svc["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn ingress(svc: &serde_json::Value) -> Option<&serde_json::Value> {
    svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .and_then(|i| i.first())
}

async fn a_tcp_and_udp_service_is_served_with_the_vps_address(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    apply_yaml::<Service>(&client, &game(&[])).await.unwrap();
    let public = lb.public();
    let svc = lb
        .service("game", "has the VPS's address", |s| {
            ingress(s).is_some_and(|i| i["ip"] == public.to_string())
        })
        .await;
    let ingress = ingress(&svc).unwrap();
    assert_eq!(ingress["ipMode"], "Proxy", "{svc}");
    assert_eq!(
        ingress["ports"],
        serde_json::json!([{"port": 7000, "protocol": "TCP"}, {"port": 7000, "protocol": "UDP"}]),
        "{svc}"
    );
    let (status, reason, _) = condition(&svc).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Served"));
    assert!(finalized(&svc), "our finalizer is on the Service: {svc}");
    assert!(
        lb.until_tcp(7000, b"hello\n", "game-tcp: hello\n"),
        "TCP 7000 through the VPS\n{}",
        lb.describe()
    );
    assert!(
        until_in(lb.internet(), move || udp_exchange(
            (public, 7000).into(),
            b"ping"
        )
        .is_some_and(|a| a == b"game-udp: ping")),
        "UDP 7000 through the VPS\n{}",
        lb.describe()
    );
}

async fn source_ranges_refuse_other_clients_at_the_edge(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    let public = lb.public();
    // The internet's client is in 10.0.0.0/8 (the VPS's network), never in TEST-NET-1.
    apply_yaml::<Service>(&client, &game(&["192.0.2.0/24"]))
        .await
        .unwrap();
    assert!(
        until_in(lb.internet(), move || {
            tcp_exchange((public, 7000).into(), b"hello\n").is_none_or(|a| a.is_empty())
                && udp_exchange((public, 7000).into(), b"ping").is_none()
        }),
        "a client outside the source ranges is refused at the edge, TCP and UDP\n{}",
        lb.describe()
    );
    assert!(
        lb.tcp_now(80, b"y\n").is_some_and(|a| a == "my-web: y\n"),
        "the PortBinding's port is not restricted"
    );
    apply_yaml::<Service>(&client, &game(&["192.0.2.0/24", "10.0.0.0/8"]))
        .await
        .unwrap();
    assert!(
        until_in(lb.internet(), move || {
            tcp_exchange((public, 7000).into(), b"hello\n")
                .is_some_and(|a| a == "game-tcp: hello\n")
                && udp_exchange((public, 7000).into(), b"ping")
                    .is_some_and(|a| a == b"game-udp: ping")
        }),
        "a client inside the source ranges is served again\n{}",
        lb.describe()
    );
    apply_yaml::<Service>(&client, &game(&[])).await.unwrap();
}

async fn a_connection_limit_refuses_the_one_over_it(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    let public = lb.public();
    let limited = game(&[]).replace(
        "    tunnel.achetronic.com/edge-node: edge-node\n",
        "    tunnel.achetronic.com/edge-node: edge-node\n    tunnel.achetronic.com/max-connections: '1'\n",
    );
    apply_yaml::<Service>(&client, &limited).await.unwrap();
    // Once the limit is on the VPS, one silent client holds the only place (the target answers
    // only after a read) and a second is closed at once, unanswered.
    let holder = eventually(
        "a second client refused while one is connected",
        LONG,
        async || {
            in_ns(lb.internet(), move || {
                let holder =
                    TcpStream::connect_timeout(&(public, 7000).into(), Duration::from_secs(2))
                        .ok()?;
                std::thread::sleep(Duration::from_millis(300));
                let second = tcp_exchange((public, 7000).into(), b"two\n");
                second.is_none_or(|a| a.is_empty()).then_some(holder)
            })
        },
        || lb.describe(),
    )
    .await;
    drop(holder);
    assert!(
        lb.until_tcp(7000, b"three\n", "game-tcp: three\n"),
        "served again once the first client left\n{}",
        lb.describe()
    );
    apply_yaml::<Service>(&client, &game(&[])).await.unwrap();
}

async fn a_port_conflict_leaves_the_port_to_the_older_port_binding(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    // Port 80 is README Example 1's PortBinding's (older); 7002 is free.
    apply_yaml::<Service>(
        &client,
        &lb_yaml(
            "clash",
            Some(CLASS),
            "10.96.0.41",
            &[("http", 80, "TCP"), ("other", 7002, "TCP")],
            ON_EDGE_NODE,
        ),
    )
    .await
    .unwrap();
    let svc = lb
        .service("clash", "reports its port conflict", |s| {
            condition(s).is_some_and(|c| c.1 == "PortConflict")
        })
        .await;
    let (status, _, message) = condition(&svc).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("port \"http\"") && message.contains("PortBinding default/public-web"),
        "the message names the port and the older binding: {message}"
    );
    let ports = &ingress(&svc).expect("its other port is served")["ports"];
    assert_eq!(
        ports,
        &serde_json::json!([{"port": 80, "protocol": "TCP", "error": "PortConflict"},
                            {"port": 7002, "protocol": "TCP"}]),
        "{svc}"
    );
    let public = lb.public();
    assert!(
        lb.until_tcp(7002, b"x\n", "clash: x\n"),
        "the second Service's free port is served\n{}",
        lb.describe()
    );
    let both = in_ns(lb.internet(), move || {
        (
            tcp_exchange((public, 80).into(), b"y\n"),
            tcp_exchange((public, 7000).into(), b"z\n"),
        )
    });
    assert_eq!(
        (both.0.as_deref(), both.1.as_deref()),
        (Some("my-web: y\n"), Some("game-tcp: z\n")),
        "the PortBinding keeps port 80; the first Service is still served"
    );
    let events = eventually(
        "a PortConflict Event on the Service",
        LONG,
        async || {
            let events = events_of(&client, "default", "clash").await.ok()?;
            events
                .iter()
                .any(|e| e.starts_with("PortConflict: "))
                .then_some(events)
        },
        || lb.describe(),
    )
    .await;
    assert!(!events.is_empty());
}

async fn services_of_another_class_are_left_alone(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    for (name, class) in [("classless", None), ("foreign", Some("example.com/other"))] {
        apply_yaml::<Service>(
            &client,
            &lb_yaml(name, class, "", &[("p", 7100, "TCP")], ON_EDGE_NODE)
                .replace("  clusterIP: \n", ""),
        )
        .await
        .unwrap();
    }
    // A change the operator does serve, after them: once a pass ran for it, the operator has
    // seen both (one watch, in order) and left them alone.
    let game_yaml = game(&[]).replace(
        "    tunnel.achetronic.com/edge-node: edge-node\n",
        "    tunnel.achetronic.com/edge-node: edge-node\n    tunnel.achetronic.com/udp-session-timeout: 90s\n",
    );
    apply_yaml::<Service>(&client, &game_yaml).await.unwrap();
    let log_mark = lb.operators.last().unwrap().log_text().lines().count();
    eventually(
        "a pass after the annotation change",
        LONG,
        async || {
            let log = lb.operators.last().unwrap().log_text();
            log.lines()
                .skip(log_mark)
                .any(|l| l.contains("enrollment pass planned"))
                .then_some(())
        },
        || lb.describe(),
    )
    .await;
    for name in ["classless", "foreign"] {
        let svc = serde_json::to_value(lb.services.get(name).await.unwrap()).unwrap();
        assert!(!finalized(&svc), "{name}: no finalizer of ours: {svc}");
        assert!(ingress(&svc).is_none(), "{name}: no address: {svc}");
        assert!(
            condition(&svc).is_none(),
            "{name}: no condition of ours: {svc}"
        );
    }
    let public = lb.public();
    assert!(
        in_ns(lb.internet(), move || tcp_exchange(
            (public, 7100).into(),
            b"x\n"
        ))
        .is_none(),
        "nothing listens for them on the VPS"
    );
}

async fn removing_a_port_closes_that_port_only(lb: &mut Lb) {
    let client = lb.bed.client.clone();
    let tcp_only = lb_yaml(
        "game",
        Some(CLASS),
        "10.96.0.40",
        &[("game-tcp", 7000, "TCP")],
        ON_EDGE_NODE,
    );
    apply_yaml::<Service>(&client, &tcp_only).await.unwrap();
    let public = lb.public();
    assert!(
        until_in(lb.internet(), move || udp_exchange(
            (public, 7000).into(),
            b"ping"
        )
        .is_none()),
        "UDP 7000 closed once the Service lost that port\n{}",
        lb.describe()
    );
    let svc = lb
        .service("game", "lists its one port", |s| {
            ingress(s).is_some_and(|i| i["ports"].as_array().is_some_and(|p| p.len() == 1))
        })
        .await;
    assert_eq!(
        ingress(&svc).unwrap()["ports"],
        serde_json::json!([{"port": 7000, "protocol": "TCP"}])
    );
    assert!(
        lb.tcp_now(7000, b"q\n")
            .is_some_and(|a| a == "game-tcp: q\n"),
        "TCP 7000 still served"
    );
}

async fn a_service_that_stops_being_a_load_balancer_is_released(lb: &mut Lb) {
    // The type goes back to ClusterIP (the API server drops the class with it).
    let patch = serde_json::json!({
        "spec": {"type": "ClusterIP", "loadBalancerClass": null, "allocateLoadBalancerNodePorts": null}
    });
    lb.services
        .patch("clash", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let svc = lb
        .service("clash", "released", |s| {
            !finalized(s) && ingress(s).is_none() && condition(s).is_none()
        })
        .await;
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(
        lb.until_tcp_closed(7002),
        "its port is closed on the VPS\n{}",
        lb.describe()
    );
    assert!(
        lb.tcp_now(7000, b"z\n")
            .is_some_and(|a| a == "game-tcp: z\n"),
        "the other Service is still served"
    );
}

async fn a_service_deleted_while_the_operator_is_down_is_released(lb: &mut Lb) {
    let down = lb.operators.last_mut().unwrap();
    down.process.signal("KILL");
    let _ = down.process.wait_exit(Duration::from_secs(10));
    lb.services
        .delete("game", &DeleteParams::default())
        .await
        .unwrap();
    // Held by our finalizer until an operator closes its ports.
    let held = lb.services.get("game").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let operator = lb
        .bed
        .operator()
        .name("operator-2")
        .flags(&["--resync-period", "20s"])
        .start()
        .unwrap();
    lb.operators.push(operator);
    eventually(
        "the deleted Service is released and gone",
        LONG,
        async || {
            lb.services
                .get_opt("game")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
        || lb.describe(),
    )
    .await;
    let public = lb.public();
    assert!(
        until_in(lb.internet(), move || tcp_exchange(
            (public, 7000).into(),
            b"x\n"
        )
        .is_none()
            && udp_exchange((public, 7000).into(), b"ping").is_none()),
        "its ports are closed on the VPS\n{}",
        lb.describe()
    );
    assert!(
        lb.tcp_now(80, b"y\n").is_some_and(|a| a == "my-web: y\n"),
        "the PortBinding is still served"
    );
}
