//! The agent documents: the versioned JSON contract between the operator (which writes them)
//! and the two agents (which read them).
//!
//! - [`RelayDocument`] is `/etc/tunnel/relay.json` on the VPS, read by `tunnelctl`.
//! - [`UplinkDocument`] is the `uplink.json` key of the uplink ConfigMap, shared by every
//!   uplink replica; each replica fills in its own identity at start
//!   ([`UplinkDocument::replica_address`], key file `priv-<ordinal>`).
//!
//! Both are strict: `"version": 1`, camelCase field names, unknown fields refused. Read them
//! with [`RelayDocument::parse`] / [`UplinkDocument::parse`], which also run `validate()`;
//! every error names the field it is about (`peers[1].publicKey: ...`). The types are plain
//! data with no I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key::{PrivateKey, PublicKey};

/// The only document version these agents read and the operator writes.
pub const DOCUMENT_VERSION: u32 = 1;
/// TCP port of the uplink's readiness endpoint (`/ready`), reserved on the tunnel address.
pub const READY_PORT: u16 = 40500;
/// TCP port of the admin bridge on the uplink's pod address, and of Envoy's admin on the relay.
pub const ADMIN_BRIDGE_PORT: u16 = 40600;
/// Smallest and largest tunnel MTU accepted (the CRD's bounds).
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=9000;
/// Name of the relay's tunnel interface.
pub const RELAY_INTERFACE: &str = "wg-relay";
/// Name of the uplink's tunnel interface.
pub const UPLINK_INTERFACE: &str = "wg-uplink";

/// Why a document was refused. `field` is a path into the JSON (`forwards[2].targetIP`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// `version` missing or not the one this agent reads.
    #[error("version: {0}")]
    Version(String),
    /// A field is missing, unknown, of the wrong type, or has a value that is not allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field in the document, e.g. `peers[1].publicKey`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DocumentError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "DocumentSyntaxInvalid",
            Self::Version(_) => "DocumentVersionUnsupported",
            Self::Invalid { .. } => "DocumentInvalid",
        }
    }

    /// The field the error is about (`""` for a syntax error).
    pub fn field(&self) -> &str {
        match self {
            Self::Syntax(_) => "",
            Self::Version(_) => "version",
            Self::Invalid { field, .. } => field,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Transport protocol of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// The IP protocol number (6 or 17).
    pub const fn ip_number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// The relay's document (`/etc/tunnel/relay.json`): the VPS end of every tunnel.
///
/// ```json
/// { "version": 1, "privateKey": "…", "listenPort": 51821, "address": "10.200.0.1/24",
///   "mtu": 1420,
///   "peers": [ { "name": "uplink-0", "publicKey": "…", "allowedIPs": ["10.200.0.2/32"] } ] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayDocument {
    /// Always [`DOCUMENT_VERSION`].
    pub version: u32,
    /// The relay's WireGuard private key (secret; the file is 0600).
    pub private_key: PrivateKey,
    /// UDP port the relay listens on, on every address of the VPS.
    pub listen_port: u16,
    /// The relay's tunnel address with the tunnel network's prefix, e.g. `10.200.0.1/24`.
    pub address: Ipv4Net,
    /// MTU of `wg-relay`.
    pub mtu: u16,
    /// One peer per uplink replica.
    #[serde(default)]
    pub peers: Vec<RelayPeer>,
}

/// One uplink replica as the relay knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayPeer {
    /// A name for logs and `tunnelctl status` (e.g. the pod name); not used for routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The replica's public key.
    pub public_key: PublicKey,
    /// What the replica may send from and receives: its tunnel address as a `/32`.
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<Ipv4Net>,
}

/// The uplink document (ConfigMap key `uplink.json`), shared by every replica.
///
/// ```json
/// { "version": 1, "network": "10.200.0.0/24", "mtu": 1420,
///   "relay": { "publicKey": "…", "endpoint": "203.0.113.7:51821",
///              "allowedIPs": ["10.200.0.1/32"], "persistentKeepalive": 25 },
///   "forwards": [ { "protocol": "TCP", "listenPort": 443,
///                   "targetIP": "10.96.0.10", "targetPort": 8443 } ],
///   "adminBridge": "10.200.0.1:40600" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UplinkDocument {
    /// Always [`DOCUMENT_VERSION`].
    pub version: u32,
    /// The tunnel network, e.g. `10.200.0.0/24`. Replica `o` takes base + 2 + o.
    pub network: Ipv4Net,
    /// MTU of `wg-uplink`.
    pub mtu: u16,
    /// The relay peer.
    pub relay: UplinkRelay,
    /// Ports arriving on the replica's tunnel address, forwarded to their targets.
    #[serde(default)]
    pub forwards: Vec<Forward>,
    /// Envoy's admin on the relay (`<relay IP>:40600`); TCP [`ADMIN_BRIDGE_PORT`] on the pod
    /// network is bridged to it. No bridge when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_bridge: Option<SocketAddrV4>,
}

