//! Running an enrollment pass over an SSH session: observe (read-only), work out the changes (pure), run the
//! steps in order, wait for Envoy when it was (re)started, and report health. A pass with
//! nothing to do runs only read-only commands.

use std::time::Duration;

use tracing::{info, warn};

use super::EnrollError;
use super::blob::{Blob, Stored};
use super::health::{self, Health};
use super::layout;
use super::observe;
use super::observe::Known;
use super::progress::{Progress, Teller};
use super::steps::{self, Changes, Request, Source, Step};
use crate::ssh::{
    BatchItem, Packing, Script, Session, SshError, StreamedFile, write_batch, write_file_owned,
    write_file_streamed,
};

/// How a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// Beyond convergence: e.g. restart Envoy.
    pub request: Request,
    /// Stop after this many steps with [`EnrollError::Interrupted`] (proves that a pass cut
    /// short resumes; `None` in production).
    pub stop_after_steps: Option<usize>,
    /// How many times (one second apart) to check that Envoy became active after a restart.
    pub envoy_active_checks: u32,
}

impl Default for PassOptions {
    fn default() -> Self {
        Self {
            request: Request::default(),
            stop_after_steps: None,
            envoy_active_checks: 30,
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassReport {
    /// The steps that ran, in order (human-readable, no contents).
    pub steps: Vec<String>,
    /// Non-fatal problems (e.g. sysctls the VPS does not let us set).
    pub warnings: Vec<String>,
    /// Health after the pass.
    pub health: Health,
    /// The pass wrote TLS material (certificates and private keys) for Envoy to the VPS.
    pub wrote_tls: bool,
}

impl PassReport {
    /// Whether the pass changed anything on the VPS.
    pub fn changed(&self) -> bool {
        !self.steps.is_empty()
    }
}

/// Looks at the VPS and works out the changes a pass would make, without making any.
pub async fn dry_run(
    session: &mut Session,
    desired: &super::DesiredState,
    request: Request,
) -> Result<Changes, EnrollError> {
    plan(session, desired, request, &mut Known::default()).await
}

/// Observes the VPS (trusting `known` digests of files whose identity is unchanged; learning
/// them again) and works out the changes.
async fn plan(
    session: &mut Session,
    desired: &super::DesiredState,
    request: Request,
    known: &mut Known,
) -> Result<Changes, EnrollError> {
    let out = session.run_ok(&observe::script(known)?).await?;
    let observed = observe::parse(&out.stdout_text(), known)?;
    known.learn(&observed);
    steps::changes(desired, &observed, request)
}

/// Brings the VPS to `desired`.
pub async fn enroll(
    session: &mut Session,
    desired: &super::DesiredState,
    options: &PassOptions,
) -> Result<PassReport, EnrollError> {
    enroll_telling(
        session,
        desired,
        options,
        &mut Known::default(),
        &mut |_| {},
    )
    .await
}

/// [`enroll`], remembering the large files' digests in `known` from one pass to the next (one
/// per SSH connection), and telling `progress` when each phase starts ([`Teller`]).
///
/// Round trips: the observation, then one command per run of small-file writes and removals
/// ([`batchable`]) and one per other step; the health check rides on the last command when
/// nothing was restarted. A change of listeners or clusters is therefore two round trips.
pub async fn enroll_telling(
    session: &mut Session,
    desired: &super::DesiredState,
    options: &PassOptions,
    known: &mut Known,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PassReport, EnrollError> {
    let changes = plan(session, desired, options.request, known).await?;
    let mut teller = Teller::default();
    let total = changes.steps.len();
    info!(host = %session.options().target(), steps = total, arch = changes.arch.uname(), "enrollment pass planned");
    let mut report = PassReport {
        steps: Vec::new(),
        warnings: Vec::new(),
        health: Health::default(),
        wrote_tls: false,
    };
    let restarts = changes.restarts_envoy();
    let mut health = None;
    let mut done = 0;
    while done < total {
        if options.stop_after_steps == Some(done) {
            return Err(EnrollError::Interrupted { done, total });
        }
        let end = batch_end(&changes.steps, done, options.stop_after_steps);
        for step in &changes.steps[done..end.max(done + 1)] {
            info!(host = %session.options().target(), step = %step, "enrollment step");
            if let Some(p) = teller.step(done, total, step) {
                progress(p);
            }
            report.wrote_tls |= step.writes_under(layout::ENVOY_TLS_DIR);
            report.steps.push(step.to_string());
        }
        if end > done {
            let last = end == total && !restarts;
            let check = health::script()?;
            let out = run_batch(session, &changes.steps[done..end], last.then_some(&check)).await?;
            if last {
                health = Some(health::parse(&out.stdout_text()));
            }
            done = end;
            continue;
        }
        let step = &changes.steps[done];
        if let Some(warning) = run_step(session, step, known).await? {
            warn!(host = %session.options().target(), step = %step, warning = %warning, "enrollment step");
            report.warnings.push(warning);
        }
        done += 1;
    }
    if restarts {
        wait_active(session, layout::ENVOY_UNIT, options.envoy_active_checks).await?;
    }
    report.health = match health {
        Some(health) => health,
        None => health::check(session).await?,
    };
    Ok(report)
}

/// Whether a step can run in a batch: a write of bytes held in memory (documents, units, SDS,
/// the state file) or a removal. Binaries (streamed from a file or downloaded), users,
/// systemd and sysctl run one by one.
fn batchable(step: &Step) -> bool {
    match step {
        Step::Write(file) => {
            matches!(&file.source, Source::Upload(blob) if matches!(blob.stored(), Stored::Memory(_)))
        }
        Step::WriteState(_) | Step::Remove(_) => true,
        _ => false,
    }
}

/// The end (exclusive) of the run of batchable steps from `start`, not past `stop` (an
/// interruption asked for there); `start` when the step there is not batchable.
fn batch_end(steps: &[Step], start: usize, stop: Option<usize>) -> usize {
    let limit = stop.filter(|s| *s > start).unwrap_or(steps.len());
    steps[start..limit.min(steps.len())]
        .iter()
        .take_while(|s| batchable(s))
        .count()
        + start
}

/// Runs batchable steps as one command, `then` after them.
async fn run_batch(
    session: &mut Session,
    steps: &[Step],
    then: Option<&Script>,
) -> Result<crate::ssh::Output, EnrollError> {
    let mut items = Vec::with_capacity(steps.len());
    for step in steps {
        let (path, blob, mode) = match step {
            Step::Write(file) => {
                let Source::Upload(blob) = &file.source else {
                    continue;
                };
                (file.path.as_str(), blob, file.mode)
            }
            Step::WriteState(blob) => (layout::STATE, blob, layout::MODE_SECRET),
            Step::Remove(path) => {
                items.push(BatchItem::Remove(path));
                continue;
            }
            _ => continue,
        };
        let Stored::Memory(content) = blob.stored() else {
            continue;
        };
        items.push(BatchItem::Write {
            path,
            content,
            mode,
            group: layout::group_of(path),
        });
    }
    Ok(write_batch(session, &items, then).await?)
}

/// Restarts Envoy now (the restart-envoy annotation, outside a pass) and waits for it.
pub async fn restart_envoy(session: &mut Session, checks: u32) -> Result<(), EnrollError> {
    session
        .run_ok(&Script::write("systemctl restart ").quoted(layout::ENVOY_UNIT)?)
        .await?;
    wait_active(session, layout::ENVOY_UNIT, checks).await
}

/// Writes `blob` to `path` on the VPS atomically, checked against its digest there; a blob
/// kept in a file is streamed from it, and the identity the installed file has then is
/// returned (for [`Known::record`]).
async fn write_blob(
    session: &mut Session,
    path: &str,
    blob: &Blob,
    mode: u32,
    group: Option<&str>,
) -> Result<Option<String>, EnrollError> {
    let (local, len, packing) = match blob.stored() {
        Stored::Memory(bytes) => {
            write_file_owned(session, path, bytes, mode, group).await?;
            return Ok(None);
        }
        Stored::File(local) => (local, blob.len(), Packing::Plain),
        Stored::Gzip { path: local, len } => (local, len, Packing::Gzip),
    };
    let content =
        tokio::fs::File::open(local)
            .await
            .map_err(|e| EnrollError::ArtifactUnreadable {
                path: local.display().to_string(),
                reason: e.to_string(),
            })?;
    let file = StreamedFile {
        path,
        len,
        packing,
        sha256: blob.sha256(),
        mode,
        group,
    };
    let out = write_file_streamed(
        session,
        &file,
        content,
        Some(&observe::identity_script(path)?),
    )
    .await?;
    Ok(observe::parse_identity(&out.stdout_text()).map(str::to_owned))
}

/// Runs one step; a large file it installs is recorded in `known` with the identity the VPS
/// reported right after, so the next observation does not hash it again.
async fn run_step(
    session: &mut Session,
    step: &Step,
    known: &mut Known,
) -> Result<Option<String>, EnrollError> {
    match step {
        Step::Write(file) => {
            let identity = match &file.source {
                Source::Upload(blob) => {
                    let group = layout::group_of(&file.path);
                    write_blob(session, &file.path, blob, file.mode, group).await?
                }
                Source::Download(url) => download(session, &file.path, url, &file.sha256).await?,
            };
            if let Some(identity) = identity {
                known.record(&file.path, &identity, &file.sha256);
            }
        }
        Step::Remove(path) => {
            session
                .run_ok(&Script::write("rm -f -- ").path(path)?)
                .await?;
        }
        Step::DaemonReload => {
            session
                .run_ok(&Script::write("systemctl daemon-reload"))
                .await?;
        }
        Step::Enable(units) => {
            let mut script = Script::write("systemctl enable --quiet");
            for unit in units {
                script = script.code(" ").quoted(unit)?;
            }
            session.run_ok(&script).await?;
        }
        Step::Restart(unit) => {
            session
                .run_ok(&Script::write("systemctl restart ").quoted(unit)?)
                .await?;
        }
        Step::ApplySysctl {
            max_socket_buffer_bytes,
        } => {
            // Container VPSes (LXC, OpenVZ, nspawn) may refuse these in their network
            // namespace, sometimes without an error status: read the values back.
            let out = session
                .run(
                    &Script::write("sysctl -q -e -p ")
                        .path(layout::SYSCTL)?
                        .code(" >/dev/null 2>&1; sysctl -n net.core.rmem_max net.core.wmem_max"),
                )
                .await?;
            let want = max_socket_buffer_bytes.to_string();
            let got: Vec<String> = out
                .stdout_text()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if got.len() != 2 || got.iter().any(|v| *v != want) {
                return Ok(Some(format!(
                    "the VPS kept net.core.rmem_max/wmem_max at {got:?} instead of {want} (a container VPS may not allow them); Envoy and the relay work with smaller socket buffers"
                )));
            }
        }
        Step::WriteState(blob) => {
            write_blob(session, layout::STATE, blob, layout::MODE_SECRET, None).await?;
        }
        Step::EnsureEnvoyUser => {
            session.run_ok(&ensure_envoy_user_script()?).await?;
        }
        Step::Preserve(path) => {
            let kept = format!("{path}{}", layout::PRESERVED_SUFFIX);
            session
                .run_ok(
                    &Script::write("if [ ! -e ")
                        .path(&kept)?
                        .code(" ]; then mv -f -- ")
                        .path(path)?
                        .code(" ")
                        .path(&kept)?
                        .code("; fi"),
                )
                .await?;
        }
    }
    Ok(None)
}

/// Creates Envoy's system user and group when missing (no home, no shell, marked with
/// [`layout::ENVOY_USER_COMMENT`] so teardown knows it is ours), and makes our directories
/// root's again, 0755 (earlier versions gave `/etc/envoy` to the user): root then writes only
/// in directories no one else can change, so no planted link is followed (review L8). A
/// directory that is a symbolic link is refused, parents first.
pub fn ensure_envoy_user_script() -> Result<Script, SshError> {
    let user = layout::ENVOY_USER;
    let mut s = Script::write("u=")
        .quoted(user)?
        .code("; getent group \"$u\" >/dev/null || groupadd --system \"$u\"; getent passwd \"$u\" >/dev/null || useradd --system --gid \"$u\" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --comment ")
        .quoted(layout::ENVOY_USER_COMMENT)?
        .code(" \"$u\"; for d in");
    for dir in [layout::ENVOY_DIR, layout::ENVOY_TLS_DIR, layout::TUNNEL_DIR] {
        s = s.code(" ").path(dir)?;
    }
    Ok(s.code(
        "; do if [ -L \"$d\" ]; then echo \"$d is a symbolic link\" >&2; exit 1; fi; \
         if [ -d \"$d\" ]; then chown -h 0:0 -- \"$d\"; chmod 0755 -- \"$d\"; fi; done",
    ))
}

/// Downloads the Envoy binary on the VPS into a temporary file beside its target, checks the
/// pinned digest, and only then renames it into place; returns the identity it has then.
async fn download(
    session: &mut Session,
    path: &str,
    url: &str,
    sha256: &str,
) -> Result<Option<String>, EnrollError> {
    let script = Script::write("set -eu; u=")
        .quoted(url)?
        .code("; p=")
        .path(path)?
        .code("; want=")
        .quoted(sha256)?
        .code(
            "; d=${p%/*}; mkdir -p -m 0755 \"$d\"; t=$(umask 077 && mktemp \"$d/.tunnel.XXXXXXXX\"); \
             trap 'rm -f \"$t\"' EXIT; \
             curl -fsSL --proto '=https,http' --retry 3 --connect-timeout 20 -o \"$t\" \"$u\" \
               || { echo \"downloading $u failed\" >&2; exit 4; }; \
             got=$(sha256sum < \"$t\" | cut -d' ' -f1); \
             if [ \"$got\" != \"$want\" ]; then echo \"the download from $u has SHA-256 $got, but $want is pinned: refusing it\" >&2; exit 5; fi; \
             chmod 0755 \"$t\"; sync -- \"$t\"; mv -f \"$t\" \"$p\"; trap - EXIT; sync -- \"$d\" 2>/dev/null || true",
        )
        .then(&observe::identity_script(path)?);
    match session.run_ok(&script).await {
        Ok(out) => Ok(observe::parse_identity(&out.stdout_text()).map(str::to_owned)),
        Err(e @ SshError::CommandFailed { .. }) => Err(EnrollError::EnvoyDownload(e)),
        Err(e) => Err(e.into()),
    }
}

async fn wait_active(
    session: &mut Session,
    unit: &'static str,
    checks: u32,
) -> Result<(), EnrollError> {
    let script = Script::read("systemctl is-active ").quoted(unit)?;
    let mut state = String::new();
    for attempt in 0..checks.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        session
            .run(&script)
            .await?
            .stdout_text()
            .trim()
            .clone_into(&mut state);
        match state.as_str() {
            "active" => return Ok(()),
            "failed" => break,
            _ => {}
        }
    }
    Err(EnrollError::ServiceNotActive {
        unit,
        state: super::error::quote_vps(&state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::steps::ManagedFile;

    fn write(path: &str, blob: Blob) -> Step {
        Step::Write(ManagedFile {
            path: path.into(),
            mode: 0o640,
            sha256: blob.sha256().to_owned(),
            source: Source::Upload(blob),
        })
    }

    #[test]
    fn documents_removals_and_the_state_batch_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("envoy");
        std::fs::write(&binary, b"binary").unwrap();
        let steps = vec![
            write(layout::ENVOY, Blob::from_file(&binary).unwrap()),
            write(layout::ENVOY_CDS, Blob::new(b"cds".to_vec())),
            write(layout::ENVOY_LDS, Blob::new(b"lds".to_vec())),
            Step::Remove("/etc/envoy/tls/old.sds.yaml".into()),
            Step::Restart(layout::ENVOY_UNIT),
            Step::WriteState(Blob::new(b"{}".to_vec())),
        ];
        // A streamed binary runs alone; the documents and the removal go together; a restart
        // runs alone; the state after it is a batch of one.
        assert_eq!(batch_end(&steps, 0, None), 0);
        assert_eq!(batch_end(&steps, 1, None), 4);
        assert_eq!(batch_end(&steps, 4, None), 4);
        assert_eq!(batch_end(&steps, 5, None), 6);
        // An interruption asked for inside a run cuts the batch there.
        assert_eq!(batch_end(&steps, 1, Some(2)), 2);
        assert_eq!(
            batch_end(&steps, 1, Some(1)),
            4,
            "a stop at the start is checked before"
        );
    }
}
