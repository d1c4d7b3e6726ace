//! Remote shell commands built so that no outside string is ever interpreted by the shell.
//!
//! A [`Script`] is assembled from `&'static str` fragments (code written in this repository)
//! and values that are always single-quoted ([`Script::quoted`]) or validated absolute paths
//! ([`Script::path`]). Anything else a command needs (file contents, documents, binaries)
//! travels on the channel's stdin, never on the command line. Every script also says whether
//! it may change the VPS ([`Access`]), so a pass can prove it only read, and how much of its
//! standard output the operator reads at most ([`Script::max_output`]): the VPS is not trusted
//! with the size of what it answers.

use std::fmt;

use super::SshError;

/// Whether a command may change the VPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Only observes (cat, stat, sha256sum, systemctl is-active, ...).
    Read,
    /// May write files or change services.
    Write,
}

/// How much standard output a command may print unless its script says otherwise
/// ([`Script::with_max_output`]): enough for every command that prints a short answer.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// A shell command for the VPS, safe by construction.
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    access: Access,
    text: String,
    max_output: usize,
}

impl Script {
    /// A read-only script starting with `code`.
    pub fn read(code: &'static str) -> Self {
        Self {
            access: Access::Read,
            text: code.to_owned(),
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// A script that may change the VPS, starting with `code`.
    pub fn write(code: &'static str) -> Self {
        Self {
            access: Access::Write,
            text: code.to_owned(),
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// Appends code written in this repository.
    #[must_use]
    pub fn code(mut self, code: &'static str) -> Self {
        self.text.push_str(code);
        self
    }

    /// Appends `value` as one single-quoted shell word. Refuses control characters (they have
    /// no business in a command line and would make logs misleading).
    pub fn quoted(mut self, value: &str) -> Result<Self, SshError> {
        if value.chars().any(char::is_control) {
            return Err(SshError::UnsafeArgument(
                "a value contains control characters".into(),
            ));
        }
        self.text.push_str(&quote(value));
        Ok(self)
    }

    /// Appends an absolute path after checking it is plain: `/` then letters, digits and
    /// `._-/` only, no `..` component, no `//`.
    pub fn path(self, path: &str) -> Result<Self, SshError> {
        check_path(path)?;
        self.quoted(path)
    }

    /// Appends a number.
    #[must_use]
    pub fn number(mut self, n: impl Into<u64>) -> Self {
        self.text.push_str(&n.into().to_string());
        self
    }

    /// Appends `next` as the code that runs after this script (both are safe by construction,
    /// so is their sequence): it may write when either may, and print as much as either may.
    #[must_use]
    pub fn then(mut self, next: &Script) -> Self {
        self.text.push_str("; ");
        self.text.push_str(&next.text);
        if next.access == Access::Write {
            self.access = Access::Write;
        }
        self.max_output = self.max_output.max(next.max_output);
        self
    }

    /// Lets the command print up to `bytes` on standard output (the default is
    /// [`DEFAULT_MAX_OUTPUT`]); a command that prints more fails with
    /// [`SshError::OutputTooLarge`] and the rest is never read.
    #[must_use]
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// The most standard output the operator reads from this command.
    pub fn max_output(&self) -> usize {
        self.max_output
    }

    /// Whether the script may write.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The command line sent to the VPS.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.access, self.text)
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// POSIX single-quoting: `it's` becomes `'it'\''s'`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Checks that `path` is a plain absolute path (see [`Script::path`]).
pub fn check_path(path: &str) -> Result<(), SshError> {
    let plain = path.starts_with('/')
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !path.contains("//")
        && !path.split('/').any(|c| c == ".." || c == ".");
    if plain {
        Ok(())
    } else {
        Err(SshError::UnsafeArgument(format!(
            "{path:?} is not a plain absolute path"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_values() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        let s = Script::read("echo ").quoted("a'b;c").unwrap();
        assert_eq!(s.as_str(), "echo 'a'\\''b;c'");
        assert!(Script::read("echo ").quoted("a\nb").is_err());
    }

    #[test]
    fn only_plain_absolute_paths() {
        for ok in ["/etc/tunnel/relay.json", "/etc/envoy/tls/web-1.sds.yaml"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "relative",
            "/",
            "/etc/../root",
            "/etc/./x",
            "/etc//x",
            "/etc/x y",
            "/etc/$(x)",
            "/etc/x'",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_is_declared() {
        assert_eq!(Script::read("cat /x").access(), Access::Read);
        assert_eq!(Script::write("rm /x").access(), Access::Write);
    }

    #[test]
    fn output_is_bounded_by_default_and_per_script() {
        assert_eq!(Script::read("cat /x").max_output(), DEFAULT_MAX_OUTPUT);
        let s = Script::read("cat /x").with_max_output(10).code(" /y");
        assert_eq!(s.max_output(), 10);
    }
}