/// The relay as an uplink sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UplinkRelay {
    /// The relay's public key.
    pub public_key: PublicKey,
    /// `host:port` of the relay; the host may be a name, resolved when the config is applied.
    pub endpoint: String,
    /// Addresses reached through the relay: the relay's tunnel address as a `/32`.
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<Ipv4Net>,
    /// Seconds between keepalives (0: off).
    #[serde(default)]
    pub persistent_keepalive: u16,
}

/// One forwarded port: `protocol` traffic to the tunnel address's `listenPort` is sent to
/// `targetIP:targetPort` (kernel DNAT + masquerade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Forward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port on the tunnel address (the binding's public port).
    pub listen_port: u16,
    /// Where the traffic goes (a Service's cluster IP or any reachable IPv4 address).
    #[serde(rename = "targetIP")]
    pub target_ip: Ipv4Addr,
    /// Port at the target.
    pub target_port: u16,
}

impl RelayDocument {
    /// Reads and validates a relay document.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let doc: Self = decode(text)?;
        doc.validate()?;
        Ok(doc)
    }

    /// The document as pretty JSON with a trailing newline (deterministic).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Checks what the types cannot: version, ports, MTU, peers' keys and addresses.
    pub fn validate(&self) -> Result<(), DocumentError> {
        check_version(self.version)?;
        if self.listen_port == 0 {
            return Err(DocumentError::invalid("listenPort", "must be 1-65535"));
        }
        check_mtu(self.mtu)?;
        let network = self.address.trunc();
        if self.address.addr() == network.network() || self.address.addr() == network.broadcast() {
            return Err(DocumentError::invalid(
                "address",
                format!("{} is not a host address of {network}", self.address),
            ));
        }
        let own = self.private_key.public_key();
        let mut keys = BTreeSet::new();
        let mut seen: Vec<(Ipv4Net, usize)> = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.public_key == own {
                return Err(DocumentError::invalid(
                    format!("peers[{i}].publicKey"),
                    "is the relay's own key",
                ));
            }
            if !keys.insert(peer.public_key) {
                return Err(DocumentError::invalid(
                    format!("peers[{i}].publicKey"),
                    "appears twice",
                ));
            }
            check_allowed_ips(&format!("peers[{i}].allowedIPs"), &peer.allowed_ips)?;
            for (j, net) in peer.allowed_ips.iter().enumerate() {
                if let Some((_, other)) = seen
                    .iter()
                    .find(|(n, _)| n.contains(net) || net.contains(n))
                {
                    return Err(DocumentError::invalid(
                        format!("peers[{i}].allowedIPs[{j}]"),
                        format!("{net} overlaps the allowed IPs of peers[{other}]"),
                    ));
                }
                seen.push((*net, i));
            }
        }
        Ok(())
    }
}

