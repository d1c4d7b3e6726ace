//! The small HTTP endpoints of every Tunnel process (the uplink's `/ready`, `/healthz` and
//! `/status` on :40500, the operator's `/healthz` and `/readyz`): hyper's HTTP/1.1 server
//! with the bounds a hostile client on the tunnel or in the cluster cannot get around.
//!
//! - Request heads are bounded: [`Limits::max_header_bytes`] (request line and headers, 431
//!   past it) and [`Limits::max_headers`]; the read buffer never grows past hyper's minimum.
//! - Time is bounded: the whole head must arrive within [`Limits::header_read_timeout`] (a
//!   slowloris trickling one byte a second is cut), and a connection lives at most
//!   [`Limits::connection_timeout`] (a client that never reads its answer is cut too).
//! - Connections are bounded: at most [`Limits::max_connections`] at once, and at most
//!   [`Limits::max_per_source`] from one address, so one noisy client cannot starve the
//!   kubelet's or Envoy's probes; a connection over a bound is closed at once.
//! - One request per connection (no keep-alive); only GET and HEAD (405 otherwise); bodies
//!   are never read. An accept error (e.g. out of file descriptors) backs off instead of
//!   spinning.
//!
//! The [`Handler`] answers from memory only: it runs on the server's runtime and must never
//! wait on I/O or on a lock held across I/O (the uplink answers from a published snapshot).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Pause after a failed `accept` (EMFILE and the like) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A `text/plain` reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// An `application/json` 200 reply.
    pub fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::text(404, "not found\n")
    }
}

/// What the server answers with.
pub trait Handler: Send + Sync + 'static {
    /// The reply to a GET (or HEAD) of `path` with `query` (what follows `?`, if anything).
    /// Must answer from memory, without blocking.
    fn get(&self, path: &str, query: Option<&str>) -> Reply;
}

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one source address.
    pub max_per_source: usize,
    /// Time for the whole request head to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may live, answer included.
    pub connection_timeout: Duration,
    /// Bytes of request line and headers.
    pub max_header_bytes: usize,
    /// Number of headers.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            max_per_source: 16,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
            max_header_bytes: 8192,
            max_headers: 32,
        }
    }
}

/// Connections currently served, in total and per source.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A held connection slot, given back on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<Mutex<Slots>>,
    source: IpAddr,
}

impl Slot {
    fn take(slots: &Arc<Mutex<Slots>>, source: IpAddr, limits: &Limits) -> Option<Self> {
        let mut s = slots.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = s.per_source.get(&source).copied().unwrap_or(0);
        if s.total >= limits.max_connections || from_source >= limits.max_per_source {
            return None;
        }
        s.total += 1;
        s.per_source.insert(source, from_source + 1);
        Some(Self {
            slots: Arc::clone(slots),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_source.remove(&self.source);
            }
        }
    }
}

/// The response to one request.
fn respond<H: Handler + ?Sized>(handler: &H, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = if req.method() == Method::GET || req.method() == Method::HEAD {
        handler.get(req.uri().path(), req.uri().query())
    } else {
        Reply::text(405, "method not allowed\n")
    };
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(reply.body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    headers.insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    response
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve<H: Handler + ?Sized>(listener: TcpListener, handler: Arc<H>, limits: Limits) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(false);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "http accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&slots, peer.ip(), &limits) else {
            tracing::debug!(peer = %peer, "http connection over the limit, closed");
            drop(stream);
            continue;
        };
        let handler = Arc::clone(&handler);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(&*handler, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "http connection"),
                Err(_) => tracing::debug!(peer = %peer, "http connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Serves `handler` on a thread of its own (with its own small runtime) until the process
/// ends: for the agents, whose main loops are not async.
pub fn spawn<H: Handler>(
    listener: std::net::TcpListener,
    handler: H,
    limits: Limits,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, Arc::new(handler), limits).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve http"),
                }
            });
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_total_and_per_source() {
        let limits = Limits {
            max_connections: 3,
            max_per_source: 2,
            ..Limits::default()
        };
        let slots = Arc::new(Mutex::new(Slots::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = Slot::take(&slots, a, &limits).unwrap();
        let a2 = Slot::take(&slots, a, &limits).unwrap();
        assert!(Slot::take(&slots, a, &limits).is_none(), "per source");
        let _b1 = Slot::take(&slots, b, &limits).unwrap();
        assert!(Slot::take(&slots, b, &limits).is_none(), "in total");
        drop(a1);
        assert!(
            Slot::take(&slots, b, &limits).is_some(),
            "given back on drop"
        );
        drop(a2);
        assert!(!slots.lock().unwrap().per_source.contains_key(&a));
        assert_eq!(slots.lock().unwrap().total, 1);
    }
}
