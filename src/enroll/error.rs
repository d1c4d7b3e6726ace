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
    Desired(#[from] DesiredError),

    /// `uname -m` named a machine we carry no binaries for.
    #[error("unsupported VPS architecture {found:?} (supported: x86_64, aarch64)")]
    UnsupportedArch {
        /// What `uname -m` printed.
        found: String,
    },

    /// A binary the operator carries could not be read, or changed on disk.
    #[error("reading {path} to push it: {reason}")]
    ArtifactUnreadable {
        /// Its path on the operator's file system.
        path: String,
        /// Why.
        reason: String,
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
    EnvoyDownload(#[source] SshError),

    /// The observation of the VPS could not be understood.
    #[error("unexpected answer from the VPS: {0}")]
    Observation(#[from] ObservationError),

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

/// What makes a desired state unusable, found before the VPS is touched.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// A pinned Envoy digest is not a SHA-256.
    #[error("the pinned Envoy SHA-256 for {arch} is not 64 hex digits")]
    PinnedDigest {
        /// The architecture it is pinned for.
        arch: &'static str,
    },
    /// The Envoy version would not be safe in a URL or a path.
    #[error("Envoy version {version:?} is not a plain version string")]
    EnvoyVersion {
        /// The version given.
        version: String,
    },
    /// The URL template does not give an http(s) URL.
    #[error("the Envoy download URL template must give an http:// or https:// URL")]
    UrlScheme,
    /// The URL holds white space or control characters.
    #[error("the Envoy download URL must not contain spaces or control characters")]
    UrlCharacters,
    /// The URL carries credentials, which would show in process lists and command logs.
    #[error("the Envoy download URL must not carry credentials (user:password@)")]
    UrlCredentials,
    /// A rendered file is not one enrollment manages.
    #[error("rendered file {path:?} is not one enrollment manages")]
    Unmanaged {
        /// Its path.
        path: String,
    },
    /// A file the VPS needs was not rendered.
    #[error("no rendered {path}")]
    Missing {
        /// Its path.
        path: &'static str,
    },
    /// An SDS file name that could escape the TLS directory or clash.
    #[error("SDS file name {name:?} must be letters, digits and ._- ending in .sds.yaml")]
    SdsName {
        /// The name.
        name: String,
    },
    /// No `tunnelctl` binary was carried.
    #[error("no tunnelctl binary")]
    NoTunnelctl,
    /// The Envoy install mode gives neither a download URL nor pushed binaries.
    #[error("Envoy install mode")]
    EnvoyInstallMode,
}

/// What in the read-only look at the VPS could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ObservationError {
    /// A `file` line without mode, digest and path.
    #[error("bad file line {0:?}")]
    FileLine(String),
    /// A `unit` line without name, active and enabled state.
    #[error("bad unit line {0:?}")]
    UnitLine(String),
    /// The state file's bytes did not come back as base64.
    #[error("state.json is not base64")]
    StateEncoding(#[source] base64::DecodeError),
    /// No architecture in the answer.
    #[error("no `uname -m` answer")]
    NoArch,
    /// The VPS listed more files of a kind than a pass accepts (each would cost a command).
    #[error("the VPS lists more than {limit} {what} files; refusing to act on them")]
    TooMany {
        /// `SDS`, `temporary` or `managed`.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
}

/// At most this much of what the VPS printed goes into an error (and so into a status
/// condition or an Event): the VPS is not trusted with their size.
pub(crate) const QUOTED_CHARS: usize = 200;

/// The start of `text` from the VPS, cut to [`QUOTED_CHARS`] characters (`...` marks a cut).
pub(crate) fn quote_vps(text: &str) -> String {
    let mut out: String = text.chars().take(QUOTED_CHARS).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

impl EnrollError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Ssh(e) => e.category(),
            Self::Desired(_) => "EnrollInvalidDesiredState",
            Self::ArtifactUnreadable { .. } => "ArtifactUnreadable",
            Self::UnsupportedArch { .. } | Self::MissingArtifact { .. } => "EnrollUnsupportedArch",
            Self::EnvoyDownload(_) => "EnvoyInstallFailed",
            Self::Observation(_) => "EnrollObservationFailed",
            Self::ServiceNotActive { .. } => "VPSServiceNotActive",
            Self::Interrupted { .. } => "EnrollInterrupted",
            Self::Leftovers(_) => "TeardownIncomplete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            EnrollError::Ssh(SshError::Settings(String::new())),
            EnrollError::Desired(DesiredError::NoTunnelctl),
            EnrollError::UnsupportedArch {
                found: String::new(),
            },
            EnrollError::ArtifactUnreadable {
                path: String::new(),
                reason: String::new(),
            },
            EnrollError::MissingArtifact {
                what: "Envoy binary",
                arch: "x86_64",
            },
            EnrollError::EnvoyDownload(SshError::CommandFailed {
                command: String::new(),
                status: 5,
                stderr: String::new(),
            }),
            EnrollError::Observation(ObservationError::NoArch),
            EnrollError::ServiceNotActive {
                unit: "tunnel-envoy.service",
                state: String::new(),
            },
            EnrollError::Interrupted { done: 1, total: 2 },
            EnrollError::Leftovers(String::new()),
        ];
        let categories: Vec<&str> = all.iter().map(EnrollError::category).collect();
        assert_eq!(
            categories,
            [
                "SSHSettingsInvalid",
                "EnrollInvalidDesiredState",
                "EnrollUnsupportedArch",
                "ArtifactUnreadable",
                "EnrollUnsupportedArch",
                "EnvoyInstallFailed",
                "EnrollObservationFailed",
                "VPSServiceNotActive",
                "EnrollInterrupted",
                "TeardownIncomplete",
            ]
        );
    }

    #[test]
    fn wrapped_errors_are_sources() {
        use std::error::Error as _;
        let e = EnrollError::Observation(ObservationError::StateEncoding(
            base64::DecodeError::InvalidLength(1),
        ));
        assert!(e.source().is_some_and(|s| s.source().is_some()));
    }
}
