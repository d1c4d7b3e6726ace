//! A rollout of the uplink StatefulSet that cannot finish by itself. The StatefulSet controller
//! replaces pods from the highest ordinal down and waits for each replaced pod to become
//! available before the next; with `podManagementPolicy: Parallel` (ours) it replaces a pod of
//! an old revision even when that pod is not Ready, so a reverted template frees itself. What it
//! cannot free: a pod of the new revision the scheduler cannot place *because of the pods of
//! the old revision*, whose required anti-affinity keeps it off their nodes (the scheduler's
//! "didn't satisfy existing pods anti-affinity rules"). It waits for that pod for ever, and the
//! old pods it would replace next are the ones in the way: e.g. the default affinity turned from
//! required to preferred, or a user dropping a strict `affinity`, with `replicas: 2` on one
//! node. Then one old pod of ours with a required anti-affinity is deleted; the controller
//! recreates it from the new template. Once none is left, a pod still Pending on the verdict
//! about them is deleted too, so that the scheduler looks again ([`Unblock::StaleVerdict`]).
//! One pod per pass, and only while no uplink pod is missing or being deleted, so at most one
//! is replaced at a time, as the controller itself would.
//!
//! Any other pod that never becomes available (e.g. a `nodeSelector` no node matches) is left
//! to the user: `UplinksReady` names it with the scheduler's reason.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

/// The scheduler's words when an existing pod's required anti-affinity keeps a pod off every
/// node (`interpodaffinity.ErrReasonExistingAntiAffinityRulesNotMatch`).
const BLOCKED_BY_EXISTING: &str = "didn't satisfy existing pods anti-affinity rules";

/// The label the StatefulSet controller gives each pod: the revision it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// A pod to delete so the rollout can go on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblock {
    /// A pod of an old revision whose required anti-affinity keeps a pod of the new revision
    /// off every node.
    OldRevision(String),
    /// A pod of the new revision still Pending on the scheduler's verdict about a pod that is
    /// gone. The scheduler does not look again when such a pod goes (kube-scheduler 1.34: its
    /// inter-pod affinity plugin requeues a Pending pod on a deletion only for the *Pending*
    /// pod's own anti-affinity, not for the deleted pod's), only at its periodic flush of
    /// unschedulable pods (5 minutes by default; still Pending after 2.5 minutes on the test
    /// node); a pod recreated is scheduled at once.
    StaleVerdict(String),
}

impl Unblock {
    /// The reason of its Event (one each: Events of one reason on one object are merged into
    /// a series that keeps the first message).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::OldRevision(_) => "UplinkRolloutUnblocked",
            Self::StaleVerdict(_) => "UplinkPodRescheduled",
        }
    }

    /// The pod's name.
    pub fn pod(&self) -> &str {
        match self {
            Self::OldRevision(p) | Self::StaleVerdict(p) => p,
        }
    }
}

impl std::fmt::Display for Unblock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OldRevision(pod) => write!(
                f,
                "deleted uplink pod {pod}: its required anti-affinity (an old revision) kept the new revision's pods from being scheduled; the StatefulSet recreates it from the new template"
            ),
            Self::StaleVerdict(pod) => write!(
                f,
                "deleted uplink pod {pod}: it stayed Pending on the scheduler's verdict about an old pod's anti-affinity, and that pod is gone; the StatefulSet recreates it and the scheduler places it afresh"
            ),
        }
    }
}

/// What to delete so the rollout of `sts` can go on, if it is blocked by anti-affinity.
/// `pods` are the uplink pods that exist; `replicas` how many there should be.
pub fn pod_in_the_way(sts: &StatefulSet, pods: &[Pod], replicas: usize) -> Option<Unblock> {
    let status = sts.status.as_ref()?;
    if status.observed_generation.is_none() || status.observed_generation != sts.metadata.generation
    {
        return None;
    }
    let update = status
        .update_revision
        .as_deref()
        .filter(|r| !r.is_empty())?;
    if pods.len() < replicas || pods.iter().any(terminating) {
        return None;
    }
    let blocked = pods
        .iter()
        .filter(|p| revision(p) == Some(update) && blocked_by_existing_pods(p))
        .max_by_key(|p| ordinal(p))?;
    if let Some(old) = pods
        .iter()
        .filter(|p| revision(p).is_some_and(|r| r != update) && requires_anti_affinity(p))
        .max_by_key(|p| ordinal(p))
    {
        return old.metadata.name.clone().map(Unblock::OldRevision);
    }
    // None of ours that is left requires to be alone: the verdict is about a pod that went.
    let others_require = pods
        .iter()
        .filter(|p| p.metadata.name != blocked.metadata.name)
        .any(requires_anti_affinity);
    if others_require {
        return None;
    }
    blocked.metadata.name.clone().map(Unblock::StaleVerdict)
}

