//! Whether each uplink pod is up now, for the EdgeNode's `UplinksReady`: a handshake stays fresh
//! for minutes after its pod went, so the relay's word alone would count a Pending, Terminating
//! or deleted pod as up. A pod is up when it runs and is not being deleted; a Pending one says
//! why in the scheduler's words when the scheduler could not place it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;

use crate::api_write::{ApiError, ApiStep};

/// How one uplink pod is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Running, not being deleted.
    Up,
    /// There is no such pod.
    Missing,
    /// Not scheduled or not started yet; the scheduler's reason when it could not place it.
    Pending(Option<String>),
    /// Being deleted.
    Terminating,
    /// Another phase (`Succeeded`, `Failed`, `Unknown`).
    Other(String),
}

impl PodState {
    /// The state of `pod` (`None`: missing).
    pub fn of(pod: Option<&Pod>) -> Self {
        let Some(pod) = pod else {
            return Self::Missing;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Self::Terminating;
        }
        let status = pod.status.as_ref();
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => Self::Up,
            Some("Pending") | None => Self::Pending(
                status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| {
                        c.iter()
                            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                    })
                    .and_then(|c| c.message.clone()),
            ),
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up)
    }

    /// Words for a condition message: `pod <name> is Pending (<scheduler's reason>)`.
    pub fn describe(&self, pod: &str) -> String {
        match self {
            Self::Up => format!("pod {pod} runs"),
            Self::Missing => format!("pod {pod} does not exist"),
            Self::Pending(Some(reason)) => {
                format!("pod {pod} is Pending, the scheduler says: {reason}")
            }
            Self::Pending(None) => format!("pod {pod} is Pending"),
            Self::Terminating => format!("pod {pod} is being deleted"),
            Self::Other(phase) => format!("pod {pod} is {phase}"),
        }
    }
}

/// The state of each uplink pod `<workload>-<ordinal>` for ordinals below `replicas`.
pub async fn uplink_pods(
    client: &Client,
    namespace: &str,
    workload: &str,
    replicas: usize,
) -> Result<BTreeMap<usize, PodState>, ApiError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for ordinal in 0..replicas {
        let name = format!("{workload}-{ordinal}");
        let pod = api.get_opt(&name).await.map_err(ApiError::at(
            ApiStep::Workload,
            format!("reading pod {namespace}/{name}"),
        ))?;
        out.insert(ordinal, PodState::of(pod.as_ref()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn only_a_running_pod_that_is_not_being_deleted_is_up() {
        assert!(
            PodState::of(Some(&pod(
                "metadata: {name: p}\nstatus: {phase: Running}\n"
            )))
            .is_up()
        );
        assert_eq!(PodState::of(None), PodState::Missing);
        assert_eq!(
            PodState::of(Some(&pod(
                "metadata: {name: p, deletionTimestamp: '2026-12-06T10:00:00Z'}\nstatus: {phase: Running}\n"
            ))),
            PodState::Terminating
        );
        assert_eq!(
            PodState::of(Some(&pod("metadata: {name: p}\nstatus: {phase: Failed}\n"))),
            PodState::Other("Failed".into())
        );
    }

    #[test]
    fn an_unschedulable_pod_says_why_in_the_schedulers_words() {
        let p = pod(
            "metadata: {name: p}\nstatus:\n  phase: Pending\n  conditions:\n  - {type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/1 nodes are available: 1 node(s) didn''t match pod anti-affinity rules.'}\n",
        );
        let state = PodState::of(Some(&p));
        assert!(!state.is_up());
        assert_eq!(
            state.describe("x-uplink-1"),
            "pod x-uplink-1 is Pending, the scheduler says: 0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        );
    }
}
