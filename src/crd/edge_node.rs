//! The `EdgeNode` resource: one VPS, the SSH credentials to enroll it, the WireGuard overlay
//! and the uplink workload that dials it from the cluster.
//!
//! Every parent object defaults to `{}` so the nested defaults hold when a user omits it
//! (README Example 1 omits `spec.uplink`, and the uplink namespace must still be `tunnel`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretReference;
use super::rules;

/// One VPS and the WireGuard tunnel back into the cluster. The operator enrolls the host over
/// SSH, keeps its Envoy and relay in sync, and runs the uplink pods that dial it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tunnel.achetronic.com",
    version = "v1alpha1",
    kind = "EdgeNode",
    category = "tunnel",
    plural = "edgenodes",
    shortname = "en",
    namespaced,
    status = "EdgeNodeStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.uplink.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!isCIDR(self.tunnel.network) || cidr(self.tunnel.network).prefixLength() <= 24 || cidr(self.tunnel.network).prefixLength() > 29 || self.uplink.replicas <= [125, 61, 29, 13, 5][cidr(self.tunnel.network).prefixLength() - 25]",
    "message": "uplink.replicas does not fit in tunnel.network: a /N network holds 2^(32-N)-3 uplinks (the network and broadcast addresses and the relay take the rest)",
    "fieldPath": ".uplink.replicas"
}]))]
pub struct EdgeNodeSpec {
    /// Public IP address or hostname of the VPS. The operator connects to it over SSH and the
    /// uplinks dial its WireGuard port on it.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isIP(self) || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "message": "must be an IPv4 or IPv6 address or a DNS hostname"
    }]))]
    pub address: String,
    /// The addresses clients reach the VPS's public ports on: IPv4 and/or IPv6 literals in
    /// canonical form, at most 4, each once. With an IPv6 address listed, Envoy also listens on IPv6 (`::`);
    /// statuses and DNS publish every one. Omitted: `address` alone (which may be a hostname).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string",
        "maxLength": 45,
        "x-kubernetes-validations": [
            {
                "rule": "isIP(self)",
                "message": "publicAddresses entries must be IPv4 or IPv6 addresses such as 203.0.113.10 or 2001:db8::10"
            },
            {
                "rule": "!isIP(self) || ip.isCanonical(self)",
                "message": "publicAddresses entries must be written in canonical form (e.g. 2001:db8::10, not 2001:DB8:0::10)"
            }
        ]
    }))]
    pub public_addresses: Vec<String>,
    /// How the operator reaches the VPS over SSH.
    pub ssh: SshSpec,
    /// Kernel tuning the operator applies on the VPS.
    #[serde(default)]
    pub host: HostSpec,
    /// Envoy settings on the VPS: health checking of the uplinks.
    #[serde(default)]
    pub edge: EdgeSpec,
    /// The WireGuard overlay between the VPS relay and the uplinks.
    #[serde(default)]
    pub tunnel: TunnelSpec,
    /// The uplink workload: the pods in the cluster that dial the VPS.
    #[serde(default)]
    pub uplink: UplinkSpec,
}

/// One address the VPS serves its public ports on (see [`EdgeNodeSpec::public_addresses`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PublicAddress {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (only `spec.address` may be one).
    Hostname(String),
}

impl PublicAddress {
    /// Whether this is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Self::Ip(IpAddr::V6(_)))
    }
}

impl std::fmt::Display for PublicAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Hostname(h) => f.write_str(h),
        }
    }
}

