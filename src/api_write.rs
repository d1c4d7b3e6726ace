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
    #[error("{what}: {}", api_words(source))]
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

/// A sentence for an API error: who refused what and why, in the API server's own words
/// (never the debug dump of the whole Status), and for a refused write what to look at.
pub fn api_words(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let hint = match status.code {
                422 => {
                    "; the object the operator built was refused by the API server's validation or an admission policy: check the EdgeNode's spec.uplink settings and the cluster's Pod Security and admission rules"
                }
                409 => "; another writer changed it at the same time: the next pass retries",
                403 => "; the operator's RBAC does not allow it",
                _ => "",
            };
            format!(
                "the API server refused it ({} {}): {}{hint}",
                status.code, status.reason, status.message
            )
        }
        other => format!("the API server could not be reached or answered badly: {other}"),
    }
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
    fn a_refusal_reads_as_a_sentence_without_the_status_dump() {
        let refused = kube::Error::Api(Box::new(
            kube::core::Status::failure(
                "StatefulSet.apps \"x\" is invalid: spec.template.spec.initContainers[0].securityContext.privileged: Forbidden: disallowed by cluster policy",
                "Invalid",
            )
            .with_code(422),
        ));
        let e = ApiError::at(ApiStep::Workload, "applying StatefulSet tunnel/x")(refused);
        let text = e.to_string();
        assert!(text.starts_with("applying StatefulSet tunnel/x: the API server refused it (422 Invalid): StatefulSet.apps"), "{text}");
        assert!(text.contains("Pod Security"), "{text}");
        assert!(!text.contains("Status {"), "{text}");
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
