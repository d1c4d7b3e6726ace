//! What a PortBinding may publish (issue 24 items 1 and 6, review H1): every restricted target
//! is refused with `RestrictedTarget` whether it is a raw `target.address` or the ClusterIP a
//! target Service resolves to; `--allow-restricted-targets` lifts it; target Services in other
//! namespaces follow `--cross-namespace-targets` (`allow`: README Examples 2 and 3 unchanged;
//! `require-grant`: only with a grant there); and `tunnel render` judges the same way.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::plan_inputs::{input, ip, node, pb};
use tunnel::crd::{FromKind, GrantFrom, GrantTo, ReferenceGrantSpec, ToKind};
use tunnel::plan::{CrossNamespaceTargets, Layout, Plan, StaticResolver, TargetPolicy, plan};

/// The node `default/edge`, tunnel network 10.200.0.0/24 (the default).
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

/// The API server: ClusterIP 10.96.0.1 and endpoint 192.0.2.50, as the operator learns them
/// from `default/kubernetes` and its EndpointSlices.
fn policy() -> TargetPolicy {
    TargetPolicy {
        api_server: vec![ip("10.96.0.1"), ip("192.0.2.50")],
        ..TargetPolicy::default()
    }
}

/// Every restricted address, with a word its refusal message must hold.
const RESTRICTED: [(&str, &str); 12] = [
    ("127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("100.100.100.200", "Alibaba Cloud"),
    ("168.63.129.16", "Azure"),
    ("fd00:ec2::254", "AWS"),
    ("fd20:ce::254", "Google Cloud"),
    ("10.200.0.1", "tunnel network"),
    ("10.200.0.2", "tunnel network"),
    ("10.96.0.1", "API server"),
    ("192.0.2.50", "API server"),
];

#[test]
fn every_restricted_target_is_refused_as_an_address_and_through_a_service() {
    // One binding per address, twice: raw, and through Service `tenant/svc-N` whose ClusterIP
    // it is. Plus `default/kubernetes:443`, the API server's own Service.
    let mut bindings = String::new();
    let mut resolver = StaticResolver::default()
        .with_target_policy(policy())
        .with_service("default", "kubernetes", Some(ip("10.96.0.1")), &[443])
        .with_service("tenant", "fine", Some(ip("10.96.0.77")), &[80]);
    for (i, (address, _)) in RESTRICTED.iter().enumerate() {
        let _ = writeln!(
            bindings,
            "- {{name: raw-{i}, protocol: TCP, listenPort: {}, target: {{address: '{address}', port: 80}}}}",
            10_000 + i
        );
        let _ = writeln!(
            bindings,
            "- {{name: svc-{i}, protocol: TCP, listenPort: {}, target: {{service: {{name: svc-{i}, namespace: tenant, port: 80}}}}}}",
            11_000 + i
        );
        resolver = resolver.with_service("tenant", &format!("svc-{i}"), Some(ip(address)), &[80]);
    }
    bindings.push_str("- {name: api, protocol: TCP, listenPort: 6443, target: {service: {name: kubernetes, namespace: default, port: 443}}}\n");
    bindings.push_str("- {name: fine, protocol: TCP, listenPort: 8080, target: {service: {name: fine, namespace: tenant, port: 80}}}\n");
    bindings.push_str("- {name: fine-raw, protocol: TCP, listenPort: 8081, target: {address: 10.96.0.78, port: 80}}\n");
    let pbs = || vec![pb("default", "grab", Some(1), &bindings)];

    let p = plan(&input(node(NODE), pbs(), Layout::default()), &resolver).unwrap();
    for (i, (address, what)) in RESTRICTED.iter().enumerate() {
        for (binding, subject) in [
            (format!("raw-{i}"), "target.address ".to_owned()),
            (
                format!("svc-{i}"),
                format!("target Service tenant/svc-{i} resolves to "),
            ),
        ] {
            let (reason, message) =
                refusal(&p, &binding).unwrap_or_else(|| panic!("{binding} ({address}) planned"));
            assert_eq!(
                reason, "RestrictedTarget",
                "{binding} ({address}): {message}"
            );
            assert!(
                message.starts_with(&subject)
                    && message.contains(what)
                    && message.contains("--allow-restricted-targets"),
                "{binding}: {message}"
            );
        }
    }
    let (reason, message) = refusal(&p, "api").expect("default/kubernetes planned");
    assert_eq!(reason, "RestrictedTarget");
    assert_eq!(
        message,
        "target Service default/kubernetes resolves to 10.96.0.1, which is an address of the Kubernetes API server; publishing it needs the operator's --allow-restricted-targets flag"
    );
    assert_eq!(refusal(&p, "fine"), None, "an ordinary Service is served");
    assert_eq!(
        refusal(&p, "fine-raw"),
        None,
        "an ordinary address is served"
    );
    let forwarded = &p.uplink_file.contents;
    for (address, _) in RESTRICTED {
        assert!(
            !forwarded.contains(&format!("\"{address}\"")),
            "the uplinks forward to {address}: {forwarded}"
        );
    }

    // With the operator's flag the user chose: the IPv4 ones are served, the IPv6 ones are
    // refused only because the uplinks forward IPv4.
    let allowed = resolver.with_target_policy(TargetPolicy {
        allow_restricted: true,
        ..policy()
    });
    let p = plan(&input(node(NODE), pbs(), Layout::default()), &allowed).unwrap();
    for o in &p.outcomes {
        if let Some(r) = &o.refusal {
            assert_eq!(r.reason.as_str(), "UnsupportedTarget", "{o:?}");
        }
    }
    assert_eq!(refusal(&p, "api"), None);
}

#[test]
fn the_tunnel_network_is_the_nodes_own() {
    let bindings = "- {name: bridge, protocol: TCP, listenPort: 8000, target: {address: 10.201.0.1, port: 40600}}\n\
                    - {name: default-net, protocol: TCP, listenPort: 8001, target: {address: 10.200.0.1, port: 40600}}";
    let node_yaml = format!("{NODE}tunnel: {{network: 10.201.0.0/29}}\n");
    let p = plan(
        &input(
            node(&node_yaml),
            vec![pb("default", "x", Some(1), bindings)],
            Layout::default(),
        ),
        &StaticResolver::default(),
    )
    .unwrap();
    let (reason, message) = refusal(&p, "bridge").expect("the relay's admin bridge planned");
    assert_eq!(reason, "RestrictedTarget");
    assert!(message.contains("tunnel network"), "{message}");
    assert_eq!(
        refusal(&p, "default-net"),
        None,
        "another network is not this node's tunnel"
    );
}

fn service_grant(from_ns: &str) -> ReferenceGrantSpec {
    ReferenceGrantSpec {
        from: vec![GrantFrom {
            kind: FromKind::PortBinding,
            namespace: from_ns.into(),
        }],
        to: vec![GrantTo {
            kind: ToKind::Service,
            name: None,
        }],
    }
}

#[test]
fn services_in_other_namespaces_follow_the_cross_namespace_policy() {
    // README Example 2's shape: a PortBinding in `default` targeting networking's Service.
    let bindings = "- {name: ingress, protocol: TCP, listenPort: 443, target: {service: {name: internal-ingress, namespace: networking, port: 443}}}\n\
                    - {name: ghost, protocol: TCP, listenPort: 444, target: {service: {name: ghost, namespace: networking, port: 443}}}\n\
                    - {name: own, protocol: TCP, listenPort: 80, target: {service: {name: my-web, namespace: default, port: 8080}}}";
    let pbs = || vec![pb("default", "public-edge", Some(1), bindings)];
    let base = StaticResolver::default()
        .with_service(
            "networking",
            "internal-ingress",
            Some(ip("10.96.0.30")),
            &[443],
        )
        .with_service("default", "my-web", Some(ip("10.96.0.20")), &[8080]);
    let with = |resolver: StaticResolver, policy| {
        let resolver = resolver.with_target_policy(TargetPolicy {
            cross_namespace_targets: policy,
            ..TargetPolicy::default()
        });
        plan(&input(node(NODE), pbs(), Layout::default()), &resolver).unwrap()
    };

    // The default, `allow`: served without a grant, as the README promises.
    assert_eq!(
        CrossNamespaceTargets::default(),
        CrossNamespaceTargets::Allow
    );
    let p = with(base.clone(), CrossNamespaceTargets::Allow);
    assert_eq!(refusal(&p, "ingress"), None);
    assert_eq!(refusal(&p, "own"), None);
    assert_eq!(
        refusal(&p, "ghost").map(|r| r.0).as_deref(),
        Some("ServiceNotFound")
    );

    // `require-grant`: refused before the lookup (the same answer whether the Service exists).
    let p = with(base.clone(), CrossNamespaceTargets::RequireGrant);
    for binding in ["ingress", "ghost"] {
        let (reason, message) = refusal(&p, binding).unwrap_or_else(|| panic!("{binding} served"));
        assert_eq!(reason, "ReferenceNotGranted", "{binding}");
        assert!(
            message.contains("no ReferenceGrant in namespace networking")
                && message.contains("to kind Service"),
            "{message}"
        );
    }
    assert_eq!(refusal(&p, "own"), None, "its own namespace needs nothing");
    // A grant in the referencing namespace is no consent; one in `networking` is.
    let p = with(
        base.clone().with_grant("default", service_grant("default")),
        CrossNamespaceTargets::RequireGrant,
    );
    assert!(refusal(&p, "ingress").is_some());
    let p = with(
        base.with_grant("networking", service_grant("default")),
        CrossNamespaceTargets::RequireGrant,
    );
    assert_eq!(refusal(&p, "ingress"), None);
    assert_eq!(
        refusal(&p, "ghost").map(|r| r.0).as_deref(),
        Some("ServiceNotFound")
    );
}

const RENDER_EXTRA: &str = r"
apiVersion: v1
kind: Service
metadata: {name: internal-ingress, namespace: networking}
spec: {clusterIP: 10.96.0.30, ports: [{port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.50]}]
ports: [{name: https, port: 6443}]
---
apiVersion: tunnel.achetronic.com/v1alpha1
kind: PortBinding
metadata: {name: grab, namespace: default}
spec:
  edgeNodeRef: {name: edge-node}
  bindings:
    - {name: api, protocol: TCP, listenPort: 6443, target: {service: {name: kubernetes, namespace: default, port: 443}}}
    - {name: api-endpoint, protocol: TCP, listenPort: 6444, target: {address: 192.0.2.50, port: 6443}}
    - {name: bridge, protocol: TCP, listenPort: 6445, target: {address: 10.200.0.1, port: 40600}}
    - {name: alibaba, protocol: TCP, listenPort: 6446, target: {address: 100.100.100.200, port: 80}}
";

fn render(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .arg("render")
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tunnel_render_judges_targets_as_the_operator_does() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.yaml");
    std::fs::write(&extra, RENDER_EXTRA).unwrap();
    let extra = extra.to_str().unwrap();
    let files = [
        "-f",
        "tests/fixtures/readme/example1.yaml",
        "-f",
        "tests/fixtures/readme/example2.yaml",
        "-f",
        extra,
    ];
    let out = render(&files);
    for want in [
        // README Example 2, unchanged, under the default policy.
        "default/public-edge \"https-web\" TCP/443: planned",
        "default/public-edge \"dns-udp\" UDP/53: planned",
        "default/grab \"api\" TCP/6443: invalid (RestrictedTarget)",
        "default/grab \"api-endpoint\" TCP/6444: invalid (RestrictedTarget)",
        "default/grab \"bridge\" TCP/6445: invalid (RestrictedTarget)",
        "default/grab \"alibaba\" TCP/6446: invalid (RestrictedTarget)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    let mut strict = files.to_vec();
    strict.extend(["--cross-namespace-targets", "require-grant"]);
    let out = render(&strict);
    assert!(
        out.contains("default/public-edge \"https-web\" TCP/443: invalid (ReferenceNotGranted)"),
        "{out}"
    );

    let mut allowed = files.to_vec();
    allowed.push("--allow-restricted-targets");
    let out = render(&allowed);
    assert!(
        out.contains("default/grab \"api\" TCP/6443: planned"),
        "{out}"
    );
}
