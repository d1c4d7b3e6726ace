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

/// A seed for [`jitter`] that differs between calls and between processes (std's randomly
/// keyed hasher: no extra crate, and not the process ID, which is 1 in every container).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos())),
    );
    hasher.finish()
}

/// Adds up to ±20 % of jitter to `delay`, from `seed` (so tests can pin it).
pub fn jitter(delay: Duration, seed: u64) -> Duration {
    let permille = 800 + (seed % 401);
    delay.saturating_mul(u32::try_from(permille).unwrap_or(1000)) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_seeds_spread_the_jitter() {
        let spread: std::collections::BTreeSet<Duration> = (0..32)
            .map(|_| jitter(Duration::from_secs(10), random_seed()))
            .collect();
        assert!(spread.len() > 8, "{spread:?}");
        assert!(
            spread
                .iter()
                .all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(12))
        );
    }

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

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let d = Duration::from_secs(10);
        for seed in 0..1000 {
            let j = jitter(d, seed);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}