impl UplinkDocument {
    /// Reads and validates an uplink document.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let doc: Self = decode(text)?;
        doc.validate()?;
        Ok(doc)
    }

    /// The document as pretty JSON with a trailing newline (deterministic).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// The tunnel address of replica `ordinal`: network base + 2 + ordinal.
    pub fn replica_address(&self, ordinal: u32) -> Result<Ipv4Addr, DocumentError> {
        replica_address(self.network, ordinal).ok_or_else(|| {
            DocumentError::invalid(
                "network",
                format!("{} has no address for replica {ordinal}", self.network),
            )
        })
    }

    /// The relay's tunnel address: network base + 1.
    pub fn relay_address(&self) -> Ipv4Addr {
        relay_address(self.network)
    }

    /// Checks what the types cannot: version, MTU, network, endpoint, ports, duplicates.
    pub fn validate(&self) -> Result<(), DocumentError> {
        check_version(self.version)?;
        check_mtu(self.mtu)?;
        if self.network != self.network.trunc() {
            return Err(DocumentError::invalid(
                "network",
                format!("{} is not a network address (host bits set)", self.network),
            ));
        }
        if self.network.prefix_len() > 29 {
            return Err(DocumentError::invalid(
                "network",
                format!("{} is smaller than a /29", self.network),
            ));
        }
        check_endpoint(&self.relay.endpoint)
            .map_err(|reason| DocumentError::invalid("relay.endpoint", reason))?;
        check_allowed_ips("relay.allowedIPs", &self.relay.allowed_ips)?;
        let mut seen = BTreeSet::new();
        for (i, fwd) in self.forwards.iter().enumerate() {
            let field = |name: &str| format!("forwards[{i}].{name}");
            if fwd.listen_port == 0 {
                return Err(DocumentError::invalid(
                    field("listenPort"),
                    "must be 1-65535",
                ));
            }
            if fwd.protocol == Protocol::Tcp && fwd.listen_port == READY_PORT {
                return Err(DocumentError::invalid(
                    field("listenPort"),
                    format!("TCP {READY_PORT} is reserved for /ready"),
                ));
            }
            if fwd.target_port == 0 {
                return Err(DocumentError::invalid(
                    field("targetPort"),
                    "must be 1-65535",
                ));
            }
            if fwd.target_ip.is_unspecified() || fwd.target_ip.is_broadcast() {
                return Err(DocumentError::invalid(
                    field("targetIP"),
                    format!("{} is not a usable target", fwd.target_ip),
                ));
            }
            if !seen.insert((fwd.protocol, fwd.listen_port)) {
                return Err(DocumentError::invalid(
                    field("listenPort"),
                    format!("{} {} appears twice", fwd.protocol, fwd.listen_port),
                ));
            }
        }
        if let Some(bridge) = self.admin_bridge
            && bridge.port() == 0
        {
            return Err(DocumentError::invalid(
                "adminBridge",
                "port must be 1-65535",
            ));
        }
        Ok(())
    }
}

/// The relay's tunnel address in `network`: base + 1.
pub fn relay_address(network: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(network.network()).wrapping_add(1))
}

/// The tunnel address of replica `ordinal` in `network` (base + 2 + ordinal), or `None`
/// when the network has no such host address (outside it, or its broadcast address).
pub fn replica_address(network: Ipv4Net, ordinal: u32) -> Option<Ipv4Addr> {
    let offset = ordinal.checked_add(2)?;
    let addr = u32::from(network.network()).checked_add(offset)?;
    let addr = Ipv4Addr::from(addr);
    (network.contains(&addr) && addr != network.broadcast()).then_some(addr)
}

/// The ordinal of a StatefulSet pod from its name (`edge-uplink-2` → 2).
pub fn ordinal_from_pod_name(pod_name: &str) -> Option<u32> {
    let (_, last) = pod_name.rsplit_once('-')?;
    if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    last.parse().ok()
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, DocumentError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DocumentError::Syntax(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(DocumentError::Syntax(
            "the document is not a JSON object".into(),
        ));
    };
    match object.get("version") {
        None => return Err(DocumentError::Version("missing".into())),
        Some(v) if v.as_u64() == Some(u64::from(DOCUMENT_VERSION)) => {}
        Some(v) => {
            return Err(DocumentError::Version(format!(
                "unsupported version {v}, this agent reads version {DOCUMENT_VERSION}"
            )));
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let reason = e.into_inner().to_string();
        // "missing field `x`" is about the field x, not its parent.
        if let Some(name) = reason
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            let field = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            return DocumentError::invalid(field, "missing");
        }
        DocumentError::Invalid {
            field: if path.is_empty() {
                "document".into()
            } else {
                path
            },
            reason,
        }
    })
}

fn to_json<T: Serialize>(doc: &T) -> String {
    // Serializing plain data with string keys cannot fail.
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}

fn check_version(version: u32) -> Result<(), DocumentError> {
    if version == DOCUMENT_VERSION {
        Ok(())
    } else {
        Err(DocumentError::Version(format!(
            "unsupported version {version}, this agent reads version {DOCUMENT_VERSION}"
        )))
    }
}

fn check_mtu(mtu: u16) -> Result<(), DocumentError> {
    if MTU_RANGE.contains(&mtu) {
        Ok(())
    } else {
        Err(DocumentError::invalid(
            "mtu",
            format!("{mtu} is outside {}-{}", MTU_RANGE.start(), MTU_RANGE.end()),
        ))
    }
}

fn check_allowed_ips(field: &str, nets: &[Ipv4Net]) -> Result<(), DocumentError> {
    if nets.is_empty() {
        return Err(DocumentError::invalid(field, "needs at least one network"));
    }
    for (i, net) in nets.iter().enumerate() {
        if *net != net.trunc() {
            return Err(DocumentError::invalid(
                format!("{field}[{i}]"),
                format!("{net} has host bits set"),
            ));
        }
    }
    Ok(())
}

