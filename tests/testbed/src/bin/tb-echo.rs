//! The echo workload of the node's end-to-end test and of the demo (image
//! [`testbed::images::ECHO`]): on TCP :8080 it answers any request with `hello from <pod>`
//! followed by the request head it received (so a PROXY protocol header shows), and on UDP
//! :5353 it answers each datagram with `hello from <pod>: <datagram>`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request's head is awaited before answering with what came: long enough for the
/// node test's connection held open across a drain before it sends its request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(120);

fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "echo".into(), |s| s.trim().to_owned())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    let udp = tokio::net::UdpSocket::bind("0.0.0.0:5353").await?;
    let me = name();
    let udp_name = me.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let mut reply = format!("hello from {udp_name}: ").into_bytes();
            reply.extend_from_slice(buf.get(..n).unwrap_or_default());
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (mut conn, _) = tokio::select! {
            accepted = tcp.accept() => accepted?,
            _ = term.recv() => return Ok(()),
        };
        let me = me.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = async {
                while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                }
            };
            let _ = tokio::time::timeout(HEAD_TIMEOUT, read).await;
            let body = format!("hello from {me}\n{}", String::from_utf8_lossy(&head));
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
