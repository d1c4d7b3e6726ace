//! The user guide's examples are the ones the tests apply: each YAML block of
//! `docs/user-guide.md` headed "Example N" is byte for byte `tests/fixtures/readme/exampleN.yaml`,
//! so what a user copies is what `crd_admission`, `plan_render` and the end-to-end tests prove.

const GUIDE: &str = "docs/user-guide.md";

/// The first fenced `yaml` block after the heading that starts with `heading`.
fn yaml_after(text: &str, heading: &str) -> Option<String> {
    let at = text.find(heading)?;
    let rest = &text[at..];
    let start = rest.find("```yaml\n")? + "```yaml\n".len();
    let len = rest[start..].find("```")?;
    Some(rest[start..start + len].to_owned())
}

#[test]
fn the_user_guide_shows_the_fixtures_unchanged() {
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    for n in 1..=5 {
        let fixture =
            std::fs::read_to_string(format!("tests/fixtures/readme/example{n}.yaml")).unwrap();
        let shown = yaml_after(&guide, &format!("### Example {n}:"))
            .unwrap_or_else(|| panic!("{GUIDE} has no YAML block under \"### Example {n}:\""));
        assert!(
            shown == fixture,
            "{GUIDE} Example {n} differs from tests/fixtures/readme/example{n}.yaml:\n{shown}"
        );
    }
}

#[test]
fn the_load_balancer_example_is_the_fixture_and_is_served_as_documented() {
    use k8s_openapi::api::core::v1::Service;
    use tunnel::plan::load_balancer;
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    let fixture = std::fs::read_to_string("tests/fixtures/readme/loadbalancer.yaml").unwrap();
    let shown = yaml_after(&guide, "### Services of type LoadBalancer").unwrap();
    assert_eq!(shown, fixture, "{GUIDE}'s LoadBalancer example");
    let svc: Service = serde_yaml::from_str(&fixture).unwrap();
    assert!(load_balancer::is_ours(
        &svc,
        load_balancer::LoadBalancerSettings::default()
    ));
    let node = tunnel::object_key::ObjectKey::new("default", "edge-node");
    let source = load_balancer::source(&svc, &node, "203.0.113.10");
    assert_eq!(source.problem, None);
    let ports: Vec<(String, u16)> = source
        .spec
        .bindings
        .iter()
        .map(|b| (b.protocol.to_string(), b.listen_port))
        .collect();
    assert_eq!(ports, [("TCP".to_owned(), 7777), ("UDP".to_owned(), 7777)]);
    for b in &source.spec.bindings {
        let ranges = &b.policy.as_ref().unwrap().source_ranges;
        assert_eq!(ranges, &["198.51.100.0/24".to_owned()]);
    }
    // The README's shorter version says the same.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut short: Service =
        serde_yaml::from_str(&yaml_after(&readme, "### Services of type LoadBalancer").unwrap())
            .unwrap();
    // `kubectl apply` puts it in the current namespace.
    short.metadata.namespace = Some("default".into());
    assert!(load_balancer::is_ours(
        &short,
        load_balancer::LoadBalancerSettings::default()
    ));
    let short = load_balancer::source(&short, &node, "203.0.113.10");
    assert_eq!(short.problem, None);
    assert_eq!(short.spec.bindings, source.spec.bindings);
}

#[test]
fn the_guide_and_the_readme_name_only_files_that_exist() {
    // Paths a user is told to run or read.
    for doc in [GUIDE, "README.md"] {
        let text = std::fs::read_to_string(doc).unwrap();
        for path in [
            "deploy/images.sh",
            "charts/tunnel",
            "docs/operations.md",
            "docs/troubleshooting.md",
            "docs/security.md",
        ] {
            if text.contains(path) {
                assert!(
                    std::path::Path::new(path).exists(),
                    "{doc} names {path}, which does not exist"
                );
            }
        }
    }
}

/// The user guide's Gateway API ReferenceGrant for Example 2 (issue 19) is the fixture, and it
/// is the consent Example 2 needs under `require-grant`: its PortBinding's target Service in
/// `networking`, and nothing else.
#[test]
fn the_gateway_api_grant_example_is_the_fixture_and_grants_example_2_its_service() {
    use tunnel::crd::{
        FromKind, GatewayReferenceGrant, GrantInput, PortBinding, Reference, ToKind,
    };
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    let fixture = std::fs::read_to_string("tests/fixtures/readme/example2-grant.yaml").unwrap();
    let shown = yaml_after(&guide, "### Consent across namespaces").unwrap();
    assert_eq!(
        shown, fixture,
        "{GUIDE}'s Gateway API ReferenceGrant example"
    );
    let grant: GatewayReferenceGrant = serde_yaml::from_str(&fixture).unwrap();
    let grants = [GrantInput::from_gateway(&grant).unwrap()];
    let example2: PortBinding = serde_yaml::from_str(
        &std::fs::read_to_string("tests/fixtures/readme/example2.yaml").unwrap(),
    )
    .unwrap();
    let from_namespace = example2.metadata.namespace.as_deref().unwrap();
    let service = example2
        .spec
        .bindings
        .iter()
        .find_map(|b| b.target.service.as_ref())
        .unwrap();
    let to_namespace = service.namespace.as_str();
    let reference = |to_kind, to_name| Reference {
        from_kind: FromKind::PortBinding,
        from_namespace,
        to_kind,
        to_namespace,
        to_name,
    };
    assert!(tunnel::crd::reference_allowed(
        &reference(ToKind::Service, &service.name),
        &grants
    ));
    assert!(!tunnel::crd::reference_allowed(
        &reference(ToKind::Service, "another"),
        &grants
    ));
    assert!(!tunnel::crd::reference_allowed(
        &reference(ToKind::Secret, &service.name),
        &grants
    ));
}

