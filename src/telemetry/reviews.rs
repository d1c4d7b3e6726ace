//! What a metrics scrape may cost the API server. Every token the cache does not know costs a
//! TokenReview (and, when it authenticates, a SubjectAccessReview) under the operator's own
//! identity, so on the same API priority flow as its Lease renewals. The ledger bounds that:
//!
//! - a token that cannot be a bearer token (longer than [`MAX_TOKEN_LEN`], or not the RFC 6750
//!   `token68` alphabet) is refused without a review;
//! - reviews are rationed: [`REVIEWS_PER_SECOND`] in all (bursts of [`REVIEW_BURST`]), and
//!   [`SOURCE_REVIEWS_PER_SECOND`] per source address (bursts of [`SOURCE_REVIEW_BURST`]);
//!   past either the scrape gets 429;
//! - a token allowed before keeps being allowed for [`STALE_GRACE`] after its verdict expired
//!   while reviews are rationed, so a flood does not cut Prometheus off;
//! - the verdict cache holds [`CACHE_LIMIT`] entries and, when full, drops the expired ones and
//!   then those closest to expiry (one flood cannot flush Prometheus's entry).
//!
//! Pure: the caller passes `now` and the token's digest (never the token).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tunnel_contract::rate::{KeyedBuckets, TokenBucket};

/// The longest bearer token reviewed (ServiceAccount tokens are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Reviews a second, for all scrapers together.
pub const REVIEWS_PER_SECOND: u64 = 5;
/// Reviews at once, for all scrapers together.
pub const REVIEW_BURST: u64 = 10;
/// Reviews a second for one source address.
pub const SOURCE_REVIEWS_PER_SECOND: u64 = 1;
/// Reviews at once for one source address.
pub const SOURCE_REVIEW_BURST: u64 = 3;
/// Source addresses tracked at once; a new one past it is rationed with the rest.
pub const MAX_SOURCES: usize = 1024;
/// Verdicts cached at once.
pub const CACHE_LIMIT: usize = 1024;
/// How long an allowed verdict holds.
pub const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refusal holds.
pub const REFUSED_TTL: Duration = Duration::from_secs(10);
/// How long past its expiry an allowed verdict is still used while reviews are rationed.
pub const STALE_GRACE: Duration = Duration::from_secs(60);

/// What a scrape's token is allowed, as the API server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and allowed `get` on `/metrics`.
    Allowed,
    /// Not authenticated: 401.
    Unauthenticated,
    /// Authenticated, not allowed: 403.
    Forbidden,
}

/// What to do with a scrape's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer with this verdict, no review.
    Known(Verdict),
    /// Ask the API server, then [`ReviewLedger::record`] the answer.
    Review,
    /// Too many reviews right now: 429.
    Busy,
}

