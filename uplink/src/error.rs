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
    /// The replica's identity cannot be derived.
    #[error("identity: {0}")]
    Identity(String),
    /// The relay endpoint does not resolve to an IPv4 address.
    #[error("relay.endpoint: cannot resolve {endpoint}: {reason}")]
    Resolve {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
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
            Self::File { .. } => "file",
            Self::Key { .. } => "key",
            Self::Identity(_) => "identity",
            Self::Resolve { .. } => "resolve",
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
