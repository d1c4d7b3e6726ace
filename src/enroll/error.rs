//! Errors of enrollment, health checks and teardown. Like the SSH errors they never carry
//! file contents or credentials.

use crate::ssh::SshError;

/// What went wrong enrolling, checking or tearing down a VPS.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Talking to the VPS failed.
    #[error(transparent)]
    Ssh(#[from] SshError),

    /// The desired state is unusable (bad SDS file name, missing pin, bad URL template).
    #[error("invalid desired state: {0}")]
    Desired(String),

    /// `uname -m` named a machine we carry no binaries for.
    #[error("unsupported VPS architecture {found:?} (supported: x86_64, aarch64)")]
    UnsupportedArch {
        /// What `uname -m` printed.
        found: String,
    },

    /// No binary (or pinned digest) for the VPS's architecture.
    #[error("no {what} for architecture {arch}")]
    MissingArtifact {
        /// Which artifact.
        what: &'static str,
        /// The VPS's architecture.
        arch: &'static str,
    },

    /// Downloading Envoy on the VPS failed or produced a binary whose digest is not the
    /// pinned one; nothing was replaced.
    #[error("installing Envoy on the VPS failed, nothing was replaced: {0}")]
    EnvoyDownload(String),

    /// The observation of the VPS could not be understood.
    #[error("unexpected answer from the VPS: {0}")]
    Observation(String),

    /// A service did not reach the active state.
    #[error(
        "{unit} did not become active (last state {state:?}); inspect `journalctl -u {unit}` on the VPS"
    )]
    ServiceNotActive {
        /// The systemd unit.
        unit: &'static str,
        /// Its last `systemctl is-active` answer.
        state: String,
    },

    /// A pass stopped on purpose after a number of steps (used to prove that a pass resumes).
    #[error("pass interrupted after {done} of {total} steps")]
    Interrupted {
        /// Steps that ran.
        done: usize,
        /// Steps planned.
        total: usize,
    },

    /// Teardown finished but something managed is still on the VPS.
    #[error("teardown left these behind: {0}")]
    Leftovers(String),
}

impl EnrollError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Ssh(e) => e.category(),
            Self::Desired(_) => "EnrollInvalidDesiredState",
            Self::UnsupportedArch { .. } | Self::MissingArtifact { .. } => "EnrollUnsupportedArch",
            Self::EnvoyDownload(_) => "EnvoyInstallFailed",
            Self::Observation(_) => "EnrollObservationFailed",
            Self::ServiceNotActive { .. } => "VPSServiceNotActive",
            Self::Interrupted { .. } => "EnrollInterrupted",
            Self::Leftovers(_) => "TeardownIncomplete",
        }
    }
}
