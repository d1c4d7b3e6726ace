//! Trust boundary 6 (issue 12), the planner's part: a PortBinding cannot make the operator copy
//! another namespace's TLS private key to its VPS, nor use another namespace's EdgeNode,
//! unless a `ReferenceGrant` in that namespace allows it; and a raw `target.address` that is
//! loopback, link-local (cloud metadata) or the API server's is refused with
//! `RestrictedTarget` unless the operator's flag allows it. Each refusal is binding-level:
//! the PortBinding's other bindings are still served. (The README examples, same-namespace
//! references, are planned unchanged: `tests/plan_render.rs`.)
//!
//! Then the real operator against a real API server (issue 24, items 1 and 6): a Service target
//! `default/kubernetes` is refused with `RestrictedTarget`, and so is the API server's
//! ClusterIP as a raw address when `default` is not among the watched namespaces;
//! `--cross-namespace-targets=require-grant` asks for the Service's namespace's grant; and a
//! PortBinding of another namespace without the EdgeNode's grant neither holds a port nor
//! sees the EdgeNode's errors, nor learns whether the EdgeNode exists. No VPS: each
//! EdgeNode's SSH port is a closed loopback port, so every pass plans, then fails at SSH with
//! the VPS's address in its message, which the EdgeNode's own PortBindings show.
//!
//! Issue 19: Gateway API's `ReferenceGrant` is consent as ours is, and the documented migration
//! (`tunnel migrate-grants`, the converted grants applied, ours deleted) keeps every reference
//! granted.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, PostParams};
use testbed::free_port;
use testbed::objects::{events_of, namespace, ready, service};
use testbed::operator::{Operator, OperatorBed};
use testbed::wait::eventually;
use tunnel::crd::{EdgeNode, GatewayReferenceGrant, PortBinding, ReferenceGrant};

use crate::edge_support::{pki, tls_secret};
use crate::plan_inputs::{input, node, pb};
use crate::ssh_session::keygen;
use tunnel::crd::{FromKind, GrantFrom, GrantTo, ReferenceGrantSpec, ToKind};
use tunnel::plan::{Layout, Plan, StaticResolver, TargetPolicy, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\n";

fn refusal(p: &Plan, binding: &str) -> Option<(String, String)> {
    p.outcomes
        .iter()
        .find(|o| o.id.binding == binding)
        .unwrap_or_else(|| panic!("no outcome for {binding}"))
        .refusal
        .as_ref()
        .map(|r| (r.reason.as_str().to_owned(), r.message.clone()))
}

fn grant(from_ns: &str, to: ToKind, name: &str) -> ReferenceGrantSpec {
    ReferenceGrantSpec {
        from: vec![GrantFrom {
            kind: FromKind::PortBinding,
            namespace: from_ns.into(),
        }],
        to: vec![GrantTo {
            kind: to,
            name: Some(name.into()),
        }],
    }
}

#[test]
fn another_namespaces_tls_key_needs_its_grant() {
    let edge = pki(&["web.example.com"]);
    let bindings = "- {name: tls, protocol: TCP, listenPort: 443, tls: {mode: offload, secretRef: {name: web-tls, namespace: certs}}, target: {address: 10.96.0.5, port: 80}}\n\
                    - {name: plain, protocol: TCP, listenPort: 80, target: {address: 10.96.0.5, port: 80}}";
    let pbs = || vec![pb("default", "web", Some(1), bindings)];
    let resolver =
        StaticResolver::default().with_secret("certs", "web-tls", tls_secret(&edge, false));
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &resolver).unwrap();
    let (reason, message) = refusal(&p, "tls").expect("refused without a grant");
    assert_eq!(reason, "ReferenceNotGranted");
    assert!(
        message.contains("no ReferenceGrant in namespace certs"),
        "{message}"
    );
    assert_eq!(refusal(&p, "plain"), None, "the other binding is served");
    assert!(
        p.vps_files
            .iter()
            .all(|f| !f.contents.contains(&edge.server_key_pem)),
        "the private key never reaches the VPS files"
    );

    // A grant in `default` (the referencing side) is not consent.
    let wrong = resolver
        .clone()
        .with_grant("default", grant("default", ToKind::Secret, "web-tls"));
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &wrong).unwrap();
    assert!(refusal(&p, "tls").is_some());
    // The grant in `certs` is.
    let granted = resolver.with_grant("certs", grant("default", ToKind::Secret, "web-tls"));
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &granted).unwrap();
    assert_eq!(refusal(&p, "tls"), None);
    assert!(p.vps_files.iter().any(|f| f.contents.contains("BEGIN")));
}

