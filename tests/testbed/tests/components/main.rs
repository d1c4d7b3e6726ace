//! The test bed's own components, started for real: Envoy validating a config, and an nspawn
//! VPS booting, answering SSH and rebooting. `cargo test -p testbed --test components`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod envoy;
mod vps;
