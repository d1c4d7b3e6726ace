//! The Tunnel data plane behind the two agents: the sans-IO WireGuard core (`tunnel`) and its
//! I/O shell (`device`, with the TUN offloads of [`offload`] and the UDP socket of [`udp`]),
//! the uplink's NAT over netlink ([`nat`]), readiness ([`readiness`], served by [`http`]), the pod's init step ([`pod_init`]), and
//! the two agents ([`relay`] for `tunnelctl`, [`uplink_agent`] for `uplink`), with their
//! process plumbing ([`watch`], [`signals`], [`notify`]).
//!
//! What the operator shares with the agents (the documents, the keys, the logging set-up) is
//! the `tunnel-contract` crate; the public modules here are the ones the two binaries and the
//! integration tests call.

mod device;
mod error;
pub mod gro;
pub use tunnel_probe as http;
pub mod nat;
mod netlink;
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

// The contract's modules under their old names inside this crate: `crate::document::...`.
use tunnel_contract::{document, key};

pub use device::DeviceError;
pub use error::AgentError;
pub use netlink::NetlinkError;
