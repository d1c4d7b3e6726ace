//! The one logging set-up of every binary (the operator, `tunnelctl`, `uplink`): to stderr,
//! `LOG_FORMAT` (`json`, the default, or `text`) and `LOG_LEVEL` (`debug`, `info`, the
//! default, `warn`, `error`), validated with an error naming the variable. Private keys never
//! reach a log: the key types' `Debug` is redacted and no code formats a private key.
//!
//! A panic is logged too, as one `error` event through the same subscriber (so it is a JSON
//! line like the others), with the thread, the location, the message and a backtrace
//! captured whatever `RUST_BACKTRACE` says: a panic in a data-plane thread (issue 24, H3) is
//! then found, and located, in the agent's journal or pod log.

use tracing_subscriber::EnvFilter;

/// A logging variable with a value we do not understand.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `LOG_FORMAT` is not `json` or `text`.
    #[error("LOG_FORMAT={0:?} is not one of: json, text")]
    Format(String),
    /// `LOG_LEVEL` is not a known level.
    #[error("LOG_LEVEL={0:?} is not one of: debug, info, warn, error")]
    Level(String),
}

impl LoggingError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Format(_) => "LogFormatInvalid",
            Self::Level(_) => "LogLevelInvalid",
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default, for log collectors).
    Json,
    /// Human-readable lines, for development.
    Text,
}

/// Reads and validates `LOG_FORMAT` and `LOG_LEVEL` (pure: takes the values, not the env).
pub fn parse(
    format: Option<&str>,
    level: Option<&str>,
) -> Result<(LogFormat, &'static str), LoggingError> {
    let format = match format.unwrap_or("json") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => return Err(LoggingError::Format(other.into())),
    };
    let level = match level.unwrap_or("info") {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" => "error",
        other => return Err(LoggingError::Level(other.into())),
    };
    Ok((format, level))
}

/// Installs the global subscriber from `LOG_FORMAT` and `LOG_LEVEL`, writing to stderr.
pub fn init_from_env() -> Result<(), LoggingError> {
    let format = std::env::var("LOG_FORMAT").ok();
    let level = std::env::var("LOG_LEVEL").ok();
    let (format, level) = parse(format.as_deref(), level.as_deref())?;
    let filter = EnvFilter::new(format!("{level},hyper=warn,kube_client=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    install_panic_hook();
    Ok(())
}

/// Replaces the panic hook: every panic becomes one `error` event (`panicked: <message>`)
/// with the fields `thread`, `location` and `backtrace`. Std's own hook is not called: its
/// plain-text line would break a JSON log.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            %backtrace,
            "panicked: {}",
            panic_message(info.payload())
        );
    }));
}

/// The message of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a payload that is not a string)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_json_and_info() {
        assert_eq!(parse(None, None).unwrap(), (LogFormat::Json, "info"));
        assert_eq!(
            parse(Some("text"), Some("debug")).unwrap(),
            (LogFormat::Text, "debug")
        );
    }

    #[test]
    fn unknown_values_name_the_variable() {
        assert_eq!(
            parse(Some("yaml"), None).unwrap_err().to_string(),
            "LOG_FORMAT=\"yaml\" is not one of: json, text"
        );
        assert!(
            parse(None, Some("trace"))
                .unwrap_err()
                .to_string()
                .starts_with("LOG_LEVEL=\"trace\"")
        );
    }

    /// A `Write` into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_as_one_event_with_its_thread_location_and_backtrace() {
        let buffer = Buffer::default();
        let previous = std::panic::take_hook();
        install_panic_hook();
        let out = buffer.clone();
        let joined = std::thread::Builder::new()
            .name("wg:test".into())
            .spawn(move || {
                let subscriber = tracing_subscriber::fmt()
                    .json()
                    .with_writer(move || out.clone())
                    .finish();
                tracing::subscriber::with_default(subscriber, || {
                    let segment = std::hint::black_box(0);
                    let _ = [1u8].chunks(segment).count();
                });
            })
            .unwrap()
            .join();
        std::panic::set_hook(previous);
        assert!(joined.is_err(), "the thread panicked");
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(event["level"], "ERROR", "{event}");
        let fields = &event["fields"];
        assert_eq!(
            fields["message"], "panicked: chunk size must be non-zero",
            "{event}"
        );
        assert_eq!(fields["thread"], "wg:test", "{event}");
        assert!(
            fields["location"].as_str().unwrap().contains("logging.rs"),
            "{event}"
        );
        assert!(
            fields["backtrace"].as_str().unwrap().contains("logging"),
            "{event}"
        );
    }

    #[test]
    fn panic_messages_of_str_and_string_payloads() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&7u8), "(a payload that is not a string)");
    }

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            LoggingError::Format(String::new()),
            LoggingError::Level(String::new()),
        ];
        let categories: Vec<&str> = all.iter().map(LoggingError::category).collect();
        assert_eq!(categories, ["LogFormatInvalid", "LogLevelInvalid"]);
    }
}
