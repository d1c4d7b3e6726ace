//! What both control-plane benchmarks measure with: the client that asks README Example 1's
//! `my-web` through the VPS, percentiles, and the A/B set-up they share (which operator
//! binary, its extra flags and environment, how many rounds).
//!
//! The environment both read:
//! - `BENCH_OPERATOR_BASE=<path>`: another build's `tunnel` to measure in the same run (A/B),
//!   or a directory holding that build's `tunnel`, `tunnelctl` and `uplink` (its agents run
//!   beside its operator: the relay pushed to the VPS and the uplinks);
//! - `BENCH_OURS=<dir>`: the same kind of directory for "ours" (e.g. a release build),
//!   instead of the bench's own build;
//! - `BENCH_ROUNDS=<n>`: rounds per operator in A/B mode (base, ours, base, ours, ...);
//! - `BENCH_OPERATOR_FLAGS="--flag value ..."`: extra `tunnel run` flags (split on spaces),
//!   for both operators unless `BENCH_OPERATOR_BASE_FLAGS` gives the base its own;
//! - `BENCH_OPERATOR_ENV="KEY=value ..."`: extra environment, likewise
//!   `BENCH_OPERATOR_BASE_ENV`; `BENCH_LOG_LEVEL=<level>`: the operators' `LOG_LEVEL`;
//! - `BENCH_OPERATOR_LOG=<dir>`: keep each round's operator log there.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use testbed::operator::{OperatorBed, OperatorBuilder};

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

/// `samples` sorted, and their p50 and p99 (`None` when there are none).
pub fn p50_p99(samples: &[f64]) -> Option<(f64, f64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    (!sorted.is_empty()).then(|| (percentile(&sorted, 50.0), percentile(&sorted, 99.0)))
}

/// The other build's `tunnel` (`BENCH_OPERATOR_BASE`), when the run is an A/B one.
pub fn base() -> Option<PathBuf> {
    std::env::var_os("BENCH_OPERATOR_BASE").map(PathBuf::from)
}

/// Rounds per operator in an A/B run (`BENCH_ROUNDS`, else `default`).
pub fn rounds(default: usize) -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// `name` of the environment, or for the base build `BASE_name` first (`BENCH_OPERATOR_FLAGS`
/// → `BENCH_OPERATOR_BASE_FLAGS`).
fn setting(name: &str, base: bool) -> Option<String> {
    let own = name.replacen("BENCH_OPERATOR_", "BENCH_OPERATOR_BASE_", 1);
    base.then(|| std::env::var(&own).ok())
        .flatten()
        .or_else(|| std::env::var(name).ok())
}

/// The build the current round runs ("ours" or "base"), for the kept logs' names.
static BUILD: std::sync::Mutex<&str> = std::sync::Mutex::new("ours");

/// Chooses the build a round runs before its bed is made: `build` (the base) when given,
/// else `BENCH_OURS`, else the bench's own. A directory gives the operator and the agents
/// ([`testbed::tools::use_agents_dir`]); a lone `tunnel` binary only the operator.
pub fn select_build(build: Option<&Path>) {
    *BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        if build.is_some() { "base" } else { "ours" };
    let dir = match build {
        Some(path) => path.is_dir().then(|| path.to_owned()),
        None => std::env::var_os("BENCH_OURS").map(PathBuf::from),
    };
    testbed::tools::use_agents_dir(dir);
}

/// A `tunnel run` on `bed`: `binary` when given (the base build; a directory's `tunnel`),
/// else the bed's own, with the extra flags and environment of the module's settings.
pub fn operator<'a>(bed: &'a OperatorBed, binary: Option<&Path>) -> OperatorBuilder<'a> {
    let base = binary.is_some();
    let mut builder = bed.operator();
    if let Some(binary) = binary {
        builder = if binary.is_dir() {
            builder.binary(&binary.join("tunnel"))
        } else {
            builder.binary(binary)
        };
    }
    if let Ok(level) = std::env::var("BENCH_LOG_LEVEL") {
        builder = builder.env("LOG_LEVEL", &level);
    }
    if let Some(flags) = setting("BENCH_OPERATOR_FLAGS", base) {
        builder = builder.flags(&flags.split_whitespace().collect::<Vec<_>>());
    }
    for pair in setting("BENCH_OPERATOR_ENV", base)
        .unwrap_or_default()
        .split_whitespace()
    {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("BENCH_OPERATOR_ENV: {pair:?} is not KEY=value"));
        builder = builder.env(key, value);
    }
    builder
}

/// Writes `log` to `$BENCH_OPERATOR_LOG/operator-<ours|base>-<ms since the epoch>.log` when
/// that is set;
/// the file written.
pub fn keep_log(log: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("BENCH_OPERATOR_LOG")?);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let build = *BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = dir.join(format!("operator-{build}-{millis}.log"));
    std::fs::write(&path, log).unwrap();
    eprintln!("the operator's log: {}", path.display());
    Some(path)
}
