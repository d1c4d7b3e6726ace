//! Gateways of our class as a source of bindings, pure (DESIGN.md §3): which EdgeNode serves a
//! Gateway, which routes attach to which of its listeners, and how they become bindings in the
//! same table as the PortBindings' and Services' ([`super::bindings`]).
//!
//! - The EdgeNode: the Gateway's `spec.infrastructure.parametersRef` (an EdgeNode in the
//!   Gateway's namespace), else its class's `spec.parametersRef` (an EdgeNode, in the namespace
//!   the reference names or else the Gateway's). An EdgeNode in another namespace needs a grant
//!   there, like any reference, checked by the table.
//! - Listeners of protocol `TCP`, `UDP` and `TLS` are served; others are not accepted
//!   (`UnsupportedProtocol`). A `TCPRoute` attaches to `TCP` listeners, a `UDPRoute` to `UDP`,
//!   a `TLSRoute` to `TLS`, when the route's `parentRefs` name the Gateway (and, if given, the
//!   listener's `sectionName` and `port`), the listener's `allowedRoutes` admit the route's
//!   namespace and kind, and (TLSRoute) a hostname of the route meets the listener's.
//! - A `TCP` or `UDP` listener serves its oldest attached route whose backend resolves (the
//!   others are attached and accepted, and get no traffic: Gateway API's conflict rule; a route
//!   that cannot be served does not take the listener from one that can); a `TLS` listener in
//!   `Passthrough` mode serves every attached route by SNI (one binding each, its hostnames
//!   intersected with the listener's); in `Terminate` mode, its oldest route that resolves,
//!   with the listener's certificate offloaded at the edge.
//! - Backends are core Services; one in another namespace needs a Gateway API `ReferenceGrant`
//!   from the route's kind there (always, whatever the operator's target policy). A rule with
//!   several backends of non-zero weight is refused (`UnsupportedValue`): the data path sends a
//!   binding to one target.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::bindings::SourceInput;
use super::outcome::SourceKind;
use super::resolve::Resolver;
use crate::crd::gateway::{Gateway, GatewayClass, Listener};
use crate::crd::gateway_route::{ParentReference, RouteKind, RouteObject, is_secret, is_service};
use crate::crd::{
    Binding, BindingTarget, FromKind, PortBindingSpec, Protocol, Reference, SecretReference,
    ServicePort, ServiceTarget, TlsMode, TlsParams, ToKind,
};
use crate::object_key::ObjectKey;

/// Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// A condition's outcome: `Ok`, or a reason and a message.
pub type Check = Result<(), (&'static str, String)>;

/// What one listener is, before the EdgeNode's table decides its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFacts {
    /// Its name.
    pub name: String,
    /// The route kinds it takes.
    pub supported_kinds: Vec<RouteKind>,
    /// `Accepted`.
    pub accepted: Check,
    /// `ResolvedRefs` (route kinds, certificates).
    pub resolved_refs: Check,
    /// How many routes are attached.
    pub attached_routes: u32,
    /// The bindings made from it.
    pub bindings: Vec<String>,
}

/// One parent of one route: what the route's `status.parents[]` entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentFacts {
    /// The route.
    pub route: RouteKey,
    /// The parentRef as the route wrote it.
    pub parent_ref: ParentReference,
    /// `Accepted`.
    pub accepted: Check,
    /// `ResolvedRefs` (backends).
    pub resolved_refs: Check,
    /// The bindings made from it (none: attached, but no traffic, or refused).
    pub bindings: Vec<String>,
}

/// A route by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// Its kind.
    pub kind: RouteKind,
    /// Its namespace and name.
    pub key: ObjectKey,
}

/// One Gateway as a source, with everything its status needs.
#[derive(Debug, Clone)]
pub struct GatewaySource {
    /// The Gateway.
    pub key: ObjectKey,
    /// Its EdgeNodes (sorted), or why it has none (`InvalidParameters`).
    pub edge_nodes: Result<Vec<ObjectKey>, String>,
    /// Its bindings, as the planner reads them (no bindings without an EdgeNode).
    pub source: SourceInput,
    /// Its listeners, in order.
    pub listeners: Vec<ListenerFacts>,
    /// Every route parentRef that names it.
    pub parents: Vec<RouteParentFacts>,
    /// A digest of what the planner reads of it: a report of a pass for another digest is
    /// stale.
    pub version: i64,
}

/// Whether a GatewayClass is ours.
pub fn class_is_ours(class: &GatewayClass) -> bool {
    class.spec.controller_name == crate::crd::gateway::CONTROLLER_NAME
}

