//! Telemetry, in one room: the Prometheus metrics and their server (with its TokenReview
//! rations), the probes, and the logging set-up, which is the agents' own
//! ([`tunnel_contract::logging`], re-exported here) so every binary logs alike.

pub mod metrics;
pub mod metrics_server;
pub mod probes;
pub mod reviews;

pub use tunnel_contract::logging::*;