impl EdgeNodeSpec {
    /// The addresses clients reach the public ports on, in the order listed, each once
    /// (compared as addresses: `2001:DB8::1` and `2001:db8::1` are one): `publicAddresses`,
    /// or, when it lists none, `address` (an IP or a hostname). An entry that is not an IP
    /// literal (admission refuses them; an object stored before the rule could hold one) is
    /// left out; if none is left, `address` is the answer.
    pub fn public_addresses(&self) -> Vec<PublicAddress> {
        let mut out: Vec<PublicAddress> = Vec::new();
        for a in &self.public_addresses {
            if let Ok(ip) = a.trim().parse::<IpAddr>() {
                let ip = PublicAddress::Ip(ip);
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        if out.is_empty() {
            out.push(match self.address.parse::<IpAddr>() {
                Ok(ip) => PublicAddress::Ip(ip),
                Err(_) => PublicAddress::Hostname(self.address.clone()),
            });
        }
        out
    }

    /// Whether Envoy listens on IPv6 too: an IPv6 address among [`Self::public_addresses`].
    pub fn serves_ipv6(&self) -> bool {
        self.public_addresses().iter().any(PublicAddress::is_ipv6)
    }
}

/// SSH access to the VPS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshSpec {
    /// SSH port of the VPS.
    #[serde(default = "default_ssh_port")]
    #[schemars(schema_with = "rules::port")]
    pub port: u16,
    /// User to log in as. It must be root or able to write /etc and manage systemd units.
    #[serde(default = "default_ssh_user")]
    #[schemars(length(min = 1, max = 32))]
    pub user: String,
    /// Secret holding the credentials: `privateKey` (with `passphrase` if encrypted) or
    /// `password`, and `knownHosts` (OpenSSH known_hosts lines pinning the host key).
    /// Naming a Secret lets the operator use it for this EdgeNode: its key signs the login to
    /// `address` and its `password` is sent there, only to a host `knownHosts` verified.
    pub secret_ref: SecretReference,
    /// How long to wait for the SSH connection to open (at most 60s).
    #[serde(default = "default_connect_timeout")]
    #[schemars(schema_with = "rules::ssh_connect_timeout")]
    pub connect_timeout: String,
    /// Connect without verifying the host key. Only honoured when the Secret has no
    /// `knownHosts`; leaves the enrollment channel open to a man in the middle. A Secret
    /// with a `password` is refused then (SSHPasswordNeedsHostKey): use `privateKey`.
    #[serde(default)]
    pub insecure_skip_host_key_verification: bool,
}

/// Kernel tuning applied on the VPS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// Largest socket buffer the kernel allows (`net.core.rmem_max`/`wmem_max`), in bytes.
    /// Envoy's UDP listeners and the relay use it to ride out bursts.
    #[serde(default = "default_socket_buffer")]
    #[schemars(range(min = 212_992, max = 1_073_741_824))]
    pub kernel_max_socket_buffer_bytes: i64,
    /// Turn off GRO/GSO/TSO on the VPS's NICs (some virtual NICs mangle offloaded packets).
    #[serde(default)]
    pub disable_nic_offloads: bool,
}

/// Envoy behaviour on the VPS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeSpec {
    /// Active health checking of each uplink's `/ready` over its tunnel.
    #[serde(default)]
    pub health_check: HealthCheckSpec,
    /// Passive outlier detection: eject an uplink after consecutive connection failures.
    /// Off when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
}

/// Active health checking of the uplinks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.interval.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.timeout.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.timeout) <= duration(self.interval)",
    "message": "timeout must not be longer than interval",
    "fieldPath": ".timeout"
}]))]
pub struct HealthCheckSpec {
    /// Time between two `/ready` probes of one uplink.
    #[serde(default = "default_hc_interval")]
    #[schemars(schema_with = "rules::duration")]
    pub interval: String,
    /// How long one probe may take.
    #[serde(default = "default_hc_timeout")]
    #[schemars(schema_with = "rules::duration")]
    pub timeout: String,
    /// Consecutive successes before an uplink is back in rotation.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: u32,
    /// Consecutive failures before an uplink is taken out of rotation.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: u32,
}

/// Passive outlier detection over the uplinks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    /// Consecutive connection failures to one uplink before it is ejected.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: u32,
    /// Time between two ejection sweeps.
    #[serde(default = "default_od_interval")]
    #[schemars(schema_with = "rules::duration")]
    pub interval: String,
    /// How long an ejected uplink stays out (multiplied by the number of ejections).
    #[serde(default = "default_od_base_ejection")]
    #[schemars(schema_with = "rules::duration")]
    pub base_ejection_time: String,
    /// Largest share of uplinks that may be ejected at once, in percent.
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_ejection_percent: u32,
}

