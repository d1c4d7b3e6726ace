//! Gateway API at the VPS edge (issue 19), end to end: the real API server with Gateway API's
//! Standard-channel CRDs (the test bed's cached v1.6 YAML), the `tunnel run` binary, README
//! Example 1's EdgeNode on a real nspawn VPS and its uplink pods, and clients on the
//! "internet".
//!
//! A GatewayClass of ours names the EdgeNode; one Gateway has a TCP, a UDP and a TLS
//! passthrough listener (two TLSRoutes, two hostnames, one port) and an HTTP listener Tunnel
//! does not serve. Checked, in order:
//! - the statuses: the class `Accepted`; the Gateway `Accepted` (`ListenersNotValid`: the HTTP
//!   one), `Programmed`, its address the VPS's; per listener `Accepted`, `Programmed`,
//!   `ResolvedRefs`, `Conflicted` and `attachedRoutes`; each route's parent `Accepted` and
//!   `ResolvedRefs`;
//! - traffic: TCP and UDP reach their Services, each SNI name its own TLS backend (its own
//!   certificate, end to end);
//! - a backend in another namespace without a ReferenceGrant: `RefNotPermitted`, not served;
//!   with Gateway API's grant from TCPRoutes there: served;
//! - a listener on the port of Example 1's (older) PortBinding: `Conflicted`, not programmed,
//!   the PortBinding still served;
//! - deleting a TLSRoute closes its name only.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use serde_json::Value;
use testbed::netns::{in_ns, until_in};
use testbed::network::{serve_greeting, tcp_exchange};
use testbed::objects::{apply_yaml, namespace, service, until_ready};
use testbed::operator::OperatorBed;
use testbed::wait::eventually;
use tunnel::crd::EdgeNode;
use tunnel::crd::GatewayReferenceGrant;
use tunnel::crd::gateway::{Gateway, GatewayClass};
use tunnel::crd::gateway_route::{TcpRoute, TlsRoute, UdpRoute};

use crate::edge_support::bed::pem_der;
use crate::edge_support::pki;
use crate::operator_support::{
    logs_of, run_example1, serve_tls, serve_udp_echo, tls_exchange, tls_secret, udp_exchange,
};

const LONG: Duration = Duration::from_secs(180);

/// Gateway API's CRDs the operator watches, from the test bed's cache.
async fn install_gateway_api(bed: &OperatorBed) {
    let (dir, _) = testbed::tools::gateway_api_crds().unwrap();
    let crds: Vec<CustomResourceDefinition> = [
        "gatewayclasses",
        "gateways",
        "tcproutes",
        "udproutes",
        "tlsroutes",
        "referencegrants",
    ]
    .iter()
    .map(|k| {
        let path = dir.join(format!("gateway.networking.k8s.io_{k}.yaml"));
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
    .collect();
    bed.server.install_crds(&crds).await.unwrap();
}

const CLASS: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tunnel}
spec:
  controllerName: tunnel.achetronic.com/gateway-controller
  parametersRef: {group: tunnel.achetronic.com, kind: EdgeNode, name: edge-node, namespace: default}
";

const GATEWAY: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: tunnel
  listeners:
  - {name: tcp, protocol: TCP, port: 7100}
  - {name: udp, protocol: UDP, port: 7101}
  - name: tls
    protocol: TLS
    port: 7443
    tls: {mode: Passthrough}
  - {name: web, protocol: HTTP, port: 8080}
  - name: term
    protocol: TLS
    port: 7444
    tls: {mode: Terminate, certificateRefs: [{name: term-tls}]}
";

fn tcp_route(name: &str, listener: &str, backend_ns: &str, backend: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: edge, sectionName: {listener}}}]\n  rules: [{{backendRefs: [{{name: {backend}, namespace: {backend_ns}, port: {port}}}]}}]\n"
    )
}

const UDP_ROUTE: &str = r"
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: echo-udp, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: udp}]
  rules: [{backendRefs: [{name: echo, port: 7001}]}]
";

fn tls_route(name: &str, host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: edge, sectionName: tls}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 8443}}]}}]\n"
    )
}

/// `(status, reason)` of condition `type_` in `conditions`.
fn condition(conditions: &Value, type_: &str) -> Option<(String, String)> {
    let c = conditions.as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}

fn is(conditions: &Value, type_: &str, status: &str, reason: &str) -> bool {
    condition(conditions, type_) == Some((status.to_owned(), reason.to_owned()))
}

/// The listener `name` of a Gateway status.
fn listener<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
}

