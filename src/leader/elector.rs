//! Leader election's decisions, without I/O (client-go's algorithm on a
//! `coordination.k8s.io/v1` Lease, which controller-runtime uses too):
//!
//! - A Lease held by someone else is taken only after its holder has not renewed it for
//!   `leaseDurationSeconds`, measured on *our* monotonic clock from the moment we last saw the
//!   record change (never from the holder's wall-clock `renewTime`: clocks of two nodes skew).
//! - The holder renews every `retry_period`; each successful write opens the [write
//!   fence](crate::leader::fence) until `attempt start + renew_deadline`. `renew_deadline` is
//!   shorter than the lease duration, so the fence of an old leader is shut before anyone else
//!   may take the Lease, even when the old leader was paused (SIGSTOP, a frozen VM) and comes
//!   back: its monotonic clock went on, its fence is shut, and it writes nothing.
//! - An empty holder (a leader that let go on shutdown) is free at once.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

/// Leader election's timings (controller-runtime's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a Lease stays held after its last renewal, as other candidates see it.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal; then it stops.
    pub renew_deadline: Duration,
    /// Between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Checks `lease_duration > renew_deadline > retry_period` and a whole-second lease
    /// duration (the Lease stores seconds); names the flag that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.as_secs() == 0 {
            return Err("--leader-elect-lease-duration must be a whole number of seconds".into());
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return Err("--leader-elect-lease-duration is too long".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(
                "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
                    .into(),
            );
        }
        if self.retry_period >= self.renew_deadline {
            return Err(
                "--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The fields of a Lease's spec leader election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who holds it; empty when released.
    pub holder: String,
    /// `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// When the holder acquired it.
    pub acquire_time: Option<Timestamp>,
    /// When the holder last renewed it.
    pub renew_time: Option<Timestamp>,
    /// How many times it changed hands.
    pub transitions: i32,
}

/// What to do next with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it with this record.
    Create(Record),
    /// Write this record over the one read (optimistic concurrency on its resourceVersion).
    Update(Record),
    /// Someone else holds it: try again after the retry period.
    Wait,
}

/// One candidate's view of the Lease.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    timings: Timings,
    observed: Option<(Record, Instant)>,
    fence_until: Option<Instant>,
}