/// The WireGuard overlay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSpec {
    /// UDP port the relay listens on, on the VPS. No binding may use it for UDP.
    #[serde(default = "default_tunnel_port")]
    #[schemars(schema_with = "rules::port")]
    pub listen_port: u16,
    /// IPv4 network of the overlay: the relay takes the first host address, uplink replica N
    /// the (N+2)th. A /29 or larger network.
    #[serde(default = "default_tunnel_network")]
    #[schemars(length(min = 9, max = 18))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).prefixLength() <= 29 && cidr(self).masked() == cidr(self)",
        "message": "must be an IPv4 network in CIDR form, /29 or larger, written with its network address (e.g. 10.200.0.0/24)"
    }]))]
    pub network: String,
    /// MTU of the tunnel interfaces.
    #[serde(default = "default_mtu")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: u32,
    /// Seconds between keepalives the uplinks send, so NAT mappings stay open. 0 turns them off.
    #[serde(default = "default_keepalive")]
    #[schemars(range(min = 0, max = 3600))]
    pub persistent_keepalive: u32,
}

/// The uplink workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UplinkSpec {
    /// Namespace the uplink StatefulSet, its Secrets and ConfigMap live in. Immutable.
    #[serde(default = "default_uplink_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "uplink.namespace is immutable"
    }]))]
    pub namespace: String,
    /// Number of uplink pods; they run active-active, one tunnel each.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 253))]
    pub replicas: i32,
    /// Labels added to the uplink pods (the operator's flag `--uplink-pod-label-prefixes` says
    /// which keys it takes). The selector labels (`app.kubernetes.io/name`,
    /// `app.kubernetes.io/instance`, `app.kubernetes.io/managed-by`) and the
    /// `tunnel.achetronic.com/` prefix are the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by']) && !k.startsWith('tunnel.achetronic.com/'))",
        "message": "uplink.labels must not set app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/managed-by or tunnel.achetronic.com/* (the operator's selector and owner labels)"
    }]))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the uplink pods. The `tunnel.achetronic.com/` prefix is the
    /// operator's; which other keys are taken is the operator's choice (its flag
    /// `--uplink-pod-annotation-prefixes`: by default not AppArmor, seccomp or CNI keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, !k.startsWith('tunnel.achetronic.com/'))",
        "message": "uplink.annotations must not set tunnel.achetronic.com/* (the operator's)"
    }]))]
    pub annotations: BTreeMap<String, String>,
    /// Compute resources of the uplink container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the uplink pods, added to the operator's (taken only with its
    /// `--edge-node-placement`, the default).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the uplink pods, added to the operator's; the taint keys the operator
    /// takes are its `--uplink-pod-toleration-keys` (by default none of kubernetes.io).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the uplink pods (taken only with the operator's `--edge-node-placement`,
    /// the default). When omitted, replicas prefer distinct nodes (preferred anti-affinity
    /// on `kubernetes.io/hostname`, weight 100): spread where nodes exist, several per node
    /// where they do not; for one per node at most, give the required form here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNodeStatus {
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and the conditions that explain it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// WireGuard public key of the relay on the VPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// One entry per uplink replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ordinal"]))]
    pub uplink: Vec<UplinkStatus>,
    /// Hash of the configuration last applied to the VPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_config_hash: Option<String>,
    /// What the VPS serves: `namespace/name` of each PortBinding and `Service namespace/name` of
    /// each Service of type LoadBalancer with at least one served binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub applied_bindings: Vec<String>,
}