#[test]
fn another_namespaces_edge_node_needs_its_grant() {
    let pbs = || {
        vec![
            pb(
                "team-x",
                "web",
                Some(1),
                "- {name: x, protocol: TCP, listenPort: 80, target: {address: 10.96.0.5, port: 80}}",
            ),
            pb(
                "default",
                "own",
                Some(2),
                "- {name: own, protocol: TCP, listenPort: 81, target: {address: 10.96.0.5, port: 80}}",
            ),
        ]
    };
    let p = plan(
        &input(node(NODE), pbs(), Layout::default()),
        &StaticResolver::default(),
    )
    .unwrap();
    let (reason, message) = refusal(&p, "x").unwrap();
    assert_eq!(reason, "ReferenceNotGranted");
    assert!(message.contains("EdgeNode default/edge"), "{message}");
    assert_eq!(refusal(&p, "own"), None);
    let granted =
        StaticResolver::default().with_grant("default", grant("team-x", ToKind::EdgeNode, "edge"));
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &granted).unwrap();
    assert_eq!(refusal(&p, "x"), None);
}

#[test]
fn restricted_raw_targets_are_refused_unless_the_flag_allows_them() {
    let bindings = "- {name: lo, protocol: TCP, listenPort: 8001, target: {address: 127.0.0.1, port: 80}}\n\
                    - {name: metadata, protocol: TCP, listenPort: 8002, target: {address: 169.254.169.254, port: 80}}\n\
                    - {name: api, protocol: TCP, listenPort: 8003, target: {address: 10.96.0.1, port: 443}}\n\
                    - {name: ok, protocol: TCP, listenPort: 8004, target: {address: 10.96.0.5, port: 80}}";
    let pbs = || vec![pb("default", "raw", Some(1), bindings)];
    let policy = TargetPolicy {
        allow_restricted: false,
        api_server: vec!["10.96.0.1".parse().unwrap(), "192.0.2.50".parse().unwrap()],
        ..TargetPolicy::default()
    };
    let resolver = StaticResolver::default().with_target_policy(policy.clone());
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &resolver).unwrap();
    for (binding, what) in [
        ("lo", "loopback"),
        ("metadata", "link-local"),
        ("api", "API server"),
    ] {
        let (reason, message) = refusal(&p, binding).unwrap_or_else(|| panic!("{binding} planned"));
        assert_eq!(reason, "RestrictedTarget", "{binding}");
        assert!(
            message.contains(what) && message.contains("--allow-restricted-targets"),
            "{message}"
        );
    }
    assert_eq!(refusal(&p, "ok"), None);
    assert!(
        !p.uplink_file.contents.contains("169.254.169.254"),
        "the uplinks never forward to it"
    );

    // With the flag, they are the user's choice.
    let allowed = StaticResolver::default().with_target_policy(TargetPolicy {
        allow_restricted: true,
        ..policy
    });
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &allowed).unwrap();
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
}

/// The operator's bed without a VPS ([`OperatorBed`]), and EdgeNode
/// `team-a/edge` whose VPS is `127.0.0.1` at a closed port (with a valid SSH Secret, so its
/// passes plan and fail only at the connection).
struct TenantBed {
    bed: OperatorBed,
    client: Client,
    closed: u16,
}

