//! Tunnel: a Kubernetes operator that publishes in-cluster TCP and UDP services on the public
//! IP of a VPS over WireGuard. The binary `tunnel` is a thin shell over these modules.

pub mod actors;
pub mod api_write;
pub mod crd;
pub mod duration;
pub mod enroll;
pub mod hash;
pub mod jitter;
pub mod leader;
pub mod object_key;
pub mod plan;
pub mod run;
pub mod ssh;
pub mod telemetry;
pub mod workload;
