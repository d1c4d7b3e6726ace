//! The conflict rules, case by case, with the exact reason and message each loser gets, and
//! proof that the other bindings are still planned.

#![allow(clippy::type_complexity)]

use crate::plan_inputs::{input, node, pb, services};
use tunnel::plan::{Layout, OutcomeKind, Plan, SourceInput, SourceKind, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\n";

fn run(pbs: Vec<SourceInput>) -> Plan {
    plan(&input(node(NODE), pbs, Layout::default()), &services()).unwrap()
}

fn outcome<'a>(p: &'a Plan, pb: &str, binding: &str) -> &'a tunnel::plan::BindingOutcome {
    p.outcomes
        .iter()
        .find(|o| o.id.source == pb && o.id.binding == binding)
        .unwrap_or_else(|| panic!("no outcome for {pb}/{binding}"))
}

fn tcp(name: &str, port: u16) -> String {
    format!(
        "- {{name: {name}, protocol: TCP, listenPort: {port}, target: {{address: 10.1.1.1, port: 80}}}}\n"
    )
}

fn udp(name: &str, port: u16) -> String {
    format!(
        "- {{name: {name}, protocol: UDP, listenPort: {port}, target: {{address: 10.1.1.1, port: 53}}}}\n"
    )
}

fn sni(name: &str, port: u16, names: &str) -> String {
    format!(
        "- {{name: {name}, protocol: TCP, listenPort: {port}, tls: {{mode: passthrough, serverNames: [{names}]}}, target: {{address: 10.1.1.2, port: 443}}}}\n"
    )
}

