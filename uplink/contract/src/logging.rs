//! The one logging set-up of every binary (the operator, `tunnelctl`, `uplink`): to stderr,
//! `LOG_FORMAT` (`json`, the default, or `text`) and `LOG_LEVEL` (`debug`, `info`, the
//! default, `warn`, `error`), validated with an error naming the variable. Private keys never
//! reach a log: the key types' `Debug` is redacted and no code formats a private key.

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
    Ok(())
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
