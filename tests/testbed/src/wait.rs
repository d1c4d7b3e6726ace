//! Bounded waiting: every wait in the tests has a deadline and says what it waited for
//! ([`wait_until`] for a check, [`eventually`] for an async one that yields a value).

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

/// Waits (checking every 500 ms) until `f` gives `Some`, and returns it; fails the test after
/// `timeout` with `what` and what `describe` gives then (logs, say).
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
