//! The uplink agent's state: identity from the pod's ordinal and key file, the `wg-uplink`
//! device toward the relay, and the NAT table. [`UplinkAgent::apply`] is idempotent and keeps
//! the previous state when a new document is refused, and repairs what drifted (a deleted NAT
//! table, a stopped loop, a relay name that resolves elsewhere) when called again with the
//! same document; [`UplinkAgent::observe`] feeds `/ready`.
//!
//! An apply is two steps so that slow I/O never runs while the agent is locked:
//! [`Prepared::load`] reads the files and resolves the relay's name (cluster DNS may stall
//! for many seconds) without touching the agent, then [`UplinkAgent::commit`] programs the
//! device and the NAT table (netlink, bounded by its own timeouts).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::device::{Device, InterfaceConfig};
use crate::document::UplinkDocument;
use crate::error::{AgentError, read};
use crate::key::PrivateKey;
use crate::nat::{self, NatSpec};
use crate::readiness::UplinkObservation;
use crate::tunnel::PeerConfig;

/// Who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// StatefulSet ordinal (from `POD_NAME`).
    pub ordinal: u32,
    /// Directory holding `priv-<ordinal>`.
    pub keys_dir: PathBuf,
    /// Tunnel interface name.
    pub interface: String,
    /// The `/ready` port: the one local port the tunnel may reach.
    pub ready_port: u16,
}

impl Identity {
    /// The key file of this replica.
    pub fn key_path(&self) -> PathBuf {
        self.keys_dir.join(format!("priv-{}", self.ordinal))
    }

    /// Reads this replica's private key.
    pub fn load_key(&self) -> Result<PrivateKey, AgentError> {
        let path = self.key_path();
        read(&path)?
            .trim()
            .parse()
            .map_err(|_| AgentError::Key { path })
    }
}

/// What an apply needs that takes blocking I/O other than netlink: the document, the key,
/// and the relay's endpoint resolved. Made without the agent, so without its lock.
#[derive(Debug, Clone)]
pub struct Prepared {
    doc: UplinkDocument,
    key: PrivateKey,
    endpoint: SocketAddr,
}

