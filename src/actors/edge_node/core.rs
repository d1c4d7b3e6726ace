//! The EdgeNode actor's decisions, sans-IO: when to run a pass, how bursts coalesce, and when
//! to look again. Events in, effects out; the actor shell turns effects into API calls, SSH
//! jobs and timers. Time is an input (delays are returned, never slept).
//!
//! - At most one pass runs at a time. Inputs that arrive while it runs only mark the node
//!   dirty; when it reports back, one more pass applies the latest state.
//! - A failed pass is retried with an exponential delay (reset by success).
//! - A pass that succeeded but left the node unhealthy (e.g. the uplinks have not shaken hands
//!   yet) is followed by a check soon, backing off while it stays unhealthy (from the start
//!   again after a pass that acted on the uplink pods itself); a healthy node waits for the
//!   drift timer.
//! - Every scheduled wake-up carries an epoch; a pass that starts makes older wake-ups stale.
//! - The SSH connection dropping between passes (the VPS went down, keepalives unanswered)
//!   runs a pass at once, so the loss shows in status now rather than at the drift pass;
//!   while failed passes are being retried, it changes nothing (the retry is on its way).
//! - An event of a source (a PortBinding or a LoadBalancer Service: changed, new, gone, moved
//!   here or away) runs a pass only when the running pass (or, when idle, the last one) did
//!   not read the source as it is now: the
//!   same change seen twice, or seen after the pass already read it, costs nothing. The actor
//!   starting runs its first pass once, whatever else arrives first. So start-up costs one pass
//!   per EdgeNode and a change of a source exactly one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::plan::SourceKey;

/// How the Manager saw one source of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// It points at this node, at this version (a PortBinding's generation, a Service's
    /// digest).
    Present(Option<i64>),
    /// It is gone, or points elsewhere now.
    Gone,
}

/// What happens to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The actor started: its first pass runs (once).
    Started,
    /// Something the node depends on changed (its spec, a Secret, a Service, a grant).
    Changed,
    /// A source of this node changed, appeared, went, or moved here or away.
    Source {
        /// The source.
        source: SourceKey,
        /// How it is now.
        seen: Seen,
    },
    /// The drift timer fired.
    DriftDue,
    /// A wake-up scheduled by [`Effect::WakeAfter`].
    WakeUp {
        /// The epoch it was scheduled with.
        epoch: u64,
    },
    /// The kept SSH connection to the VPS ended between passes.
    SessionLost,
    /// The running pass changed the uplink pods itself (it deleted one that blocked the
    /// rollout): the state moves on at once, so the next re-check comes soon again.
    Acted,
    /// The running pass finished.
    PassDone {
        /// It reached its end without an error.
        ok: bool,
        /// Everything reported healthy afterwards.
        healthy: bool,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Start a pass now.
    StartPass,
    /// Send `Event::WakeUp { epoch }` after this delay.
    WakeAfter {
        /// The delay.
        delay: Duration,
        /// The epoch to send back.
        epoch: u64,
    },
}

/// Delays of the retry and re-check schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// First retry after a failed pass.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// First re-check of an unhealthy node.
    pub recheck_min: Duration,
    /// Longest re-check delay.
    pub recheck_max: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            recheck_min: Duration::from_secs(3),
            recheck_max: Duration::from_secs(60),
        }
    }
}

/// The pass state of one EdgeNode.
#[derive(Debug, Clone, Default)]
pub struct EdgeNodeCore {
    schedule: Schedule,
    running: bool,
    dirty: bool,
    failures: u32,
    unhealthy: u32,
    epoch: u64,
    /// Passes started.
    passes: u64,
    /// The sources (and their versions) the running or last pass read.
    read: BTreeMap<SourceKey, Option<i64>>,
}

