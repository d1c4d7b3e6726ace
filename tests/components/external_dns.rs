//! The DNS harness of issue 20, without the operator: an unmodified external-dns (built from its
//! Go module, `--provider=rfc2136`, TXT registry, `--policy=sync`) against a real API server,
//! updating a real Knot DNS server over TSIG; the test plays the operator's part by writing a
//! Service's status itself, in the shape the operator writes (`ip`, `ipMode: Proxy`, `ports`).
//! Steps, announced on stderr (`external_dns step: <name>`):
//! - a LoadBalancer Service with `external-dns.alpha.kubernetes.io/hostname` and two IPv4 and
//!   one IPv6 ingress entries: the name resolves to both A and the AAAA;
//! - one IPv4 entry removed: the A set shrinks to the other; put back: both again;
//! - a `DNSEndpoint` (external-dns's CRD source) is published, and gone once deleted, the
//!   Service's name untouched;
//! - the Service deleted: its name is gone.
//!
//! A second test does the same for a Gateway's TCPRoute (the `gateway-tcproute` source, which
//! reads `v1alpha2`): accepted by the Gateway in the route's status, the route's hostname
//! annotation resolves to the Gateway's `status.addresses`; an address dropped leaves DNS.
//!
//! Waits are bounded; a failure shows what the DNS server answered and external-dns's log.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use testbed::apiserver::ApiServer;
use testbed::external_dns::{DnsServer, ExternalDns, HOSTNAME_ANNOTATION, Source, ZONE};
use testbed::objects::apply_yaml;

/// How long external-dns may take to publish a change (it syncs on events and every 2 s).
const PUBLISHED: Duration = Duration::from_secs(60);

const WEB: &str = "web.edge.test";
const API: &str = "api.edge.test";

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// Waits until `name` resolves to exactly `expected`; fails with the answer and both logs.
async fn expect_addresses(
    dns: &DnsServer,
    external_dns: &ExternalDns,
    name: &str,
    expected: &[&str],
) {
    if let Err(e) = dns
        .wait_for_addresses(name, &addrs(expected), PUBLISHED)
        .await
    {
        panic!(
            "{e}\nexternal-dns log (end):\n{}",
            external_dns.log_tail(40)
        );
    }
}

/// The Service's `status.loadBalancer.ingress`, as the operator writes it, for `ips`.
async fn set_ingress(services: &Api<Service>, ips: &[&str]) {
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| {
            serde_json::json!({"ip": ip, "ipMode": "Proxy", "ports": [{"port": 80, "protocol": "TCP"}]})
        })
        .collect();
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}})),
        )
        .await
        .unwrap();
    let written = services.get_status("web").await.unwrap();
    let got: Vec<String> = written
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect();
    assert_eq!(got, ips, "the status the test wrote");
}

fn step(name: &str) {
    eprintln!("external_dns step: {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_dns_publishes_service_and_dnsendpoint_addresses() {
    let server = ApiServer::start().await.unwrap();
    let dns = DnsServer::start(ZONE).await.unwrap();
    let external_dns = ExternalDns::start(&server, &dns, &[Source::Service, Source::Crd])
        .await
        .unwrap();
    let client = server.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");

    step("a Service with two IPv4 and one IPv6 ingress entries resolves to all three");
    let _: Service = apply_yaml(
        &client,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations:\n    {HOSTNAME_ANNOTATION}: {WEB}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.50\n  allocateLoadBalancerNodePorts: false\n  ports:\n  - {{name: http, port: 80, protocol: TCP}}\n"
        ),
    )
    .await
    .unwrap();
    set_ingress(&services, &["192.0.2.10", "192.0.2.20", "2001:db8::10"]).await;
    expect_addresses(
        &dns,
        &external_dns,
        WEB,
        &["192.0.2.10", "192.0.2.20", "2001:db8::10"],
    )
    .await;
    assert_eq!(dns.records(WEB, "A").unwrap(), ["192.0.2.10", "192.0.2.20"]);
    assert_eq!(dns.records(WEB, "AAAA").unwrap(), ["2001:db8::10"]);
    let owned = dns.records(&format!("a-{WEB}"), "TXT").unwrap().concat();
    assert!(
        owned.contains(&format!("external-dns/owner={}", external_dns.owner_id())),
        "the TXT registry marks the A record as this external-dns's: {owned:?}\n{}",
        external_dns.log_tail(40)
    );

    step("one IPv4 entry removed: the A set shrinks to the other");
    set_ingress(&services, &["192.0.2.20", "2001:db8::10"]).await;
    expect_addresses(&dns, &external_dns, WEB, &["192.0.2.20", "2001:db8::10"]).await;

    step("the entry put back: both A again");
    set_ingress(&services, &["192.0.2.10", "192.0.2.20", "2001:db8::10"]).await;
    expect_addresses(
        &dns,
        &external_dns,
        WEB,
        &["192.0.2.10", "192.0.2.20", "2001:db8::10"],
    )
    .await;

    step("a DNSEndpoint is published, and gone once deleted");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "externaldns.k8s.io",
        "v1alpha1",
        "DNSEndpoint",
    ));
    let endpoints: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"endpoints": [
            {"dnsName": API, "recordType": "A", "targets": ["192.0.2.30", "192.0.2.31"]},
            {"dnsName": API, "recordType": "AAAA", "targets": ["2001:db8::30"]},
        ]},
    }))
    .unwrap();
    endpoints
        .patch(
            "api",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap();
    expect_addresses(
        &dns,
        &external_dns,
        API,
        &["192.0.2.30", "192.0.2.31", "2001:db8::30"],
    )
    .await;
    endpoints
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    expect_addresses(&dns, &external_dns, API, &[]).await;
    assert_eq!(
        dns.addresses(WEB).unwrap(),
        addrs(&["192.0.2.10", "192.0.2.20", "2001:db8::10"]),
        "the Service's name is untouched"
    );

    step("the Service deleted: its name is gone");
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    expect_addresses(&dns, &external_dns, WEB, &[]).await;
}

