//! The statuses of Gateway API objects, pure: a GatewayClass's `Accepted` and
//! `supportedFeatures`; a Gateway's `addresses`, `Accepted`, `Programmed` and per listener
//! `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted` and `attachedRoutes`; a route's
//! `status.parents[]` entry per Gateway of ours it names, with `Accepted` and `ResolvedRefs`.
//! Made from the translation ([`crate::plan::gateway`]) and the last report of the Gateway's
//! EdgeNode pass, in Gateway API's standard reasons.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::crd::gateway::CONTROLLER_NAME;
use crate::plan::gateway::{Check, GROUP, GatewaySource, RouteParentFacts};
use crate::plan::{BindingOutcome, Reason};

use super::conditions::{self, Verdict};
use super::status::SourceReport;

/// The features a class of ours supports (Gateway API's names, sorted).
pub const SUPPORTED_FEATURES: [&str; 5] = [
    "Gateway",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "UDPRoute",
];

fn verdict(type_: &'static str, ok_reason: &'static str, check: &Check) -> Verdict {
    match check {
        Ok(()) => Verdict::ok(type_, ok_reason, ""),
        Err((reason, message)) => Verdict::failed(type_, *reason, message.clone()),
    }
}

fn conditions_of(
    before: Option<&Value>,
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let previous: Vec<Condition> = before
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    conditions::merge(&previous, verdicts, generation, now)
}

/// A GatewayClass's status: `Accepted` (or why not) and the supported features.
pub fn class_status(
    problem: Option<&str>,
    before: Option<&Value>,
    generation: Option<i64>,
    now: &Time,
) -> Value {
    let check: Check = problem.map_or(Ok(()), |p| Err(("InvalidParameters", p.to_owned())));
    let accepted = verdict("Accepted", "Accepted", &check);
    let conditions = conditions_of(
        before.and_then(|s| s.get("conditions")),
        &[accepted],
        generation,
        now,
    );
    json!({
        "conditions": conditions,
        "supportedFeatures": SUPPORTED_FEATURES.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
    })
}

/// Where a Gateway stands with its EdgeNodes: the public addresses to publish (those of the
/// edges that serve it, pass the check from outside and are not drained), or why none may
/// serve it.
pub type NodeAddress = Result<Vec<String>, String>;

fn is_conflict(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::PortConflict
            | Reason::ServerNameConflict
            | Reason::CatchAllConflict
            | Reason::TunnelPortConflict
            | Reason::ReservedPort
    )
}

fn outcome_of<'a>(report: Option<&'a SourceReport>, binding: &str) -> Option<&'a BindingOutcome> {
    report?.outcomes.iter().find(|o| o.id.binding == binding)
}

