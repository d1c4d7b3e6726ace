//! The write fence: every request of the actor tree that changes something in the API server
//! (any method but GET and HEAD: status, finalizers, the uplink workload, Events) passes here,
//! and is refused in the process, before it leaves, unless leader election says this process
//! still holds the Lease by its own monotonic clock ([`crate::leader::elector`]). A leader that was
//! paused past its renew deadline and comes back therefore writes nothing, even in the moments
//! before its election loop notices it lost.
//!
//! A tower layer on the tree's [`kube::Client`]: one place, no write site can forget it. The
//! Lease itself and the metrics server's TokenReviews use a client without the fence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, Request};
use kube::client::Body;

/// A write refused because the Lease may be held by someone else.
#[derive(Debug, thiserror::Error)]
#[error(
    "not the leader (the Lease was not renewed within the renew deadline): {method} {path} refused"
)]
pub struct FenceError {
    method: Method,
    path: String,
}

impl FenceError {
    /// A stable label.
    pub fn category(&self) -> &'static str {
        "NotLeader"
    }
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Milliseconds after `origin` until which writes pass; `u64::MAX`: always (no election).
    until_ms: AtomicU64,
}

/// Whether writes may go out now; cheap to clone and to check.
#[derive(Debug, Clone)]
pub struct Fence(Arc<Inner>);

impl Fence {
    /// Shut until [`Fence::open_until`] is called.
    pub fn shut() -> Self {
        Self(Arc::new(Inner {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
        }))
    }

    /// Always open (`--leader-elect=false`).
    pub fn always_open() -> Self {
        Self(Arc::new(Inner {
            origin: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
        }))
    }

    /// Writes pass until `until`.
    pub fn open_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.0.origin).as_millis();
        self.0
            .until_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Ordering::SeqCst);
    }

    /// No write passes from now on.
    pub fn close(&self) {
        self.0.until_ms.store(0, Ordering::SeqCst);
    }

    /// Whether a write may go out at `now`.
    pub fn allows_at(&self, now: Instant) -> bool {
        let until = self.0.until_ms.load(Ordering::SeqCst);
        if until == u64::MAX {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.0.origin).as_millis();
        u128::from(until) > elapsed
    }

    /// Whether a write may go out now.
    pub fn allows(&self) -> bool {
        self.allows_at(Instant::now())
    }

    /// Passes reads; refuses writes when shut.
    pub fn check(&self, request: Request<Body>) -> Result<Request<Body>, FenceError> {
        if matches!(*request.method(), Method::GET | Method::HEAD) || self.allows() {
            Ok(request)
        } else {
            Err(FenceError {
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            })
        }
    }

    /// A client on `config` whose writes pass this fence.
    pub fn client(&self, config: kube::Config) -> Result<kube::Client, kube::Error> {
        let fence = self.clone();
        let layer = tower::filter::FilterLayer::new(move |request: Request<Body>| {
            fence
                .check(request)
                .map_err(|e| -> tower::BoxError { Box::new(e) })
        });
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(method: Method) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri("/apis/x")
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn reads_always_pass_writes_only_while_open() {
        let fence = Fence::shut();
        assert!(fence.check(request(Method::GET)).is_ok());
        let refused = fence.check(request(Method::PATCH)).unwrap_err();
        assert_eq!(refused.category(), "NotLeader");
        assert!(refused.to_string().contains("PATCH /apis/x"));
        let now = Instant::now();
        fence.open_until(now + Duration::from_secs(10));
        assert!(fence.check(request(Method::POST)).is_ok());
        assert!(!fence.allows_at(now + Duration::from_secs(11)));
        fence.close();
        assert!(fence.check(request(Method::PUT)).is_err());
        assert!(Fence::always_open().allows_at(now + Duration::from_secs(1_000_000)));
    }
}
