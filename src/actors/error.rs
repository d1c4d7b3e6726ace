//! What can stop one step of an EdgeNode pass. Each variant names the object concerned; its
//! `category()` is the condition reason and Event reason (UpperCamelCase, the source error's
//! own category where there is one). Messages never hold Secret contents.

use crate::enroll::EnrollError;
use crate::plan::PlanError;
use crate::ssh::SshError;

use super::keys::KeysError;

/// An API write or read of the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiStep {
    /// Reading or writing the keys Secrets.
    Keys,
    /// Applying the uplink namespace, ConfigMap, Service or StatefulSet.
    Workload,
    /// Adding or removing the finalizer, or the restart-envoy annotation.
    Metadata,
    /// Deleting the in-cluster objects of a deleted EdgeNode.
    Cleanup,
}

impl ApiStep {
    fn category(self) -> &'static str {
        match self {
            Self::Keys => "KeysSecretWriteFailed",
            Self::Workload => "WorkloadApplyFailed",
            Self::Metadata => "MetadataUpdateFailed",
            Self::Cleanup => "CleanupFailed",
        }
    }
}

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
    /// The desired state of the VPS could not be assembled.
    #[error("assembling the VPS's desired state: {0}")]
    Desired(#[source] EnrollError),
    /// The SSH pass failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// Which step.
        step: ApiStep,
        /// What was being done, naming the object.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The operator may not write in the uplink namespace (RBAC refused a Keys or Workload
    /// step): with the Helm chart, only the namespaces of the value `uplinkNamespaces` are
    /// writable.
    #[error(
        "{what}: the operator may not write in this EdgeNode's spec.uplink.namespace ({}); with the Helm chart, add the namespace to the value uplinkNamespaces (helm upgrade --reuse-values --set 'uplinkNamespaces={{tunnel,<namespace>}}'), or use a namespace already listed",
        forbidden_message(source)
    )]
    UplinkNamespaceNotAllowed {
        /// What was being done.
        what: String,
        /// The API error (403).
        #[source]
        source: kube::Error,
    },
    /// The SSH session actor is gone (it is being restarted).
    #[error("the SSH session of this EdgeNode is restarting")]
    SessionGone,
    /// Leader election may have moved on: this process touches no VPS.
    #[error("not the leader: the Lease was not renewed in time, no SSH job runs")]
    NotLeader,
}

/// The API server's own words for a refusal, without the debug dump of the whole Status.
fn forbidden_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
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
            Self::Desired(e) | Self::Enroll(e) => e.category(),
            Self::Api { step, .. } => step.category(),
            Self::SessionGone => "SSHSessionRestarting",
            Self::NotLeader => "NotLeader",
            Self::UplinkNamespaceNotAllowed { .. } => "UplinkNamespaceNotAllowed",
        }
    }

    /// An API error at `step`.
    pub fn api(step: ApiStep, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        // A refused Keys or Workload step is a write in the uplink namespace: say how to
        // allow it.
        move |source| match (&source, step) {
            (kube::Error::Api(status), ApiStep::Keys | ApiStep::Workload) if status.code == 403 => {
                Self::UplinkNamespaceNotAllowed { what, source }
            }
            _ => Self::Api { step, what, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ReconcileError::Api {
                step: ApiStep::Workload,
                what: "applying".into(),
                source: kube::Error::LinesCodecMaxLineLengthExceeded,
            },
            ReconcileError::UplinkNamespaceNotAllowed {
                what: "applying".into(),
                source: kube::Error::LinesCodecMaxLineLengthExceeded,
            },
        ];
        for e in samples {
            let c = e.category();
            assert!(
                c.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && c.chars().all(|c| c.is_ascii_alphanumeric()),
                "{c}"
            );
        }
        for step in [
            ApiStep::Keys,
            ApiStep::Workload,
            ApiStep::Metadata,
            ApiStep::Cleanup,
        ] {
            assert!(step.category().ends_with("Failed"));
        }
    }
}
