//! Token buckets with an explicit clock: [`TokenBucket`] for one sender or a whole service,
//! and [`KeyedBuckets`], a bounded table of one bucket per key (a source address). The relay
//! rations handshake initiations with them, the operator the TokenReviews that metrics scrapes
//! cause. Pure: the caller passes `now`, so tests move time by hand.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// At most `per_second` events a second, in bursts of at most `burst`; starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Credit in nanoseconds of earning time.
    credit: u64,
    /// When the credit was last topped up.
    last: Instant,
    /// What one event costs.
    cost: u64,
    /// The most credit held (a full burst).
    max: u64,
}

impl TokenBucket {
    /// A full bucket. A rate or burst of 0 is taken as 1.
    pub fn new(per_second: u64, burst: u64, now: Instant) -> Self {
        let cost = NANOS_PER_SECOND / per_second.max(1);
        let max = cost.saturating_mul(burst.max(1));
        Self {
            credit: max,
            last: now,
            cost,
            max,
        }
    }

    fn top_up(&mut self, now: Instant) {
        let earned =
            u64::try_from(now.saturating_duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        self.credit = self.credit.saturating_add(earned).min(self.max);
        self.last = self.last.max(now);
    }

    /// Whether one more event may happen at `now` (and, if so, it is counted).
    pub fn allow(&mut self, now: Instant) -> bool {
        self.top_up(now);
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }

    /// When this bucket last saw an event or a refusal.
    pub fn last_seen(&self) -> Instant {
        self.last
    }
}

/// One [`TokenBucket`] per key, for at most `max_keys` keys: a new key past that is refused
/// (a flood of fresh keys cannot grow the table), until [`KeyedBuckets::forget_idle`] makes room.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    buckets: HashMap<K, TokenBucket>,
    per_second: u64,
    burst: u64,
    max_keys: usize,
}

impl<K: Eq + Hash> KeyedBuckets<K> {
    /// An empty table.
    pub fn new(per_second: u64, burst: u64, max_keys: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            per_second,
            burst,
            max_keys,
        }
    }

    /// Whether `key` may have one more event at `now`.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        let full = self.buckets.len() >= self.max_keys;
        let (per_second, burst) = (self.per_second, self.burst);
        match self.buckets.get_mut(&key) {
            Some(bucket) => bucket.allow(now),
            None if full => false,
            None => self
                .buckets
                .entry(key)
                .or_insert_with(|| TokenBucket::new(per_second, burst, now))
                .allow(now),
        }
    }

    /// Forgets keys not seen for `idle` (a bucket idle that long is full again, and costs nothing to re-create).
    pub fn forget_idle(&mut self, now: Instant, idle: Duration) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last_seen()) < idle);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 5, t0);
        assert_eq!((0..10).filter(|_| b.allow(t0)).count(), 5);
        // 50 ms earns one more.
        assert!(!b.allow(t0 + Duration::from_millis(49)));
        assert!(b.allow(t0 + Duration::from_millis(50)));
        // A long quiet refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.allow(later)).count(), 5);
    }

    #[test]
    fn a_clock_that_goes_back_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.allow(t0));
        assert!(!b.allow(t0.checked_sub(Duration::from_secs(5)).unwrap()));
        assert!(!b.allow(t0 + Duration::from_millis(999)));
        assert!(b.allow(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn zero_rates_are_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert!(b.allow(t0));
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_keys() {
        let t0 = Instant::now();
        let mut table = KeyedBuckets::new(1, 2, 3);
        for key in 0..3 {
            assert!(table.allow(key, t0));
        }
        assert!(!table.allow(99, t0), "a fourth key is refused");
        assert!(table.allow(0, t0), "known keys keep their burst");
        assert!(!table.allow(0, t0));
        assert_eq!(table.len(), 3);
        table.forget_idle(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert!(table.is_empty());
        assert!(table.allow(99, t0 + Duration::from_secs(2)));
    }
}
