//! A failed call of the operator on its own objects (key Secrets, the uplink workload, the
//! EdgeNode's metadata, clean-up): which step, what was being done (naming the object), and
//! the API's error. A refused write in an uplink namespace says how to allow it.

/// The step of a pass an API call belongs to.
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
    /// The reason of a failure at this step.
    pub fn category(self) -> &'static str {
        match self {
            Self::Keys => "KeysSecretWriteFailed",
            Self::Workload => "WorkloadApplyFailed",
            Self::Metadata => "MetadataUpdateFailed",
            Self::Cleanup => "CleanupFailed",
        }
    }
}

/// An API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Failed {
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
}

/// The API server's own words for a refusal, without the debug dump of the whole Status.
fn forbidden_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

impl ApiError {
    /// The stable UpperCamelCase reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Failed { step, .. } => step.category(),
            Self::UplinkNamespaceNotAllowed { .. } => "UplinkNamespaceNotAllowed",
        }
    }

    /// An API error at `step`, while doing `what`.
    pub fn at(step: ApiStep, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        // A refused Keys or Workload step is a write in the uplink namespace: say how to
        // allow it.
        move |source| match (&source, step) {
            (kube::Error::Api(status), ApiStep::Keys | ApiStep::Workload) if status.code == 403 => {
                Self::UplinkNamespaceNotAllowed { what, source }
            }
            _ => Self::Failed { step, what, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("secrets is forbidden", "Forbidden").with_code(403),
        ))
    }

    #[test]
    fn a_refused_write_in_the_uplink_namespace_says_how_to_allow_it() {
        let e = ApiError::at(ApiStep::Workload, "applying StatefulSet t/x")(forbidden());
        assert_eq!(e.category(), "UplinkNamespaceNotAllowed");
        assert!(e.to_string().contains("uplinkNamespaces"), "{e}");
        let e = ApiError::at(ApiStep::Metadata, "setting the finalizer")(forbidden());
        assert_eq!(e.category(), "MetadataUpdateFailed");
    }

    #[test]
    fn every_step_has_a_failed_reason() {
        for step in [
            ApiStep::Keys,
            ApiStep::Workload,
            ApiStep::Metadata,
            ApiStep::Cleanup,
        ] {
            let c = step.category();
            assert!(c.ends_with("Failed") && c.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }
}