/// A Gateway's status. `report` is its EdgeNode's last word about it, used only when it is
/// about this translation (`generation` = the translation's version).
pub fn gateway_status(
    src: &GatewaySource,
    node: &NodeAddress,
    report: Option<&SourceReport>,
    before: Option<&Value>,
    generation: Option<i64>,
    now: &Time,
) -> Value {
    let report = report.filter(|r| r.generation == Some(src.version));
    let gw_accepted: Check = node
        .as_ref()
        .map(|_| ())
        .map_err(|message| ("InvalidParameters", message.clone()));
    let listeners_valid = src.listeners.iter().all(|l| l.accepted.is_ok());
    let accepted = match &gw_accepted {
        Ok(()) if !listeners_valid => Verdict::ok(
            "Accepted",
            "ListenersNotValid",
            "some listeners are not accepted (see status.listeners)",
        ),
        other => verdict("Accepted", "Accepted", other),
    };
    let programmed_check: Check = match (&gw_accepted, report) {
        (Err((_, m)), _) => Err(("Invalid", m.clone())),
        (Ok(()), None) => Err((
            "Pending",
            "waiting for the EdgeNode's pass to apply this Gateway".to_owned(),
        )),
        (Ok(()), Some(r)) => match &r.node_problem {
            Some((reason, message)) => Err((
                "Pending",
                format!("the EdgeNode {} is not ready: {reason}: {message}", r.node),
            )),
            None => Ok(()),
        },
    };
    let gw_programmed = programmed_check.is_ok();
    let programmed = verdict("Programmed", "Programmed", &programmed_check);
    let before_listeners: Vec<Value> = before
        .and_then(|s| s.get("listeners"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let listeners: Vec<Value> = src
        .listeners
        .iter()
        .map(|l| {
            let refusals: Vec<_> = l
                .bindings
                .iter()
                .filter_map(|b| outcome_of(report, b)?.refusal.as_ref())
                .collect();
            let conflict = refusals.iter().find(|r| is_conflict(r.reason));
            let conflicted = match conflict {
                Some(r) => Verdict::ok(
                    "Conflicted",
                    if r.reason == Reason::PortConflict {
                        "ProtocolConflict"
                    } else {
                        "HostnameConflict"
                    },
                    r.message.clone(),
                ),
                None => Verdict::failed("Conflicted", "NoConflicts", ""),
            };
            let certificate = refusals.iter().find(|r| {
                matches!(
                    r.reason,
                    Reason::TlsSecretNotFound | Reason::TlsSecretIncomplete
                )
            });
            let resolved: Check = match (&l.resolved_refs, certificate) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Some(r)) => Err(("InvalidCertificateRef", r.message.clone())),
                (Ok(()), None) => Ok(()),
            };
            let listener_programmed: Check = if let Err((_, m)) = &l.accepted {
                Err(("Invalid", m.clone()))
            } else if let Some(r) = conflict {
                Err(("Invalid", r.message.clone()))
            } else if let Err((_, m)) = &resolved {
                Err(("Invalid", m.clone()))
            } else if !gw_programmed {
                Err(("Pending", "the Gateway is not programmed yet".to_owned()))
            } else {
                Ok(())
            };
            let verdicts = [
                verdict("Accepted", "Accepted", &l.accepted),
                verdict("Programmed", "Programmed", &listener_programmed),
                verdict("ResolvedRefs", "ResolvedRefs", &resolved),
                conflicted,
            ];
            let previous = before_listeners
                .iter()
                .find(|b| b.get("name").and_then(Value::as_str) == Some(&l.name))
                .and_then(|b| b.get("conditions"));
            json!({
                "name": l.name,
                "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k.as_str()})).collect::<Vec<_>>(),
                "attachedRoutes": l.attached_routes,
                "conditions": conditions_of(previous, &verdicts, generation, now),
            })
        })
        .collect();
    let conditions = conditions_of(
        before.and_then(|s| s.get("conditions")),
        &[accepted, programmed],
        generation,
        now,
    );
    let addresses: Vec<Value> = node
        .iter()
        .flatten()
        .map(|address| {
            if address.parse::<std::net::IpAddr>().is_ok() {
                json!({"type": "IPAddress", "value": address})
            } else {
                json!({"type": "Hostname", "value": address})
            }
        })
        .collect();
    json!({
        "addresses": addresses,
        "conditions": conditions,
        "listeners": listeners,
    })
}

/// One `status.parents[]` entry of a route for one Gateway of ours. `report` as for
/// [`gateway_status`] (already filtered to the current translation, or `None`).
pub fn route_parent(
    facts: &RouteParentFacts,
    report: Option<&SourceReport>,
    before: Option<&Value>,
    generation: Option<i64>,
    now: &Time,
) -> Value {
    let refusal = facts
        .bindings
        .iter()
        .find_map(|b| outcome_of(report, b)?.refusal.as_ref());
    let resolved: Check = match (&facts.resolved_refs, refusal) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), Some(r)) => match r.reason {
            Reason::ServiceNotFound | Reason::ServiceHeadless | Reason::ServicePortNotFound => {
                Err(("BackendNotFound", r.message.clone()))
            }
            Reason::ReferenceNotGranted | Reason::RestrictedTarget => {
                Err(("RefNotPermitted", r.message.clone()))
            }
            _ => Ok(()),
        },
        (Ok(()), None) => Ok(()),
    };
    let accepted: Check = match (&facts.accepted, refusal) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), Some(r))
            if matches!(r.reason, Reason::InvalidSpec | Reason::UnsupportedTarget) =>
        {
            Err(("UnsupportedValue", r.message.clone()))
        }
        _ => Ok(()),
    };
    let verdicts = [
        verdict("Accepted", "Accepted", &accepted),
        verdict("ResolvedRefs", "ResolvedRefs", &resolved),
    ];
    json!({
        "parentRef": facts.parent_ref,
        "controllerName": CONTROLLER_NAME,
        "conditions": conditions_of(before.and_then(|p| p.get("conditions")), &verdicts, generation, now),
    })
}