/// Issue 19: the line that installs Gateway API's CRDs names the version the test bed pins
/// (`tests/testbed/setup.sh`), wherever a user reads it.
#[test]
fn the_gateway_api_install_line_is_the_test_beds_pin() {
    let setup = std::fs::read_to_string("tests/testbed/setup.sh").unwrap();
    let pin = setup
        .lines()
        .find_map(|l| l.strip_prefix("GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-"))
        .and_then(|rest| rest.strip_suffix('}'))
        .expect("tests/testbed/setup.sh pins GATEWAY_API_VERSION");
    let line = format!(
        "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{pin}/standard-install.yaml"
    );
    for file in [GUIDE, "docs/operations.md", "charts/tunnel/values.yaml"] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(&line), "{file} lacks `{line}`");
    }
}

/// Issue 19: the user guide's grant of our deprecated kind, through `tunnel migrate-grants`'s
/// conversion, is the Gateway API grant the guide shows above it ("becomes the Gateway API
/// grant above").
#[test]
fn the_guides_migration_example_converts_to_the_guides_gateway_api_grant() {
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    let ours = yaml_after(&guide, "**Migrating from `tunnel.achetronic.com/v1alpha1`").unwrap();
    let theirs = yaml_after(&guide, "### Consent across namespaces").unwrap();
    let (converted, count) = tunnel::crd::grant_migration::migrate(&ours).unwrap();
    assert_eq!(count, 1);
    let converted: serde_yaml::Value = serde_yaml::from_str(&converted).unwrap();
    let shown: serde_yaml::Value = serde_yaml::from_str(&theirs).unwrap();
    assert_eq!(converted, shown, "{converted:?}");
}

/// The README's and the user guide's Gateway API examples (issue 19) parse as Gateway API's
/// objects and translate to the bindings they promise: the README's TLSRoute by SNI on :443,
/// the guide's TCPRoute on :2222, both served by Example 1's EdgeNode.
#[test]
fn the_gateway_api_examples_become_the_bindings_they_describe() {
    use tunnel::crd::gateway::{Gateway, GatewayClass};
    use tunnel::crd::gateway_route::{RouteObject, TcpRoute, TlsRoute};
    use tunnel::plan::gateway::translate;

    for (doc, heading) in [
        ("README.md", "### Gateway API"),
        (GUIDE, "### Gateway API: Gateways"),
    ] {
        let text = std::fs::read_to_string(doc).unwrap();
        let yaml = yaml_after(&text, heading).unwrap();
        let docs: Vec<&str> = yaml.split("\n---\n").collect();
        let class: GatewayClass = serde_yaml::from_str(docs[0]).unwrap();
        let gateway: Gateway = serde_yaml::from_str(docs[1]).unwrap();
        let route = match serde_yaml::from_str::<serde_yaml::Value>(docs[2]).unwrap()["kind"]
            .as_str()
            .unwrap()
        {
            "TLSRoute" => RouteObject::from(&serde_yaml::from_str::<TlsRoute>(docs[2]).unwrap()),
            _ => RouteObject::from(&serde_yaml::from_str::<TcpRoute>(docs[2]).unwrap()),
        };
        let src = translate(
            &gateway,
            Some(&class),
            &[route],
            &std::collections::BTreeMap::default(),
            &tunnel::plan::StaticResolver::default(),
        );
        assert_eq!(
            src.edge_nodes,
            Ok(vec![tunnel::object_key::ObjectKey::new(
                "default",
                "edge-node"
            )]),
            "{doc}"
        );
        assert_eq!(src.source.spec.bindings.len(), 1, "{doc}");
        let b = &src.source.spec.bindings[0];
        let names = b
            .tls
            .as_ref()
            .map(|t| t.server_names.clone())
            .unwrap_or_default();
        match doc {
            "README.md" => {
                assert_eq!(
                    (b.listen_port, names),
                    (443, vec!["shop.example.com".to_owned()])
                );
            }
            _ => assert_eq!((b.listen_port, names), (2222, Vec::<String>::new())),
        }
        assert!(src.parents.iter().all(|p| p.accepted.is_ok()), "{doc}");
    }
}

/// The README's "Several edges" example (issue 20) is a PortBinding on two EdgeNodes with
/// external-dns's hostname annotation, the shape the operator turns into a DNSEndpoint.
#[test]
fn the_several_edges_example_names_two_edge_nodes_and_a_hostname() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let yaml = yaml_after(&readme, "### Several edges").expect("a YAML block after the heading");
    let pb: tunnel::crd::PortBinding = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        pb.spec.edge_nodes("default"),
        [
            tunnel::object_key::ObjectKey::new("default", "vps-a"),
            tunnel::object_key::ObjectKey::new("default", "vps-b")
        ]
    );
    assert!(pb.spec.edge_node_ref.is_none());
    let hostname =
        pb.metadata.annotations.unwrap()[tunnel::actors::dns_endpoint::ANNOTATION_HOSTNAME].clone();
    let endpoints = tunnel::actors::dns_endpoint::endpoints(
        &hostname,
        None,
        &["203.0.113.10".into(), "2001:db8::10".into()],
    );
    assert_eq!(endpoints.len(), 2, "an A and an AAAA record: {endpoints:?}");
    assert_eq!(endpoints[0]["dnsName"], "web.example.com");
}