impl Prepared {
    /// Reads and parses the document at `path` and the key, and resolves the relay.
    pub fn load(identity: &Identity, path: &Path) -> Result<Self, AgentError> {
        let text = read(path)?;
        let doc = UplinkDocument::parse(&text).map_err(|source| AgentError::Document {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_document(identity, doc)
    }

    /// Loads the key and resolves the relay of `doc`.
    pub fn from_document(identity: &Identity, doc: UplinkDocument) -> Result<Self, AgentError> {
        let key = identity.load_key()?;
        let endpoint = resolve(&doc.relay.endpoint)?;
        Ok(Self { doc, key, endpoint })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    doc: UplinkDocument,
    key: PrivateKey,
    interface: InterfaceConfig,
    endpoint: SocketAddr,
}

/// The uplink replica.
#[derive(Debug)]
pub struct UplinkAgent {
    identity: Identity,
    device: Option<Device>,
    applied: Option<Applied>,
    last_error: Option<String>,
}

impl UplinkAgent {
    /// An agent with nothing applied.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            device: None,
            applied: None,
            last_error: None,
        }
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether a document is applied.
    pub fn is_applied(&self) -> bool {
        self.applied.is_some()
    }

    /// Reads and applies the document at `path`; on any error the running state is kept.
    /// Holds `self` across file reads and DNS: callers that share the agent use
    /// [`Prepared::load`] then [`Self::commit`].
    pub fn apply_file(&mut self, path: &Path) -> Result<(), AgentError> {
        let prepared = Prepared::load(&self.identity, path);
        self.commit(prepared)
    }

    /// Applies what [`Prepared::load`] made (or records why it failed); on any error the
    /// running state is kept.
    pub fn commit(&mut self, prepared: Result<Prepared, AgentError>) -> Result<(), AgentError> {
        let result = prepared.and_then(|p| self.apply_prepared(p));
        self.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    /// Applies `doc` with the key currently in the keys directory.
    pub fn apply(&mut self, doc: UplinkDocument) -> Result<(), AgentError> {
        let prepared = Prepared::from_document(&self.identity, doc)?;
        self.apply_prepared(prepared)
    }

    fn apply_prepared(&mut self, prepared: Prepared) -> Result<(), AgentError> {
        let Prepared { doc, key, endpoint } = prepared;
        let address = doc
            .replica_address(self.identity.ordinal)
            .map_err(AgentError::Identity)?;
        let interface = InterfaceConfig {
            name: self.identity.interface.clone(),
            address: Ipv4Net::new(address, doc.network.prefix_len()).map_err(AgentError::Prefix)?,
            mtu: doc.mtu,
            listen_port: 0,
        };
        let next = Applied {
            doc,
            key,
            interface,
            endpoint,
        };
        if self.applied.as_ref() == Some(&next)
            && self.device.as_ref().is_some_and(Device::is_running)
            && nat::table_present().unwrap_or(false)
        {
            return Ok(());
        }
        let peers = vec![PeerConfig {
            public_key: next.doc.relay.public_key,
            name: Some("relay".into()),
            endpoint: Some(next.endpoint),
            allowed_ips: next.doc.relay.allowed_ips.clone(),
            persistent_keepalive: next.doc.relay.persistent_keepalive,
        }];
        let rebuild = match (&self.applied, &self.device) {
            (Some(cur), Some(dev)) => {
                !dev.is_running() || cur.key != next.key || cur.interface != next.interface
            }
            _ => true,
        };
        if rebuild {
            if let Some(old) = self.device.take() {
                old.stop();
            }
            match Device::start(&next.interface, &next.key, peers) {
                Ok(device) => self.device = Some(device),
                Err(e) => {
                    self.restore();
                    return Err(e.into());
                }
            }
        } else if let Some(device) = &self.device {
            device.set_peers(peers)?;
        }
        nat::apply(&NatSpec {
            interface: self.identity.interface.clone(),
            address: next.interface.address.addr(),
            network: next.doc.network,
            ready_port: self.identity.ready_port,
            forwards: next.doc.forwards.clone(),
            admin_bridge: next.doc.admin_bridge,
        })?;
        tracing::info!(
            ordinal = self.identity.ordinal,
            address = %next.interface.address,
            relay = %next.endpoint,
            forwards = next.doc.forwards.len(),
            rebuilt = rebuild,
            "uplink document applied"
        );
        self.applied = Some(next);
        Ok(())
    }

    /// Puts the previously applied device back after a failed rebuild.
    fn restore(&mut self) {
        if let Some(prev) = &self.applied {
            let peers = vec![PeerConfig {
                public_key: prev.doc.relay.public_key,
                name: Some("relay".into()),
                endpoint: Some(prev.endpoint),
                allowed_ips: prev.doc.relay.allowed_ips.clone(),
                persistent_keepalive: prev.doc.relay.persistent_keepalive,
            }];
            match Device::start(&prev.interface, &prev.key, peers) {
                Ok(device) => self.device = Some(device),
                Err(e) => tracing::error!(error = %e, "cannot restore the previous tunnel"),
            }
        }
    }

    /// What `/ready` needs to decide.
    pub fn observe(&self, draining: bool) -> UplinkObservation {
        let status = self.device.as_ref().and_then(|d| d.status().ok());
        let rules_present = self.applied.is_some() && nat::table_present().unwrap_or(false);
        UplinkObservation {
            draining,
            not_applied: if self.applied.is_some() {
                None
            } else {
                Some(
                    self.last_error
                        .clone()
                        .unwrap_or_else(|| "no document applied yet".into()),
                )
            },
            rules_present,
            device_running: status.is_some(),
            last_handshake: status.and_then(|s| s.peers.first().and_then(|p| p.last_handshake)),
            forwards: self
                .applied
                .iter()
                .flat_map(|a| &a.doc.forwards)
                .map(|f| (f.protocol, f.listen_port))
                .collect(),
        }
    }

    /// A JSON report for `/status` (no secrets, no target addresses): identity, relay, the
    /// number of forwards, counters, last error.
    pub fn report(&self, draining: bool) -> serde_json::Value {
        let status = self.device.as_ref().and_then(|d| d.status().ok());
        let relay = status.as_ref().and_then(|s| s.peers.first());
        serde_json::json!({
            "ordinal": self.identity.ordinal,
            "interface": self.identity.interface,
            "address": self.applied.as_ref().map(|a| a.interface.address.to_string()),
            "running": status.is_some(),
            "draining": draining,
            "ready": crate::readiness::uplink_ready(&self.observe(draining))
                .map_or_else(|reason| reason, |()| "ok".into()),
            "relay": relay.map(|p| serde_json::json!({
                "publicKey": p.public_key.to_string(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "lastHandshakeSecondsAgo": p.last_handshake.map(|d| d.as_secs()),
                "rxBytes": p.rx_bytes,
                "txBytes": p.tx_bytes,
            })),
            // How many, not which: /status is readable from the pod network and, through
            // the tunnel, from the VPS; the targets' addresses are the cluster's (review L2).
            "forwards": self.applied.as_ref().map(|a| a.doc.forwards.len()),
            "drops": status.as_ref().map(|s| serde_json::json!({
                "noRoute": s.drops.no_route,
                "noEndpoint": s.drops.no_endpoint,
                "invalid": s.drops.invalid,
                "spoofed": s.drops.spoofed,
                "sendErrors": s.send_errors,
            })),
            "offloads": status.as_ref().map(|s| s.offloads),
            "lastError": self.last_error,
        })
    }

    /// Stops the device and removes the NAT table.
    pub fn stop(&mut self) {
        if let Some(device) = self.device.take() {
            device.stop();
        }
        if self.applied.take().is_some()
            && let Err(e) = nat::remove()
        {
            tracing::warn!(error = %e, "cannot remove the forwarding rules");
        }
    }
}

/// Resolves `host:port` to an IPv4 socket address (the tunnel's socket is IPv4), a DNS name
/// as an absolute name: never through the pod's search path, where a tenant's Service could
/// answer for the relay (review 2026-12, L9).
fn resolve(endpoint: &str) -> Result<SocketAddr, AgentError> {
    tunnel_contract::dns::absolute_endpoint(endpoint)
        .as_ref()
        .to_socket_addrs()
        .map_err(|source| AgentError::Resolve {
            endpoint: endpoint.into(),
            source,
        })?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| AgentError::NoIpv4 {
            endpoint: endpoint.into(),
        })
}
