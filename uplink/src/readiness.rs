//! Readiness, as pure functions over what the agents observe: the uplink's `/ready` and the
//! relay's `tunnelctl status` both come from here.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tunnel_contract::document::Protocol;

use crate::device::DeviceStatus;
use crate::offload::Offloads;
use crate::tunnel::{DropStats, PeerStats};

/// A handshake older than this is stale: WireGuard rekeys every 2 minutes while traffic
/// flows, and keepalives or health checks keep traffic flowing.
pub const HANDSHAKE_FRESHNESS: Duration = Duration::from_secs(180);

/// What the uplink's `/ready` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkObservation {
    /// SIGTERM received: the replica is leaving.
    pub draining: bool,
    /// Why no configuration is applied yet (`None` when one is).
    pub not_applied: Option<String>,
    /// Whether the NAT table is in the kernel.
    pub rules_present: bool,
    /// Whether the WireGuard loop runs.
    pub device_running: bool,
    /// Time since the last handshake with the relay.
    pub last_handshake: Option<Duration>,
    /// The ports the applied document forwards (protocol, port on the tunnel address).
    pub forwards: BTreeSet<(Protocol, u16)>,
}

/// `Ok` when the uplink should receive traffic, else the reason it should not.
pub fn uplink_ready(o: &UplinkObservation) -> Result<(), String> {
    if o.draining {
        return Err("draining".into());
    }
    if let Some(reason) = &o.not_applied {
        return Err(format!("config not applied: {reason}"));
    }
    if !o.device_running {
        return Err("tunnel interface is not running".into());
    }
    if !o.rules_present {
        return Err("forwarding rules are not in place".into());
    }
    handshake_fresh(o.last_handshake)
}

/// `/ready?protocol=tcp&port=N` (what Envoy's health check of one binding's cluster asks):
/// [`uplink_ready`], and the applied document forwards that port. A new binding's cluster
/// therefore gets traffic only once this replica forwards it, however late its ConfigMap
/// reaches the pod; `None` (plain `/ready`) is the replica's readiness alone.
pub fn forward_ready(o: &UplinkObservation, port: Option<(Protocol, u16)>) -> Result<(), String> {
    uplink_ready(o)?;
    match port {
        Some(key) if !o.forwards.contains(&key) => Err(format!(
            "no forward for {}/{} in the applied document yet",
            protocol_name(key.0),
            key.1
        )),
        _ => Ok(()),
    }
}

/// Reads `/ready`'s query: `protocol=tcp|udp&port=N` (either order). `Ok(None)` without a
/// query; anything else is refused with what is wrong.
pub fn ready_query(query: Option<&str>) -> Result<Option<(Protocol, u16)>, String> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let (mut protocol, mut port) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("protocol", "tcp")) => protocol = Some(Protocol::Tcp),
            Some(("protocol", "udp")) => protocol = Some(Protocol::Udp),
            Some(("port", n)) => port = n.parse::<u16>().ok().filter(|p| *p > 0),
            _ => return Err("the query takes protocol=tcp|udp and port=1..65535".into()),
        }
    }
    match (protocol, port) {
        (Some(protocol), Some(port)) => Ok(Some((protocol, port))),
        _ => Err("the query takes protocol=tcp|udp and port=1..65535".into()),
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `Ok` when a handshake happened within [`HANDSHAKE_FRESHNESS`].
pub fn handshake_fresh(last: Option<Duration>) -> Result<(), String> {
    match last {
        None => Err("no handshake with the relay yet".into()),
        Some(age) if age > HANDSHAKE_FRESHNESS => Err(format!(
            "last handshake {}s ago (stale after {}s)",
            age.as_secs(),
            HANDSHAKE_FRESHNESS.as_secs()
        )),
        Some(_) => Ok(()),
    }
}

/// One peer in `tunnelctl status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// Configured name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Public key.
    pub public_key: String,
    /// Allowed IPs.
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<String>,
    /// Endpoint in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Seconds since the last handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_handshake_seconds_ago: Option<u64>,
    /// Whether that handshake is fresh.
    pub handshake_fresh: bool,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
}

/// `tunnelctl status` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    /// Interface name.
    pub interface: String,
    /// Whether the WireGuard loop runs.
    pub running: bool,
    /// UDP port bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Ready: running and at least one peer with a fresh handshake.
    pub ready: bool,
    /// Why not ready (or `ok`).
    pub detail: String,
    /// Peers.
    pub peers: Vec<PeerReport>,
    /// The offloads the data path runs with (absent when the relay is not running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloads: Option<Offloads>,
    /// Datagrams and packets dropped, by reason (absent when the relay is not running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<DropStats>,
}