impl EdgeNodeCore {
    /// A node with no pass run yet.
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            ..Self::default()
        }
    }

    /// Whether a pass is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Consecutive failed passes.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Passes started so far.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// The running pass read these sources, at these versions.
    pub fn pass_read(&mut self, sources: BTreeMap<SourceKey, Option<i64>>) {
        self.read = sources;
    }

    /// Whether the running or last pass read the source as `seen` says it is now.
    pub fn covers(&self, key: &SourceKey, seen: Seen) -> bool {
        match seen {
            Seen::Present(generation) => self.read.get(key) == Some(&generation),
            Seen::Gone => !self.read.contains_key(key),
        }
    }

    /// Feeds one event.
    pub fn on(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Started if self.passes == 0 && !self.running => self.start(),
            Event::Source { source, seen } => {
                // Before the first pass, the first pass reads it anyway.
                if self.passes == 0 || self.covers(&source, seen) {
                    Vec::new()
                } else {
                    self.want_pass()
                }
            }
            // While failed passes are retried, a lost session is their own doing: no storm.
            Event::SessionLost if self.failures > 0 => Vec::new(),
            Event::Changed | Event::DriftDue | Event::SessionLost => self.want_pass(),
            Event::WakeUp { epoch } if epoch == self.epoch => self.want_pass(),
            Event::Started | Event::WakeUp { .. } => Vec::new(),
            Event::Acted => {
                self.unhealthy = 0;
                Vec::new()
            }
            Event::PassDone { ok, healthy } => {
                self.running = false;
                if ok {
                    self.failures = 0;
                    self.unhealthy = if healthy { 0 } else { self.unhealthy + 1 };
                } else {
                    self.failures += 1;
                }
                if self.dirty {
                    return self.start();
                }
                if !ok {
                    let delay = backoff(
                        self.schedule.retry_min,
                        self.schedule.retry_max,
                        self.failures,
                    );
                    return vec![self.wake_after(delay)];
                }
                if !healthy {
                    let delay = backoff(
                        self.schedule.recheck_min,
                        self.schedule.recheck_max,
                        self.unhealthy,
                    );
                    return vec![self.wake_after(delay)];
                }
                Vec::new()
            }
        }
    }

    fn want_pass(&mut self) -> Vec<Effect> {
        if self.running {
            self.dirty = true;
            Vec::new()
        } else {
            self.start()
        }
    }

    fn start(&mut self) -> Vec<Effect> {
        self.passes += 1;
        self.running = true;
        self.dirty = false;
        self.epoch += 1;
        vec![Effect::StartPass]
    }

    fn wake_after(&mut self, delay: Duration) -> Effect {
        self.epoch += 1;
        Effect::WakeAfter {
            delay,
            epoch: self.epoch,
        }
    }
}