impl TenantBed {
    async fn start() -> Self {
        let bed = OperatorBed::builder().start().await.unwrap();
        let client = bed.client.clone();
        let closed = free_port().unwrap();
        for ns in ["team-a", "evil", "networking"] {
            namespace(&client, ns).await.unwrap();
        }
        let (private, public) = keygen(bed.dir(), "id_ed25519", &["-t", "ed25519", "-N", ""]);
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vps", "namespace": "team-a"},
            "stringData": {"privateKey": private, "knownHosts": format!("[127.0.0.1]:{closed} {public}")}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "team-a")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        Self {
            bed,
            client,
            closed,
        }
    }

    async fn edge_node(&self) {
        let node: EdgeNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "tunnel.achetronic.com/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": "edge", "namespace": "team-a"},
            "spec": {"address": "127.0.0.1", "ssh": {"port": self.closed, "secretRef": {"name": "vps"}}}
        }))
        .unwrap();
        Api::<EdgeNode>::namespaced(self.client.clone(), "team-a")
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }

    async fn port_binding(&self, namespace: &str, name: &str, node: &str, bindings: &str) {
        let pb: PortBinding = serde_yaml::from_str(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  edgeNodeRef: {node}\n  bindings:\n{bindings}"
        ))
        .unwrap();
        Api::<PortBinding>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &pb)
            .await
            .unwrap();
    }

    fn operator(&self, label: &str, extra: &[&str]) -> (Operator, std::path::PathBuf) {
        let operator = self
            .bed
            .operator()
            .name(label)
            .flags(&["--leader-elect=false"])
            .flags(extra)
            .start()
            .unwrap();
        let log = operator.log.clone();
        (operator, log)
    }
}

/// `status.bindings[]` of a PortBinding as `(name, state, reason)`.
async fn bindings_of(api: &Api<PortBinding>, name: &str) -> Vec<(String, String, String)> {
    let Ok(Some(pb)) = api.get_opt(name).await else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, String)> = pb
        .status
        .map(|s| s.bindings)
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.name, b.state, b.reason.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits (2 minutes at most) until PortBinding `name`'s `Ready` has `reason`; the condition.
async fn until_reason(
    api: &Api<PortBinding>,
    name: &str,
    reason: &str,
    log: &Path,
) -> (String, String, String) {
    eventually(
        &format!("PortBinding {name}: Ready reason {reason}"),
        Duration::from_secs(120),
        async || ready(api, name).await.filter(|c| c.1 == reason),
        || log_of(log),
    )
    .await
}

