//! The test bed's error type.

use std::path::PathBuf;

/// What went wrong while setting up or driving a test-bed component.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A tool the set-up script should have cached is missing.
    #[error("{tool} not found at {path}: run `bash tests/testbed/setup.sh` first")]
    MissingTool {
        /// The tool's name.
        tool: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A binary of the workspace itself has not been built.
    #[error(
        "{name} not found at {path}: run `cargo build -p tunnel -p uplink -p testbed --bins` first"
    )]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A command could not be started or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// A component did not become ready in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// A machine did not become ready in time; what was last seen explains why.
    #[error("timed out waiting for {what}; last attempt: {last}; console:\n{log_tail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// The outcome of the last readiness check.
        last: String,
        /// The end of the machine's console log.
        log_tail: String,
    },
    /// File system or socket error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Talking to the API server failed.
    #[error("kube: {0}")]
    Kube(String),
}

impl TestbedError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
