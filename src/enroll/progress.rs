//! Where an enrollment pass is, in a few phases a user can read in the EdgeNode's status during
//! the first enrollment (issue 25): "uploading Envoy (110 MB), step 4 of 15". A pass's steps map
//! to at most five phases and each phase is told once, when its first step starts: a handful of
//! status writes per pass, never one per file.

use std::collections::BTreeSet;
use std::fmt;

use super::layout;
use super::steps::{Source, Step};

/// A phase of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The Envoy user, preserved binaries, stale files removed.
    Preparing,
    /// Envoy's binary pushed over SSH (its size in bytes).
    UploadingEnvoy(u64),
    /// Envoy's binary downloaded by the VPS.
    DownloadingEnvoy,
    /// The relay agent, the configuration, the units.
    Writing,
    /// systemd reloaded, the units enabled and (re)started, the sysctls applied.
    Starting,
}

impl Phase {
    /// The phase `step` belongs to (`None`: the state file, written last, tells nothing new).
    pub fn of(step: &Step) -> Option<Self> {
        match step {
            Step::EnsureEnvoyUser | Step::Preserve(_) | Step::Remove(_) => Some(Self::Preparing),
            Step::Write(file) if file.path == layout::ENVOY => Some(match &file.source {
                Source::Upload(blob) => Self::UploadingEnvoy(blob.len()),
                Source::Download(_) => Self::DownloadingEnvoy,
            }),
            Step::Write(_) => Some(Self::Writing),
            Step::DaemonReload | Step::Enable(_) | Step::Restart(_) | Step::ApplySysctl { .. } => {
                Some(Self::Starting)
            }
            Step::WriteState(_) => None,
        }
    }

    /// Its kind, whatever the size (each kind is told once per pass).
    fn kind(self) -> u8 {
        match self {
            Self::Preparing => 0,
            Self::UploadingEnvoy(_) => 1,
            Self::DownloadingEnvoy => 2,
            Self::Writing => 3,
            Self::Starting => 4,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preparing => f.write_str("preparing the VPS"),
            Self::UploadingEnvoy(bytes) => {
                write!(f, "uploading Envoy ({} MB)", bytes.div_ceil(1_000_000))
            }
            Self::DownloadingEnvoy => f.write_str("downloading Envoy on the VPS"),
            Self::Writing => {
                f.write_str("writing the relay agent, its configuration and the units")
            }
            Self::Starting => f.write_str("starting the units"),
        }
    }
}

/// A phase starting: at step `step` (1-based) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Its first step, 1-based.
    pub step: usize,
    /// The pass's steps.
    pub total: usize,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, step {} of {}", self.phase, self.step, self.total)
    }
}

/// What to tell, step by step: a [`Progress`] when a step starts a phase not told yet.
#[derive(Debug, Default)]
pub struct Teller {
    told: BTreeSet<u8>,
}

impl Teller {
    /// Step `index` (0-based) of `total` starts.
    pub fn step(&mut self, index: usize, total: usize, step: &Step) -> Option<Progress> {
        let phase = Phase::of(step)?;
        self.told.insert(phase.kind()).then_some(Progress {
            phase,
            step: index + 1,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::blob::Blob;
    use crate::enroll::steps::ManagedFile;

    fn write(path: &str, source: Source) -> Step {
        Step::Write(ManagedFile {
            path: path.into(),
            mode: 0o755,
            sha256: String::new(),
            source,
        })
    }

    #[test]
    fn each_phase_is_told_once_when_its_first_step_starts() {
        let envoy = Blob::new(vec![0u8; 109_500_000]);
        let steps = [
            Step::EnsureEnvoyUser,
            Step::Preserve(layout::ENVOY),
            write(layout::TUNNELCTL, Source::Upload(Blob::new(b"x".to_vec()))),
            write(layout::ENVOY, Source::Upload(envoy)),
            write(
                layout::RELAY_DOCUMENT,
                Source::Upload(Blob::new(b"{}".to_vec())),
            ),
            write(
                layout::ENVOY_BOOTSTRAP,
                Source::Upload(Blob::new(b"b".to_vec())),
            ),
            Step::DaemonReload,
            Step::Enable(vec![layout::RELAY_UNIT]),
            Step::Restart(layout::RELAY_UNIT),
            Step::Restart(layout::ENVOY_UNIT),
            Step::WriteState(Blob::new(b"{}".to_vec())),
        ];
        let mut teller = Teller::default();
        let told: Vec<String> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| teller.step(i, steps.len(), s))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            told,
            [
                "preparing the VPS, step 1 of 11",
                "writing the relay agent, its configuration and the units, step 3 of 11",
                "uploading Envoy (110 MB), step 4 of 11",
                "starting the units, step 7 of 11",
            ]
        );
    }

    #[test]
    fn a_downloaded_envoy_says_so() {
        let step = write(
            layout::ENVOY,
            Source::Download("https://example.com/envoy".into()),
        );
        assert_eq!(
            Teller::default().step(0, 1, &step).unwrap().to_string(),
            "downloading Envoy on the VPS, step 1 of 1"
        );
    }
}
