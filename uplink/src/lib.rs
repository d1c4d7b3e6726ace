//! The Tunnel data plane: the agent documents shared with the operator ([`document`]), the
//! WireGuard keys ([`key`]), and the userspace WireGuard driver and agents built on them.

pub mod document;
pub mod key;

pub use document::{
    DocumentError, Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
pub use key::{KeyError, PrivateKey, PublicKey};
