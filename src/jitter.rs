//! Jitter for retry delays: up to ±20 % of a delay, from a seed that is really random (std's
//! randomly keyed hasher), so processes and actors that failed together (a provider outage, a
//! restarted control plane) do not retry in lockstep. Tests pin the seed.

use std::time::Duration;

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