impl Elector {
    /// A candidate named `identity` (unique per process).
    pub fn new(identity: impl Into<String>, timings: Timings) -> Self {
        Self {
            identity: identity.into(),
            timings,
            observed: None,
            fence_until: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Decides, from the Lease as just read (`None`: it does not exist), what to write.
    /// `now` is the monotonic clock, `wall` the time written into the record.
    pub fn decide(&mut self, current: Option<&Record>, now: Instant, wall: Timestamp) -> Step {
        let Some(current) = current else {
            return Step::Create(Record {
                holder: self.identity.clone(),
                lease_duration_seconds: self.lease_seconds(),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: 0,
            });
        };
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| seen != current)
        {
            self.observed = Some((current.clone(), now));
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let held_by_other = !current.holder.is_empty() && current.holder != self.identity;
        let held_for =
            Duration::from_secs(u64::try_from(current.lease_duration_seconds.max(0)).unwrap_or(0));
        if held_by_other && self.fence_until.is_some() {
            // Someone else holds it while we thought we did: we lost it (we were paused, or
            // our renewals did not arrive), whatever our own clock says.
            self.fence_until = Some(now);
            return Step::Wait;
        }
        if held_by_other && now < seen_at + held_for {
            return Step::Wait;
        }
        let ours = current.holder == self.identity;
        Step::Update(Record {
            holder: self.identity.clone(),
            lease_duration_seconds: self.lease_seconds(),
            acquire_time: if ours {
                current.acquire_time
            } else {
                Some(wall)
            },
            renew_time: Some(wall),
            transitions: if ours {
                current.transitions
            } else {
                current.transitions.saturating_add(1)
            },
        })
    }

    /// The record was written by an attempt that started at `started`: we hold the Lease, and
    /// may act until `started + renew_deadline`.
    pub fn written(&mut self, record: Record, started: Instant, now: Instant) -> Instant {
        self.observed = Some((record, now));
        let until = started + self.timings.renew_deadline;
        self.fence_until = Some(until);
        until
    }

    /// Whether we hold the Lease by our own clock at `now`.
    pub fn leading(&self, now: Instant) -> bool {
        self.fence_until.is_some_and(|until| now < until)
    }

    /// Whether we held the Lease and the renew deadline passed without a renewal.
    pub fn lost(&self, now: Instant) -> bool {
        self.fence_until.is_some_and(|until| now >= until)
    }

    /// The record that lets the Lease go (on shutdown): no holder, so the next candidate takes
    /// it at its next attempt instead of waiting out the lease duration.
    pub fn release(&self, current: &Record, wall: Timestamp) -> Option<Record> {
        (current.holder == self.identity).then(|| Record {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: current.acquire_time,
            renew_time: Some(wall),
            transitions: current.transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str) -> Record {
        Record {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: None,
            renew_time: None,
            transitions: 3,
        }
    }

    #[test]
    fn creates_a_missing_lease_and_renews_its_own() {
        let t0 = Instant::now();
        let mut e = Elector::new("a", Timings::default());
        let Step::Create(created) = e.decide(None, t0, Timestamp::UNIX_EPOCH) else {
            panic!("create")
        };
        assert_eq!((created.holder.as_str(), created.transitions), ("a", 0));
        assert!(!e.leading(t0));
        let until = e.written(created.clone(), t0, t0);
        assert_eq!(until, t0 + Duration::from_secs(10));
        assert!(e.leading(t0 + Duration::from_secs(9)));
        assert!(e.lost(t0 + Duration::from_secs(10)));
        // Renewing keeps acquire time and transitions.
        let Step::Update(renewed) = e.decide(Some(&created), t0, Timestamp::UNIX_EPOCH) else {
            panic!("renew")
        };
        assert_eq!(renewed.transitions, 0);
    }

    #[test]
    fn waits_out_anothers_lease_from_when_it_was_last_seen_changing() {
        let t0 = Instant::now();
        let mut e = Elector::new("b", Timings::default());
        let held = record("a");
        assert_eq!(e.decide(Some(&held), t0, Timestamp::UNIX_EPOCH), Step::Wait);
        // Unchanged for 14 s: still held.
        let t14 = t0 + Duration::from_secs(14);
        assert_eq!(
            e.decide(Some(&held), t14, Timestamp::UNIX_EPOCH),
            Step::Wait
        );
        // The holder renewed at 14 s: the clock restarts from then.
        let mut renewed = held.clone();
        renewed.renew_time = Some(Timestamp::UNIX_EPOCH);
        let t16 = t0 + Duration::from_secs(16);
        assert_eq!(
            e.decide(Some(&renewed), t14, Timestamp::UNIX_EPOCH),
            Step::Wait
        );
        assert_eq!(
            e.decide(Some(&renewed), t16, Timestamp::UNIX_EPOCH),
            Step::Wait
        );
        // 15 s without a change: taken, one more transition.
        let t29 = t14 + Duration::from_secs(15);
        let Step::Update(taken) = e.decide(Some(&renewed), t29, Timestamp::UNIX_EPOCH) else {
            panic!("take")
        };
        assert_eq!((taken.holder.as_str(), taken.transitions), ("b", 4));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let t0 = Instant::now();
        let a = Elector::new("a", Timings::default());
        let released = a.release(&record("a"), Timestamp::UNIX_EPOCH).unwrap();
        assert!(released.holder.is_empty());
        assert!(a.release(&record("c"), Timestamp::UNIX_EPOCH).is_none());
        let mut b = Elector::new("b", Timings::default());
        assert!(matches!(
            b.decide(Some(&released), t0, Timestamp::UNIX_EPOCH),
            Step::Update(_)
        ));
    }

    #[test]
    fn a_paused_leader_is_fenced_before_anyone_can_take_over() {
        // The old leader renewed at t0; the other candidate saw that renewal no earlier.
        let t0 = Instant::now();
        let mut a = Elector::new("a", Timings::default());
        a.written(record("a"), t0, t0);
        let mut b = Elector::new("b", Timings::default());
        assert_eq!(
            b.decide(Some(&record("a")), t0, Timestamp::UNIX_EPOCH),
            Step::Wait
        );
        let takeover = t0 + Duration::from_secs(15);
        assert!(matches!(
            b.decide(Some(&record("a")), takeover, Timestamp::UNIX_EPOCH),
            Step::Update(_)
        ));
        // By then the old leader's fence has been shut for 5 s.
        assert!(!a.leading(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn finding_another_holder_while_leading_is_a_loss() {
        let t0 = Instant::now();
        let mut a = Elector::new("a", Timings::default());
        a.written(record("a"), t0, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            a.decide(Some(&record("b")), t1, Timestamp::UNIX_EPOCH),
            Step::Wait
        );
        assert!(a.lost(t1) && !a.leading(t1));
    }

    #[test]
    fn timings_are_checked() {
        assert!(Timings::default().validate().is_ok());
        let mut t = Timings::default();
        t.renew_deadline = t.lease_duration;
        assert!(t.validate().unwrap_err().contains("renew-deadline"));
        let mut t = Timings::default();
        t.retry_period = t.renew_deadline;
        assert!(t.validate().unwrap_err().contains("retry-period"));
        let t = Timings {
            lease_duration: Duration::from_millis(1500),
            ..Timings::default()
        };
        assert!(t.validate().unwrap_err().contains("whole number"));
    }
}
