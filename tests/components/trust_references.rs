//! Trust boundary 6 (issue 12), the planner's part: a PortBinding cannot make the operator copy
//! another namespace's TLS private key to its VPS, nor use another namespace's EdgeNode,
//! unless a `ReferenceGrant` in that namespace allows it; and a raw `target.address` that is
//! loopback, link-local (cloud metadata) or the API server's is refused with
//! `RestrictedTarget` unless the operator's flag allows it. Each refusal is binding-level:
//! the PortBinding's other bindings are still served. (The README examples, same-namespace
//! references, are planned unchanged: `tests/plan_render.rs`.)

use crate::edge_support::{pki, tls_secret};
use crate::plan_inputs::{input, node, pb};
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