/// (case, port bindings, (pb, binding) that must lose, reason, message).
#[test]
fn conflict_table() {
    let cases: Vec<(&str, Vec<SourceInput>, (&str, &str), &str, &str)> = vec![
        (
            "same TCP port: the older PortBinding keeps it",
            vec![
                pb("default", "b-new", Some(200), &tcp("http", 80)),
                pb("default", "a-old", Some(100), &tcp("http", 80)),
            ],
            ("b-new", "http"),
            "PortConflict",
            "TCP/80 is already used by binding \"http\" of PortBinding default/a-old (the older PortBinding keeps the port); choose another listenPort",
        ),
        (
            "same creation time: namespace/name decides",
            vec![
                pb("ns-b", "x", Some(100), &tcp("http", 80)),
                pb("ns-a", "x", Some(100), &tcp("web", 80)),
            ],
            ("x", "http"),
            "PortConflict",
            "TCP/80 is already used by binding \"web\" of PortBinding ns-a/x (the older PortBinding keeps the port); choose another listenPort",
        ),
        (
            "unknown creation time loses to a known one",
            vec![
                pb("default", "a", None, &tcp("http", 80)),
                pb("default", "z", Some(100), &tcp("http", 80)),
            ],
            ("a", "http"),
            "PortConflict",
            "TCP/80 is already used by binding \"http\" of PortBinding default/z (the older PortBinding keeps the port); choose another listenPort",
        ),
        (
            "the tunnel's UDP port",
            vec![pb("default", "a", Some(100), &udp("wg", 51821))],
            ("a", "wg"),
            "TunnelPortConflict",
            "UDP/51821 is the tunnel's WireGuard port (the EdgeNode's spec.tunnel.listenPort); choose another listenPort",
        ),
        (
            "the VPS's SSH port (TCP only: UDP/22 is free)",
            vec![
                pb("default", "a", Some(100), &tcp("ssh", 22)),
                pb("default", "b", Some(200), &udp("dns", 22)),
            ],
            ("a", "ssh"),
            "ReservedPort",
            "TCP/22 is the VPS's SSH port (the EdgeNode's spec.ssh.port); choose another listenPort",
        ),
        (
            "reserved readiness port",
            vec![pb("default", "a", Some(100), &tcp("ready", 40500))],
            ("a", "ready"),
            "ReservedPort",
            "port 40500 is reserved for the uplinks' /ready endpoint; choose another listenPort",
        ),
        (
            "reserved admin port, also for UDP",
            vec![pb("default", "a", Some(100), &udp("admin", 40600))],
            ("a", "admin"),
            "ReservedPort",
            "port 40600 is reserved for Envoy's admin and the uplinks' admin bridge; choose another listenPort",
        ),
        (
            "passthrough cannot join a plain TCP port",
            vec![
                pb("default", "a", Some(100), &tcp("http", 443)),
                pb("default", "b", Some(200), &sni("tls", 443, "a.example.com")),
            ],
            ("b", "tls"),
            "PortConflict",
            "TCP/443 is already used by binding \"http\" of PortBinding default/a (the older PortBinding keeps the port); only TLS passthrough bindings with distinct tls.serverNames may share a port",
        ),
        (
            "plain TCP cannot join a passthrough port",
            vec![
                pb("default", "a", Some(100), &sni("tls", 443, "a.example.com")),
                pb("default", "b", Some(200), &tcp("http", 443)),
            ],
            ("b", "http"),
            "PortConflict",
            "TCP/443 is already used by binding \"tls\" of PortBinding default/a (the older PortBinding keeps the port); choose another listenPort",
        ),
        (
            "the same server name twice",
            vec![
                pb("default", "a", Some(100), &sni("tls", 443, "a.example.com")),
                pb(
                    "default",
                    "b",
                    Some(200),
                    &sni("tls", 443, "c.example.com, A.example.com"),
                ),
            ],
            ("b", "tls"),
            "ServerNameConflict",
            "server name \"a.example.com\" on TCP/443 is already routed to binding \"tls\" of PortBinding default/a (the older PortBinding keeps it); use distinct tls.serverNames or another listenPort",
        ),
        (
            "two catch-alls",
            vec![
                pb("default", "a", Some(100), &sni("tls", 443, "")),
                pb("default", "b", Some(200), &sni("tls", 443, "")),
            ],
            ("b", "tls"),
            "CatchAllConflict",
            "TCP/443 already has a catch-all TLS passthrough binding (one without tls.serverNames): binding \"tls\" of PortBinding default/a (the older PortBinding keeps it); give this binding tls.serverNames or another listenPort",
        ),
    ];
    for (case, pbs, (lpb, lb), reason, message) in cases {
        let p = run(pbs.clone());
        let o = outcome(&p, lpb, lb);
        let r = o
            .refusal
            .as_ref()
            .unwrap_or_else(|| panic!("{case}: {lpb}/{lb} was planned"));
        assert_eq!(r.reason.as_str(), reason, "{case}");
        assert_eq!(r.message, message, "{case}");
        assert_eq!(o.kind(), OutcomeKind::Conflict, "{case}");
        // Every other binding is planned.
        for other in &p.outcomes {
            if other.id.source != lpb || other.id.binding != lb {
                assert!(other.refusal.is_none(), "{case}: {other:?}");
            }
        }
    }
}

#[test]
fn sharing_that_is_allowed() {
    // TCP and UDP on the same number; the tunnel's number on TCP; SNI names disjoint plus one
    // catch-all; an exact name beside a wildcard that covers it; two PortBindings both naming
    // a binding `http`.
    let p = run(vec![
        pb(
            "default",
            "a",
            Some(100),
            &(tcp("dns", 53) + &udp("dns-udp", 53) + &tcp("wg-tcp", 51821)),
        ),
        pb(
            "default",
            "b",
            Some(200),
            &(sni("one", 443, "a.example.com") + &sni("all", 443, "")),
        ),
        pb(
            "other",
            "c",
            Some(300),
            &(sni("two", 443, "'*.example.com'") + &tcp("http", 80)),
        ),
        pb("default", "d", Some(400), &tcp("http", 8080)),
    ]);
    for o in &p.outcomes {
        assert!(o.refusal.is_none(), "{o:?}");
    }
    assert_eq!(p.planned.len(), 8);
    let lds = &p.vps_file("/etc/envoy/lds.yaml").unwrap().contents;
    assert!(lds.contains("name: tcp_443_default_b_one"), "{lds}");
    assert!(
        lds.contains("name: tcp_80_other_c_http") && lds.contains("name: tcp_8080_default_d_http")
    );
    // Shared passthrough port: named bindings get their own tunnel port, the catch-all keeps 443.
    let tunnel_ports: Vec<(String, u16)> = p
        .planned
        .iter()
        .filter(|b| b.listen_port == 443)
        .map(|b| (b.id.binding.clone(), b.tunnel_port))
        .collect();
    assert!(
        tunnel_ports.contains(&("all".into(), 443)),
        "{tunnel_ports:?}"
    );
    let mut ports: Vec<u16> = tunnel_ports.iter().map(|(_, p)| *p).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{tunnel_ports:?}");
}