/// `min · 2^(n-1)`, at most `max` (n ≥ 1).
pub fn backoff(min: Duration, max: Duration, n: u32) -> Duration {
    let exponent = n.saturating_sub(1).min(20);
    min.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_key(name: &str) -> SourceKey {
        SourceKey::port_binding(crate::object_key::ObjectKey::new("apps", name))
    }

    fn core() -> EdgeNodeCore {
        EdgeNodeCore::new(Schedule::default())
    }

    #[test]
    fn a_burst_during_a_pass_gives_one_more_pass() {
        let mut c = core();
        assert_eq!(c.on(Event::Changed), vec![Effect::StartPass]);
        for _ in 0..10 {
            assert!(c.on(Event::Changed).is_empty());
        }
        assert_eq!(
            c.on(Event::PassDone {
                ok: true,
                healthy: true
            }),
            vec![Effect::StartPass]
        );
        assert!(
            c.on(Event::PassDone {
                ok: true,
                healthy: true
            })
            .is_empty()
        );
        assert!(!c.is_running());
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let mut c = core();
        c.on(Event::Changed);
        let mut delays = Vec::new();
        for _ in 0..4 {
            let effects = c.on(Event::PassDone {
                ok: false,
                healthy: false,
            });
            let [Effect::WakeAfter { delay, epoch }] = effects[..] else {
                panic!("{effects:?}")
            };
            delays.push(delay);
            assert_eq!(c.on(Event::WakeUp { epoch }), vec![Effect::StartPass]);
        }
        assert_eq!(
            delays,
            [2, 4, 8, 16].map(Duration::from_secs).to_vec(),
            "exponential"
        );
        assert_eq!(c.failures(), 4);
        c.on(Event::PassDone {
            ok: true,
            healthy: true,
        });
        assert_eq!(c.failures(), 0);
    }

    #[test]
    fn an_unhealthy_node_is_rechecked_soon_and_a_healthy_one_is_left_alone() {
        let mut c = core();
        c.on(Event::Changed);
        let effects = c.on(Event::PassDone {
            ok: true,
            healthy: false,
        });
        assert!(matches!(
            effects[..],
            [Effect::WakeAfter { delay, .. }] if delay == Duration::from_secs(3)
        ));
        let Effect::WakeAfter { epoch, .. } = effects[0] else {
            unreachable!()
        };
        c.on(Event::WakeUp { epoch });
        let effects = c.on(Event::PassDone {
            ok: true,
            healthy: false,
        });
        assert!(matches!(
            effects[..],
            [Effect::WakeAfter { delay, .. }] if delay == Duration::from_secs(6)
        ));
    }

    #[test]
    fn a_pass_that_acted_on_the_pods_is_rechecked_soon_again() {
        let mut c = core();
        let delay_after = |c: &mut EdgeNodeCore, acted: bool| {
            c.on(Event::Changed);
            if acted {
                c.on(Event::Acted);
            }
            match c.on(Event::PassDone {
                ok: true,
                healthy: false,
            })[..]
            {
                [Effect::WakeAfter { delay, .. }] => delay,
                ref other => panic!("{other:?}"),
            }
        };
        assert_eq!(delay_after(&mut c, false), Duration::from_secs(3));
        assert_eq!(delay_after(&mut c, false), Duration::from_secs(6));
        assert_eq!(delay_after(&mut c, false), Duration::from_secs(12));
        assert_eq!(delay_after(&mut c, true), Duration::from_secs(3));
        assert_eq!(delay_after(&mut c, false), Duration::from_secs(6));
    }

    #[test]
    fn a_wake_up_from_before_a_newer_pass_is_stale() {
        let mut c = core();
        c.on(Event::Changed);
        let effects = c.on(Event::PassDone {
            ok: false,
            healthy: false,
        });
        let [Effect::WakeAfter { epoch: old, .. }] = effects[..] else {
            panic!()
        };
        // A change starts a pass before the retry fires: the retry is now stale.
        assert_eq!(c.on(Event::Changed), vec![Effect::StartPass]);
        c.on(Event::PassDone {
            ok: true,
            healthy: true,
        });
        assert!(c.on(Event::WakeUp { epoch: old }).is_empty());
        assert!(!c.is_running());
    }

    #[test]
    fn a_lost_session_runs_a_pass_unless_retries_are_already_scheduled() {
        let mut c = core();
        c.on(Event::Changed);
        c.on(Event::PassDone {
            ok: true,
            healthy: true,
        });
        assert_eq!(c.on(Event::SessionLost), vec![Effect::StartPass]);
        let effects = c.on(Event::PassDone {
            ok: false,
            healthy: false,
        });
        let [Effect::WakeAfter { epoch, .. }] = effects[..] else {
            panic!("{effects:?}")
        };
        // The failed pass's own reconnect attempts end connections too: no pass storm.
        assert!(c.on(Event::SessionLost).is_empty());
        assert_eq!(c.on(Event::WakeUp { epoch }), vec![Effect::StartPass]);
        // During a pass it only marks the node dirty.
        assert!(c.on(Event::SessionLost).is_empty());
        assert_eq!(
            c.on(Event::PassDone {
                ok: false,
                healthy: false
            })
            .len(),
            1,
            "the loss during the pass does not add a pass on top of the retry"
        );
    }

    fn read(pbs: &[(&str, i64)]) -> BTreeMap<SourceKey, Option<i64>> {
        pbs.iter()
            .map(|(name, g)| (pb_key(name), Some(*g)))
            .collect()
    }

    fn pb(name: &str, seen: Seen) -> Event {
        Event::Source {
            source: pb_key(name),
            seen,
        }
    }

    const DONE: Event = Event::PassDone {
        ok: true,
        healthy: true,
    };

    #[test]
    fn start_up_is_one_pass_whatever_arrives_first() {
        let mut c = core();
        // The Manager's first sight of a PortBinding may reach the actor before its own start.
        assert!(c.on(pb("web", Seen::Present(Some(1)))).is_empty());
        assert_eq!(c.on(Event::Started), vec![Effect::StartPass]);
        c.pass_read(read(&[("web", 1), ("db", 3)]));
        assert!(c.on(pb("db", Seen::Present(Some(3)))).is_empty());
        assert!(c.on(DONE).is_empty(), "nothing new: no second pass");
        assert!(c.on(Event::Started).is_empty(), "a pass ran already");
        assert_eq!(c.passes(), 1);
    }

    #[test]
    fn a_port_binding_change_is_exactly_one_pass() {
        let mut c = core();
        c.on(Event::Started);
        c.pass_read(read(&[("web", 1)]));
        c.on(DONE);
        // The same generation again (a relist, a status write): nothing.
        assert!(c.on(pb("web", Seen::Present(Some(1)))).is_empty());
        // A new generation: one pass, which reads it.
        assert_eq!(
            c.on(pb("web", Seen::Present(Some(2)))),
            vec![Effect::StartPass]
        );
        c.pass_read(read(&[("web", 2)]));
        // Seen again while that pass runs: it is already read.
        assert!(c.on(pb("web", Seen::Present(Some(2)))).is_empty());
        assert!(c.on(DONE).is_empty());
        assert_eq!(c.passes(), 2);
    }

    #[test]
    fn a_change_the_running_pass_did_not_read_gives_one_more() {
        let mut c = core();
        c.on(Event::Started);
        c.pass_read(read(&[("web", 1)]));
        assert!(c.on(pb("web", Seen::Present(Some(2)))).is_empty());
        assert!(c.on(pb("new", Seen::Present(Some(1)))).is_empty());
        assert_eq!(c.on(DONE), vec![Effect::StartPass], "one more, for both");
    }

    #[test]
    fn a_deletion_or_a_move_away_is_a_pass_only_when_the_node_served_it() {
        let mut c = core();
        c.on(Event::Started);
        c.pass_read(read(&[("web", 1)]));
        c.on(DONE);
        assert!(
            c.on(pb("never-here", Seen::Gone)).is_empty(),
            "not read by the last pass: nothing to close"
        );
        assert_eq!(c.on(pb("web", Seen::Gone)), vec![Effect::StartPass]);
        c.pass_read(read(&[]));
        assert!(c.on(pb("web", Seen::Gone)).is_empty());
    }

    #[test]
    fn drift_runs_a_pass_only_when_idle() {
        let mut c = core();
        assert_eq!(c.on(Event::DriftDue), vec![Effect::StartPass]);
        assert!(c.on(Event::DriftDue).is_empty());
        assert_eq!(
            c.on(Event::PassDone {
                ok: true,
                healthy: true
            }),
            vec![Effect::StartPass]
        );
    }
}
