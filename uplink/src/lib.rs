//! The Tunnel data plane: the agent documents shared with the operator ([`document`]), the
//! WireGuard keys ([`key`]), the sans-IO WireGuard core ([`tunnel`]) and its I/O shell
//! ([`device`], with the TUN offloads of [`offload`] and the UDP socket of [`udp`]), the uplink's NAT over netlink ([`nat`]), readiness ([`readiness`]), the pod's init step ([`pod_init`]), and the
//! two agents ([`relay`] for `tunnelctl`, [`uplink_agent`] for `uplink`).

pub mod device;
pub mod document;
pub mod error;
pub mod http;
pub mod key;
pub mod logging;
pub mod nat;
pub mod netlink;
pub mod notify;
pub mod offload;
pub mod pod_init;
pub mod readiness;
pub mod relay;
pub mod signals;
pub mod tunnel;
pub mod udp;
pub mod uplink_agent;
pub mod watch;

pub use document::{
    DocumentError, Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
pub use key::{KeyError, PrivateKey, PublicKey};
