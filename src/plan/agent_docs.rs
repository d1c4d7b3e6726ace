//! The agent documents, built with the types the agents themselves read
//! (`tunnel_contract::document`): the relay's `/etc/tunnel/relay.json` (its key, port,
//! address, MTU, one peer per uplink replica) and the uplinks' shared `uplink.json` (the relay
//! peer, the forwarded ports, the admin bridge). Each uplink forwards a binding's tunnel port
//! to the binding's target.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use tunnel_contract::document::{ADMIN_BRIDGE_PORT, DOCUMENT_VERSION};
use tunnel_contract::{
    DocumentError, Forward, PrivateKey, Protocol as FwdProtocol, PublicKey, RelayDocument,
    RelayPeer, UplinkDocument, UplinkRelay,
};

use super::bindings::PlannedBinding;
use super::ipam::Ipam;
use crate::crd::{EdgeNodeSpec, Protocol};

/// The WireGuard keys the documents carry. The uplinks' private keys are not here: they stay
/// in the cluster, in the uplink keys Secret.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The relay's private key (it reaches the VPS only inside `relay.json`, 0600).
    pub relay_private: PrivateKey,
    /// The public key of each uplink replica, by ordinal.
    pub uplink_public: Vec<PublicKey>,
}

/// Why the agent documents could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AgentDocsError {
    /// Fewer uplink keys than replicas.
    #[error("{replicas} uplink replicas but only {keys} uplink public keys")]
    MissingUplinkKey {
        /// Replicas in the spec.
        replicas: usize,
        /// Keys given.
        keys: usize,
    },
    /// A value does not fit the document (e.g. MTU or keepalive out of range).
    #[error("{field}: {value} does not fit the agent document")]
    OutOfRange {
        /// The spec field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The document failed its own validation.
    #[error("the {which} document is invalid: {source}")]
    Invalid {
        /// `relay` or `uplink`.
        which: &'static str,
        /// What the document type said.
        source: DocumentError,
    },
}

impl AgentDocsError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingUplinkKey { .. } => "UplinkKeyMissing",
            Self::OutOfRange { .. } => "AgentDocumentOutOfRange",
            Self::Invalid { .. } => "AgentDocumentInvalid",
        }
    }
}

fn host_net(ip: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, AgentDocsError> {
    Ipv4Net::new(ip, prefix).map_err(|_| AgentDocsError::OutOfRange {
        field: "tunnel.network",
        value: format!("{ip}/{prefix}"),
    })
}

fn mtu(spec: &EdgeNodeSpec) -> Result<u16, AgentDocsError> {
    u16::try_from(spec.tunnel.mtu).map_err(|_| AgentDocsError::OutOfRange {
        field: "tunnel.mtu",
        value: spec.tunnel.mtu.to_string(),
    })
}

/// The relay's document. Peers are named `<node>-uplink-<ordinal>`, like the uplink pods.
pub fn relay(
    node_name: &str,
    spec: &EdgeNodeSpec,
    ipam: &Ipam,
    uplinks: &[Ipv4Addr],
    keys: &Keys,
) -> Result<RelayDocument, AgentDocsError> {
    if keys.uplink_public.len() < uplinks.len() {
        return Err(AgentDocsError::MissingUplinkKey {
            replicas: uplinks.len(),
            keys: keys.uplink_public.len(),
        });
    }
    let relay_ip = ipam.relay().map_err(|_| AgentDocsError::OutOfRange {
        field: "tunnel.network",
        value: ipam.cidr(),
    })?;
    let peers = uplinks
        .iter()
        .zip(&keys.uplink_public)
        .enumerate()
        .map(|(ordinal, (ip, key))| {
            Ok(RelayPeer {
                name: Some(format!("{node_name}-uplink-{ordinal}")),
                public_key: *key,
                allowed_ips: vec![host_net(*ip, 32)?],
            })
        })
        .collect::<Result<Vec<_>, AgentDocsError>>()?;
    let doc = RelayDocument {
        version: DOCUMENT_VERSION,
        private_key: keys.relay_private.clone(),
        listen_port: spec.tunnel.listen_port,
        address: host_net(relay_ip, ipam.prefix())?,
        mtu: mtu(spec)?,
        peers,
    };
    doc.validate().map_err(|source| AgentDocsError::Invalid {
        which: "relay",
        source,
    })?;
    Ok(doc)
}

/// The uplinks' shared document: forwards sorted by protocol then tunnel port.
pub fn uplink(
    spec: &EdgeNodeSpec,
    ipam: &Ipam,
    planned: &[PlannedBinding],
    keys: &Keys,
) -> Result<UplinkDocument, AgentDocsError> {
    let relay_ip = ipam.relay().map_err(|_| AgentDocsError::OutOfRange {
        field: "tunnel.network",
        value: ipam.cidr(),
    })?;
    let mut forwards: Vec<Forward> = planned
        .iter()
        .filter_map(|b| match b.target_ip {
            IpAddr::V4(target_ip) => Some(Forward {
                protocol: match b.protocol {
                    Protocol::Tcp => FwdProtocol::Tcp,
                    Protocol::Udp => FwdProtocol::Udp,
                },
                listen_port: b.tunnel_port,
                target_ip,
                target_port: b.target_port,
            }),
            IpAddr::V6(_) => None,
        })
        .collect();
    forwards.sort();
    let host = if spec.address.contains(':') {
        format!("[{}]", spec.address)
    } else {
        spec.address.clone()
    };
    let doc = UplinkDocument {
        version: DOCUMENT_VERSION,
        network: host_net(ipam.network(), ipam.prefix())?,
        mtu: mtu(spec)?,
        relay: UplinkRelay {
            public_key: keys.relay_private.public_key(),
            endpoint: format!("{host}:{}", spec.tunnel.listen_port),
            allowed_ips: vec![host_net(relay_ip, 32)?],
            persistent_keepalive: u16::try_from(spec.tunnel.persistent_keepalive).map_err(
                |_| AgentDocsError::OutOfRange {
                    field: "tunnel.persistentKeepalive",
                    value: spec.tunnel.persistent_keepalive.to_string(),
                },
            )?,
        },
        forwards,
        admin_bridge: Some(SocketAddrV4::new(relay_ip, ADMIN_BRIDGE_PORT)),
    };
    doc.validate().map_err(|source| AgentDocsError::Invalid {
        which: "uplink",
        source,
    })?;
    Ok(doc)
}
