//! Two sources of bindings in one table (DESIGN.md §3): PortBindings and LoadBalancer Services
//! take part in the same conflict rule (the older object keeps the port, whatever its kind),
//! each outcome goes back to its own object, a Service in another namespace needs a grant for
//! kind Service like a PortBinding does for its kind, and their Envoy names never meet.

use k8s_openapi::api::core::v1::Service;

use crate::plan_inputs::{edge_grants, input, ip, node, pb};
use tunnel::crd::{FromKind, GrantFrom, GrantTo, ReferenceGrantSpec, ToKind};
use tunnel::object_key::ObjectKey;
use tunnel::plan::{
    Layout, Plan, Reason, SourceInput, SourceKind, StaticResolver, load_balancer, plan,
};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\n";

/// A Service of our class in `namespace`, created at `created` (seconds after 2026-01-01),
/// with TCP `ports`, on EdgeNode `default/edge`.
fn lb(namespace: &str, name: &str, created: u32, ports: &[(&str, u16)]) -> SourceInput {
    let ports: String = ports
        .iter()
        .map(|(n, p)| format!("  - {{name: {n}, port: {p}, protocol: TCP}}"))
        .collect::<Vec<_>>()
        .join("\n");
    let svc: Service = serde_yaml::from_str(&format!(
        "metadata:\n  name: {name}\n  namespace: {namespace}\n  creationTimestamp: '2026-01-01T00:{:02}:{:02}Z'\nspec:\n  type: LoadBalancer\n  loadBalancerClass: {}\n  ports:\n{ports}\n",
        created / 60,
        created % 60,
        load_balancer::CLASS
    ))
    .unwrap();
    load_balancer::source(&svc, &ObjectKey::new("default", "edge"), "203.0.113.10")
}

/// A PortBinding's TCP binding `name` on `port`, created at `created` seconds after
/// 2026-01-01.
fn pb_at(name: &str, created: u32, port: u16) -> SourceInput {
    pb(
        "default",
        name,
        Some(1_767_225_600 + i64::from(created)),
        &format!(
            "- {{name: http, protocol: TCP, listenPort: {port}, target: {{address: 10.1.1.1, port: 80}}}}\n"
        ),
    )
}

fn resolver() -> StaticResolver {
    edge_grants(StaticResolver::default())
        .with_service("default", "game", Some(ip("10.96.0.40")), &[80, 7000])
        .with_service("default", "web", Some(ip("10.96.0.41")), &[80])
        .with_service("team-b", "arcade", Some(ip("10.96.0.42")), &[9000])
}

fn run(sources: Vec<SourceInput>, resolver: &StaticResolver) -> Plan {
    plan(&input(node(NODE), sources, Layout::default()), resolver).unwrap()
}

fn refusal(p: &Plan, kind: SourceKind, source: &str, binding: &str) -> Option<(Reason, String)> {
    let o = p
        .outcomes
        .iter()
        .find(|o| o.id.kind == kind && o.id.source == source && o.id.binding == binding)
        .unwrap_or_else(|| panic!("no outcome for {kind:?} {source}/{binding}"));
    o.refusal.clone().map(|r| (r.reason, r.message))
}

#[test]
fn the_older_object_keeps_the_port_whatever_its_kind() {
    // The Service is older than the PortBinding: it keeps port 80.
    let p = run(
        vec![
            pb_at("late", 10, 80),
            lb("default", "game", 5, &[("http", 80), ("game", 7000)]),
        ],
        &resolver(),
    );
    assert_eq!(refusal(&p, SourceKind::Service, "game", "http"), None);
    let (reason, message) = refusal(&p, SourceKind::PortBinding, "late", "http").unwrap();
    assert_eq!(reason, Reason::PortConflict);
    assert_eq!(
        message,
        "TCP/80 is already used by port \"http\" of Service default/game (the older Service keeps the port); choose another listenPort"
    );
    // The other way round: the PortBinding is older.
    let p = run(
        vec![
            pb_at("early", 1, 80),
            lb("default", "game", 5, &[("http", 80), ("game", 7000)]),
        ],
        &resolver(),
    );
    let (reason, message) = refusal(&p, SourceKind::Service, "game", "http").unwrap();
    assert_eq!(reason, Reason::PortConflict);
    assert!(
        message.ends_with("(the older PortBinding keeps the port); choose another port (the Service's spec.ports[].port)"),
        "{message}"
    );
    assert_eq!(
        refusal(&p, SourceKind::Service, "game", "game"),
        None,
        "its other port is served"
    );
    assert_eq!(
        p.served_ports(SourceKind::Service, "default", "game"),
        "7000/TCP"
    );
    assert_eq!(
        p.served_ports(SourceKind::PortBinding, "default", "early"),
        "80/TCP"
    );
    assert_eq!(
        p.applied_sources,
        [
            "Service default/game".to_owned(),
            "default/early".to_owned()
        ]
    );
}

#[test]
fn a_port_binding_and_a_service_of_the_same_name_never_share_an_envoy_name() {
    // PortBinding default/game with a binding "http", Service default/game with a port "http".
    let p = run(
        vec![
            pb(
                "default",
                "game",
                Some(1),
                "- {name: http, protocol: TCP, listenPort: 81, target: {address: 10.1.1.1, port: 80}}\n",
            ),
            lb("default", "game", 5, &[("http", 80)]),
        ],
        &resolver(),
    );
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
    let cds = &p.vps_file("/etc/envoy/cds.yaml").unwrap().contents;
    assert!(
        cds.contains("tcp_81_default_game_http\n") || cds.contains("tcp_81_default_game_http'"),
        "{cds}"
    );
    assert!(cds.contains("tcp_80_default_game_http_svc"), "{cds}");
}

#[test]
fn a_service_of_another_namespace_needs_a_grant_for_kind_service() {
    let arcade = || lb("team-b", "arcade", 5, &[("play", 9000)]);
    // `edge_grants` lets team-b's PortBindings use the EdgeNode, not its Services.
    let p = run(vec![arcade()], &resolver());
    let (reason, message) = refusal(&p, SourceKind::Service, "arcade", "play").unwrap();
    assert_eq!(reason, Reason::ReferenceNotGranted);
    assert!(message.contains("Service"), "{message}");
    assert!(p.planned.is_empty(), "an ungranted Service claims no port");
    let granted = resolver().with_grant(
        "default",
        ReferenceGrantSpec {
            from: vec![GrantFrom {
                kind: FromKind::Service,
                namespace: "team-b".into(),
            }],
            to: vec![GrantTo {
                kind: ToKind::EdgeNode,
                name: Some("edge".into()),
            }],
        },
    );
    let p = run(vec![arcade()], &granted);
    assert_eq!(refusal(&p, SourceKind::Service, "arcade", "play"), None);
}

#[test]
fn a_service_with_a_problem_claims_no_port() {
    let mut broken = lb("default", "game", 1, &[("http", 80)]);
    broken.problem = Some(tunnel::plan::Refusal {
        reason: Reason::InvalidSpec,
        message: "annotation x: bad".into(),
    });
    let p = run(vec![broken, pb_at("late", 10, 80)], &resolver());
    assert_eq!(
        refusal(&p, SourceKind::Service, "game", "http"),
        Some((Reason::InvalidSpec, "annotation x: bad".into()))
    );
    assert_eq!(
        refusal(&p, SourceKind::PortBinding, "late", "http"),
        None,
        "the port is free for others"
    );
}