/// The conditions of our parent entry of a route status.
fn parent_conditions(status: Option<&Value>) -> Option<Value> {
    status?["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == "tunnel.achetronic.com/gateway-controller")
        .map(|p| p["conditions"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_and_routes_are_served_through_the_vps() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = OperatorBed::example_1(1).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, cluster) = (&net.internet, &net.vps, &net.cluster);
    install_gateway_api(&bed).await;

    // The backends: a TCP greeting, a UDP echo, two TLS servers with their own certificates.
    for ip in [
        "10.96.0.50/32",
        "10.96.0.51/32",
        "10.96.0.52/32",
        "10.96.0.53/32",
    ] {
        cluster.addr("lo", ip).unwrap();
    }
    serve_greeting(cluster, "10.96.0.50:7000", b"gw-tcp: ").unwrap();
    serve_udp_echo(cluster, "10.96.0.50:7001", "gw-udp: ");
    let one = pki(&["one.example.test"]);
    let two = pki(&["two.example.test"]);
    let term = pki(&["term.example.test"]);
    tls_secret(
        &client,
        "term-tls",
        &term.server_pem,
        &term.server_key_pem,
        None,
    )
    .await;
    serve_tls(
        cluster,
        "10.96.0.51:8443",
        &one.server_pem,
        &one.server_key_pem,
        b"one\n",
    );
    serve_tls(
        cluster,
        "10.96.0.52:8443",
        &two.server_pem,
        &two.server_key_pem,
        b"two\n",
    );
    serve_greeting(cluster, "10.96.0.53:7000", b"other-ns: ").unwrap();
    service(
        &client,
        "default",
        "echo",
        "10.96.0.50",
        &[(7000, "TCP"), (7001, "UDP")],
    )
    .await
    .unwrap();
    service(
        &client,
        "default",
        "tls-one",
        "10.96.0.51",
        &[(8443, "TCP")],
    )
    .await
    .unwrap();
    service(
        &client,
        "default",
        "tls-two",
        "10.96.0.52",
        &[(8443, "TCP")],
    )
    .await
    .unwrap();
    namespace(&client, "elsewhere").await.unwrap();
    service(
        &client,
        "elsewhere",
        "other",
        "10.96.0.53",
        &[(7000, "TCP")],
    )
    .await
    .unwrap();

    let (operator, uplinks) = run_example1(&bed).await;
    let describe = || logs_of(&operator, &uplinks);
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    until_ready(&nodes, "edge-node", describe).await;

    let class: GatewayClass = serde_yaml::from_str(CLASS).unwrap();
    Api::<GatewayClass>::all(client.clone())
        .create(&kube::api::PostParams::default(), &class)
        .await
        .unwrap();
    apply_yaml::<Gateway>(&client, GATEWAY).await.unwrap();
    apply_yaml::<TcpRoute>(
        &client,
        &tcp_route("echo-tcp", "tcp", "default", "echo", 7000),
    )
    .await
    .unwrap();
    apply_yaml::<UdpRoute>(&client, UDP_ROUTE).await.unwrap();
    apply_yaml::<TlsRoute>(&client, &tls_route("one", "one.example.test", "tls-one"))
        .await
        .unwrap();
    apply_yaml::<TlsRoute>(&client, &tls_route("two", "two.example.test", "tls-two"))
        .await
        .unwrap();
    let term_route = tls_route("term", "term.example.test", "echo")
        .replace("sectionName: tls", "sectionName: term")
        .replace("port: 8443", "port: 7000");
    apply_yaml::<TlsRoute>(&client, &term_route).await.unwrap();

    // Statuses.
    let classes: Api<GatewayClass> = Api::all(client.clone());
    eventually(
        "GatewayClass tunnel Accepted",
        LONG,
        async || {
            let c = classes.get("tunnel").await.ok()?;
            is(&c.status?["conditions"], "Accepted", "True", "Accepted").then_some(())
        },
        describe,
    )
    .await;
    let gateways: Api<Gateway> = Api::namespaced(client.clone(), "default");
    let status = eventually(
        "Gateway edge Programmed with every route attached",
        LONG,
        async || {
            let st = gateways.get("edge").await.ok()?.status?;
            let attached = |l: &str| listener(&st, l).map(|l| l["attachedRoutes"].clone());
            (is(&st["conditions"], "Programmed", "True", "Programmed")
                && attached("tls") == Some(2.into())
                && attached("tcp") == Some(1.into())
                && attached("udp") == Some(1.into())
                && attached("term") == Some(1.into()))
            .then_some(st)
        },
        describe,
    )
    .await;
    assert!(
        is(
            &status["conditions"],
            "Accepted",
            "True",
            "ListenersNotValid"
        ),
        "{status:#}"
    );
    assert_eq!(
        status["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": vps.address().to_string()}])
    );
    for name in ["tcp", "udp", "tls", "term"] {
        let l = &listener(&status, name).unwrap()["conditions"];
        assert!(is(l, "Accepted", "True", "Accepted"), "{name}: {l:#}");
        assert!(is(l, "Programmed", "True", "Programmed"), "{name}: {l:#}");
        assert!(
            is(l, "ResolvedRefs", "True", "ResolvedRefs"),
            "{name}: {l:#}"
        );
        assert!(is(l, "Conflicted", "False", "NoConflicts"), "{name}: {l:#}");
    }
    let web = &listener(&status, "web").unwrap()["conditions"];
    assert!(
        is(web, "Accepted", "False", "UnsupportedProtocol"),
        "{web:#}"
    );
    let tls_routes: Api<TlsRoute> = Api::namespaced(client.clone(), "default");
    for name in ["one", "two", "term"] {
        let route = tls_routes.get(name).await.unwrap();
        let c = parent_conditions(route.status.as_ref()).unwrap();
        assert!(is(&c, "Accepted", "True", "Accepted"), "{name}: {c:#}");
        assert!(
            is(&c, "ResolvedRefs", "True", "ResolvedRefs"),
            "{name}: {c:#}"
        );
    }

    // Traffic: TCP, UDP, and each SNI name to its own backend.
    let public = |port| SocketAddr::from((vps.address(), port));
    assert!(
        until_in(internet, move || tcp_exchange(public(7100), b"a\n")
            .is_some_and(|r| r == "gw-tcp: a\n")),
        "TCP through the Gateway\n{}",
        describe()
    );
    assert!(
        until_in(internet, move || {
            udp_exchange(public(7101), b"b").is_some_and(|r| r == b"gw-udp: b")
        }),
        "UDP through the Gateway\n{}",
        describe()
    );
    // A TLS exchange on the passthrough listener (:7443), or on the Terminate one for
    // `term.example.test` (:7444).
    let tls = |pki: &crate::edge_support::Pki, host: &'static str, reply: &'static str| {
        let (ca, cert) = (pki.ca_pem.clone(), pem_der(&pki.server_pem));
        let port = if host == "term.example.test" {
            7444
        } else {
            7443
        };
        until_in(internet, move || {
            tls_exchange((vps.address(), port), host, &ca, None)
                .is_ok_and(|(c, r)| c == cert && r == reply)
        })
    };
    assert!(
        tls(&one, "one.example.test", "one\n"),
        "SNI one\n{}",
        describe()
    );
    assert!(
        tls(&term, "term.example.test", "gw-tcp: hello\n"),
        "TLS terminated at the edge with the listener's certificate\n{}",
        describe()
    );
    assert!(
        tls(&two, "two.example.test", "two\n"),
        "SNI two\n{}",
        describe()
    );

    // A backend in another namespace: refused until a ReferenceGrant there allows it.
    apply_yaml::<TcpRoute>(
        &client,
        &tcp_route("crossing", "tcp", "elsewhere", "other", 7000),
    )
    .await
    .unwrap();
    let tcp_routes: Api<TcpRoute> = Api::namespaced(client.clone(), "default");
    eventually(
        "TCPRoute crossing RefNotPermitted",
        LONG,
        async || {
            let r = tcp_routes.get("crossing").await.ok()?;
            let c = parent_conditions(r.status.as_ref())?;
            is(&c, "ResolvedRefs", "False", "RefNotPermitted").then_some(())
        },
        describe,
    )
    .await;
    // Still the working route's backend on the listener: a route that cannot be served does
    // not take it, even when it counts as the older (same second, and "crossing" sorts first).
    assert!(
        in_ns(internet, move || tcp_exchange(public(7100), b"c\n"))
            .is_some_and(|r| r == "gw-tcp: c\n"),
        "the older route still serves while a crossing one is refused\n{}",
        describe()
    );
    // The crossing route, alone on a listener of its own, with a grant: served.
    tcp_routes
        .delete("echo-tcp", &DeleteParams::default())
        .await
        .unwrap();
    let grant = "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: tcproutes-from-default, namespace: elsewhere}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: '', kind: Service}]\n";
    assert!(
        until_in(internet, move || tcp_exchange(public(7100), b"d\n")
            .is_none()),
        "the deleted route's path closes (the crossing one is not granted yet)\n{}",
        describe()
    );
    apply_yaml::<GatewayReferenceGrant>(&client, grant)
        .await
        .unwrap();
    assert!(
        until_in(internet, move || tcp_exchange(public(7100), b"e\n")
            .is_some_and(|r| r == "other-ns: e\n")),
        "a granted backend in another namespace\n{}",
        describe()
    );

    // A listener on the port of Example 1's older PortBinding: conflicted, not programmed.
    let late = GATEWAY
        .replace("name: edge,", "name: late,")
        .replace(
            "  - {name: tcp, protocol: TCP, port: 7100}\n  - {name: udp, protocol: UDP, port: 7101}\n  - name: tls\n    protocol: TLS\n    port: 7443\n    tls: {mode: Passthrough}\n  - {name: web, protocol: HTTP, port: 8080}\n  - name: term\n    protocol: TLS\n    port: 7444\n    tls: {mode: Terminate, certificateRefs: [{name: term-tls}]}\n",
            "  - {name: clash, protocol: TCP, port: 80}\n",
        );
    apply_yaml::<Gateway>(&client, &late).await.unwrap();
    apply_yaml::<TcpRoute>(
        &client,
        &tcp_route("late", "clash", "default", "echo", 7000).replace("name: edge,", "name: late,"),
    )
    .await
    .unwrap();
    eventually(
        "Gateway late's listener Conflicted",
        LONG,
        async || {
            let st = gateways.get("late").await.ok()?.status?;
            let l = &listener(&st, "clash")?["conditions"];
            (is(l, "Conflicted", "True", "ProtocolConflict")
                && is(l, "Programmed", "False", "Invalid"))
            .then_some(())
        },
        describe,
    )
    .await;
    assert!(
        in_ns(internet, move || tcp_exchange(public(80), b"z\n"))
            .is_some_and(|r| r == "my-web: z\n"),
        "port 80 stays the PortBinding's"
    );

    // Deleting a TLSRoute closes its name only.
    tls_routes
        .delete("two", &DeleteParams::default())
        .await
        .unwrap();
    let ca = two.ca_pem.clone();
    assert!(
        until_in(internet, move || {
            tls_exchange((vps.address(), 7443), "two.example.test", &ca, None).is_err()
        }),
        "SNI two closes\n{}",
        describe()
    );
    assert!(
        tls(&one, "one.example.test", "one\n"),
        "SNI one stays\n{}",
        describe()
    );
    eventually(
        "listener tls has one route, the Gateway programmed again",
        LONG,
        async || {
            let st = gateways.get("edge").await.ok()?.status?;
            (listener(&st, "tls")?["attachedRoutes"] == 1
                && is(&st["conditions"], "Programmed", "True", "Programmed"))
            .then_some(())
        },
        describe,
    )
    .await;

    // The statuses settle: the actor's own writes come back as watch events and end there.
    let version = |g: Gateway| g.metadata.resource_version;
    let before = version(gateways.get("edge").await.unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        before,
        version(gateways.get("edge").await.unwrap()),
        "the Gateway's status is written again and again\n{}",
        describe()
    );
}

