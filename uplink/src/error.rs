//! Errors of the agents (relay and uplink), one enum with a stable `category()`.

use std::path::PathBuf;

use crate::device::DeviceError;
use crate::document::DocumentError;
use crate::netlink::NetlinkError;

/// Why an agent could not apply its document or serve.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The document was refused (names the field).
    #[error("{path}: {source}")]
    Document {
        /// The document's path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: DocumentError,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The private key file is not a key.
    #[error("{path}: not a 32-byte base64 WireGuard key")]
    Key {
        /// The key file.
        path: PathBuf,
    },
    /// The document's network has no address for this replica.
    #[error("identity: {0}")]
    Identity(#[source] DocumentError),
    /// The replica's address and the network's prefix do not make an interface address.
    #[error("identity: {0}")]
    Prefix(#[source] ipnet::PrefixLenError),
    /// The relay endpoint does not resolve.
    #[error("relay.endpoint: cannot resolve {endpoint}: {source}")]
    Resolve {
        /// The endpoint.
        endpoint: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The relay endpoint resolves, but to no IPv4 address (the tunnel's socket is IPv4).
    #[error("relay.endpoint: cannot resolve {endpoint}: no IPv4 address")]
    NoIpv4 {
        /// The endpoint.
        endpoint: String,
    },
    /// The WireGuard device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Programming the NAT rules failed.
    #[error("forwarding rules: {0}")]
    Nat(#[from] NetlinkError),
}

impl AgentError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Document { source, .. } => source.category(),
            Self::File { .. } => "FileUnreadable",
            Self::Key { .. } => "KeyUnreadable",
            Self::Identity(_) | Self::Prefix(_) => "IdentityInvalid",
            Self::Resolve { .. } | Self::NoIpv4 { .. } => "RelayUnresolvable",
            Self::Device(e) => e.category(),
            Self::Nat(e) => e.category(),
        }
    }
}

/// Reads a file, naming it in the error.
pub fn read(path: &std::path::Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::File {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let path = PathBuf::new;
        let io = || std::io::Error::other("x");
        let all = [
            AgentError::Document {
                path: path(),
                source: DocumentError::Version(String::new()),
            },
            AgentError::File {
                path: path(),
                source: io(),
            },
            AgentError::Key { path: path() },
            AgentError::Identity(DocumentError::Version(String::new())),
            AgentError::Prefix(ipnet::PrefixLenError),
            AgentError::Resolve {
                endpoint: String::new(),
                source: io(),
            },
            AgentError::NoIpv4 {
                endpoint: String::new(),
            },
            AgentError::Device(DeviceError::Stopped),
            AgentError::Nat(NetlinkError::Socket(io())),
        ];
        let categories: Vec<&str> = all.iter().map(AgentError::category).collect();
        assert_eq!(
            categories,
            [
                "DocumentVersionUnsupported",
                "FileUnreadable",
                "KeyUnreadable",
                "IdentityInvalid",
                "IdentityInvalid",
                "RelayUnresolvable",
                "RelayUnresolvable",
                "DeviceStopped",
                "NetlinkSocketFailed",
            ]
        );
        let device = [
            DeviceError::Tun {
                name: String::new(),
                source: io(),
            },
            DeviceError::Socket {
                port: 0,
                source: io(),
            },
            DeviceError::Poll(io()),
            DeviceError::Stopped,
        ];
        let categories: Vec<&str> = device.iter().map(DeviceError::category).collect();
        assert_eq!(
            categories,
            [
                "TunDeviceFailed",
                "UDPSocketFailed",
                "EventLoopFailed",
                "DeviceStopped"
            ]
        );
        let netlink = [
            NetlinkError::Socket(io()),
            NetlinkError::Refused {
                index: 0,
                what: String::new(),
                source: io(),
            },
            NetlinkError::Decode("truncated".into()),
        ];
        let categories: Vec<&str> = netlink.iter().map(NetlinkError::category).collect();
        assert_eq!(
            categories,
            [
                "NetlinkSocketFailed",
                "NetlinkRefused",
                "NetlinkDecodeFailed"
            ]
        );
    }
}
