//! Draining an EdgeNode, pure: while it carries [`crate::crd::ANNOTATION_DRAIN`], its sources leave it out
//! of their published addresses ([`super::edge_set`]), and each pass reads how many
//! connections (TCP) and sessions (UDP) Envoy still holds on the public ports. The condition
//! [`DRAINED`] says whether they have all ended, or the deadline
//! ([`ANNOTATION_DRAIN_TIMEOUT`], counted from when the drain was first seen) passed; a
//! deletion (its teardown) and a `restart-envoy` wait for it. Without the annotation nothing
//! waits, as before.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ANNOTATION_DRAIN_TIMEOUT, EdgeNode};
use crate::duration::GoDuration;

use super::conditions::Verdict;
use super::edge_set::is_draining;

/// The condition a drained EdgeNode carries.
pub const DRAINED: &str = "Drained";
/// How long a drain waits when the annotation says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The drain deadline of `node`: its timeout annotation, else [`DEFAULT_TIMEOUT`]; a value
/// that does not parse counts as the default (the condition's message says so).
fn timeout(node: &EdgeNode) -> (Duration, Option<String>) {
    let Some(value) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DRAIN_TIMEOUT))
    else {
        return (DEFAULT_TIMEOUT, None);
    };
    match GoDuration::parse_positive(value) {
        Ok(d) => (d.to_std(), None),
        Err(e) => (
            DEFAULT_TIMEOUT,
            Some(format!(
                "annotation {ANNOTATION_DRAIN_TIMEOUT}: {value:?} is not a duration ({e}); waiting the default 10m"
            )),
        ),
    }
}

/// When the drain (or its last wait) started: the `Drained` condition's last transition.
fn since(conditions: &[Condition]) -> Option<Timestamp> {
    conditions
        .iter()
        .find(|c| c.type_ == DRAINED)
        .map(|c| c.last_transition_time.0)
}

/// The `Drained` verdict of a pass of `node` that found `active` connections and sessions
/// open on the public ports (`None`: they could not be read), at `now`; `None` when it is not
/// draining.
pub fn verdict(node: &EdgeNode, active: Option<u64>, now: Timestamp) -> Option<Verdict> {
    if !is_draining(node) {
        return None;
    }
    let conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (wait, problem) = timeout(node);
    let started = since(conditions).unwrap_or(now);
    let waited = Duration::from_secs(
        u64::try_from(now.as_second().saturating_sub(started.as_second())).unwrap_or(0),
    );
    let suffix = problem.map_or(String::new(), |p| format!(" ({p})"));
    Some(match active {
        Some(0) => Verdict::ok(
            DRAINED,
            "Drained",
            format!("out of every status, and no connection is open on the public ports{suffix}"),
        ),
        _ if waited >= wait => Verdict::ok(
            DRAINED,
            "DrainDeadlinePassed",
            format!(
                "out of every status; {} still open after the drain timeout of {}s: a deletion or restart-envoy proceeds{suffix}",
                open(active),
                wait.as_secs()
            ),
        ),
        _ => Verdict::failed(
            DRAINED,
            "Draining",
            format!(
                "out of every status; waiting for {} to end (at most {}s more) before a deletion or restart-envoy proceeds{suffix}",
                open(active),
                wait.saturating_sub(waited).as_secs()
            ),
        ),
    })
}

fn open(active: Option<u64>) -> String {
    match active {
        Some(1) => "1 connection".to_owned(),
        Some(n) => format!("{n} connections"),
        None => "connections that could not be counted".to_owned(),
    }
}

/// Whether a deletion or a restart of Envoy may proceed on `node`: it is not draining, or its
/// `Drained` condition says the drain is over.
pub fn may_proceed(node: &EdgeNode) -> bool {
    if !is_draining(node) {
        return true;
    }
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DRAINED && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: &str, drained: Option<(&str, &str, &str)>) -> EdgeNode {
        let status = drained.map_or(String::new(), |(status, reason, at)| {
            format!(
                "status:\n  conditions:\n  - {{type: Drained, status: '{status}', reason: {reason}, message: m, lastTransitionTime: '{at}'}}\n"
            )
        });
        serde_yaml::from_str(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata:\n  name: a\n  namespace: d\n  annotations: {{{annotations}}}\nspec:\n  address: 192.0.2.1\n  ssh: {{secretRef: {{name: s}}}}\n{status}"
        ))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn without_the_annotation_nothing_waits() {
        let n = node("", None);
        assert_eq!(verdict(&n, Some(3), Timestamp::now()), None);
        assert!(may_proceed(&n));
    }

    #[test]
    fn open_connections_hold_it_until_they_end_or_the_deadline() {
        let draining = node("tunnel.achetronic.com/drain: 'true'", None);
        assert!(!may_proceed(&draining), "no verdict yet: wait");
        let v = verdict(&draining, Some(2), at("2026-12-01T00:00:00Z")).unwrap();
        assert!(!v.ok && v.reason == "Draining" && v.message.contains("2 connections"));
        let started = node(
            "tunnel.achetronic.com/drain: 'true', tunnel.achetronic.com/drain-timeout: 5m",
            Some(("False", "Draining", "2026-12-01T00:00:00Z")),
        );
        let v = verdict(&started, Some(1), at("2026-12-01T00:04:00Z")).unwrap();
        assert!(
            !v.ok && v.message.contains("at most 60s more"),
            "{}",
            v.message
        );
        let v = verdict(&started, Some(1), at("2026-12-01T00:05:00Z")).unwrap();
        assert!(v.ok && v.reason == "DrainDeadlinePassed", "{v:?}");
        let v = verdict(&started, Some(0), at("2026-12-01T00:01:00Z")).unwrap();
        assert!(v.ok && v.reason == "Drained");
        let v = verdict(&started, None, at("2026-12-01T00:01:00Z")).unwrap();
        assert!(!v.ok && v.message.contains("could not be counted"));
        let done = node(
            "tunnel.achetronic.com/drain: 'true'",
            Some(("True", "Drained", "2026-12-01T00:00:00Z")),
        );
        assert!(may_proceed(&done));
    }

    #[test]
    fn a_timeout_that_does_not_parse_says_so_and_waits_the_default() {
        let n = node(
            "tunnel.achetronic.com/drain: 'true', tunnel.achetronic.com/drain-timeout: soon",
            None,
        );
        let v = verdict(&n, Some(1), Timestamp::now()).unwrap();
        assert!(
            v.message.contains("drain-timeout") && v.message.contains("10m"),
            "{}",
            v.message
        );
    }
}
