//! The check of an edge from outside, damped, pure: a run of probe results (did every served
//! public port of the VPS accept a connection?) becomes the edge's [`Outside`] verdict.
//!
//! - Down after [`FALL`] failed probes in a row: with a probe every [`PROBE_INTERVAL_SECS`]
//!   seconds and a [`PROBE_TIMEOUT_SECS`] second connect timeout, a VPS that dies is out of the
//!   published addresses within `FALL × interval + timeout` = 5 s of its first missed probe
//!   (the bound is 10 s).
//! - Up after [`RISE`] good probes in a row, doubled for every time it went down within the
//!   last [`FLAP_WINDOW_SECS`], up to [`MAX_RISE`]: an edge that flaps comes back more slowly
//!   each time instead of moving DNS at every swing.
//! - The first probe decides at once (an edge starts [`Outside::Unknown`], which publishes).

use std::collections::VecDeque;

use super::edge_set::Outside;

/// Seconds between probes.
pub const PROBE_INTERVAL_SECS: u64 = 2;
/// Seconds a probe's connect may take.
pub const PROBE_TIMEOUT_SECS: u64 = 1;
/// Failed probes in a row that take an edge down.
pub const FALL: u32 = 2;
/// Good probes in a row that bring an edge back (before the flap penalty).
pub const RISE: u32 = 3;
/// The most good probes ever asked for (60 s at one probe every 2 s).
pub const MAX_RISE: u32 = 30;
/// How long a fall counts toward the flap penalty.
pub const FLAP_WINDOW_SECS: u64 = 600;

/// One edge's damped verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeHealth {
    verdict: Outside,
    good_run: u32,
    bad_run: u32,
    /// When it went down (seconds), within the flap window.
    falls: VecDeque<u64>,
}

impl EdgeHealth {
    /// The verdict now.
    pub fn verdict(&self) -> Outside {
        self.verdict
    }

    /// Good probes in a row needed to come back now.
    pub fn rise_needed(&self) -> u32 {
        let falls = u32::try_from(self.falls.len()).unwrap_or(u32::MAX);
        // The first fall costs nothing extra; each further one doubles.
        let doublings = falls.saturating_sub(1).min(8);
        RISE.saturating_mul(1 << doublings).min(MAX_RISE)
    }

    /// A probe at `now` (seconds, monotonic) found every port answering (`ok`) or not; the new
    /// verdict when it changed.
    pub fn observe(&mut self, ok: bool, now: u64) -> Option<Outside> {
        while self
            .falls
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > FLAP_WINDOW_SECS)
        {
            self.falls.pop_front();
        }
        if ok {
            self.good_run = self.good_run.saturating_add(1);
            self.bad_run = 0;
        } else {
            self.bad_run = self.bad_run.saturating_add(1);
            self.good_run = 0;
        }
        let next = match self.verdict {
            Outside::Unknown if ok => Outside::Healthy,
            Outside::Unknown | Outside::Healthy if self.bad_run >= FALL => Outside::Unhealthy,
            Outside::Unhealthy if self.good_run >= self.rise_needed() => Outside::Healthy,
            same => same,
        };
        if next == self.verdict {
            return None;
        }
        if next == Outside::Unhealthy {
            self.falls.push_back(now);
        }
        self.verdict = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `results` one probe interval apart from `start`; the verdict after each.
    fn run(h: &mut EdgeHealth, start: u64, results: &[bool]) -> Vec<Outside> {
        results
            .iter()
            .enumerate()
            .map(|(i, ok)| {
                h.observe(*ok, start + i as u64 * PROBE_INTERVAL_SECS);
                h.verdict()
            })
            .collect()
    }

    #[test]
    fn the_first_good_probe_decides_and_two_bad_ones_take_it_down() {
        let mut h = EdgeHealth::default();
        assert_eq!(h.verdict(), Outside::Unknown);
        assert_eq!(h.observe(true, 0), Some(Outside::Healthy));
        assert_eq!(h.observe(false, 2), None, "one miss is not enough");
        assert_eq!(h.observe(false, 4), Some(Outside::Unhealthy));
        assert!(u64::from(FALL) * PROBE_INTERVAL_SECS + PROBE_TIMEOUT_SECS <= 10);
    }

    #[test]
    fn it_comes_back_after_enough_good_probes_and_a_flapping_edge_waits_longer() {
        let mut h = EdgeHealth::default();
        run(&mut h, 0, &[true, false, false]);
        assert_eq!(h.verdict(), Outside::Unhealthy);
        let back = run(&mut h, 10, &[true; 3]);
        assert_eq!(
            back,
            [Outside::Unhealthy, Outside::Unhealthy, Outside::Healthy]
        );
        // Down again within the window: twice the good probes.
        run(&mut h, 20, &[false, false]);
        assert_eq!(h.rise_needed(), 2 * RISE);
        let second = run(&mut h, 30, &[true; 6]);
        assert_eq!(second.iter().filter(|v| **v == Outside::Healthy).count(), 1);
        let mut t = 100;
        for _ in 0..6 {
            run(&mut h, t, &[false, false]);
            let needed = h.rise_needed() as usize;
            run(&mut h, t + 10, &vec![true; needed]);
            assert_eq!(h.verdict(), Outside::Healthy);
            t += 10 + 2 * needed as u64;
        }
        assert_eq!(h.rise_needed(), MAX_RISE, "capped");
        // Long after the last fall, the penalty is gone.
        h.observe(true, t + FLAP_WINDOW_SECS + 1);
        assert_eq!(h.rise_needed(), RISE);
    }

    #[test]
    fn a_bad_probe_resets_the_good_run() {
        let mut h = EdgeHealth::default();
        run(&mut h, 0, &[false, false]);
        let v = run(&mut h, 10, &[true, true, false, true, true]);
        assert!(v.iter().all(|v| *v == Outside::Unhealthy), "{v:?}");
    }
}