impl PeerReport {
    /// The report line of one peer.
    pub fn from_stats(stats: &PeerStats) -> Self {
        Self {
            name: stats.name.clone(),
            public_key: stats.public_key.to_string(),
            allowed_ips: stats.allowed_ips.iter().map(ToString::to_string).collect(),
            endpoint: stats.endpoint.map(|e| e.to_string()),
            last_handshake_seconds_ago: stats.last_handshake.map(|d| d.as_secs()),
            handshake_fresh: handshake_fresh(stats.last_handshake).is_ok(),
            rx_bytes: stats.rx_bytes,
            tx_bytes: stats.tx_bytes,
        }
    }
}

impl RelayReport {
    /// The report of a running relay.
    pub fn running(status: &DeviceStatus) -> Self {
        let peers: Vec<PeerReport> = status.peers.iter().map(PeerReport::from_stats).collect();
        let fresh = peers.iter().filter(|p| p.handshake_fresh).count();
        let (ready, detail) = if fresh > 0 {
            (
                true,
                format!("ok: {fresh}/{} peers with a fresh handshake", peers.len()),
            )
        } else {
            (false, "no peer has a fresh handshake".to_string())
        };
        Self {
            interface: status.interface.clone(),
            running: true,
            listen_port: Some(status.listen_port),
            ready,
            detail,
            peers,
            offloads: Some(status.offloads),
            drops: Some(status.drops),
        }
    }

    /// The report when the relay is not running.
    pub fn down(interface: &str, detail: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            running: false,
            listen_port: None,
            ready: false,
            detail: detail.into(),
            peers: Vec::new(),
            offloads: None,
            drops: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> UplinkObservation {
        UplinkObservation {
            draining: false,
            not_applied: None,
            rules_present: true,
            device_running: true,
            last_handshake: Some(Duration::from_secs(5)),
            forwards: BTreeSet::from([(Protocol::Tcp, 10_000)]),
        }
    }

    #[test]
    fn a_port_is_ready_once_its_forward_is_applied() {
        let tcp = Some((Protocol::Tcp, 10_000));
        assert_eq!(forward_ready(&ok(), tcp), Ok(()));
        assert_eq!(forward_ready(&ok(), None), Ok(()));
        let e = forward_ready(&ok(), Some((Protocol::Udp, 10_000))).unwrap_err();
        assert!(e.contains("udp/10000"), "{e}");
        assert!(forward_ready(&ok(), Some((Protocol::Tcp, 10_001))).is_err());
        // The replica's own readiness comes first.
        let draining = UplinkObservation {
            draining: true,
            ..ok()
        };
        assert_eq!(forward_ready(&draining, tcp).unwrap_err(), "draining");
        assert_eq!(ready_query(None), Ok(None));
        assert_eq!(ready_query(Some("")), Ok(None));
        assert_eq!(ready_query(Some("protocol=tcp&port=10000")), Ok(tcp));
        assert_eq!(
            ready_query(Some("port=53&protocol=udp")),
            Ok(Some((Protocol::Udp, 53)))
        );
        for bad in [
            "port=0&protocol=tcp",
            "protocol=sctp&port=1",
            "port=70000&protocol=tcp",
            "protocol=tcp",
            "x=1",
        ] {
            assert!(ready_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ready_only_when_everything_holds() {
        assert_eq!(uplink_ready(&ok()), Ok(()));
        let cases = [
            (
                UplinkObservation {
                    draining: true,
                    ..ok()
                },
                "draining",
            ),
            (
                UplinkObservation {
                    not_applied: Some("mtu: bad".into()),
                    ..ok()
                },
                "config not applied: mtu: bad",
            ),
            (
                UplinkObservation {
                    device_running: false,
                    ..ok()
                },
                "tunnel interface",
            ),
            (
                UplinkObservation {
                    rules_present: false,
                    ..ok()
                },
                "forwarding rules",
            ),
            (
                UplinkObservation {
                    last_handshake: None,
                    ..ok()
                },
                "no handshake",
            ),
            (
                UplinkObservation {
                    last_handshake: Some(Duration::from_secs(181)),
                    ..ok()
                },
                "stale",
            ),
        ];
        for (o, want) in cases {
            let err = uplink_ready(&o).unwrap_err();
            assert!(err.contains(want), "{err} !~ {want}");
        }
    }
}
