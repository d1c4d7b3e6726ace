//! Tunnel: a Kubernetes operator that publishes in-cluster TCP and UDP services on the public
//! IP of a VPS over WireGuard. The binary `tunnel` is a thin shell over these modules.

pub mod actors;
pub mod crd;
pub mod enroll;
pub mod health;
pub mod operator;
pub mod plan;
pub mod settings;
pub mod ssh;
pub mod telemetry;
pub mod workload;
