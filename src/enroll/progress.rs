//! Where an enrollment pass is, in a few phases a user can read in the EdgeNode's status during
//! the first enrollment (issue 25): "uploading Envoy (110 MB), step 9 of 16". The phases follow
//! the order a pass takes (the relay first, then Envoy: docs/enrollment.md), and a phase is told
//! when it starts, that is when a step's phase differs from the last one told: one status
//! write per phase, a handful per pass, never one per file.

use std::fmt;
use std::mem::discriminant;

use super::layout;
use super::steps::{Source, Step, in_first_group};

/// A phase of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A binary we did not install kept aside.
    Preparing,
    /// The relay agent, its document, both units and the sysctls written.
    WritingRelay,
    /// systemd reloaded, the units enabled, the sysctls applied, the relay (re)started.
    StartingRelay,
    /// Envoy's binary pushed over SSH (its size in bytes).
    UploadingEnvoy(u64),
    /// Envoy's binary downloaded by the VPS.
    DownloadingEnvoy,
    /// Envoy's user made, its configuration and certificates written, stale files removed.
    WritingEnvoy,
    /// Envoy (re)started.
    StartingEnvoy,
}

impl Phase {
    /// The phase `step` belongs to (`None`: the state file, written last, tells nothing new).
    pub fn of(step: &Step) -> Option<Self> {
        match step {
            Step::Preserve(_) => Some(Self::Preparing),
            Step::Write(file) if file.path == layout::ENVOY => Some(match &file.source {
                Source::Upload(blob) => Self::UploadingEnvoy(blob.len()),
                Source::Download(_) => Self::DownloadingEnvoy,
            }),
            Step::Write(file) if in_first_group(&file.path) => Some(Self::WritingRelay),
            Step::EnsureEnvoyUser | Step::Write(_) | Step::Remove(_) => Some(Self::WritingEnvoy),
            Step::DaemonReload | Step::Enable(_) | Step::ApplySysctl { .. } => {
                Some(Self::StartingRelay)
            }
            Step::Restart(unit) if *unit == layout::RELAY_UNIT => Some(Self::StartingRelay),
            Step::Restart(_) => Some(Self::StartingEnvoy),
            Step::WriteState(_) => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preparing => f.write_str("preparing the VPS"),
            Self::WritingRelay => f.write_str("writing the relay agent and the units"),
            Self::StartingRelay => f.write_str("starting the relay"),
            Self::UploadingEnvoy(bytes) => {
                write!(f, "uploading Envoy ({} MB)", bytes.div_ceil(1_000_000))
            }
            Self::DownloadingEnvoy => f.write_str("downloading Envoy on the VPS"),
            Self::WritingEnvoy => f.write_str("writing Envoy's configuration"),
            Self::StartingEnvoy => f.write_str("starting Envoy"),
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

/// What to tell, step by step: a [`Progress`] when a step starts a phase other than the last
/// one told.
#[derive(Debug, Default)]
pub struct Teller {
    last: Option<Phase>,
}

impl Teller {
    /// Step `index` (0-based) of `total` starts.
    pub fn step(&mut self, index: usize, total: usize, step: &Step) -> Option<Progress> {
        let phase = Phase::of(step)?;
        if self
            .last
            .is_some_and(|last| discriminant(&last) == discriminant(&phase))
        {
            return None;
        }
        self.last = Some(phase);
        Some(Progress {
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
    use crate::enroll::desired::EnvoyInstall;
    use crate::enroll::steps::fixtures::{desired, fresh};
    use crate::enroll::steps::{ManagedFile, Request, changes};

    fn told(steps: &[Step]) -> Vec<String> {
        let mut teller = Teller::default();
        steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| teller.step(i, steps.len(), s))
            .map(|p| p.to_string())
            .collect()
    }

    /// A first enrollment, in the order the pass takes: every phase is told when it starts,
    /// the last one (Envoy starting) included, and nothing else.
    #[test]
    fn a_first_enrollment_tells_each_phase_as_it_starts() {
        let mut desired = desired();
        desired.envoy = EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: [(
                crate::enroll::desired::Arch::X86_64,
                Blob::new(vec![0u8; 109_500_000]),
            )]
            .into(),
        };
        let steps = changes(&desired, &fresh(), Request::default())
            .unwrap()
            .steps;
        let names: Vec<String> = steps.iter().map(ToString::to_string).collect();
        let total = steps.len();
        let told = told(&steps);
        assert_eq!(
            told.iter()
                .map(|t| t.split(", step").next().unwrap_or_default())
                .collect::<Vec<_>>(),
            [
                "writing the relay agent and the units",
                "starting the relay",
                "uploading Envoy (110 MB)",
                "writing Envoy's configuration",
                "starting Envoy",
            ],
            "{names:#?}"
        );
        assert_eq!(
            told[0],
            format!("writing the relay agent and the units, step 1 of {total}")
        );
        assert!(
            told[4].ends_with(&format!("step {} of {total}", total - 1)),
            "Envoy's restart is the step before the state file: {told:?} {names:#?}"
        );
    }

    #[test]
    fn a_phase_is_told_again_only_after_another_one() {
        let write = |path: &str| {
            Step::Write(ManagedFile {
                path: path.into(),
                mode: 0o640,
                sha256: String::new(),
                source: Source::Upload(Blob::new(b"x".to_vec())),
            })
        };
        let steps = [
            write(layout::ENVOY_CDS),
            write(layout::ENVOY_LDS),
            Step::Remove(format!("{}/old.sds.yaml", layout::ENVOY_TLS_DIR)),
            Step::Restart(layout::ENVOY_UNIT),
            write(layout::ENVOY_BOOTSTRAP),
            Step::WriteState(Blob::new(b"{}".to_vec())),
        ];
        assert_eq!(
            told(&steps),
            [
                "writing Envoy's configuration, step 1 of 6",
                "starting Envoy, step 4 of 6",
                "writing Envoy's configuration, step 5 of 6",
            ]
        );
    }

    #[test]
    fn a_downloaded_envoy_says_so() {
        let step = Step::Write(ManagedFile {
            path: layout::ENVOY.into(),
            mode: 0o755,
            sha256: String::new(),
            source: Source::Download("https://example.com/envoy".into()),
        });
        assert_eq!(
            Teller::default().step(0, 1, &step).unwrap().to_string(),
            "downloading Envoy on the VPS, step 1 of 1"
        );
    }
}
