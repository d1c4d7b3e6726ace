//! Bounded waiting: every wait in the tests has a deadline and says what it waited for.

use std::time::{Duration, Instant};

/// How often [`wait_until`] checks.
pub const POLL: Duration = Duration::from_millis(200);

/// Checks `f` every `every` until it holds (`true`) or `timeout` has passed (`false`).
pub fn poll(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Waits until `f` holds, checking every [`POLL`]; fails the test with `what` after
/// `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(poll(timeout, POLL, f), "timed out waiting for {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_true_or_the_deadline() {
        let mut calls = 0;
        assert!(poll(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                calls == 3
            }
        ));
        assert_eq!(calls, 3);
        assert!(!poll(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || false
        ));
    }
}
