//! The `PortBinding` resource: the public ports an EdgeNode exposes and where each one goes.
//!
//! Rules that one object can check on its own are enforced at admission (here); rules that
//! need other objects (a port taken by another PortBinding, a missing Service or Secret) are
//! decided by the EdgeNode and reported on the PortBinding's conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{EdgeNodeRef, SecretReference};
use super::policy::BindingPolicy;
use super::rules;

/// Public ports of an EdgeNode and the in-cluster targets they route to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tunnel.achetronic.com",
    version = "v1alpha1",
    kind = "PortBinding",
    category = "tunnel",
    plural = "portbindings",
    shortname = "pb",
    namespaced,
    status = "PortBindingStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.edgeNodeRef.name"}"#,
    printcolumn = r#"{"name":"Ports","type":"string","jsonPath":".status.ports"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.edgeNodeRef) != has(self.edgeNodeRefs)",
    "message": "set exactly one of spec.edgeNodeRef (one EdgeNode) and spec.edgeNodeRefs (several EdgeNodes serving the same ports)"
}]))]
pub struct PortBindingSpec {
    /// The EdgeNode whose public ports these are. Set this or `edgeNodeRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_node_ref: Option<EdgeNodeRef>,
    /// Several EdgeNodes that all serve these ports (each decides its own conflicts and
    /// reports in `status.edges`). Set this or `edgeNodeRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(a, self.filter(b, b.name == a.name && (has(b.__namespace__) ? b.__namespace__ : '') == (has(a.__namespace__) ? a.__namespace__ : '')).size() == 1)",
        "message": "spec.edgeNodeRefs names the same EdgeNode twice"
    }]))]
    pub edge_node_refs: Vec<EdgeNodeRef>,
    /// The ports to expose. Binding names are unique within the PortBinding.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{
            "rule": "self.all(b, self.all(c, c.name == b.name || c.protocol != b.protocol || c.listenPort != b.listenPort || (has(b.tls) && b.tls.mode == 'passthrough' && has(c.tls) && c.tls.mode == 'passthrough')))",
            "message": "two bindings use the same protocol and listenPort; only TLS passthrough bindings may share a port (routed by tls.serverNames)"
        }]
    ))]
    pub bindings: Vec<Binding>,
}

impl PortBindingSpec {
    /// The EdgeNodes named (`edgeNodeRef`, or each of `edgeNodeRefs`), with the namespace of
    /// the object that names them filled in; sorted, each once.
    pub fn edge_nodes(&self, owner_namespace: &str) -> Vec<crate::object_key::ObjectKey> {
        let mut keys: Vec<crate::object_key::ObjectKey> = self
            .edge_node_ref
            .iter()
            .chain(&self.edge_node_refs)
            .map(|r| {
                crate::object_key::ObjectKey::new(r.namespace_or(owner_namespace), r.name.clone())
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Whether EdgeNode `node` is among those named.
    pub fn names_edge_node(&self, owner_namespace: &str, node: (&str, &str)) -> bool {
        self.edge_node_ref
            .iter()
            .chain(&self.edge_node_refs)
            .any(|r| r.name == node.1 && r.namespace_or(owner_namespace) == node.0)
    }

    /// The spec of a source served by exactly `nodes` (translated sources: a Service's, a
    /// Gateway's).
    pub fn served_by(nodes: &[crate::object_key::ObjectKey], bindings: Vec<Binding>) -> Self {
        Self {
            edge_node_ref: None,
            edge_node_refs: nodes
                .iter()
                .map(|n| EdgeNodeRef {
                    name: n.name.clone(),
                    namespace: Some(n.namespace.clone()),
                })
                .collect(),
            bindings,
        }
    }
}

/// One public port and where it goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.protocol == 'TCP' ? !has(self.udp) : !has(self.tcp)",
        "message": "Protocol TCP cannot have UDP params and vice-versa"
    },
    {
        "rule": "has(self.target.service) ? !has(self.target.address) : has(self.target.address)",
        "message": "Target must have either Service or Address, not both",
        "fieldPath": ".target"
    },
    {
        "rule": "!has(self.tls) || self.protocol == 'TCP'",
        "message": "TLS configuration is only valid for TCP protocol",
        "fieldPath": ".tls"
    },
    {
        "rule": "!has(self.tls) || self.tls.mode == 'passthrough' || has(self.tls.secretRef)",
        "message": "tls.secretRef is required when mode is offload or mutual",
        "fieldPath": ".tls"
    },
    {
        "rule": "self.listenPort != 40500 && self.listenPort != 40600",
        "message": "listenPort 40500 and 40600 are reserved for the uplinks' /ready and admin bridge",
        "fieldPath": ".listenPort"
    },
    {
        "rule": "self.protocol == 'TCP' || !has(self.policy) || !has(self.policy.connectionRate)",
        "message": "policy.connectionRate limits new TCP connections and applies to TCP bindings only; a UDP binding caps its client sessions with policy.maxConnections",
        "fieldPath": ".policy.connectionRate"
    }
]))]
pub struct Binding {
    /// Name of the binding, unique within the PortBinding (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Transport protocol of the public port.
    pub protocol: Protocol,
    /// Public port on the VPS.
    #[schemars(schema_with = "rules::port")]
    pub listen_port: u16,
    /// TCP settings (protocol TCP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpParams>,
    /// UDP settings (protocol UDP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpParams>,
    /// TLS handling at the edge (protocol TCP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsParams>,
    /// Where the traffic goes: a Service, or a raw address and port.
    pub target: BindingTarget,
    /// L4 policy at the edge for this binding: who may connect and how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<BindingPolicy>,
}

