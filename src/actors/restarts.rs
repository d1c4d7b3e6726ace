//! The restart policy of our supervisors, pure (an explicit `now`): a failed child is
//! restarted after an exponential delay, within a budget of restarts per window; past the
//! budget it is parked until its object changes or a long cool-down passes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The knobs of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`.
    pub budget: usize,
    /// The window the budget counts over.
    pub window: Duration,
    /// Delay before the first restart.
    pub min_delay: Duration,
    /// Longest delay between restarts.
    pub max_delay: Duration,
    /// How long a parked child waits before it is tried again on its own.
    pub cool_down: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            budget: 5,
            window: Duration::from_secs(600),
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            cool_down: Duration::from_secs(1800),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Restart after this delay (before jitter).
    Restart(Duration),
    /// The budget is spent: park the child, and try again after this cool-down.
    Park(Duration),
}

/// One child's recent failures.
#[derive(Debug, Clone, Default)]
pub struct RestartBudget {
    failures: VecDeque<Instant>,
    parked: bool,
}

impl RestartBudget {
    /// Records a failure at `now` and decides.
    pub fn failed(&mut self, policy: &RestartPolicy, now: Instant) -> AfterFailure {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() > policy.budget {
            self.parked = true;
            return AfterFailure::Park(policy.cool_down);
        }
        let exponent = u32::try_from(self.failures.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let delay = policy
            .min_delay
            .saturating_mul(2u32.saturating_pow(exponent.min(20)))
            .min(policy.max_delay);
        AfterFailure::Restart(delay)
    }

    /// Whether the child is parked.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// The object changed, or the cool-down passed: give the child a fresh budget.
    pub fn unpark(&mut self) {
        self.parked = false;
        self.failures.clear();
    }

    /// Restarts counted in the current window.
    pub fn recent(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_the_child_is_parked() {
        let policy = RestartPolicy::default();
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        let delays: Vec<AfterFailure> = (0..6)
            .map(|i| budget.failed(&policy, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(
            delays[..5],
            [
                AfterFailure::Restart(Duration::from_millis(500)),
                AfterFailure::Restart(Duration::from_secs(1)),
                AfterFailure::Restart(Duration::from_secs(2)),
                AfterFailure::Restart(Duration::from_secs(4)),
                AfterFailure::Restart(Duration::from_secs(8)),
            ]
        );
        assert_eq!(delays[5], AfterFailure::Park(policy.cool_down));
        assert!(budget.is_parked());
        budget.unpark();
        assert!(!budget.is_parked());
        assert_eq!(
            budget.failed(&policy, t0 + Duration::from_secs(7)),
            AfterFailure::Restart(Duration::from_millis(500))
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let policy = RestartPolicy::default();
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        for i in 0..5 {
            budget.failed(&policy, t0 + Duration::from_secs(i));
        }
        // Eleven minutes later the five old failures no longer count.
        let later = t0 + Duration::from_secs(660);
        assert_eq!(
            budget.failed(&policy, later),
            AfterFailure::Restart(Duration::from_millis(500))
        );
        assert_eq!(budget.recent(), 1);
    }

    #[test]
    fn delays_stop_at_the_maximum() {
        let policy = RestartPolicy {
            budget: 100,
            ..RestartPolicy::default()
        };
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        let last = (0..40)
            .map(|i| budget.failed(&policy, t0 + Duration::from_millis(i)))
            .last();
        assert_eq!(last, Some(AfterFailure::Restart(policy.max_delay)));
    }
}
