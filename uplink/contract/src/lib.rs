//! The contract between the Tunnel operator and its two agents (`tunnelctl` on the VPS,
//! `uplink` in the cluster), as one crate both sides build against:
//!
//! - [`document`]: the versioned agent documents the operator writes and the agents read;
//! - [`dns`]: names a user wrote, dialled as absolute names by both sides;
//! - [`key`]: WireGuard keys, generated in the cluster, never shown in `Debug` output;
//! - [`logging`]: the one logging set-up of every binary (`LOG_FORMAT`, `LOG_LEVEL`);
//! - [`rate`]: token buckets with an explicit clock (handshake and review rationing).
//!
//! It holds no TUN, netlink or socket code, so the operator does not build the data plane.

pub mod dns;
pub mod document;
pub mod key;
pub mod logging;
pub mod rate;

pub use document::{
    DocumentError, Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
pub use key::{KeyError, PrivateKey, PublicKey};
