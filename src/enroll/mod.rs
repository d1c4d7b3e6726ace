//! Enrollment of a VPS over SSH: installing the relay agent and Envoy, writing their
//! documents, units and host tuning, keeping them in sync (idempotent, hash-gated, drift
//! repaired), reporting health, restarting Envoy on request, and tearing everything down.
//!
//! Planning is pure and apart from running: [`observe`] parses one read-only look at the VPS,
//! [`steps`] turns it and the [`DesiredState`] into a list of steps, [`pass`] runs them over an
//! [`crate::ssh::Session`]. See docs/enrollment.md.

pub mod blob;
pub mod desired;
mod error;
pub mod health;
pub mod layout;
pub mod observe;
pub mod pass;
pub mod progress;
pub mod state;
pub mod steps;
pub mod teardown;
pub mod units;

pub use desired::{
    Arch, Blob, Carried, DesiredState, ENVOY_RELEASE_URL_TEMPLATE, EnvoyInstall, HostTuning,
};
pub use error::{DesiredError, EnrollError, ObservationError};
pub use health::{Health, RelayStatus};
pub use pass::{PassOptions, PassReport, dry_run, enroll, enroll_telling, restart_envoy};
pub use progress::Progress;
pub use steps::{Changes, Request, Step};
pub use teardown::teardown;