/// Whether `token` can be a bearer token at all (RFC 6750 `b64token`, bounded length).
pub fn plausible(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The verdict cache and the review rations.
#[derive(Debug)]
pub struct ReviewLedger {
    /// Token digest → (verdict, until when it holds).
    verdicts: HashMap<String, (Verdict, Instant)>,
    all: TokenBucket,
    sources: KeyedBuckets<IpAddr>,
}

impl ReviewLedger {
    /// An empty ledger with full rations.
    pub fn new(now: Instant) -> Self {
        Self {
            verdicts: HashMap::new(),
            all: TokenBucket::new(REVIEWS_PER_SECOND, REVIEW_BURST, now),
            sources: KeyedBuckets::new(SOURCE_REVIEWS_PER_SECOND, SOURCE_REVIEW_BURST, MAX_SOURCES),
        }
    }

    /// What to do with the token whose digest is `digest`, from `source`, at `now`.
    pub fn decide(&mut self, digest: &str, source: IpAddr, now: Instant) -> Decision {
        let known = self.verdicts.get(digest).copied();
        if let Some((verdict, until)) = known
            && now < until
        {
            return Decision::Known(verdict);
        }
        self.sources.forget_idle(now, Duration::from_secs(10));
        if self.sources.allow(source, now) && self.all.allow(now) {
            return Decision::Review;
        }
        match known {
            Some((Verdict::Allowed, until)) if now < until + STALE_GRACE => {
                Decision::Known(Verdict::Allowed)
            }
            _ => Decision::Busy,
        }
    }

    /// The API server's `verdict` on the token whose digest is `digest`.
    pub fn record(&mut self, digest: String, verdict: Verdict, now: Instant) {
        let ttl = if verdict == Verdict::Allowed {
            ALLOWED_TTL
        } else {
            REFUSED_TTL
        };
        if !self.verdicts.contains_key(&digest) && self.verdicts.len() >= CACHE_LIMIT {
            self.verdicts.retain(|_, (v, until)| {
                let grace = if *v == Verdict::Allowed {
                    STALE_GRACE
                } else {
                    Duration::ZERO
                };
                now < *until + grace
            });
            while self.verdicts.len() >= CACHE_LIMIT {
                let Some(soonest) = self
                    .verdicts
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.verdicts.remove(&soonest);
            }
        }
        self.verdicts.insert(digest, (verdict, now + ttl));
    }

    /// Verdicts cached.
    pub fn cached(&self) -> usize {
        self.verdicts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn only_bearer_shaped_tokens_are_reviewed() {
        assert!(plausible("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(plausible("abcdef.0123456789abcdef"));
        assert!(plausible("dG9rZW4="));
        assert!(!plausible(""));
        assert!(!plausible("=="));
        assert!(!plausible("a b"));
        assert!(!plausible("tok\u{e9}n"));
        assert!(!plausible("a\"b"));
        assert!(plausible(&"a".repeat(MAX_TOKEN_LEN)));
        assert!(!plausible(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }

    #[test]
    fn a_flood_of_fresh_tokens_from_one_source_gets_its_share() {
        let t0 = Instant::now();
        let mut ledger = ReviewLedger::new(t0);
        let reviews = (0..100)
            .filter(|n| ledger.decide(&format!("d{n}"), ip(1), t0) == Decision::Review)
            .count();
        assert_eq!(reviews, usize::try_from(SOURCE_REVIEW_BURST).unwrap());
        // Another source still gets reviews, within the global burst.
        assert_eq!(ledger.decide("other", ip(2), t0), Decision::Review);
        // A second later the flooder has one more.
        let t1 = t0 + Duration::from_secs(1);
        let reviews = (100..200)
            .filter(|n| ledger.decide(&format!("d{n}"), ip(1), t1) == Decision::Review)
            .count();
        assert_eq!(reviews, 1);
    }

    #[test]
    fn many_sources_together_get_the_global_ration() {
        let t0 = Instant::now();
        let mut ledger = ReviewLedger::new(t0);
        let reviews = (0..200u8)
            .filter(|n| ledger.decide(&format!("d{n}"), ip(*n), t0) == Decision::Review)
            .count();
        assert_eq!(reviews, usize::try_from(REVIEW_BURST).unwrap());
        let t1 = t0 + Duration::from_secs(2);
        let reviews = (0..200u8)
            .filter(|n| ledger.decide(&format!("e{n}"), ip(*n), t1) == Decision::Review)
            .count();
        assert_eq!(reviews, usize::try_from(2 * REVIEWS_PER_SECOND).unwrap());
    }

    #[test]
    fn known_verdicts_cost_nothing_and_an_allowed_one_outlives_a_flood() {
        let t0 = Instant::now();
        let mut ledger = ReviewLedger::new(t0);
        assert_eq!(ledger.decide("prom", ip(1), t0), Decision::Review);
        ledger.record("prom".into(), Verdict::Allowed, t0);
        assert_eq!(ledger.decide("bad", ip(1), t0), Decision::Review);
        ledger.record("bad".into(), Verdict::Unauthenticated, t0);
        for _ in 0..50 {
            assert_eq!(
                ledger.decide("prom", ip(1), t0),
                Decision::Known(Verdict::Allowed)
            );
        }
        // Expired, and the flooder from the same address used up the rations.
        let t1 = t0 + ALLOWED_TTL + Duration::from_secs(1);
        while ledger.decide(&format!("x{}", ledger.cached()), ip(1), t1) == Decision::Review {
            let n = ledger.cached();
            ledger.record(format!("x{n}"), Verdict::Unauthenticated, t1);
        }
        assert_eq!(
            ledger.decide("prom", ip(1), t1),
            Decision::Known(Verdict::Allowed),
            "within the grace"
        );
        assert_eq!(ledger.decide("bad", ip(1), t1), Decision::Busy);
        let t2 = t1 + STALE_GRACE;
        let mut flood = 0;
        while ledger.decide(&format!("y{flood}"), ip(1), t2) == Decision::Review {
            flood += 1;
        }
        assert_eq!(
            ledger.decide("prom", ip(1), t2),
            Decision::Busy,
            "past the grace it is reviewed again"
        );
    }

    #[test]
    fn a_full_cache_keeps_the_entries_that_live_longest() {
        let t0 = Instant::now();
        let mut ledger = ReviewLedger::new(t0);
        ledger.record("prom".into(), Verdict::Allowed, t0);
        for n in 0..3 * CACHE_LIMIT {
            ledger.record(format!("r{n}"), Verdict::Unauthenticated, t0);
        }
        assert!(ledger.cached() <= CACHE_LIMIT);
        assert_eq!(
            ledger.decide("prom", ip(1), t0),
            Decision::Known(Verdict::Allowed),
            "a flood of refused tokens does not evict the allowed one"
        );
    }
}