#[test]
fn missing_targets_hold_their_port_but_are_not_served() {
    let p = run(vec![
        pb(
            "default",
            "a",
            Some(100),
            "- {name: gone, protocol: TCP, listenPort: 80, target: {service: {name: nope, namespace: default, port: 80}}}\n- {name: hl, protocol: TCP, listenPort: 81, target: {service: {name: headless, namespace: default, port: 80}}}\n- {name: badport, protocol: TCP, listenPort: 82, target: {service: {name: my-web, namespace: default, port: 9999}}}\n- {name: tls, protocol: TCP, listenPort: 83, tls: {mode: offload, secretRef: {name: missing}}, target: {address: 10.1.1.1, port: 80}}",
        ),
        pb(
            "default",
            "b",
            Some(200),
            &(tcp("http", 80) + &tcp("ok", 90)),
        ),
    ]);
    let expect = [
        (
            "a",
            "gone",
            "ServiceNotFound",
            "target Service default/nope does not exist; the binding is served once it does",
        ),
        (
            "a",
            "hl",
            "ServiceHeadless",
            "target Service default/headless has no ClusterIP (headless); point the binding at a Service with a ClusterIP, or at an address",
        ),
        (
            "a",
            "badport",
            "ServicePortNotFound",
            "target Service default/my-web has no port 9999 (it has: 8080)",
        ),
        (
            "a",
            "tls",
            "TLSSecretNotFound",
            "TLS Secret default/missing does not exist; the binding is served once it does",
        ),
        (
            "b",
            "http",
            "PortConflict",
            "TCP/80 is already used by binding \"gone\" of PortBinding default/a (the older PortBinding keeps the port); choose another listenPort",
        ),
    ];
    for (pbn, b, reason, message) in expect {
        let r = outcome(&p, pbn, b).refusal.clone().unwrap();
        assert_eq!((r.reason.as_str(), r.message.as_str()), (reason, message));
    }
    assert!(outcome(&p, "b", "ok").refusal.is_none());
    assert_eq!(p.planned.len(), 1);
    assert_eq!(
        p.served_ports(SourceKind::PortBinding, "default", "b"),
        "90/TCP"
    );
    assert_eq!(p.served_ports(SourceKind::PortBinding, "default", "a"), "");
    assert_eq!(
        p.outcomes_of(SourceKind::PortBinding, "default", "a")
            .count(),
        4
    );
    assert_eq!(p.applied_sources, vec!["default/b".to_owned()]);
}

#[test]
fn incomplete_tls_secret_names_the_missing_keys() {
    let resolver = services().with_secret(
        "default",
        "half",
        tunnel::plan::TlsSecret {
            certificate_chain: Some("x".into()),
            private_key: None,
            ca: None,
        },
    );
    let p = plan(
        &input(
            node(NODE),
            vec![pb("default", "a", Some(1), "- {name: m, protocol: TCP, listenPort: 443, tls: {mode: mutual, secretRef: {name: half}}, target: {address: 10.1.1.1, port: 80}}")],
            Layout::default(),
        ),
        &resolver,
    )
    .unwrap();
    let r = p.outcomes[0].refusal.clone().unwrap();
    assert_eq!(r.reason.as_str(), "TLSSecretIncomplete");
    assert_eq!(
        r.message,
        "TLS Secret default/half has no tls.key, ca.crt (mode mutual)"
    );
}

#[test]
fn port_bindings_of_other_edge_nodes_are_ignored() {
    let mut other = pb("default", "x", Some(1), &tcp("http", 80));
    other.spec.edge_node_ref = Some(tunnel::crd::EdgeNodeRef {
        name: "another".into(),
        namespace: None,
    });
    let p = run(vec![other]);
    assert!(p.outcomes.is_empty());
}

