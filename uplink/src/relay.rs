//! The relay agent's state: the `wg-relay` device built from a [`RelayDocument`], re-applied
//! in place when only peers change (sessions of unchanged peers survive), rebuilt when the
//! key, address, MTU or port change, and put back as it was when a rebuild fails.

use crate::device::{Device, InterfaceConfig};
use crate::document::{RELAY_INTERFACE, RelayDocument};
use crate::error::AgentError;
use crate::readiness::RelayReport;
use crate::tunnel::PeerConfig;

/// The resident relay.
#[derive(Debug)]
pub struct Relay {
    interface: String,
    device: Option<Device>,
    current: Option<RelayDocument>,
}

impl Default for Relay {
    fn default() -> Self {
        Self::new(RELAY_INTERFACE)
    }
}

impl Relay {
    /// A relay that will own `interface`, with nothing applied yet.
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.into(),
            device: None,
            current: None,
        }
    }

    /// Whether a document is applied and its device's loop runs.
    pub fn is_running(&self) -> bool {
        self.current.is_some() && self.device.as_ref().is_some_and(Device::is_running)
    }

    /// The applied document, if any.
    pub fn current(&self) -> Option<&RelayDocument> {
        self.current.as_ref()
    }

    /// Applies `doc`. On failure the previous document keeps running.
    pub fn apply(&mut self, doc: RelayDocument) -> Result<(), AgentError> {
        if self.current.as_ref() == Some(&doc)
            && self.device.as_ref().is_some_and(Device::is_running)
        {
            return Ok(());
        }
        let network = doc.address.trunc();
        for peer in &doc.peers {
            for net in &peer.allowed_ips {
                if !network.contains(net) {
                    tracing::warn!(peer = %peer.public_key.short(), allowed = %net, %network,
                        "allowed IP outside the tunnel network is not routed to wg-relay");
                }
            }
        }
        let rebuild = match (&self.current, &self.device) {
            (Some(cur), Some(dev)) => {
                !dev.is_running()
                    || cur.private_key != doc.private_key
                    || cur.address != doc.address
                    || cur.mtu != doc.mtu
                    || cur.listen_port != doc.listen_port
            }
            _ => true,
        };
        if rebuild {
            // The interface name is unique: the old device must go before the new one comes.
            if let Some(old) = self.device.take() {
                old.stop();
            }
            match self.start(&doc) {
                Ok(device) => self.device = Some(device),
                Err(e) => {
                    if let Some(prev) = &self.current {
                        match self.start(prev) {
                            Ok(device) => self.device = Some(device),
                            Err(again) => {
                                tracing::error!(error = %again, "cannot restore the previous relay");
                            }
                        }
                    }
                    return Err(e);
                }
            }
        } else if let Some(device) = &self.device {
            device.set_peers(peers(&doc))?;
        }
        tracing::info!(peers = doc.peers.len(), address = %doc.address, listen_port = doc.listen_port,
            rebuilt = rebuild, "relay document applied");
        self.current = Some(doc);
        Ok(())
    }

    fn start(&self, doc: &RelayDocument) -> Result<Device, AgentError> {
        let config = InterfaceConfig {
            name: self.interface.clone(),
            address: doc.address,
            mtu: doc.mtu,
            listen_port: doc.listen_port,
        };
        Ok(Device::start(&config, &doc.private_key, peers(doc))?)
    }

    /// The status report (`tunnelctl status`).
    pub fn report(&self) -> RelayReport {
        match self.device.as_ref().map(Device::status) {
            Some(Ok(status)) => RelayReport::running(&status),
            Some(Err(e)) => RelayReport::down(&self.interface, e.to_string()),
            None => RelayReport::down(&self.interface, "no document applied"),
        }
    }

    /// Stops the device (removes the interface).
    pub fn stop(&mut self) {
        if let Some(device) = self.device.take() {
            device.stop();
        }
    }
}

fn peers(doc: &RelayDocument) -> Vec<PeerConfig> {
    doc.peers
        .iter()
        .map(|p| PeerConfig {
            public_key: p.public_key,
            name: p.name.clone(),
            endpoint: None,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: 0,
        })
        .collect()
}