/// Why a class of ours cannot be accepted, if it cannot: its `parametersRef` names something
/// other than an EdgeNode.
pub fn class_problem(class: &GatewayClass) -> Option<String> {
    let r = class.spec.parameters_ref.as_ref()?;
    (r.group != crate::crd::GROUP || r.kind != "EdgeNode").then(|| {
        format!(
            "spec.parametersRef names {}/{} {}: Tunnel's parameters are an EdgeNode (group {}, kind EdgeNode)",
            r.group, r.kind, r.name, crate::crd::GROUP
        )
    })
}

/// The EdgeNodes that serve `gw` (of class `class`): those its annotation
/// [`super::load_balancer::ANNOTATION_EDGE_NODE`] lists (comma-separated `name` or
/// `namespace/name`, as on a Service), else the one of its or its class's `parametersRef`.
pub fn edge_nodes_of(gw: &Gateway, class: Option<&GatewayClass>) -> Result<Vec<ObjectKey>, String> {
    let ns = gw.metadata.namespace.clone().unwrap_or_default();
    let annotation = super::load_balancer::ANNOTATION_EDGE_NODE;
    if let Some(value) = gw
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
    {
        return super::load_balancer::parse_references(value, &ns).ok_or_else(|| {
            format!(
                "annotation {annotation}: {value:?} is not a comma-separated list of at most {} <name> or <namespace>/<name>",
                super::load_balancer::MAX_EDGE_NODES
            )
        });
    }
    edge_node_of(gw, class, &ns).map(|n| vec![n])
}

/// The EdgeNode of `gw`'s or its class's `parametersRef`.
fn edge_node_of(gw: &Gateway, class: Option<&GatewayClass>, ns: &str) -> Result<ObjectKey, String> {
    let ns = ns.to_owned();
    if let Some(r) = gw
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        if r.group == crate::crd::GROUP && r.kind == "EdgeNode" {
            return Ok(ObjectKey::new(ns, r.name.clone()));
        }
        return Err(format!(
            "spec.infrastructure.parametersRef names {}/{} {}: Tunnel's parameters are an EdgeNode (group {}, kind EdgeNode)",
            r.group,
            r.kind,
            r.name,
            crate::crd::GROUP
        ));
    }
    let Some(class) = class else {
        return Err(format!(
            "GatewayClass {} does not exist",
            gw.spec.gateway_class_name
        ));
    };
    if let Some(problem) = class_problem(class) {
        return Err(format!(
            "GatewayClass {}: {problem}",
            gw.spec.gateway_class_name
        ));
    }
    match &class.spec.parameters_ref {
        Some(r) => Ok(ObjectKey::new(
            r.namespace.clone().unwrap_or(ns),
            r.name.clone(),
        )),
        None => Err(format!(
            "no EdgeNode serves this Gateway: set spec.infrastructure.parametersRef (group {g}, kind EdgeNode, name) or the GatewayClass {}'s spec.parametersRef (group {g}, kind EdgeNode, name, namespace)",
            gw.spec.gateway_class_name,
            g = crate::crd::GROUP
        )),
    }
}

/// The route kind a listener protocol takes, if Tunnel serves it.
fn kind_of_protocol(protocol: &str) -> Option<RouteKind> {
    match protocol {
        "TCP" => Some(RouteKind::Tcp),
        "UDP" => Some(RouteKind::Udp),
        "TLS" => Some(RouteKind::Tls),
        _ => None,
    }
}

fn passthrough(l: &Listener) -> bool {
    l.tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m == "Passthrough")
}

/// The listener's `supportedKinds` and whether its `allowedRoutes.kinds` named only those.
fn supported_kinds(l: &Listener) -> (Vec<RouteKind>, Check) {
    let Some(own) = kind_of_protocol(&l.protocol) else {
        return (Vec::new(), Ok(()));
    };
    let asked = l
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.as_slice())
        .unwrap_or_default();
    if asked.is_empty() {
        return (vec![own], Ok(()));
    }
    let mut kinds = Vec::new();
    let mut invalid = Vec::new();
    for k in asked {
        let group = k.group.as_deref().unwrap_or(GROUP);
        match RouteKind::from_kind(&k.kind).filter(|r| group == GROUP && *r == own) {
            Some(r) => kinds.push(r),
            None => invalid.push(format!("{group}/{}", k.kind)),
        }
    }
    kinds.dedup();
    let check = if invalid.is_empty() {
        Ok(())
    } else {
        Err((
            "InvalidRouteKinds",
            format!(
                "allowedRoutes.kinds: a {} listener takes {} only, not {}",
                l.protocol,
                own.as_str(),
                invalid.join(", ")
            ),
        ))
    };
    (kinds, check)
}