#[test]
fn node_level_errors() {
    let bad = [
        (
            "tunnel: {network: 10.0.0.0/30}\nuplink: {replicas: 2}",
            "tunnel.network 10.0.0.0/30 has room for 1 uplink replicas, 2 requested",
        ),
        (
            "edge: {healthCheck: {interval: 1s, timeout: 2s}}",
            "edge.healthCheck.timeout (2s) must not be longer than edge.healthCheck.interval (1s)",
        ),
        (
            "edge: {healthCheck: {interval: 0s}}",
            "edge.healthCheck.interval: \"0s\" must be longer than zero",
        ),
    ];
    for (extra, want) in bad {
        let n = node(&format!("{NODE}{extra}\n"));
        let err = plan(&input(n, vec![], Layout::default()), &services()).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn adding_a_binding_changes_no_other_listener_or_cluster() {
    // What keeps sessions alive across reloads: a binding's cluster, and the listener of every
    // other port, are byte-identical whether or not another binding is added.
    let base = || {
        vec![
            pb(
                "default",
                "a",
                Some(100),
                &(tcp("http", 80) + &udp("dns", 53)),
            ),
            pb("default", "b", Some(200), &sni("web", 443, "a.example.com")),
        ]
    };
    let before = run(base());
    let mut more = base();
    more.push(pb(
        "other",
        "c",
        Some(300),
        &(sni("web", 443, "c.example.com") + &sni("all", 443, "") + &tcp("new", 8080)),
    ));
    let after = run(more);
    let resources = |p: &Plan, file: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_yaml::from_str(&p.vps_file(file).unwrap().contents).unwrap();
        v["resources"].as_array().unwrap().clone()
    };
    for c in resources(&before, "/etc/envoy/cds.yaml") {
        assert!(
            resources(&after, "/etc/envoy/cds.yaml").contains(&c),
            "cluster {} changed",
            c["name"]
        );
    }
    let after_listeners = resources(&after, "/etc/envoy/lds.yaml");
    for l in resources(&before, "/etc/envoy/lds.yaml") {
        if l["name"] == "tcp_443" {
            // The shared port's listener changes, but its existing filter chain does not.
            let chain = &l["filter_chains"][0];
            let now = after_listeners
                .iter()
                .find(|x| x["name"] == "tcp_443")
                .unwrap();
            assert!(
                now["filter_chains"].as_array().unwrap().contains(chain),
                "{now}"
            );
        } else {
            assert!(
                after_listeners.contains(&l),
                "listener {} changed",
                l["name"]
            );
        }
    }
}

/// Review M3: an ungranted PortBinding of another namespace is refused before the conflict
/// table, so it squats no port and no server name, even when it is the older one; it gets
/// `ReferenceNotGranted` and nothing about the node's other bindings.
#[test]
fn an_ungranted_port_binding_squats_nothing() {
    // `evil` has no grant in `default` (services() grants ns-a, ns-b, other, team-b).
    let p = run(vec![
        pb(
            "evil",
            "x",
            Some(1),
            &(tcp("squat", 443) + &udp("dns", 53) + &sni("sni", 8443, "a.example.com")),
        ),
        pb(
            "default",
            "web",
            Some(2),
            &(tcp("https", 443) + &udp("dns", 53) + &sni("sni", 8443, "a.example.com")),
        ),
    ]);
    for binding in ["https", "dns", "sni"] {
        let o = outcome(&p, "web", binding);
        assert_eq!(
            o.refusal, None,
            "default/web {binding} lost to evil/x: {o:?}"
        );
    }
    for binding in ["squat", "dns", "sni"] {
        let r = outcome(&p, "x", binding).refusal.clone().unwrap();
        assert_eq!(r.reason.as_str(), "ReferenceNotGranted", "{r:?}");
        assert_eq!(
            r.message,
            "PortBinding in namespace evil may not reference EdgeNode default/edge: no ReferenceGrant in namespace default allows it (from kind PortBinding, namespace evil; to kind EdgeNode)"
        );
    }
    assert!(
        p.planned.iter().all(|b| b.id.namespace == "default"),
        "{:?}",
        p.planned
    );
}
