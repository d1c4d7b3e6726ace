//! Trust boundary 3 (issue 12): the uplink's `/ready` server on :40500 faces the tunnel and
//! the cluster. Against the real `uplink` binary in a network namespace: an endless header
//! is cut off with the agent's memory bounded, slowloris clients are closed once the head's
//! deadline passes, a crowd of slow connections from one address does not keep another
//! prober from being answered, and anything but GET/HEAD is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testbed::netns::Netns;
use testbed::process::Process;

fn uplink_bin() -> &'static str {
    env!("CARGO_BIN_EXE_uplink")
}

const ADDR: &str = "127.0.0.1:40500";

/// A connection from inside `ns`, from source address `from`.
fn connect(ns: &Netns, from: &str) -> std::io::Result<TcpStream> {
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    let to: SocketAddr = ADDR.parse().unwrap();
    ns.enter(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&from.into())?;
        s.connect_timeout(&to.into(), Duration::from_secs(2))?;
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    })
    .unwrap()
}

/// One request from `from`; the status code (0 when nothing came back).
fn request(ns: &Netns, from: &str, method: &str, path: &str) -> u16 {
    let Ok(mut s) = connect(ns, from) else {
        return 0;
    };
    let _ = write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn start(ns: &Netns, dir: &std::path::Path) -> Process {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let config = dir.join("uplink.json");
    let keys = dir.join("keys");
    ns.spawn(
        "uplink",
        &[
            "env",
            "POD_NAME=edge-uplink-0",
            uplink_bin(),
            "--config",
            config.to_str().unwrap(),
            "--keys-dir",
            keys.to_str().unwrap(),
            "--ready-addr",
            ADDR,
        ],
        Some(&dir.join("uplink.log")),
    )
    .unwrap()
}

fn wait_serving(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(ns, "127.0.0.1", "GET", "/healthz") != 200 {
        assert!(
            Instant::now() < deadline,
            "the uplink never served /healthz"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_endless_header_is_cut_and_memory_stays_bounded() {
    let ns = Netns::new("http-big").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut uplink = start(&ns, dir.path());
    wait_serving(&ns);
    let before = rss_kib(uplink.pid());

    // Up to 64 MiB of one header line, for at most 30 s.
    let mut s = connect(&ns, "127.0.0.1").unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent < 64 << 20 && Instant::now() < deadline {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let after = rss_kib(uplink.pid());
    assert!(
        sent < 64 << 20,
        "the server swallowed {sent} bytes of one header"
    );
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    // Others are still answered, and the agent is alive.
    assert_eq!(request(&ns, "127.0.0.1", "GET", "/healthz"), 200);
    assert!(uplink.is_running());
}

#[test]
fn slow_clients_are_closed_and_do_not_starve_probes() {
    let ns = Netns::new("http-slow").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut uplink = start(&ns, dir.path());
    wait_serving(&ns);

    // 40 slowloris connections from one address, each sending a byte a second.
    let mut slow: Vec<TcpStream> = (0..40)
        .filter_map(|_| connect(&ns, "127.0.0.2").ok())
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /ready HTTP/1.1\r\nX-Slow: ");
    }
    // Meanwhile another prober is answered every time.
    for _ in 0..20 {
        assert_eq!(request(&ns, "127.0.0.1", "GET", "/healthz"), 200);
        assert_eq!(request(&ns, "127.0.0.1", "GET", "/ready"), 503);
    }
    // Only GET and HEAD.
    assert_eq!(request(&ns, "127.0.0.1", "POST", "/ready"), 405);
    assert_eq!(request(&ns, "127.0.0.1", "HEAD", "/healthz"), 200);

    // Trickle: the server must close every one of them (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut open: Vec<TcpStream> = slow;
    while !open.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        open.retain_mut(|s| {
            if s.write_all(b"a").is_err() {
                return false;
            }
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let alive = match s.read(&mut buf) {
                // Closed, or an answer (408/431) before the close.
                Ok(_) => false,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            alive
        });
    }
    assert!(
        open.is_empty(),
        "{} slow connections still held open",
        open.len()
    );
    assert_eq!(request(&ns, "127.0.0.1", "GET", "/healthz"), 200);
    assert!(uplink.is_running());
}