/// Whether a `status.parents[]` entry is ours.
pub fn is_ours(parent: &Value) -> bool {
    parent.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::gateway::{Gateway, GatewayClass};
    use crate::crd::gateway_route::{RouteObject, TcpRoute, TlsRoute};
    use crate::object_key::ObjectKey;
    use crate::plan::gateway::{hostnames_on, translate};
    use crate::plan::{BindingId, Refusal, SourceKind, StaticResolver};
    use std::collections::BTreeMap;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn class() -> GatewayClass {
        serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: tunnel}\nspec:\n  controllerName: tunnel.achetronic.com/gateway-controller\n  parametersRef: {group: tunnel.achetronic.com, kind: EdgeNode, name: edge, namespace: infra}\n",
        )
        .unwrap()
    }

    fn gateway() -> Gateway {
        serde_yaml::from_str(
            r"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps, generation: 3, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  gatewayClassName: tunnel
  listeners:
  - {name: tcp, protocol: TCP, port: 8000}
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}
  - {name: web, protocol: HTTP, port: 80}
",
        )
        .unwrap()
    }

    fn tcp_route(name: &str, created: &str, backend: &str) -> RouteObject {
        let r: TcpRoute = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: apps, generation: 1, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{name: gw, sectionName: tcp}}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
        ))
        .unwrap();
        RouteObject::from(&r)
    }

    fn tls_route(name: &str, host: &str, backend: &str) -> RouteObject {
        let r: TlsRoute = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: apps, creationTimestamp: '2026-01-02T00:00:00Z'}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: ['{host}']\n  rules: [{{backendRefs: [{{name: {backend}, port: 443}}]}}]\n"
        ))
        .unwrap();
        RouteObject::from(&r)
    }

    fn translated(routes: &[RouteObject]) -> GatewaySource {
        translate(
            &gateway(),
            Some(&class()),
            routes,
            &BTreeMap::new(),
            &StaticResolver::default(),
        )
    }

    #[test]
    fn the_edge_node_annotation_names_several_edges_in_place_of_the_parameters() {
        let mut gw = gateway();
        gw.metadata.annotations = Some(
            [(
                "tunnel.achetronic.com/edge-node".to_owned(),
                "edge-b, infra/edge".to_owned(),
            )]
            .into(),
        );
        let src = translate(
            &gw,
            Some(&class()),
            &[],
            &BTreeMap::new(),
            &StaticResolver::default(),
        );
        let both = vec![
            ObjectKey::new("apps", "edge-b"),
            ObjectKey::new("infra", "edge"),
        ];
        assert_eq!(src.edge_nodes, Ok(both.clone()));
        assert_eq!(
            src.source.spec.edge_nodes("apps"),
            both,
            "each edge plans it"
        );
        let status = gateway_status(
            &src,
            &Ok(vec!["203.0.113.7".to_owned(), "2001:db8::7".to_owned()]),
            None,
            None,
            Some(3),
            &Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(status["addresses"][1]["type"], "IPAddress");
        assert_eq!(status["addresses"][1]["value"], "2001:db8::7");
        gw.metadata.annotations = Some(
            [(
                "tunnel.achetronic.com/edge-node".to_owned(),
                "a/b/c".to_owned(),
            )]
            .into(),
        );
        let bad = translate(
            &gw,
            Some(&class()),
            &[],
            &BTreeMap::new(),
            &StaticResolver::default(),
        );
        assert!(
            bad.edge_nodes
                .unwrap_err()
                .contains("tunnel.achetronic.com/edge-node")
        );
        assert!(
            bad.source.spec.bindings.is_empty(),
            "no EdgeNode: nothing planned"
        );
    }

    fn condition<'a>(conditions: &'a Value, type_: &str) -> (&'a str, &'a str) {
        let c = conditions
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap();
        (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
    }

    /// Each binding of `src`: name, port, backend Service, SNI names.
    fn served(src: &GatewaySource) -> Vec<(&str, u16, Option<&str>, Vec<String>)> {
        src.source
            .spec
            .bindings
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    b.listen_port,
                    b.target.service.as_ref().map(|s| s.name.as_str()),
                    b.tls
                        .as_ref()
                        .map(|t| t.server_names.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn listeners_become_bindings_and_the_oldest_tcp_route_is_served() {
        let src = translated(&[
            tcp_route("newer", "2026-01-03T00:00:00Z", "b"),
            tcp_route("older", "2026-01-02T00:00:00Z", "a"),
            tls_route("one", "one.example.com", "x"),
            tls_route("two", "two.example.com", "y"),
        ]);
        assert_eq!(src.edge_nodes, Ok(vec![ObjectKey::new("infra", "edge")]));
        let bindings = served(&src);
        assert_eq!(
            bindings,
            vec![
                ("tcp", 8000, Some("a"), vec![]),
                (
                    "tls.apps.one",
                    443,
                    Some("x"),
                    vec!["one.example.com".to_owned()]
                ),
                (
                    "tls.apps.two",
                    443,
                    Some("y"),
                    vec!["two.example.com".to_owned()]
                ),
            ]
        );
        let attached: Vec<u32> = src.listeners.iter().map(|l| l.attached_routes).collect();
        assert_eq!(
            attached,
            vec![2, 2, 0],
            "both TCP routes attach; the newer gets no traffic"
        );
        assert!(src.parents.iter().all(|p| p.accepted.is_ok()));
        let newer = src
            .parents
            .iter()
            .find(|p| p.route.key.name == "newer")
            .unwrap();
        assert!(newer.bindings.is_empty());
    }

    #[test]
    fn an_older_route_that_cannot_be_served_does_not_take_the_listener() {
        // Created in the same second, so the name decides which is older: "crossing" comes
        // first, and its backend (another namespace, no grant) does not resolve.
        let mut crossing = tcp_route("crossing", "2026-01-02T00:00:00Z", "other");
        crossing.spec.rules[0].backend_refs[0].namespace = Some("elsewhere".into());
        let routes = [tcp_route("echo", "2026-01-02T00:00:00Z", "a"), crossing];
        let src = translated(&routes);

        assert_eq!(served(&src), vec![("tcp", 8000, Some("a"), vec![])]);
        assert_eq!(src.listeners[0].attached_routes, 2);
        let parent = |name: &str| {
            src.parents
                .iter()
                .find(|p| p.route.key.name == name)
                .unwrap()
        };
        assert_eq!(parent("echo").bindings, vec!["tcp".to_owned()]);
        assert!(parent("crossing").bindings.is_empty());
        assert_eq!(
            parent("crossing").resolved_refs.as_ref().unwrap_err().0,
            "RefNotPermitted"
        );
        // Granted, it can be served: the older takes the listener, as the conflict rule says.
        let grant = crate::crd::ReferenceGrantSpec {
            from: vec![crate::crd::GrantFrom {
                kind: crate::crd::FromKind::TcpRoute,
                namespace: "apps".into(),
            }],
            to: vec![crate::crd::GrantTo {
                kind: crate::crd::ToKind::Service,
                name: None,
            }],
        };
        let granted = translate(
            &gateway(),
            Some(&class()),
            &routes,
            &BTreeMap::new(),
            &StaticResolver::default().with_grant("elsewhere", grant),
        );
        assert_eq!(served(&granted), vec![("tcp", 8000, Some("other"), vec![])]);
    }

    #[test]
    fn the_gateway_status_follows_the_report() {
        let src = translated(&[tcp_route("older", "2026-01-02T00:00:00Z", "a")]);
        let node: NodeAddress = Ok(vec!["203.0.113.7".to_owned()]);
        let pending = gateway_status(&src, &node, None, None, Some(3), &now());
        assert_eq!(
            condition(&pending["conditions"], "Accepted"),
            ("True", "ListenersNotValid")
        );
        assert_eq!(
            condition(&pending["conditions"], "Programmed"),
            ("False", "Pending")
        );
        assert_eq!(pending["addresses"][0]["value"], "203.0.113.7");
        let web = &pending["listeners"][2];
        assert_eq!(
            condition(&web["conditions"], "Accepted"),
            ("False", "UnsupportedProtocol")
        );

        let conflict = Refusal {
            reason: Reason::PortConflict,
            message: "TCP/8000 is already used".into(),
        };
        let report = SourceReport {
            node: ObjectKey::new("infra", "edge"),
            generation: Some(src.version),
            node_problem: None,
            outcomes: vec![BindingOutcome {
                id: BindingId {
                    kind: SourceKind::Gateway,
                    namespace: "apps".into(),
                    source: "gw".into(),
                    binding: "tcp".into(),
                },
                protocol: crate::crd::Protocol::Tcp,
                listen_port: 8000,
                refusal: Some(conflict),
            }],
            ports: String::new(),
        };
        let done = gateway_status(&src, &node, Some(&report), Some(&pending), Some(3), &now());
        assert_eq!(
            condition(&done["conditions"], "Programmed"),
            ("True", "Programmed")
        );
        let tcp = &done["listeners"][0];
        assert_eq!(tcp["attachedRoutes"], 1);
        assert_eq!(
            condition(&tcp["conditions"], "Conflicted"),
            ("True", "ProtocolConflict")
        );
        assert_eq!(
            condition(&tcp["conditions"], "Programmed"),
            ("False", "Invalid")
        );
        let tls = &done["listeners"][1];
        assert_eq!(
            condition(&tls["conditions"], "Programmed"),
            ("True", "Programmed")
        );
        assert_eq!(
            condition(&tls["conditions"], "Conflicted"),
            ("False", "NoConflicts")
        );
        // A report of another translation is stale.
        let mut stale = report.clone();
        stale.generation = Some(src.version ^ 1);
        let waiting = gateway_status(&src, &node, Some(&stale), None, Some(3), &now());
        assert_eq!(
            condition(&waiting["conditions"], "Programmed"),
            ("False", "Pending")
        );
        // No EdgeNode: not accepted, no address.
        let missing = gateway_status(
            &src,
            &Err("EdgeNode infra/edge does not exist".into()),
            None,
            None,
            Some(3),
            &now(),
        );
        assert_eq!(
            condition(&missing["conditions"], "Accepted"),
            ("False", "InvalidParameters")
        );
        assert_eq!(missing["addresses"], json!([]));
    }

    #[test]
    fn route_parents_name_the_standard_reasons() {
        let mut wrong = tcp_route("wrong", "2026-01-02T00:00:00Z", "a");
        wrong.spec.parent_refs[0].section_name = Some("nope".into());
        let mut cross = tcp_route("cross", "2026-01-02T00:00:00Z", "a");
        cross.spec.rules[0].backend_refs[0].namespace = Some("other".into());
        let mut tls_on_tcp = tls_route("misplaced", "a.example.com", "x");
        tls_on_tcp.spec.parent_refs[0].section_name = Some("tcp".into());
        let src = translated(&[wrong, cross, tls_on_tcp]);
        let reasons: BTreeMap<&str, (Check, Check)> = src
            .parents
            .iter()
            .map(|p| {
                (
                    p.route.key.name.as_str(),
                    (p.accepted.clone(), p.resolved_refs.clone()),
                )
            })
            .collect();
        assert_eq!(
            reasons["wrong"].0.as_ref().unwrap_err().0,
            "NoMatchingParent"
        );
        assert_eq!(
            reasons["misplaced"].0.as_ref().unwrap_err().0,
            "NotAllowedByListeners"
        );
        assert!(reasons["cross"].0.is_ok());
        assert_eq!(
            reasons["cross"].1.as_ref().unwrap_err().0,
            "RefNotPermitted"
        );
        assert!(
            src.source.spec.bindings.is_empty(),
            "an ungranted backend is not served"
        );
        let cross = src
            .parents
            .iter()
            .find(|p| p.route.key.name == "cross")
            .unwrap();
        let entry = route_parent(cross, None, None, Some(1), &now());
        assert!(is_ours(&entry));
        assert_eq!(
            condition(&entry["conditions"], "ResolvedRefs"),
            ("False", "RefNotPermitted")
        );
        assert_eq!(entry["parentRef"]["sectionName"], "tcp");
    }

    #[test]
    fn weighted_backends_are_refused_and_hostnames_meet() {
        let mut split = tcp_route("split", "2026-01-02T00:00:00Z", "a");
        let mut second = split.spec.rules[0].backend_refs[0].clone();
        second.name = "b".into();
        split.spec.rules[0].backend_refs.push(second);
        let src = translated(&[split]);
        assert_eq!(
            src.parents[0].accepted.as_ref().unwrap_err().0,
            "UnsupportedValue"
        );
        assert_eq!(
            hostnames_on(Some("*.example.com"), &["a.example.com".into()]),
            Some(vec!["a.example.com".into()])
        );
        assert_eq!(
            hostnames_on(Some("a.example.com"), &["*.example.com".into()]),
            Some(vec!["a.example.com".into()])
        );
        assert_eq!(
            hostnames_on(Some("a.example.com"), &["b.example.com".into()]),
            None
        );
        assert_eq!(hostnames_on(None, &[]), Some(vec![]));
        assert_eq!(
            hostnames_on(Some("*.example.com"), &["example.com".into()]),
            None
        );
    }

    #[test]
    fn a_class_names_an_edge_node_or_is_refused() {
        let s = class_status(None, None, Some(1), &now());
        assert_eq!(
            condition(&s["conditions"], "Accepted"),
            ("True", "Accepted")
        );
        assert_eq!(s["supportedFeatures"][0]["name"], "Gateway");
        let mut c = class();
        c.spec.parameters_ref.as_mut().unwrap().kind = "ConfigMap".into();
        let problem = crate::plan::gateway::class_problem(&c).unwrap();
        let s = class_status(Some(&problem), None, Some(1), &now());
        assert_eq!(
            condition(&s["conditions"], "Accepted"),
            ("False", "InvalidParameters")
        );
    }
}
