//! What both control-plane benchmarks measure with: the client that asks README Example 1's
//! `my-web` through the VPS, and percentiles.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// Whether `my-web` answers at `addr` now (500 ms to connect: the benchmarks poll every
/// 20 ms for the first answer).
pub fn answers(addr: (Ipv4Addr, u16)) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    s.write_all(b"x\n").is_ok() && s.read_to_string(&mut out).is_ok() && out == "my-web: x\n"
}

/// The `p`th percentile (nearest rank) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
