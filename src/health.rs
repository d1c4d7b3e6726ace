//! The liveness/readiness endpoint (`/healthz`, `/readyz`): a tiny HTTP/1.1 responder, its
//! request parsing kept pure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// `GET /healthz`: the process is alive.
    Live,
    /// `GET /readyz`: the operator is connected and watching.
    Ready,
    /// Anything else.
    Unknown,
}

/// Parses the first line of an HTTP request.
pub fn probe_of(request: &str) -> Probe {
    let mut parts = request
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/healthz")) => Probe::Live,
        (Some("GET"), Some("/readyz")) => Probe::Ready,
        _ => Probe::Unknown,
    }
}

/// The response for a probe, given readiness.
pub fn response(probe: &Probe, ready: bool) -> &'static str {
    match (probe, ready) {
        (Probe::Live, _) | (Probe::Ready, true) => {
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
        }
        (Probe::Ready, false) => {
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot ready\n"
        }
        (Probe::Unknown, _) => {
            "HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot found\n"
        }
    }
}

/// Serves probes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let probe = probe_of(&String::from_utf8_lossy(&buf[..n]));
            let _ = stream
                .write_all(response(&probe, ready.load(Ordering::Relaxed)).as_bytes())
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_probes() {
        assert_eq!(
            probe_of("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"),
            Probe::Live
        );
        assert_eq!(probe_of("GET /readyz HTTP/1.1\r\n"), Probe::Ready);
        assert_eq!(probe_of("POST /readyz HTTP/1.1\r\n"), Probe::Unknown);
        assert_eq!(probe_of(""), Probe::Unknown);
        assert!(response(&Probe::Ready, false).starts_with("HTTP/1.1 503"));
        assert!(response(&Probe::Ready, true).starts_with("HTTP/1.1 200"));
    }
}
