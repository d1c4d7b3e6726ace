//! A record of the commands a session ran, with their declared access and exit status, so a
//! caller (and a test) can check what a pass did, e.g. that a no-op pass only read.

use std::sync::{Arc, Mutex, PoisonError};

use super::script::Access;

/// One command as it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedCommand {
    /// The command line (never holds secrets: data travels on stdin).
    pub command: String,
    /// Its declared access.
    pub access: Access,
    /// Bytes sent on its stdin.
    pub stdin_bytes: usize,
    /// Exit status, `None` when it did not complete (timeout, transport error).
    pub status: Option<u32>,
}

/// A shared, append-only list of the commands a session ran.
#[derive(Clone, Debug, Default)]
pub struct CommandLog {
    entries: Arc<Mutex<Vec<LoggedCommand>>>,
}

impl CommandLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&self, entry: LoggedCommand) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<LoggedCommand> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many entries there are (a mark for [`CommandLog::since`]).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing ran yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries from index `mark` on.
    pub fn since(&self, mark: usize) -> Vec<LoggedCommand> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .skip(mark)
            .cloned()
            .collect()
    }
}
