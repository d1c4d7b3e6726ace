//! A tiny HTTP/1.1 responder for `/ready`, `/healthz` and `/status` (what the uplink serves
//! on :40500): one short request per connection, `Connection: close`, each connection
//! on its own short-lived thread so a slow client cannot hold up Envoy's health checks.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// What the server answers with.
pub trait Handler: Send + Sync + 'static {
    /// `Ok` for 200 on `/ready`, else the reason for a 503.
    fn ready(&self) -> Result<(), String>;
    /// The JSON body of `/status`.
    fn status(&self) -> String;
}

/// Serves `handler` until the process ends (`/healthz` is always 200).
pub fn serve<F: Handler>(
    listener: TcpListener,
    ready: F,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let ready = std::sync::Arc::new(ready);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let ready = std::sync::Arc::clone(&ready);
                        let spawned =
                            std::thread::Builder::new()
                                .name("http-conn".into())
                                .spawn(move || {
                                    if let Err(e) = answer(stream, &*ready) {
                                        tracing::debug!(error = %e, "http request");
                                    }
                                });
                        if let Err(e) = spawned {
                            tracing::warn!(error = %e, "cannot serve an http request");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "http accept"),
                }
            }
        })
}

fn answer<F: Handler>(stream: TcpStream, handler: &F) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers (bounded), so the client sees a clean close.
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (code, body) = match path {
        "/ready" => match handler.ready() {
            Ok(()) => (200, "ok\n".to_string()),
            Err(reason) => (503, format!("{reason}\n")),
        },
        "/healthz" => (200, "ok\n".to_string()),
        "/status" => (200, handler.status()),
        _ => (404, "not found\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let kind = if path == "/status" {
        "application/json"
    } else {
        "text/plain"
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