/// A namespaced object of the Gateway API (`gateway.networking.k8s.io/v1`) by kind.
fn gateway_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ));
    Api::namespaced_with(client.clone(), "default", &resource)
}

/// Server-side applies `object` (JSON) through `api`.
async fn apply(api: &Api<DynamicObject>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let name = object.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
}

/// The Gateway `edge`'s `status.addresses`, as the operator writes them, for `ips`.
async fn set_gateway_addresses(gateways: &Api<DynamicObject>, ips: &[&str]) {
    let addresses: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"type": "IPAddress", "value": ip}))
        .collect();
    gateways
        .patch_status(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"addresses": addresses}})),
        )
        .await
        .unwrap();
}

/// A Gateway's TCPRoute through external-dns's `gateway-tcproute` source, which reads
/// `v1alpha2` (the helper installs the Experimental-channel CRD that serves it): the route's
/// hostname annotation resolves to the Gateway's `status.addresses` once the route's status
/// says the Gateway accepted it; an address dropped from the Gateway's status leaves DNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_dns_publishes_a_gateways_tcproute() {
    const DB: &str = "db.edge.test";
    let server = ApiServer::start().await.unwrap();
    let dns = DnsServer::start(ZONE).await.unwrap();
    let external_dns = ExternalDns::start(&server, &dns, &[Source::GatewayTcpRoute])
        .await
        .unwrap();
    let client = server.client().await.unwrap();
    let gateways = gateway_api(&client, "Gateway");
    let routes = gateway_api(&client, "TCPRoute");

    step("a TCPRoute accepted by a Gateway with an IPv4 and an IPv6 address resolves to both");
    apply(
        &gateways,
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "default"},
            "spec": {
                "gatewayClassName": "tunnel",
                "listeners": [{"name": "db", "port": 7000, "protocol": "TCP"}],
            },
        }),
    )
    .await;
    set_gateway_addresses(&gateways, &["192.0.2.40", "2001:db8::40"]).await;
    apply(
        &routes,
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "TCPRoute",
            "metadata": {
                "name": "db",
                "namespace": "default",
                "annotations": {HOSTNAME_ANNOTATION: DB},
            },
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "db"}],
                "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}],
            },
        }),
    )
    .await;
    routes
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"parents": [{
                "parentRef": {"name": "edge", "sectionName": "db"},
                "controllerName": "tunnel.achetronic.com/gateway-controller",
                "conditions": [{
                    "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                    "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            }]}})),
        )
        .await
        .unwrap();
    expect_addresses(&dns, &external_dns, DB, &["192.0.2.40", "2001:db8::40"]).await;

    step("the IPv6 address dropped from the Gateway's status leaves DNS");
    set_gateway_addresses(&gateways, &["192.0.2.40"]).await;
    expect_addresses(&dns, &external_dns, DB, &["192.0.2.40"]).await;
}