/// Waits (2 minutes at most) until PortBinding `name`'s bindings include `row`; all of them.
async fn until_binding(
    api: &Api<PortBinding>,
    name: &str,
    row: &(String, String, String),
    log: &Path,
) -> Vec<(String, String, String)> {
    eventually(
        &format!("PortBinding {name}: binding {row:?}"),
        Duration::from_secs(120),
        async || Some(bindings_of(api, name).await).filter(|b| b.contains(row)),
        || log_of(log),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_squat_a_foreign_edge_node_nor_read_its_errors() {
    let bed = TenantBed::start().await;
    // `evil` comes first (older: it would keep the ports), with no grant from team-a, and
    // one more PortBinding naming an EdgeNode of team-a that does not exist.
    let two = "    - {name: https, protocol: TCP, listenPort: 8443, target: {address: 10.1.1.1, port: 443}}\n    - {name: dns, protocol: UDP, listenPort: 5353, target: {address: 10.1.1.1, port: 53}}\n";
    bed.port_binding("evil", "squat", "{name: edge, namespace: team-a}", two)
        .await;
    bed.port_binding("evil", "probe", "{name: nowhere, namespace: team-a}", two)
        .await;
    // Creation times are whole seconds: team-a's PortBinding is strictly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bed.port_binding("team-a", "web", "{name: edge}", two).await;
    bed.edge_node().await;
    let (_operator, log) = bed.operator("operator", &[]);

    let team_a: Api<PortBinding> = Api::namespaced(bed.client.clone(), "team-a");
    let evil: Api<PortBinding> = Api::namespaced(bed.client.clone(), "evil");
    // The owner's PortBinding: planned (both bindings Served), waiting for the VPS, whose
    // SSH failure (naming 127.0.0.1 and the port) it is shown.
    let (_, _, node_problem) = until_reason(&team_a, "web", "EdgeNodeNotReady", &log).await;
    let closed = bed.closed.to_string();
    assert!(node_problem.contains("127.0.0.1"), "{node_problem}");
    assert_eq!(
        bindings_of(&team_a, "web").await,
        vec![
            ("dns".into(), "Served".into(), String::new()),
            ("https".into(), "Served".into(), String::new()),
        ],
        "the older, ungranted PortBinding of evil took team-a's ports"
    );

    // The squatter and the prober: the same refusal, nothing of the node.
    for (name, node) in [("squat", "team-a/edge"), ("probe", "team-a/nowhere")] {
        let (status, reason, message) = eventually(
            &format!("evil/{name} has a Ready condition"),
            Duration::from_secs(60),
            async || ready(&evil, name).await,
            || log_of(&log),
        )
        .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ReferenceNotGranted"),
            "evil/{name}: {message}"
        );
        assert_eq!(
            message,
            format!(
                "PortBinding in namespace evil may not reference EdgeNode {node}: no ReferenceGrant in namespace team-a allows it (from kind PortBinding, namespace evil; to kind EdgeNode)"
            )
        );
        let pb = evil.get(name).await.unwrap();
        let status = serde_json::to_string(&pb.status).unwrap();
        assert!(
            !status.contains("127.0.0.1") && !status.contains(&closed) && !status.contains("SSH"),
            "the node's state reached evil/{name}: {status}"
        );
        for event in events_of(&bed.client, "evil", name).await.unwrap() {
            assert!(
                !event.contains("127.0.0.1") && !event.contains("SSH"),
                "the node's state reached an Event of evil/{name}: {event}"
            );
        }
    }

    // Once team-a grants the name `nowhere` to evil, evil/probe learns it does not exist
    // (no pass answers it: its own actor decides again); evil/squat stays refused.
    let grant: ReferenceGrant = serde_yaml::from_str(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {name: evil, namespace: team-a}\nspec:\n  from: [{kind: PortBinding, namespace: evil}]\n  to: [{kind: EdgeNode, name: nowhere}]\n",
    )
    .unwrap();
    Api::<ReferenceGrant>::namespaced(bed.client.clone(), "team-a")
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    until_reason(&evil, "probe", "EdgeNodeNotFound", &log).await;
    assert_eq!(
        ready(&evil, "squat").await.map(|c| c.1).as_deref(),
        Some("ReferenceNotGranted")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_is_never_a_target_whatever_namespaces_are_watched() {
    let bed = TenantBed::start().await;
    let api_ip = Api::<Service>::namespaced(bed.client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    service(
        &bed.client,
        "networking",
        "internal-ingress",
        "10.96.0.30",
        &[(443, "TCP")],
    )
    .await
    .unwrap();
    let bindings = format!(
        "    - {{name: api-service, protocol: TCP, listenPort: 6443, target: {{service: {{name: kubernetes, namespace: default, port: 443}}}}}}\n    - {{name: api-address, protocol: TCP, listenPort: 6444, target: {{address: {api_ip}, port: 443}}}}\n    - {{name: admin-bridge, protocol: TCP, listenPort: 6445, target: {{address: 10.200.0.1, port: 40600}}}}\n    - {{name: ingress, protocol: TCP, listenPort: 443, target: {{service: {{name: internal-ingress, namespace: networking, port: 443}}}}}}\n    - {{name: plain, protocol: TCP, listenPort: 80, target: {{address: 10.1.1.1, port: 80}}}}\n"
    );
    bed.port_binding("team-a", "grab", "{name: edge}", &bindings)
        .await;
    bed.edge_node().await;
    let team_a: Api<PortBinding> = Api::namespaced(bed.client.clone(), "team-a");
    let row = |name: &str, state: &str, reason: &str| {
        (name.to_owned(), state.to_owned(), reason.to_owned())
    };

    // Every namespace watched, the default policy (README Examples 2 and 3: a Service in
    // another namespace is followed).
    let (operator, log) = bed.operator("all", &[]);
    let seen = eventually(
        "team-a/grab's five bindings decided",
        Duration::from_secs(120),
        async || Some(bindings_of(&team_a, "grab").await).filter(|b| b.len() == 5),
        || log_of(&log),
    )
    .await;
    assert_eq!(
        seen,
        vec![
            row("admin-bridge", "Refused", "RestrictedTarget"),
            row("api-address", "Refused", "RestrictedTarget"),
            row("api-service", "Refused", "RestrictedTarget"),
            row("ingress", "Served", ""),
            row("plain", "Served", ""),
        ],
        "{}",
        log_of(&log)
    );
    let pb = team_a.get("grab").await.unwrap();
    let message = pb
        .status
        .unwrap()
        .bindings
        .into_iter()
        .find(|b| b.name == "api-service")
        .and_then(|b| b.message)
        .unwrap();
    assert_eq!(
        message,
        format!(
            "target Service default/kubernetes resolves to {api_ip}, which is an address of the Kubernetes API server; publishing it needs the operator's --allow-restricted-targets flag"
        )
    );
    drop(operator);

    // Only the tenants' namespaces watched (so Service default/kubernetes is not in the
    // Services cache), and Services across namespaces need a grant.
    let (_operator, log) = bed.operator(
        "some",
        &[
            "--watch-namespaces=team-a,networking",
            "--cross-namespace-targets=require-grant",
        ],
    );
    let seen = eventually(
        "team-a/grab decided under require-grant",
        Duration::from_secs(120),
        async || {
            Some(bindings_of(&team_a, "grab").await).filter(|b| {
                b.iter()
                    .any(|r| r.0 == "ingress" && r.2 == "ReferenceNotGranted")
            })
        },
        || log_of(&log),
    )
    .await;
    assert_eq!(
        seen,
        vec![
            row("admin-bridge", "Refused", "RestrictedTarget"),
            row("api-address", "Refused", "RestrictedTarget"),
            row("api-service", "Refused", "ReferenceNotGranted"),
            row("ingress", "Refused", "ReferenceNotGranted"),
            row("plain", "Served", ""),
        ],
        "{}",
        log_of(&log)
    );
    // networking's consent: served again.
    let grant: ReferenceGrant = serde_yaml::from_str(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {name: team-a, namespace: networking}\nspec:\n  from: [{kind: PortBinding, namespace: team-a}]\n  to: [{kind: Service}]\n",
    )
    .unwrap();
    Api::<ReferenceGrant>::namespaced(bed.client.clone(), "networking")
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    until_binding(&team_a, "grab", &row("ingress", "Served", ""), &log).await;
}

/// Installs Gateway API's `ReferenceGrant` CRD (Standard channel, the test bed's cached copy
/// of the pinned upstream YAML) into the bed's API server.
async fn install_gateway_api_grants(bed: &TenantBed) {
    let path = testbed::tools::gateway_api_reference_grant_crd().unwrap();
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    bed.bed.server.install_crds(&[crd]).await.unwrap();
}

/// A Gateway API `ReferenceGrant` named `name` in `namespace`, from PortBindings of `from_ns`
/// to `to` (`(group, kind, name)`).
async fn gateway_grant(bed: &TenantBed, namespace: &str, name: &str, from_ns: &str, to: &str) {
    let grant: GatewayReferenceGrant = serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  from: [{{group: tunnel.achetronic.com, kind: PortBinding, namespace: {from_ns}}}]\n  to: [{to}]\n"
    ))
    .unwrap();
    Api::<GatewayReferenceGrant>::namespaced(bed.client.clone(), namespace)
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
}

/// Issue 19: Gateway API's own `ReferenceGrant` (`gateway.networking.k8s.io/v1`, its CRD from
/// the pinned upstream YAML) is consent as ours is: a PortBinding of `evil` using team-a's
/// EdgeNode and a Service of `networking` is refused without it, each reference is followed
/// once the referenced namespace grants it, and refused again when the grant goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_api_reference_grant_is_consent_too() {
    let bed = TenantBed::start().await;
    install_gateway_api_grants(&bed).await;
    service(
        &bed.client,
        "networking",
        "internal-ingress",
        "10.96.0.30",
        &[(443, "TCP")],
    )
    .await
    .unwrap();
    bed.port_binding(
        "evil",
        "web",
        "{name: edge, namespace: team-a}",
        "    - {name: ingress, protocol: TCP, listenPort: 443, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}\n    - {name: plain, protocol: TCP, listenPort: 80, target: {address: 10.1.1.1, port: 80}}\n",
    )
    .await;
    bed.edge_node().await;
    let (_operator, log) = bed.operator("gateway", &["--cross-namespace-targets=require-grant"]);
    let evil: Api<PortBinding> = Api::namespaced(bed.client.clone(), "evil");
    let row = |name: &str, state: &str, reason: &str| {
        (name.to_owned(), state.to_owned(), reason.to_owned())
    };

    // No grant: the EdgeNode is not evil's to use.
    let (_, _, message) = until_reason(&evil, "web", "ReferenceNotGranted", &log).await;
    assert!(message.contains("EdgeNode team-a/edge"), "{message}");

    // A grant of another kind than the EdgeNode (Secrets), and one from the core group's
    // `PortBinding` (no such kind): still refused. Then team-a's grant of its EdgeNode.
    gateway_grant(
        &bed,
        "team-a",
        "secrets",
        "evil",
        "{group: '', kind: Secret}",
    )
    .await;
    let wrong_group: GatewayReferenceGrant = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: wrong-group, namespace: team-a}\nspec:\n  from: [{group: '', kind: PortBinding, namespace: evil}]\n  to: [{group: tunnel.achetronic.com, kind: EdgeNode}]\n",
    )
    .unwrap();
    Api::<GatewayReferenceGrant>::namespaced(bed.client.clone(), "team-a")
        .create(&PostParams::default(), &wrong_group)
        .await
        .unwrap();
    gateway_grant(
        &bed,
        "team-a",
        "edge",
        "evil",
        "{group: tunnel.achetronic.com, kind: EdgeNode, name: edge}",
    )
    .await;
    // The EdgeNode granted: planned; the Service of `networking` still needs its own grant.
    let seen = until_binding(&evil, "web", &row("plain", "Served", ""), &log).await;
    assert_eq!(
        seen,
        vec![
            row("ingress", "Refused", "ReferenceNotGranted"),
            row("plain", "Served", ""),
        ],
        "{}",
        log_of(&log)
    );
    gateway_grant(
        &bed,
        "networking",
        "evil",
        "evil",
        "{group: '', kind: Service}",
    )
    .await;
    until_binding(&evil, "web", &row("ingress", "Served", ""), &log).await;

    // Planned, waiting for the VPS (a closed port): what a granted PortBinding shows.
    until_reason(&evil, "web", "EdgeNodeNotReady", &log).await;

    // team-a withdraws its consent: refused again, only the wrong ones left.
    Api::<GatewayReferenceGrant>::namespaced(bed.client.clone(), "team-a")
        .delete("edge", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    until_reason(&evil, "web", "ReferenceNotGranted", &log).await;
}

