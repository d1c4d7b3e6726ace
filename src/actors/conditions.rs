//! Status conditions, pure: what a condition should say now, merged with what the object
//! already shows so that `lastTransitionTime` moves only when a condition's status does, and
//! a write happens only when something a user can see changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One condition as the actor decides it, before times are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Ready`, `Enrolled`, ...
    pub type_: &'static str,
    /// `True` or `False`.
    pub ok: bool,
    /// `Unknown`: not decided yet (e.g. the first enrollment is running); `ok` is false then.
    pub unknown: bool,
    /// UpperCamelCase reason (an error's `category()` when it failed).
    pub reason: String,
    /// What happened and what to do.
    pub message: String,
}

impl Verdict {
    /// A condition that holds.
    pub fn ok(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: true,
            unknown: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn failed(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok: false,
            unknown: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition not decided yet (`Unknown`).
    pub fn unknown(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            unknown: true,
            ..Self::failed(type_, reason, message)
        }
    }

    /// Whether an Event about it is a warning: it does not hold (and is not merely undecided).
    pub fn warns(&self) -> bool {
        !self.ok && !self.unknown
    }

    fn status(&self) -> &'static str {
        match (self.ok, self.unknown) {
            (_, true) => "Unknown",
            (true, false) => "True",
            (false, false) => "False",
        }
    }
}

/// The conditions to write: one per verdict, in the verdicts' order, keeping the previous
/// `lastTransitionTime` of a condition whose status did not change, and `now` otherwise.
pub fn merge(
    previous: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|v| {
            let before = previous.iter().find(|c| c.type_ == v.type_);
            let last_transition_time = match before {
                Some(c) if c.status == v.status() => c.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: v.type_.to_owned(),
                status: v.status().to_owned(),
                reason: v.reason.clone(),
                message: truncate(&v.message, 32_768),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The verdicts whose status differs from what `previous` shows (or that are new): these,
/// and only these, are published as Events.
pub fn transitions<'a>(previous: &[Condition], verdicts: &'a [Verdict]) -> Vec<&'a Verdict> {
    verdicts
        .iter()
        .filter(|v| {
            previous
                .iter()
                .find(|c| c.type_ == v.type_)
                .is_none_or(|c| c.status != v.status() || c.reason != v.reason)
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn an_undecided_condition_is_unknown_and_not_a_warning() {
        let v = Verdict::unknown("Ready", "Enrolling", "enrolling VPS 192.0.2.1");
        assert!(!v.ok && !v.warns());
        assert!(Verdict::failed("Ready", "SSHUnreachable", "down").warns());
        let written = merge(&[], &[v], Some(1), &at(5));
        assert_eq!(written[0].status, "Unknown");
        assert_eq!(written[0].reason, "Enrolling");
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = merge(
            &[],
            &[Verdict::failed("Ready", "SSHUnreachable", "down")],
            Some(1),
            &at(10),
        );
        assert_eq!(first[0].last_transition_time, at(10));
        // Same status, other message and reason: the time stays.
        let second = merge(
            &first,
            &[Verdict::failed("Ready", "SSHAuthFailed", "refused")],
            Some(2),
            &at(20),
        );
        assert_eq!(second[0].last_transition_time, at(10));
        assert_eq!(second[0].reason, "SSHAuthFailed");
        assert_eq!(second[0].observed_generation, Some(2));
        // The status flips: the time moves.
        let third = merge(
            &second,
            &[Verdict::ok("Ready", "AllHealthy", "ok")],
            Some(2),
            &at(30),
        );
        assert_eq!(third[0].last_transition_time, at(30));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn the_same_verdicts_twice_give_the_same_conditions() {
        let verdicts = [
            Verdict::ok("Ready", "AllHealthy", "ok"),
            Verdict::ok("Enrolled", "Enrolled", "ok"),
        ];
        let once = merge(&[], &verdicts, Some(1), &at(1));
        let twice = merge(&once, &verdicts, Some(1), &at(99));
        assert_eq!(once, twice);
        assert!(transitions(&once, &verdicts).is_empty());
    }

    #[test]
    fn a_new_reason_or_status_is_a_transition() {
        let before = merge(
            &[],
            &[Verdict::failed("Ready", "SSHUnreachable", "down")],
            None,
            &at(1),
        );
        let same = [Verdict::failed(
            "Ready",
            "SSHUnreachable",
            "still down, other text",
        )];
        assert!(transitions(&before, &same).is_empty());
        let other = [Verdict::failed("Ready", "SSHAuthFailed", "refused")];
        assert_eq!(transitions(&before, &other).len(), 1);
        let new_type = [Verdict::ok("Enrolled", "Enrolled", "")];
        assert_eq!(transitions(&before, &new_type).len(), 1);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(20_000);
        let c = merge(&[], &[Verdict::failed("Ready", "X", long)], None, &at(1));
        assert!(c[0].message.len() <= 32_768 + "…".len());
    }
}
