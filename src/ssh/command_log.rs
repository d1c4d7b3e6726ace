//! A record of the commands a session ran, with their declared access and exit status, so a
//! caller (and a test) can check what a pass did, e.g. that a no-op pass only read.
//!
//! A session lives for days once the operator owns it, so the log keeps only the latest
//! [`CAPACITY`] commands; marks ([`CommandLog::len`]) count every command ever run, so
//! [`CommandLog::since`] stays right after older entries were dropped.

use std::collections::VecDeque;
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
    /// How long it took, channel opening included.
    pub duration: std::time::Duration,
}

/// How many of the latest commands are kept.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Default)]
struct Entries {
    /// Commands ever recorded.
    total: usize,
    /// The latest ones, at most [`CAPACITY`].
    kept: VecDeque<LoggedCommand>,
}

/// A shared, bounded list of the latest commands a session ran.
#[derive(Clone, Debug, Default)]
pub struct CommandLog {
    entries: Arc<Mutex<Entries>>,
}

impl CommandLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, entry: LoggedCommand) {
        let mut e = self.lock();
        if e.kept.len() == CAPACITY {
            e.kept.pop_front();
        }
        e.kept.push_back(entry);
        e.total += 1;
    }

    /// A copy of the entries kept (the latest [`CAPACITY`]).
    pub fn entries(&self) -> Vec<LoggedCommand> {
        self.lock().kept.iter().cloned().collect()
    }

    /// How many commands ran so far (a mark for [`CommandLog::since`]).
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// Whether nothing ran yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries from mark `mark` on (those still kept).
    pub fn since(&self, mark: usize) -> Vec<LoggedCommand> {
        let e = self.lock();
        let first = e.total - e.kept.len();
        e.kept
            .iter()
            .skip(mark.saturating_sub(first))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> LoggedCommand {
        LoggedCommand {
            command: format!("cmd {i}"),
            access: Access::Read,
            stdin_bytes: 0,
            status: Some(0),
            duration: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn the_log_is_bounded_and_marks_stay_right() {
        let log = CommandLog::new();
        for i in 0..CAPACITY + 500 {
            log.push(entry(i));
        }
        assert_eq!(log.entries().len(), CAPACITY);
        assert_eq!(log.entries()[0].command, "cmd 500");
        assert_eq!(log.len(), CAPACITY + 500);
        let mark = log.len();
        log.push(entry(9999));
        assert_eq!(log.since(mark), vec![entry(9999)]);
        assert_eq!(log.since(0).len(), CAPACITY, "dropped entries are gone");
    }
}
