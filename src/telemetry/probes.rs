//! The operator's liveness/readiness endpoint (`/healthz`, `/readyz`), served by the same
//! bounded HTTP server as the uplinks' `/ready` ([`uplink::http`]: hyper, read timeouts,
//! bounded connections and header size, an accept error backs off instead of spinning).
//!
//! `/readyz` is whatever the `ready` flag says: the caller sets it when the watches are
//! synced and clears it when they fail. `/healthz` is 200 while the process serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tunnel_probe::{Handler, Limits, Reply};

/// What a probe path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: the process is alive.
    Live,
    /// `/readyz`: the operator is connected and watching.
    Ready,
    /// Anything else.
    Unknown,
}

/// The probe a path asks for.
pub fn probe_of(path: &str) -> Probe {
    match path {
        "/healthz" => Probe::Live,
        "/readyz" => Probe::Ready,
        _ => Probe::Unknown,
    }
}

/// The reply to a probe, given readiness.
pub fn reply(probe: &Probe, ready: bool) -> Reply {
    match (probe, ready) {
        (Probe::Live, _) | (Probe::Ready, true) => Reply::text(200, "ok\n"),
        (Probe::Ready, false) => Reply::text(503, "not ready\n"),
        (Probe::Unknown, _) => Reply::not_found(),
    }
}

/// Answers from the readiness flag.
#[derive(Debug)]
struct Probes {
    ready: Arc<AtomicBool>,
}

impl Handler for Probes {
    fn get(&self, path: &str, _query: Option<&str>) -> Reply {
        reply(&probe_of(path), self.ready.load(Ordering::Relaxed))
    }
}

/// Serves probes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>) {
    tunnel_probe::serve(listener, Arc::new(Probes { ready }), Limits::default()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_probes() {
        assert_eq!(probe_of("/healthz"), Probe::Live);
        assert_eq!(probe_of("/readyz"), Probe::Ready);
        assert_eq!(probe_of("/"), Probe::Unknown);
        assert_eq!(reply(&Probe::Ready, false).status, 503);
        assert_eq!(reply(&Probe::Ready, true).status, 200);
        assert_eq!(reply(&Probe::Live, false).status, 200);
        assert_eq!(reply(&Probe::Unknown, true).status, 404);
    }
}
