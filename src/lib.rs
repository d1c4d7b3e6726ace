//! Tunnel: a Kubernetes operator that publishes in-cluster TCP and UDP services on the public
//! IP of a VPS over WireGuard. The binary `tunnel` is a thin shell over these modules.

pub mod actors;
pub mod api_write;
pub mod crd;
pub mod duration;
pub mod enroll;
pub mod hash;
pub mod health;
pub mod leader;
pub mod leader_core;
pub mod metrics;
pub mod metrics_reviews;
pub mod metrics_server;
pub mod object_key;
pub mod operator;
pub mod plan;
pub mod settings;
pub mod ssh;
pub mod workload;
pub mod write_fence;

/// The logging set-up: the agents' own ([`tunnel_contract::logging`]), one for every binary.
pub use tunnel_contract::logging as telemetry;