/// Gateway API's CRDs installed while the operator runs: it notices (here within a second:
/// `--gateway-api-discovery-period 1s`), stops its tree and exits non-zero (its Deployment
/// restarts it); the next operator watches them and accepts a class of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_api_installed_after_the_operator_starts_is_watched_after_its_restart() {
    let bed = OperatorBed::builder().start().await.unwrap();
    let client = bed.client.clone();
    let period = ["--gateway-api-discovery-period", "1s"];
    let mut first = bed.operator().flags(&period).start().unwrap();
    eventually(
        "the first operator's tree runs, without Gateway API",
        LONG,
        async || {
            let log = first.log_text();
            (log.contains("the actor tree runs") && log.contains("Gateways are not watched"))
                .then_some(())
        },
        || first.log_text(),
    )
    .await;
    install_gateway_api(&bed).await;
    let code = first.process.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(
        code.is_some_and(|c| c != 0),
        "the operator exits non-zero once Gateway API is served: {code:?}\n{}",
        first.log_text()
    );
    assert!(
        first
            .log_text()
            .contains("Gateway API's kinds served changed"),
        "{}",
        first.log_text()
    );
    let second = bed.operator().flags(&period).start().unwrap();
    let class: GatewayClass = serde_yaml::from_str(CLASS).unwrap();
    Api::<GatewayClass>::all(client.clone())
        .create(&kube::api::PostParams::default(), &class)
        .await
        .unwrap();
    let classes: Api<GatewayClass> = Api::all(client);
    eventually(
        "GatewayClass tunnel Accepted by the restarted operator",
        LONG,
        async || {
            let c = classes.get("tunnel").await.ok()?;
            is(&c.status?["conditions"], "Accepted", "True", "Accepted").then_some(())
        },
        || second.log_text(),
    )
    .await;
}