/// Transport protocol.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Protocol {
    /// A TCP port.
    #[serde(rename = "TCP")]
    Tcp,
    /// A UDP port.
    #[serde(rename = "UDP")]
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// TCP settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpParams {
    /// Send a PROXY protocol header to the target so it sees the real client address.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// PROXY protocol version: 1 (text, the default) or 2 (binary).
    #[serde(default)]
    pub proxy_protocol_version: ProxyProtocolVersion,
    /// How long Envoy waits to connect to an uplink.
    #[serde(default = "default_connect_timeout")]
    #[schemars(schema_with = "rules::duration")]
    pub connect_timeout: String,
    /// Close a connection idle for this long.
    #[serde(default = "default_idle_timeout")]
    #[schemars(schema_with = "rules::duration")]
    pub idle_timeout: String,
}

/// PROXY protocol version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// The human-readable v1 header.
    #[default]
    #[serde(rename = "v1")]
    V1,
    /// The binary v2 header.
    #[serde(rename = "v2")]
    V2,
}

/// UDP settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UdpParams {
    /// Forget a client's session after this long without datagrams. Keep it above the
    /// keepalive of whatever you tunnel.
    #[serde(default = "default_session_timeout")]
    #[schemars(schema_with = "rules::duration")]
    pub session_timeout: String,
}

/// TLS handling at the edge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsParams {
    /// `passthrough` routes by SNI without decrypting; `offload` terminates TLS on the VPS;
    /// `mutual` also verifies client certificates against `ca.crt`.
    pub mode: TlsMode,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, and `ca.crt` for mutual). Required
    /// for offload and mutual; ignored for passthrough. Its key and certificates are copied
    /// to the VPS of the EdgeNode: naming a Secret hands them to whoever controls that VPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// SNI names this binding answers (exact, or `*.example.com`). Passthrough bindings with
    /// disjoint names may share one listenPort; one without names is the catch-all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string",
        "maxLength": 253,
        "pattern": "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    }))]
    pub server_names: Vec<String>,
}

/// TLS mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Route by SNI, the backend terminates TLS. Nothing secret reaches the VPS.
    Passthrough,
    /// Terminate TLS on the VPS. The certificate's private key is copied there.
    Offload,
    /// Offload plus client-certificate verification.
    Mutual,
}

/// Where a binding's traffic goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.address) || has(self.port)",
        "message": "target.port is required with target.address",
        "fieldPath": ".port"
    },
    {
        "rule": "!has(self.service) || !has(self.port)",
        "message": "target.port is only valid with target.address; a Service target carries its own port",
        "fieldPath": ".port"
    }
]))]
pub struct BindingTarget {
    /// A Service; the uplinks forward to its ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
    /// A raw IPv4 or IPv6 address, with no Service lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isIP(self)",
        "message": "target.address must be an IPv4 or IPv6 address"
    }]))]
    pub address: Option<String>,
    /// Port on the raw address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_port")]
    pub port: Option<u16>,
}

/// A Service target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTarget {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Namespace of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Service port to forward to: its number, or its name (`spec.ports[].name`).
    #[schemars(schema_with = "rules::service_port")]
    pub port: ServicePort,
}

/// A Service port, by number (`8080`) or by name (`https`), as in a Pod's `targetPort`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum ServicePort {
    /// `spec.ports[].port`.
    Number(u16),
    /// `spec.ports[].name`.
    Name(String),
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => write!(f, "{name:?}"),
        }
    }
}

impl From<u16> for ServicePort {
    fn from(n: u16) -> Self {
        Self::Number(n)
    }
}

/// What the EdgeNode did with this PortBinding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortBindingStatus {
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Public ports served, e.g. `80/TCP,53/UDP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `Ready`, and why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per binding: served, or refused with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub bindings: Vec<BindingStatus>,
    /// The public addresses to reach these ports at: those of the EdgeNodes that serve them,
    /// pass the operator's check from outside and are not drained (what DNS should publish).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// One entry per EdgeNode named: whether it serves these ports, and why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub edges: Vec<EdgeStatus>,
}

/// What one EdgeNode does with a source of bindings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeStatus {
    /// The EdgeNode, `namespace/name`.
    pub name: String,
    /// `Serving` (every binding served, healthy from outside, in `addresses`), `Degraded`
    /// (some bindings refused here), `NotServing`, `Unhealthy` (configured, but failing the
    /// check from outside) or `Draining` (taken out of `addresses` on request).
    pub state: String,
    /// Why it is not `Serving`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its public addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports it serves, e.g. `80/TCP,53/UDP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
}

/// What happened to one binding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingStatus {
    /// The binding's name.
    pub name: String,
    /// Its protocol.
    pub protocol: String,
    /// Its public port.
    pub listen_port: u16,
    /// `Served` or `Refused`.
    pub state: String,
    /// Why it is refused (e.g. `PortConflict`, `ServiceNotFound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn default_connect_timeout() -> String {
    "5s".into()
}
fn default_idle_timeout() -> String {
    "1h".into()
}
fn default_session_timeout() -> String {
    "60s".into()
}

impl Default for TcpParams {
    fn default() -> Self {
        Self {
            proxy_protocol: false,
            proxy_protocol_version: ProxyProtocolVersion::V1,
            connect_timeout: default_connect_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

impl Default for UdpParams {
    fn default() -> Self {
        Self {
            session_timeout: default_session_timeout(),
        }
    }
}
