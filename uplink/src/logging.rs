//! Logging for both agents: to stderr, `LOG_FORMAT=json|text` (default text) and
//! `LOG_LEVEL` (a tracing filter, default `info`). Private keys never reach a log: the key
//! type's `Debug` is redacted and no code formats one.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber from the environment.
pub fn init() {
    let filter = EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
