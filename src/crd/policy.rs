//! L4 policy at the edge for one binding (`spec.bindings[].policy` of a PortBinding): which
//! clients may connect (`sourceRanges`), how many at once (`maxConnections`) and how fast new
//! TCP connections may arrive (`connectionRate`). Envoy on the VPS enforces it
//! (docs/edge-config.md "L4 policy"); admission bounds its size, so a tenant's policy costs the
//! edge a bounded amount (64 ranges, a few numbers).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most `sourceRanges` of one binding (admission and the planner).
pub const MAX_SOURCE_RANGES: usize = 64;

/// L4 policy at the edge for this binding: who may connect and how much.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingPolicy {
    /// Client CIDRs allowed to connect (IPv4 or IPv6); empty: every client. Each is written
    /// with its network address (`203.0.113.0/24`, not `203.0.113.7/24`); a single client is a
    /// `/32` (or `/128`). Others are closed at once by Envoy (TCP) or their datagrams dropped
    /// (UDP), before anything reaches the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string",
        "maxLength": 43,
        "x-kubernetes-validations": [
            {
                "rule": "isCIDR(self)",
                "message": "policy.sourceRanges entries must be IPv4 or IPv6 CIDRs such as 203.0.113.0/24"
            },
            {
                "rule": "!isCIDR(self) || cidr(self).masked() == cidr(self)",
                "message": "policy.sourceRanges entries must be written with their network address (e.g. 203.0.113.0/24, not 203.0.113.7/24)"
            }
        ]
    }))]
    pub source_ranges: Vec<String>,
    /// Most concurrent connections (TCP) or client sessions (UDP); absent: no limit of its own.
    /// Over it, a new TCP connection is closed at once and a datagram from a new UDP client
    /// (address and port) is dropped; existing ones go on. At most 100000, the edge's own
    /// limit of connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_connections: Option<u32>,
    /// New TCP connections allowed (a token bucket); TCP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<ConnectionRate>,
}

/// A token bucket of new connections: `burst` tokens at most, `perSecond` added every second;
/// each new connection takes one, and one arriving to an empty bucket is closed at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.burst) || self.burst >= self.perSecond",
    "message": "policy.connectionRate.burst must be at least perSecond (the bucket must hold one second's tokens)",
    "fieldPath": ".burst"
}]))]
pub struct ConnectionRate {
    /// New connections per second, on average (at most 1000000).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub per_second: u32,
    /// How many may arrive at once; absent: `perSecond`. At least `perSecond` (at most
    /// 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
}