/// Whether a route in `route_ns` may attach to listener `l` of a Gateway in `gw_ns`.
fn namespace_allowed(
    l: &Listener,
    gw_ns: &str,
    route_ns: &str,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match from.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => {
            let Some(selector) = from.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let labels = namespaces.get(route_ns).cloned().unwrap_or_default();
            selector_matches(selector, &labels)
        }
        _ => gw_ns == route_ns,
    }
}

fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The SNI names a route serves on a listener: its hostnames met with the listener's (`None`:
/// they do not meet; an empty list: any name).
pub fn hostnames_on(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(l) = listener.map(str::to_ascii_lowercase) else {
        return Some(route);
    };
    if route.is_empty() {
        return Some(vec![l]);
    }
    let mut out = BTreeSet::new();
    for r in &route {
        if *r == l || wildcard_covers(&l, r) {
            out.insert(r.clone());
        } else if wildcard_covers(r, &l) {
            out.insert(l.clone());
        }
    }
    (!out.is_empty()).then(|| out.into_iter().collect())
}

/// Whether wildcard `pattern` (`*.example.com`) covers `name` (one or more labels more).
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    pattern.strip_prefix("*.").is_some_and(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
    })
}

/// Whether `parent` names Gateway `gw` (from a route in `route_ns`).
fn names_gateway(parent: &ParentReference, route_ns: &str, gw: &ObjectKey) -> bool {
    parent.group.as_deref().unwrap_or(GROUP) == GROUP
        && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && parent.namespace.as_deref().unwrap_or(route_ns) == gw.namespace
        && parent.name == gw.name
}

/// The Gateway API kind a route kind is as a grant's `from`.
fn from_kind(kind: RouteKind) -> FromKind {
    match kind {
        RouteKind::Tcp => FromKind::TcpRoute,
        RouteKind::Udp => FromKind::UdpRoute,
        RouteKind::Tls => FromKind::TlsRoute,
    }
}

/// The one backend of a route, or why it has none: `(attachable, resolved)`.
fn backend_of(
    route: &RouteObject,
    resolver: &dyn Resolver,
) -> (Check, Result<ServiceTarget, (&'static str, String)>) {
    let backends: Vec<_> = route
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .filter(|b| b.weight != Some(0))
        .collect();
    if backends.len() > 1 {
        return (
            Err((
                "UnsupportedValue",
                format!(
                    "{} backendRefs with weights: Tunnel sends a route's traffic to one Service; give the others weight 0 or one route each",
                    backends.len()
                ),
            )),
            Err(("BackendNotFound", "no single backend".to_owned())),
        );
    }
    let Some(b) = backends.first() else {
        return (
            Ok(()),
            Err((
                "BackendNotFound",
                "the route has no backendRefs of non-zero weight".to_owned(),
            )),
        );
    };
    if !is_service(b) {
        return (
            Ok(()),
            Err((
                "InvalidKind",
                format!(
                    "backendRefs: {}/{} {} is not a Service",
                    b.group.as_deref().unwrap_or(""),
                    b.kind.as_deref().unwrap_or("Service"),
                    b.name
                ),
            )),
        );
    }
    let ns = b
        .namespace
        .clone()
        .unwrap_or_else(|| route.namespace.clone());
    let reference = Reference {
        from_kind: from_kind(route.kind),
        from_namespace: &route.namespace,
        to_kind: ToKind::Service,
        to_namespace: &ns,
        to_name: &b.name,
    };
    if !resolver.reference_allowed(&reference) {
        return (
            Ok(()),
            Err((
                "RefNotPermitted",
                format!(
                    "backendRefs: Service {ns}/{} is in another namespace and no ReferenceGrant there allows {} from {}",
                    b.name,
                    route.kind.as_str(),
                    route.namespace
                ),
            )),
        );
    }
    let Some(port) = b
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        return (
            Ok(()),
            Err((
                "UnsupportedValue",
                format!("backendRefs: Service {ns}/{} needs a port", b.name),
            )),
        );
    };
    (
        Ok(()),
        Ok(ServiceTarget {
            name: b.name.clone(),
            namespace: ns,
            port: ServicePort::Number(port),
        }),
    )
}