/// One uplink replica as the relay sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UplinkStatus {
    /// StatefulSet ordinal of the replica.
    pub ordinal: i32,
    /// Tunnel address of the replica (no mask).
    #[serde(rename = "tunnelIP")]
    pub tunnel_ip: String,
    /// WireGuard public key of the replica.
    pub public_key: String,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_user() -> String {
    "root".into()
}
fn default_connect_timeout() -> String {
    "30s".into()
}
fn default_socket_buffer() -> i64 {
    26_214_400
}
fn default_hc_interval() -> String {
    "5s".into()
}
fn default_hc_timeout() -> String {
    "2s".into()
}
fn default_threshold() -> u32 {
    2
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_od_interval() -> String {
    "10s".into()
}
fn default_od_base_ejection() -> String {
    "30s".into()
}
fn default_max_ejection_percent() -> u32 {
    100
}
fn default_tunnel_port() -> u16 {
    51821
}
fn default_tunnel_network() -> String {
    "10.200.0.0/24".into()
}
fn default_mtu() -> u32 {
    1420
}
fn default_keepalive() -> u32 {
    25
}
fn default_uplink_namespace() -> String {
    "tunnel".into()
}
fn default_replicas() -> i32 {
    1
}

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            kernel_max_socket_buffer_bytes: default_socket_buffer(),
            disable_nic_offloads: false,
        }
    }
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            interval: default_hc_interval(),
            timeout: default_hc_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
        }
    }
}

impl Default for OutlierDetectionSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            interval: default_od_interval(),
            base_ejection_time: default_od_base_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

impl Default for TunnelSpec {
    fn default() -> Self {
        Self {
            listen_port: default_tunnel_port(),
            network: default_tunnel_network(),
            mtu: default_mtu(),
            persistent_keepalive: default_keepalive(),
        }
    }
}

impl Default for UplinkSpec {
    fn default() -> Self {
        Self {
            namespace: default_uplink_namespace(),
            replicas: default_replicas(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(address: &str, public: &[&str]) -> EdgeNodeSpec {
        let mut s: EdgeNodeSpec = serde_yaml::from_str(&format!(
            "address: {address}\nssh: {{secretRef: {{name: s}}}}\n"
        ))
        .unwrap();
        s.public_addresses = public.iter().map(|a| (*a).to_owned()).collect();
        s
    }

    fn ip(s: &str) -> PublicAddress {
        PublicAddress::Ip(s.parse().unwrap())
    }

    #[test]
    fn without_public_addresses_the_address_is_the_one() {
        assert_eq!(
            spec("203.0.113.10", &[]).public_addresses(),
            [ip("203.0.113.10")]
        );
        assert_eq!(
            spec("vps.example.com", &[]).public_addresses(),
            [PublicAddress::Hostname("vps.example.com".into())]
        );
        assert!(!spec("203.0.113.10", &[]).serves_ipv6());
        assert!(spec("2001:db8::10", &[]).serves_ipv6());
    }

    #[test]
    fn public_addresses_replace_the_address_in_order_each_once() {
        let s = spec(
            "vps.example.com",
            &[
                "2001:db8::10",
                "203.0.113.10",
                "2001:DB8:0::10",
                "not-an-ip",
            ],
        );
        assert_eq!(
            s.public_addresses(),
            [ip("2001:db8::10"), ip("203.0.113.10")]
        );
        assert!(s.serves_ipv6());
        assert_eq!(s.public_addresses()[0].to_string(), "2001:db8::10");
        assert!(!spec("2001:db8::10", &["203.0.113.10"]).serves_ipv6());
        // Nothing usable listed: the address.
        assert_eq!(
            spec("203.0.113.10", &["bad"]).public_addresses(),
            [ip("203.0.113.10")]
        );
    }

    #[test]
    fn the_field_is_omitted_when_empty_and_read_back() {
        let s = spec("203.0.113.10", &[]);
        assert!(
            !serde_yaml::to_string(&s)
                .unwrap()
                .contains("publicAddresses")
        );
        let s = spec("203.0.113.10", &["2001:db8::10"]);
        let back: EdgeNodeSpec = serde_yaml::from_str(&serde_yaml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
