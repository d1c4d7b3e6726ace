//! Gateway API's L4 routes (`gateway.networking.k8s.io/v1`, Standard channel): `TCPRoute`,
//! `UDPRoute` and `TLSRoute`, the fields Tunnel reads. The three share one shape here
//! ([`RouteSpec`]; only TLSRoute has `hostnames`), read through [`RouteObject`]. Statuses are
//! written as JSON by the Gateway actor.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::gateway::ObjectReference;

/// A TCP route: its parents and backends.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TCPRoute",
    root = "TcpRoute",
    plural = "tcproutes",
    namespaced,
    status = "serde_json::Value"
)]
pub struct TcpRouteSpec {
    /// Its parents, rules.
    #[serde(flatten)]
    pub route: RouteSpec,
}

/// A UDP route: its parents and backends.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "UDPRoute",
    root = "UdpRoute",
    plural = "udproutes",
    namespaced,
    status = "serde_json::Value"
)]
pub struct UdpRouteSpec {
    /// Its parents, rules.
    #[serde(flatten)]
    pub route: RouteSpec,
}

/// A TLS route: its parents, server names and backends.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TLSRoute",
    root = "TlsRoute",
    plural = "tlsroutes",
    namespaced,
    status = "serde_json::Value"
)]
pub struct TlsRouteSpec {
    /// Its parents, hostnames, rules.
    #[serde(flatten)]
    pub route: RouteSpec,
}

/// What the three route kinds share (a TCPRoute or UDPRoute has no `hostnames`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The Gateways (and listeners) it attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// SNI names (TLSRoute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Its rules (one, for these kinds).
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

/// A parent: a Gateway, optionally one listener by name or port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Gateway API's group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Gateway` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The route's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Gateway's name.
    pub name: String,
    /// A listener's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One rule: where the traffic goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// The backends.
    #[serde(default)]
    pub backend_refs: Vec<BackendReference>,
}

/// A backend: a Service and port, with a weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct BackendReference {
    /// `""` (core) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The name.
    pub name: String,
    /// The route's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share of the traffic (1 when absent; 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// The kind of an L4 route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// `TCPRoute`.
    Tcp,
    /// `UDPRoute`.
    Udp,
    /// `TLSRoute`.
    Tls,
}

impl RouteKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCPRoute",
            Self::Udp => "UDPRoute",
            Self::Tls => "TLSRoute",
        }
    }

    /// The kind named `kind` (of Gateway API's group).
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "TCPRoute" => Some(Self::Tcp),
            "UDPRoute" => Some(Self::Udp),
            "TLSRoute" => Some(Self::Tls),
            _ => None,
        }
    }

    /// Its plural (for discovery and status writes).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Tcp => "tcproutes",
            Self::Udp => "udproutes",
            Self::Tls => "tlsroutes",
        }
    }
}

/// A route of any of the three kinds, as the planner reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteObject {
    /// Its kind.
    pub kind: RouteKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.creationTimestamp` in seconds (`None`: unknown, sorts last).
    pub created: Option<i64>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// Its spec.
    pub spec: RouteSpec,
    /// Its status as it is (to keep other controllers' entries).
    pub status: Option<serde_json::Value>,
}

macro_rules! route_object {
    ($root:ty, $kind:expr) => {
        impl From<&$root> for RouteObject {
            fn from(r: &$root) -> Self {
                Self {
                    kind: $kind,
                    namespace: r.metadata.namespace.clone().unwrap_or_default(),
                    name: r.metadata.name.clone().unwrap_or_default(),
                    created: r
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    generation: r.metadata.generation,
                    uid: r.metadata.uid.clone(),
                    spec: r.spec.route.clone(),
                    status: r.status.clone(),
                }
            }
        }
    };
}

route_object!(TcpRoute, RouteKind::Tcp);
route_object!(UdpRoute, RouteKind::Udp);
route_object!(TlsRoute, RouteKind::Tls);

/// A backend reference's kind is a core Service.
pub fn is_service(b: &BackendReference) -> bool {
    b.group.as_deref().unwrap_or("").is_empty()
        && b.kind.as_deref().unwrap_or("Service") == "Service"
}

/// A certificate reference is a core Secret.
pub fn is_secret(r: &ObjectReference) -> bool {
    r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref().unwrap_or("Secret") == "Secret"
}