/// The revision `pod` was made from.
fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Pending because the scheduler found existing pods' anti-affinity in the way.
fn blocked_by_existing_pods(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Pending")
        && status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains(BLOCKED_BY_EXISTING))
        })
}

fn requires_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|terms| !terms.is_empty())
}

/// `<workload>-<ordinal>`'s ordinal (0 when it has none).
fn ordinal(pod: &Pod) -> u64 {
    pod.metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(generation: i64, observed: i64, update: &str) -> StatefulSet {
        serde_yaml::from_str(&format!(
            "metadata: {{name: w, generation: {generation}}}\nspec: {{selector: {{}}, serviceName: w, template: {{}}}}\nstatus: {{replicas: 2, observedGeneration: {observed}, updateRevision: {update}}}\n"
        ))
        .unwrap()
    }

    const STRICT: &str = "affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname}]}}";
    const BLOCKED: &str = "phase: Pending\n  conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/1 nodes are available: 1 node(s) didn''t satisfy existing pods anti-affinity rules. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.'}]";

    fn pod(name: &str, revision: &str, spec: &str, status: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, labels: {{controller-revision-hash: {revision}}}}}\nspec: {{containers: [], {spec}}}\nstatus:\n  {status}\n"
        ))
        .unwrap()
    }

    fn running(name: &str, revision: &str, spec: &str) -> Pod {
        pod(name, revision, spec, "phase: Running")
    }

    #[test]
    fn an_old_pod_whose_anti_affinity_blocks_the_new_one_is_deleted() {
        // replicas: 2 on one node; the strict affinity dropped: w-1 is recreated from the new
        // revision and cannot be placed beside w-0, which still requires to be alone.
        let pods = [
            running("w-0", "old", STRICT),
            pod("w-1", "new", "", BLOCKED),
        ];
        assert_eq!(
            pod_in_the_way(&sts(3, 3, "new"), &pods, 2),
            Some(Unblock::OldRevision("w-0".into()))
        );
        // Once it is gone and recreated, w-1 still carries the verdict about it: recreated
        // too, so the scheduler looks again.
        let pods = [running("w-0", "new", ""), pod("w-1", "new", "", BLOCKED)];
        assert_eq!(
            pod_in_the_way(&sts(3, 3, "new"), &pods, 2),
            Some(Unblock::StaleVerdict("w-1".into()))
        );
        // The highest ordinal first, as the controller would.
        let pods = [
            running("w-0", "old", STRICT),
            running("w-1", "old", STRICT),
            pod("w-2", "new", "", BLOCKED),
        ];
        assert_eq!(
            pod_in_the_way(&sts(3, 3, "new"), &pods, 3),
            Some(Unblock::OldRevision("w-1".into()))
        );
    }

    #[test]
    fn nothing_is_deleted_when_the_rollout_is_not_blocked_by_old_pods() {
        let blocked = [
            running("w-0", "old", STRICT),
            pod("w-1", "new", "", BLOCKED),
        ];
        // The controller has not seen the latest template yet: its revisions are stale.
        assert_eq!(pod_in_the_way(&sts(4, 3, "new"), &blocked, 2), None);
        // A pod missing, or one being deleted: the previous replacement is not done.
        assert_eq!(pod_in_the_way(&sts(3, 3, "new"), &blocked[..1], 2), None);
        let mut going = blocked.clone();
        going[0].metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-06T10:00:00Z".parse().unwrap(),
            ));
        assert_eq!(pod_in_the_way(&sts(3, 3, "new"), &going, 2), None);
        // A pod of ours that is left requires to be alone (the strict form, more replicas than
        // nodes): the verdict is true, nothing to do.
        let strict = [
            running("w-0", "new", STRICT),
            pod("w-1", "new", STRICT, BLOCKED),
        ];
        assert_eq!(pod_in_the_way(&sts(3, 3, "new"), &strict, 2), None);
        // The new pod is Pending for another reason (its own nodeSelector): for the user.
        let selector = [
            running("w-0", "old", STRICT),
            pod(
                "w-1",
                "new",
                "",
                "phase: Pending\n  conditions: [{type: PodScheduled, status: 'False', message: '0/1 nodes are available: 1 node(s) didn''t match Pod''s node affinity/selector.'}]",
            ),
        ];
        assert_eq!(pod_in_the_way(&sts(3, 3, "new"), &selector, 2), None);
    }
}
