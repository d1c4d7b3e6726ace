//! What can stop one step of an EdgeNode pass. Each variant names the object concerned; its
//! `category()` is the condition reason and Event reason (UpperCamelCase, the source error's
//! own category where there is one). Messages never hold Secret contents.

use crate::api_write::ApiError;
use crate::enroll::EnrollError;
use crate::plan::PlanError;
use crate::ssh::SshError;

use super::keys::KeysError;

/// Why a step of a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The SSH Secret does not exist, or is in a namespace the operator does not watch.
    #[error("SSH Secret {secret} not found: {hint}")]
    SshSecretNotFound {
        /// `namespace/name`.
        secret: String,
        /// What to do.
        hint: &'static str,
    },
    /// The SSH Secret is in another namespace that grants this EdgeNode's namespace nothing.
    #[error(
        "SSH Secret {secret} is in another namespace, which has no ReferenceGrant from EdgeNodes in {namespace} to Secrets"
    )]
    SshSecretNotGranted {
        /// `namespace/name`.
        secret: String,
        /// The EdgeNode's namespace.
        namespace: String,
    },
    /// The SSH Secret is unusable (no key, a malformed key, bad knownHosts).
    #[error("SSH Secret {secret}: {source}")]
    SshSecret {
        /// `namespace/name`.
        secret: String,
        /// What is wrong with it.
        #[source]
        source: SshError,
    },
    /// `spec.ssh` is unusable.
    #[error("spec.ssh: {0}")]
    SshSettings(#[source] SshError),
    /// The WireGuard keys.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// No plan could be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The EdgeNode asks for an uplink namespace or pod settings the operator does not allow.
    #[error(transparent)]
    UplinkPolicy(#[from] crate::workload::PolicyError),
    /// The desired state of the VPS could not be assembled.
    #[error("assembling the VPS's desired state: {0}")]
    Desired(#[source] EnrollError),
    /// The SSH pass failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The objects under the EdgeNode's uplink names could not be read, or one is not its own.
    #[error(transparent)]
    Existing(#[from] crate::workload::ExistingError),
    /// A Secret the pass reads could not be fetched.
    #[error(transparent)]
    SecretRead(#[from] super::secrets::SecretReadError),
    /// The SSH session actor is gone (it is being restarted).
    #[error("the SSH session of this EdgeNode is restarting")]
    SessionGone,
    /// Leader election may have moved on: this process touches no VPS.
    #[error("not the leader: the Lease was not renewed in time, no SSH job runs")]
    NotLeader,
}

impl ReconcileError {
    /// The stable UpperCamelCase reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::SshSecretNotFound { .. } => "SSHSecretNotFound",
            Self::SshSecretNotGranted { .. } => "ReferenceNotGranted",
            Self::SshSecret { source, .. } | Self::SshSettings(source) => source.category(),
            Self::Keys(e) => e.category(),
            Self::Plan(e) => e.category(),
            Self::UplinkPolicy(e) => e.category(),
            Self::Desired(e) | Self::Enroll(e) => e.category(),
            Self::Api(e) => e.category(),
            Self::Existing(e) => e.category(),
            Self::SecretRead(e) => e.category(),
            Self::SessionGone => "SSHSessionRestarting",
            Self::NotLeader => "NotLeader",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_write::ApiStep;

    #[test]
    fn categories_are_upper_camel_case_words() {
        let samples = [
            ReconcileError::SshSecretNotFound {
                secret: "d/s".into(),
                hint: "",
            },
            ReconcileError::SshSettings(SshError::Settings("x".into())),
            ReconcileError::SessionGone,
            ReconcileError::NotLeader,
            ReconcileError::SshSecretNotGranted {
                secret: "other/s".into(),
                namespace: "d".into(),
            },
            ReconcileError::Api(ApiError::at(ApiStep::Workload, "applying")(
                kube::Error::LinesCodecMaxLineLengthExceeded,
            )),
        ];
        for e in samples {
            let c = e.category();
            assert!(
                c.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && c.chars().all(|c| c.is_ascii_alphanumeric()),
                "{c}"
            );
        }
    }
}