/// The certificate of a `Terminate` listener, or why it has none.
fn certificate_of(
    l: &Listener,
    gw_ns: &str,
    resolver: &dyn Resolver,
) -> Result<SecretReference, (&'static str, String)> {
    let Some(r) = l.tls.as_ref().and_then(|t| t.certificate_refs.first()) else {
        return Err((
            "InvalidCertificateRef",
            "a TLS listener in Terminate mode needs tls.certificateRefs".to_owned(),
        ));
    };
    if !is_secret(r) {
        return Err((
            "InvalidCertificateRef",
            format!("tls.certificateRefs: {} is not a Secret", r.name),
        ));
    }
    let ns = r.namespace.clone().unwrap_or_else(|| gw_ns.to_owned());
    let reference = Reference {
        from_kind: FromKind::Gateway,
        from_namespace: gw_ns,
        to_kind: ToKind::Secret,
        to_namespace: &ns,
        to_name: &r.name,
    };
    if !resolver.reference_allowed(&reference) {
        return Err((
            "RefNotPermitted",
            format!(
                "tls.certificateRefs: Secret {ns}/{} is in another namespace and no ReferenceGrant there allows Gateway from {gw_ns}",
                r.name
            ),
        ));
    }
    Ok(SecretReference {
        name: r.name.clone(),
        namespace: Some(ns),
    })
}

struct Attached<'a> {
    route: &'a RouteObject,
    parent: usize,
    names: Vec<String>,
    backend: Result<ServiceTarget, (&'static str, String)>,
}