/// `host:port` with a non-empty host (IPv6 in brackets) and a port 1-65535.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!("{endpoint:?} is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{endpoint:?} has no valid port")),
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{endpoint:?} has no valid host"));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!("{endpoint:?} has no valid host"));
    }
    if host.contains(':') && !endpoint.starts_with('[') {
        return Err(format!("{endpoint:?}: write IPv6 hosts in brackets"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PEER1: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    const PEER2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn relay_json() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "privateKey": "gI6EdUSYvn8ugXOt8QQD6Yc+JyiZxIhp3GInSWRfWGE=",
            "listenPort": 51821,
            "address": "10.200.0.1/24",
            "mtu": 1420,
            "peers": [
                {"name": "edge-uplink-0", "publicKey": PEER1, "allowedIPs": ["10.200.0.2/32"]},
                {"publicKey": PEER2, "allowedIPs": ["10.200.0.3/32"]}
            ]
        })
    }

    fn uplink_json() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "network": "10.200.0.0/24",
            "mtu": 1420,
            "relay": {
                "publicKey": PEER1,
                "endpoint": "vps.example.com:51821",
                "allowedIPs": ["10.200.0.1/32"],
                "persistentKeepalive": 25
            },
            "forwards": [
                {"protocol": "TCP", "listenPort": 443, "targetIP": "10.96.0.10", "targetPort": 8443},
                {"protocol": "UDP", "listenPort": 53, "targetIP": "10.96.0.11", "targetPort": 53}
            ],
            "adminBridge": "10.200.0.1:40600"
        })
    }

    fn relay_err(value: &serde_json::Value) -> String {
        RelayDocument::parse(&value.to_string())
            .unwrap_err()
            .to_string()
    }

    fn uplink_err(value: &serde_json::Value) -> String {
        UplinkDocument::parse(&value.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            DocumentError::Syntax(String::new()),
            DocumentError::Version(String::new()),
            DocumentError::invalid("f", "r"),
        ];
        let categories: Vec<&str> = all.iter().map(DocumentError::category).collect();
        assert_eq!(
            categories,
            [
                "DocumentSyntaxInvalid",
                "DocumentVersionUnsupported",
                "DocumentInvalid"
            ]
        );
    }

    #[test]
    fn relay_round_trip() {
        let doc = RelayDocument::parse(&relay_json().to_string()).unwrap();
        assert_eq!(doc.peers.len(), 2);
        assert_eq!(doc.peers[0].name.as_deref(), Some("edge-uplink-0"));
        assert_eq!(doc.address.to_string(), "10.200.0.1/24");
        let again = RelayDocument::parse(&doc.to_json()).unwrap();
        assert_eq!(doc, again);
        let value: serde_json::Value = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(value, relay_json());
    }

    #[test]
    fn uplink_round_trip() {
        let doc = UplinkDocument::parse(&uplink_json().to_string()).unwrap();
        assert_eq!(doc.forwards[1].protocol, Protocol::Udp);
        assert_eq!(doc.relay_address(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(
            doc.replica_address(0).unwrap(),
            Ipv4Addr::new(10, 200, 0, 2)
        );
        assert_eq!(
            doc.replica_address(252).unwrap(),
            Ipv4Addr::new(10, 200, 0, 254)
        );
        assert!(doc.replica_address(253).is_err());
        let value: serde_json::Value = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(value, uplink_json());
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let mut v = relay_json();
        v["peers"][1]["endpoint"] = "1.2.3.4:5".into();
        let err = relay_err(&v);
        assert!(err.starts_with("peers[1]"), "{err}");
        assert!(err.contains("unknown field `endpoint`"), "{err}");

        let mut v = uplink_json();
        v["extra"] = true.into();
        assert!(uplink_err(&v).contains("unknown field `extra`"));
    }

    #[test]
    fn wrong_or_missing_version_is_refused() {
        let mut v = relay_json();
        v["version"] = 2.into();
        v["newField"] = 1.into();
        let err = RelayDocument::parse(&v.to_string()).unwrap_err();
        assert_eq!(err.field(), "version");
        assert!(err.to_string().contains("unsupported version 2"), "{err}");
        let mut v = uplink_json();
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(uplink_err(&v), "version: missing");
    }

    #[test]
    fn bad_keys_name_the_field() {
        let mut v = relay_json();
        v["peers"][1]["publicKey"] = "not-a-key".into();
        assert_eq!(
            relay_err(&v),
            "peers[1].publicKey: not a 32-byte base64 WireGuard key"
        );
        let mut v = relay_json();
        v["privateKey"] = "AAAA".into();
        assert_eq!(
            relay_err(&v),
            "privateKey: not a 32-byte base64 WireGuard key"
        );
        let mut v = uplink_json();
        v["relay"]["publicKey"] = 7.into();
        assert!(uplink_err(&v).starts_with("relay.publicKey: "));
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let mut v = relay_json();
        v["address"] = "10.200.0.1".into();
        assert!(relay_err(&v).starts_with("address: "));
        let mut v = relay_json();
        v["peers"][0]["allowedIPs"] = serde_json::json!(["10.200.0.300/32"]);
        assert!(relay_err(&v).starts_with("peers[0].allowedIPs[0]: "));
        let mut v = relay_json();
        v["peers"][1]["allowedIPs"] = serde_json::json!(["10.200.0.0/24"]);
        assert!(relay_err(&v).contains("overlaps the allowed IPs of peers[0]"));
        let mut v = uplink_json();
        v["network"] = "10.200.0.1/24".into();
        assert!(uplink_err(&v).contains("host bits"));
        let mut v = uplink_json();
        v["network"] = "10.200.0.0/30".into();
        assert!(uplink_err(&v).starts_with("network: "));
        let mut v = uplink_json();
        v["forwards"][1]["targetIP"] = "my-service".into();
        assert!(uplink_err(&v).starts_with("forwards[1].targetIP: "));
        for endpoint in ["vps", "vps:0", ":51821", "vps:x", "::1:51821"] {
            let mut v = uplink_json();
            v["relay"]["endpoint"] = endpoint.into();
            assert!(uplink_err(&v).starts_with("relay.endpoint: "), "{endpoint}");
        }
        let mut v = uplink_json();
        v["relay"]["endpoint"] = "[2001:db8::1]:51821".into();
        UplinkDocument::parse(&v.to_string()).unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut v = relay_json();
        v["mtu"] = 100.into();
        assert!(relay_err(&v).starts_with("mtu: "));
        let mut v = relay_json();
        v["listenPort"] = 0.into();
        assert!(relay_err(&v).starts_with("listenPort: "));
        let mut v = relay_json();
        v["peers"][1]["publicKey"] = PEER1.into();
        assert_eq!(relay_err(&v), "peers[1].publicKey: appears twice");
        let mut v = relay_json();
        v["privateKey"] = RELAY_KEY.into(); // its public key is PEER1, peers[0]'s key
        assert_eq!(relay_err(&v), "peers[0].publicKey: is the relay's own key");
        let mut v = uplink_json();
        v["forwards"][1]["protocol"] = "SCTP".into();
        assert!(uplink_err(&v).starts_with("forwards[1].protocol: "));
        let mut v = uplink_json();
        v["forwards"][1]["protocol"] = "TCP".into();
        v["forwards"][1]["listenPort"] = 443.into();
        assert!(uplink_err(&v).contains("TCP 443 appears twice"));
        let mut v = uplink_json();
        v["forwards"][0]["listenPort"] = 70000.into();
        assert!(uplink_err(&v).starts_with("forwards[0].listenPort: "));
        let mut v = uplink_json();
        v["forwards"][0]["listenPort"] = 40500.into();
        assert!(uplink_err(&v).contains("reserved"));
        assert!(matches!(
            UplinkDocument::parse("{not json"),
            Err(DocumentError::Syntax(_))
        ));
        assert!(matches!(
            UplinkDocument::parse("[]"),
            Err(DocumentError::Syntax(_))
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        let mut v = relay_json();
        v.as_object_mut().unwrap().remove("privateKey");
        assert_eq!(relay_err(&v), "privateKey: missing");
        let mut v = relay_json();
        v["peers"][1].as_object_mut().unwrap().remove("allowedIPs");
        assert_eq!(relay_err(&v), "peers[1].allowedIPs: missing");
        let mut v = uplink_json();
        v["relay"].as_object_mut().unwrap().remove("endpoint");
        assert_eq!(uplink_err(&v), "relay.endpoint: missing");
        let mut v = uplink_json();
        v["extra"] = 1.into();
        assert!(
            uplink_err(&v).starts_with("extra: unknown field `extra`"),
            "{}",
            uplink_err(&v)
        );
    }

    #[test]
    fn ordinals_from_pod_names() {
        assert_eq!(ordinal_from_pod_name("edge-uplink-0"), Some(0));
        assert_eq!(ordinal_from_pod_name("a-b-12"), Some(12));
        assert_eq!(ordinal_from_pod_name("uplink"), None);
        assert_eq!(ordinal_from_pod_name("uplink-"), None);
        assert_eq!(ordinal_from_pod_name("uplink-x1"), None);
        assert_eq!(ordinal_from_pod_name("uplink-+1"), None);
    }
}
