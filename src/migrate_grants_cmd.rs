//! `tunnel migrate-grants [-f FILE...]` (standard input without `-f`, or with `-f -`): reads our
//! deprecated `ReferenceGrant`s (`kubectl get referencegrants.tunnel.achetronic.com -A -o yaml`,
//! or grants as YAML documents) and prints the equivalent Gateway API `ReferenceGrant`s for
//! `kubectl apply -f -`. The conversion is [`tunnel::crd::grant_migration`]; this is its I/O.

use std::path::PathBuf;

use tunnel::crd::grant_migration::{MigrationError, migrate};

/// Why the migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateGrantsCmdError {
    /// An input could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input is not our grants.
    #[error("{path}: {source}")]
    Convert {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// What is wrong, and where.
        source: MigrationError,
    },
}

impl MigrateGrantsCmdError {
    /// A stable label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "GrantMigrationReadFailed",
            Self::Convert { source, .. } => source.category(),
        }
    }
}

/// The Gateway API grants of every input, in order, and how many. No input file: standard
/// input.
pub fn migrate_grants(files: &[PathBuf]) -> Result<(String, usize), MigrateGrantsCmdError> {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut out = String::new();
    let mut count = 0;
    for path in files {
        let read = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        let text = read.map_err(|source| MigrateGrantsCmdError::Read {
            path: path.clone(),
            source,
        })?;
        let (yaml, n) = migrate(&text).map_err(|source| MigrateGrantsCmdError::Convert {
            path: path.clone(),
            source,
        })?;
        out.push_str(&yaml);
        count += n;
    }
    Ok((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_every_category_is_upper_camel_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: ConfigMap\n").unwrap();
        let err = migrate_grants(std::slice::from_ref(&path)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: document 1: apiVersion v1", path.display())),
            "{err}"
        );
        assert_eq!(err.category(), "GrantMigrationNotOurGrant");
        let missing = migrate_grants(&[dir.path().join("absent.yaml")]).unwrap_err();
        assert_eq!(missing.category(), "GrantMigrationReadFailed");
    }
}