/// One of our deprecated grants, `name` in `namespace`, from PortBindings of `from_ns` to `to`
/// (`{kind: K, name: N}`).
async fn our_grant(bed: &TenantBed, namespace: &str, name: &str, from_ns: &str, to: &str) {
    let grant: ReferenceGrant = serde_yaml::from_str(&format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  from: [{{kind: PortBinding, namespace: {from_ns}}}]\n  to: [{to}]\n"
    ))
    .unwrap();
    Api::<ReferenceGrant>::namespaced(bed.client.clone(), namespace)
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
}

/// Issue 19, the migration the user guide documents, end to end: a PortBinding of `evil` uses
/// team-a's EdgeNode and Services of `networking` and `other`, refused without consent and
/// served under our deprecated grants. Our grants of team-a and networking, listed as
/// `kubectl get referencegrants.tunnel.achetronic.com -A -o yaml` lists them, go through the
/// real `tunnel migrate-grants`; its output is applied and those grants of ours deleted; then
/// `other`'s (not migrated) is deleted too. One watch delivers a kind's events in order, so
/// once the operator refuses `other`'s Service it has seen the migrated grants go: the same
/// status shows the EdgeNode and `networking`'s Service still granted, by the converted grants
/// alone (deleting the converted EdgeNode grant refuses the PortBinding again).
#[tokio::test(flavor = "multi_thread")]
async fn migrating_our_grants_to_gateway_api_keeps_consent() {
    let bed = TenantBed::start().await;
    install_gateway_api_grants(&bed).await;
    namespace(&bed.client, "other").await.unwrap();
    for (ns, name, ip, port) in [
        ("networking", "internal-ingress", "10.96.0.30", 443),
        ("other", "probe", "10.96.0.31", 8443),
    ] {
        service(&bed.client, ns, name, ip, &[(port, "TCP")])
            .await
            .unwrap();
    }
    bed.port_binding(
        "evil",
        "web",
        "{name: edge, namespace: team-a}",
        "    - {name: ingress, protocol: TCP, listenPort: 443, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}\n    - {name: probe, protocol: TCP, listenPort: 8443, target: {service: {name: probe, namespace: other, port: 8443}}}\n",
    )
    .await;
    bed.edge_node().await;
    let (_operator, log) = bed.operator("migration", &["--cross-namespace-targets=require-grant"]);
    let evil: Api<PortBinding> = Api::namespaced(bed.client.clone(), "evil");
    let row = |name: &str, state: &str, reason: &str| {
        (name.to_owned(), state.to_owned(), reason.to_owned())
    };

    // Neither kind of grant: the EdgeNode is refused.
    let (_, _, message) = until_reason(&evil, "web", "ReferenceNotGranted", &log).await;
    assert!(message.contains("EdgeNode team-a/edge"), "{message}");
    // Our grant of the EdgeNode: planned, the Services of the other namespaces still refused.
    our_grant(
        &bed,
        "team-a",
        "edge",
        "evil",
        "{kind: EdgeNode, name: edge}",
    )
    .await;
    let seen = until_binding(
        &evil,
        "web",
        &row("ingress", "Refused", "ReferenceNotGranted"),
        &log,
    )
    .await;
    assert_eq!(
        seen,
        vec![
            row("ingress", "Refused", "ReferenceNotGranted"),
            row("probe", "Refused", "ReferenceNotGranted"),
        ]
    );
    our_grant(
        &bed,
        "networking",
        "evil",
        "evil",
        "{kind: Service, name: internal-ingress}",
    )
    .await;
    our_grant(&bed, "other", "evil", "evil", "{kind: Service}").await;
    let seen = until_binding(&evil, "web", &row("probe", "Served", ""), &log).await;
    assert_eq!(
        seen,
        vec![row("ingress", "Served", ""), row("probe", "Served", "")],
        "{}",
        log_of(&log)
    );

    // The migration: our grants as `kubectl get -A -o yaml` prints them (a List; `other`'s
    // left out), through the binary, applied.
    let ours = Api::<ReferenceGrant>::all(bed.client.clone());
    let items: Vec<ReferenceGrant> = ours
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|g| g.metadata.namespace.as_deref() != Some("other"))
        .collect();
    let list = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}
    }))
    .unwrap();
    let mut child = std::process::Command::new(bed.bed.binary())
        .arg("migrate-grants")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), list.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 ReferenceGrant(s) converted"), "{stderr}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&printed) {
        let grant: GatewayReferenceGrant = serde::Deserialize::deserialize(doc).unwrap();
        let namespace = grant.metadata.namespace.clone().unwrap();
        applied.push((namespace.clone(), grant.metadata.name.clone().unwrap()));
        Api::<GatewayReferenceGrant>::namespaced(bed.client.clone(), &namespace)
            .create(&PostParams::default(), &grant)
            .await
            .unwrap();
    }
    applied.sort();
    assert_eq!(
        applied,
        [
            ("networking".to_owned(), "evil".to_owned()),
            ("team-a".to_owned(), "edge".to_owned())
        ],
        "{printed}"
    );

    // Ours deleted: the migrated ones, then `other`'s.
    for (ns, name) in [
        ("team-a", "edge"),
        ("networking", "evil"),
        ("other", "evil"),
    ] {
        Api::<ReferenceGrant>::namespaced(bed.client.clone(), ns)
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }
    let seen = until_binding(
        &evil,
        "web",
        &row("probe", "Refused", "ReferenceNotGranted"),
        &log,
    )
    .await;
    assert_eq!(
        seen,
        vec![
            row("ingress", "Served", ""),
            row("probe", "Refused", "ReferenceNotGranted"),
        ],
        "{}",
        log_of(&log)
    );

    // The consent is now the converted grants': without team-a's, the EdgeNode is refused.
    Api::<GatewayReferenceGrant>::namespaced(bed.client.clone(), "team-a")
        .delete("edge", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "PortBinding web: the EdgeNode refused again",
        Duration::from_secs(120),
        async || {
            ready(&evil, "web")
                .await
                .filter(|c| c.1 == "ReferenceNotGranted" && c.2.contains("EdgeNode team-a/edge"))
        },
        || log_of(&log),
    )
    .await;
}