/// Translates Gateway `gw` with every route of the cluster (those that name it attach);
/// `namespaces` holds each namespace's labels (for `allowedRoutes.namespaces.from: Selector`).
pub fn translate(
    gw: &Gateway,
    class: Option<&GatewayClass>,
    routes: &[RouteObject],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    resolver: &dyn Resolver,
) -> GatewaySource {
    let key = ObjectKey::new(
        gw.metadata.namespace.clone().unwrap_or_default(),
        gw.metadata.name.clone().unwrap_or_default(),
    );
    let edge_nodes = edge_nodes_of(gw, class);
    let mut listeners: Vec<ListenerFacts> = gw
        .spec
        .listeners
        .iter()
        .map(|l| {
            let (supported_kinds, kinds_check) = supported_kinds(l);
            let accepted = if kind_of_protocol(&l.protocol).is_some() {
                Ok(())
            } else {
                Err((
                    "UnsupportedProtocol",
                    format!(
                        "protocol {} is not served: Tunnel serves TCP, UDP and TLS listeners",
                        l.protocol
                    ),
                ))
            };
            ListenerFacts {
                name: l.name.clone(),
                supported_kinds,
                accepted,
                resolved_refs: kinds_check,
                attached_routes: 0,
                bindings: Vec::new(),
            }
        })
        .collect();

    // Every parentRef of every route that names this Gateway.
    let mut parents: Vec<RouteParentFacts> = Vec::new();
    let mut attached: Vec<Vec<Attached<'_>>> =
        gw.spec.listeners.iter().map(|_| Vec::new()).collect();
    let mut ordered: Vec<&RouteObject> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        (
            a.created.is_none(),
            a.created,
            &a.namespace,
            &a.name,
            a.kind,
        )
            .cmp(&(
                b.created.is_none(),
                b.created,
                &b.namespace,
                &b.name,
                b.kind,
            ))
    });
    for route in ordered {
        for parent_ref in route
            .spec
            .parent_refs
            .iter()
            .filter(|p| names_gateway(p, &route.namespace, &key))
        {
            let (attachable, backend) = backend_of(route, resolver);
            let mut facts = RouteParentFacts {
                route: RouteKey {
                    kind: route.kind,
                    key: ObjectKey::new(route.namespace.clone(), route.name.clone()),
                },
                parent_ref: parent_ref.clone(),
                accepted: Ok(()),
                resolved_refs: backend.as_ref().map(|_| ()).map_err(Clone::clone),
                bindings: Vec::new(),
            };
            let by_ref: Vec<usize> = gw
                .spec
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    parent_ref
                        .section_name
                        .as_ref()
                        .is_none_or(|s| *s == l.name)
                        && parent_ref.port.is_none_or(|p| p == l.port)
                })
                .map(|(i, _)| i)
                .collect();
            if by_ref.is_empty() {
                facts.accepted = Err((
                    "NoMatchingParent",
                    format!(
                        "Gateway {key} has no listener{}{}",
                        parent_ref
                            .section_name
                            .as_ref()
                            .map(|s| format!(" named {s}"))
                            .unwrap_or_default(),
                        parent_ref
                            .port
                            .map(|p| format!(" on port {p}"))
                            .unwrap_or_default()
                    ),
                ));
                parents.push(facts);
                continue;
            }
            let allowed: Vec<usize> = by_ref
                .into_iter()
                .filter(|&i| {
                    let l = &gw.spec.listeners[i];
                    listeners[i].accepted.is_ok()
                        && listeners[i].supported_kinds.contains(&route.kind)
                        && namespace_allowed(l, &key.namespace, &route.namespace, namespaces)
                })
                .collect();
            if allowed.is_empty() {
                facts.accepted = Err((
                    "NotAllowedByListeners",
                    format!(
                        "no listener of Gateway {key} that the parentRef names takes a {} from namespace {}",
                        route.kind.as_str(),
                        route.namespace
                    ),
                ));
                parents.push(facts);
                continue;
            }
            let mut matched = Vec::new();
            for i in allowed {
                let l = &gw.spec.listeners[i];
                let names = if route.kind == RouteKind::Tls {
                    hostnames_on(l.hostname.as_deref(), &route.spec.hostnames)
                } else {
                    Some(Vec::new())
                };
                if let Some(names) = names {
                    matched.push((i, names));
                }
            }
            if matched.is_empty() {
                facts.accepted = Err((
                    "NoMatchingListenerHostname",
                    format!(
                        "none of the route's hostnames ({}) is served by a listener of Gateway {key} it names",
                        route.spec.hostnames.join(", ")
                    ),
                ));
                parents.push(facts);
                continue;
            }
            if let Err(e) = attachable {
                facts.accepted = Err(e);
                parents.push(facts);
                continue;
            }
            let index = parents.len();
            for (i, names) in matched {
                listeners[i].attached_routes += 1;
                attached[i].push(Attached {
                    route,
                    parent: index,
                    names,
                    backend: backend.clone(),
                });
            }
            parents.push(facts);
        }
    }

    // Bindings: oldest route per TCP/UDP/Terminate listener, every route per Passthrough one.
    let mut bindings = Vec::new();
    for (i, l) in gw.spec.listeners.iter().enumerate() {
        let Some(kind) = kind_of_protocol(&l.protocol) else {
            continue;
        };
        let Ok(port) = u16::try_from(l.port) else {
            continue;
        };
        let protocol = if kind == RouteKind::Udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let sni = kind == RouteKind::Tls && passthrough(l);
        let tls = if kind == RouteKind::Tls && !sni {
            match certificate_of(l, &key.namespace, resolver) {
                Ok(secret) => Some(TlsParams {
                    mode: TlsMode::Offload,
                    secret_ref: Some(secret),
                    server_names: Vec::new(),
                }),
                Err(e) => {
                    listeners[i].resolved_refs = Err(e);
                    continue;
                }
            }
        } else {
            None
        };
        // A route whose backend does not resolve (not granted, no port, not a Service) is
        // attached but cannot carry traffic: it does not take the listener from one that can.
        let serving: Vec<&Attached<'_>> = if sni {
            attached[i].iter().collect()
        } else {
            attached[i]
                .iter()
                .filter(|a| a.backend.is_ok())
                .take(1)
                .collect()
        };
        for a in serving {
            let Ok(service) = &a.backend else { continue };
            let name = if sni {
                format!("{}.{}.{}", l.name, a.route.namespace, a.route.name)
            } else {
                l.name.clone()
            };
            let tls = if sni {
                Some(TlsParams {
                    mode: TlsMode::Passthrough,
                    secret_ref: None,
                    server_names: a.names.clone(),
                })
            } else {
                tls.clone()
            };
            listeners[i].bindings.push(name.clone());
            if let Some(p) = parents.get_mut(a.parent) {
                p.bindings.push(name.clone());
            }
            bindings.push(Binding {
                name,
                protocol,
                listen_port: port,
                tcp: None,
                udp: None,
                tls,
                target: BindingTarget {
                    service: Some(service.clone()),
                    address: None,
                    port: None,
                },
                policy: None,
            });
        }
    }
    let spec = match &edge_nodes {
        Ok(nodes) => PortBindingSpec::served_by(nodes, bindings),
        Err(_) => PortBindingSpec::served_by(&[], Vec::new()),
    };
    let version = version_of(&spec);
    GatewaySource {
        source: SourceInput {
            kind: SourceKind::Gateway,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            created: gw
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            spec,
            problem: None,
        },
        key,
        edge_nodes,
        listeners,
        parents,
        version,
    }
}

/// A digest of the bindings (what a pass reads of a Gateway), as a version.
fn version_of(spec: &PortBindingSpec) -> i64 {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(head) & i64::MAX
}
