//! The SSH session actor: one per EdgeNode, a child of its EdgeNode actor. It owns one russh
//! connection to the VPS (kept open and reused across passes, re-made when the credentials or
//! the address change), runs the jobs it is sent one at a time (an enrollment pass, a
//! teardown), and answers each with a message, so the EdgeNode's mailbox never waits on SSH.
//! At most `--max-concurrent-reconciles` jobs talk to their VPSes at once across all session
//! actors: a job takes one of those global slots only once its session is connected and
//! authenticated, so decoding the key (off the runtime, once per Secret version) and
//! connecting (up to `connectTimeout`, with retries) never hold one, and a VPS that never
//! answers (down, or a tarpit) cannot starve the others.
//! Between jobs it watches the kept connection: when it ends (the VPS went down, keepalives
//! went unanswered) it tells its EdgeNode actor, which checks the VPS at once.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::enroll::observe::Known;
use crate::enroll::{self, EnrollError, PassOptions, Progress};
use crate::ssh::Session;
use crate::ssh::private_key::KeyCache;

use super::Context;
use super::error::ReconcileError;
use super::protocol::{Job, JobResult, NodeMsg, Target, Work};
use super::ssh_slots::PassKind;

/// Longest a job may take once connected (an Envoy push over a slow link included).
const JOB_TIMEOUT: Duration = Duration::from_secs(900);

/// The actor.
#[derive(Debug, Default)]
pub struct SshSessionActor;

/// Its state: the open session, if any, and the target it was opened for.
pub struct SshSessionState {
    ctx: Arc<Context>,
    session: Option<(String, Session)>,
    /// The digests of the VPS's large files, by their identity, as the open session last saw
    /// them (forgotten with the session).
    known: Known,
    /// The last pass converged the VPS: the next one queues with the quick passes
    /// ([`PassKind::Again`]).
    converged: bool,
    /// The decoded private key of the current Secret version.
    keys: KeyCache,
    _alive: crate::telemetry::metrics::AliveGuard,
    /// Waits for the kept connection to end while no job runs.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl SshSessionState {
    /// Stops watching (a job is about to use the session, or it is being replaced).
    fn unwatch(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }

    /// Watches the connection that is open now, until the next job.
    fn watch(&mut self, node: &ActorRef<NodeMsg>) {
        self.unwatch();
        let Some((_, session)) = self.session.as_ref().filter(|(_, s)| s.is_connected()) else {
            return;
        };
        let lost = session.lost();
        let node = node.clone();
        self.watcher = Some(tokio::spawn(async move {
            lost.notified().await;
            // The EdgeNode actor may be gone; then nobody needs to know.
            let _ = node.send_message(NodeMsg::SessionLost);
        }));
    }
}

impl std::fmt::Debug for SshSessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSessionState")
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Actor for SshSessionActor {
    type Msg = Job;
    type State = SshSessionState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let alive = ctx.metrics.alive("SSHSession");
        Ok(SshSessionState {
            ctx,
            session: None,
            known: Known::default(),
            converged: false,
            keys: KeyCache::default(),
            watcher: None,
            _alive: alive,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.unwatch();
        if let Some((_, session)) = state.session.take() {
            session.close().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        job: Job,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Job {
            pass,
            target,
            work,
            reply,
        } = job;
        let _timer = state.ctx.metrics.handling("SSHSession");
        state.unwatch();
        let teardown = matches!(work, Work::Teardown);
        let mut progress = |progress| {
            // Only for the status; an EdgeNode actor that is gone gets the answer's error.
            let _ = reply.send_message(NodeMsg::Progress { pass, progress });
        };
        let answer = run(state, &target, work, &mut progress).await;
        if !teardown {
            state.watch(&reply);
        }
        if reply
            .send_message(NodeMsg::JobDone {
                pass,
                result: answer,
            })
            .is_err()
        {
            // Our EdgeNode actor is gone (it is being restarted or was removed).
            info!("EdgeNode actor gone; closing its SSH session");
            myself.stop(None);
        }
        Ok(())
    }
}

/// Runs one job; a failed connection is an answer too. Connects (decoding the key first,
/// when it is new) without a slot, then takes a global slot for the work on the VPS, under
/// [`JOB_TIMEOUT`].
async fn run(
    state: &mut SshSessionState,
    target: &Target,
    work: Work,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> JobResult {
    let teardown = matches!(work, Work::Teardown);
    let fail = |e: ReconcileError| {
        if teardown {
            JobResult::TornDown(Err(e))
        } else {
            JobResult::Converged(Err(e))
        }
    };
    if !state.ctx.fence.allows() {
        return fail(ReconcileError::NotLeader);
    }
    let reuse = state
        .session
        .as_ref()
        .is_some_and(|(fingerprint, s)| *fingerprint == target.fingerprint && s.is_connected());
    if !reuse {
        if let Some((_, old)) = state.session.take() {
            old.close().await;
        }
        let connected = match state.keys.key_for(&target.credentials).await {
            Ok(key) => {
                Session::connect_with_key(target.options.clone(), target.credentials.clone(), key)
                    .await
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok(mut session) => {
                // Each write command checks the fence, not only the job's start (issue 24, L3).
                session.fence_writes(state.ctx.fence.clone());
                state.session = Some((target.fingerprint.clone(), session));
                state.known = Known::default();
            }
            Err(e) => return fail(ReconcileError::Enroll(EnrollError::Ssh(e))),
        }
    }
    let kind = if state.converged {
        PassKind::Again
    } else {
        PassKind::First
    };
    let slots = state.ctx.ssh_slots.clone();
    let Some(_slot) = slots.acquire(kind).await else {
        return fail(ReconcileError::SessionGone);
    };
    // Waiting for a slot may take a while: the lease may have been lost meanwhile.
    if !state.ctx.fence.allows() {
        return fail(ReconcileError::NotLeader);
    }
    if let Ok(answer) =
        tokio::time::timeout(JOB_TIMEOUT, work_on(state, target, work, progress)).await
    {
        state.converged = matches!(answer, JobResult::Converged(Ok(_)));
        answer
    } else {
        state.converged = false;
        // The session may be mid-command: drop it and start afresh next time.
        state.session = None;
        timeout_error(target, teardown)
    }
}

/// The work of one job on the connected session.
async fn work_on(
    state: &mut SshSessionState,
    target: &Target,
    work: Work,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> JobResult {
    let fail = |e: ReconcileError| match work {
        Work::Teardown => JobResult::TornDown(Err(e)),
        Work::Converge { .. } => JobResult::Converged(Err(e)),
    };
    let Some((_, session)) = state.session.as_mut() else {
        return fail(ReconcileError::SessionGone);
    };
    let known = &mut state.known;
    let (mark, started) = (session.log().len(), std::time::Instant::now());
    let result = match work {
        Work::Converge { desired, request } => {
            let options = PassOptions {
                request,
                ..PassOptions::default()
            };
            JobResult::Converged(
                enroll::enroll_telling(session, &desired, &options, known, progress)
                    .await
                    .map_err(ReconcileError::Enroll),
            )
        }
        Work::Teardown => JobResult::TornDown(
            enroll::teardown(session)
                .await
                .map_err(ReconcileError::Enroll),
        ),
    };
    let ok = matches!(
        result,
        JobResult::Converged(Ok(_)) | JobResult::TornDown(Ok(()))
    );
    let teardown = matches!(result, JobResult::TornDown(_));
    state
        .ctx
        .metrics
        .enrollment_pass(teardown, ok, started.elapsed());
    if let Some((_, s)) = &state.session {
        state.ctx.metrics.ssh_commands(&s.log().since(mark));
    }
    let broken = match &result {
        JobResult::Converged(Err(ReconcileError::Enroll(EnrollError::Ssh(e))))
        | JobResult::TornDown(Err(ReconcileError::Enroll(EnrollError::Ssh(e)))) => e.is_transient(),
        _ => false,
    };
    if broken {
        warn!(host = %target.options.target(), "dropping the SSH session after a transport error");
        state.session = None;
    }
    result
}

fn timeout_error(target: &Target, teardown: bool) -> JobResult {
    let e = ReconcileError::Enroll(EnrollError::Ssh(crate::ssh::SshError::CommandTimeout {
        command: format!("pass on {}", target.options.target()),
        timeout: JOB_TIMEOUT,
    }));
    if teardown {
        JobResult::TornDown(Err(e))
    } else {
        JobResult::Converged(Err(e))
    }
}

#[cfg(test)]
mod tests {
    //! The actor over a real SSH connection to an in-process server ([`FakeSshd`]).

    use std::collections::BTreeMap;

    use super::*;
    use crate::actors::fake_sshd::{Answer, FakeSshd};
    use crate::actors::restarts::RestartPolicy;
    use crate::actors::testing::{bed, recorder, until};
    use crate::enroll::{Arch, Blob, DesiredState, EnvoyInstall, HostTuning, Request};
    use crate::ssh::{Credentials, SecretString, SshOptions};

    fn target(sshd: &FakeSshd, fingerprint: &str) -> Target {
        Target {
            options: SshOptions {
                host: sshd.addr.ip().to_string(),
                port: sshd.addr.port(),
                user: "root".into(),
                connect_timeout: Duration::from_secs(5),
                keepalive_interval: Duration::from_secs(60),
                keepalive_max: 3,
                command_timeout: Duration::from_secs(5),
                insecure_skip_host_key_verification: true,
                reconnect_attempts: 0,
            },
            credentials: Credentials {
                private_key: Some(SecretString::new(FakeSshd::client_key())),
                passphrase: None,
                password: None,
                known_hosts: None,
            },
            fingerprint: fingerprint.into(),
        }
    }

    fn converge() -> Work {
        let blob = |b: &[u8]| Blob::new(b.to_vec());
        Work::Converge {
            desired: Box::new(DesiredState {
                tunnelctl: BTreeMap::from([(Arch::X86_64, blob(b"relay"))]),
                envoy: EnvoyInstall::Push {
                    version: "1.40.0".into(),
                    binaries: BTreeMap::from([(Arch::X86_64, blob(b"envoy"))]),
                },
                relay_document: blob(b"{}"),
                envoy_bootstrap: blob(b"b"),
                envoy_lds: blob(b"l"),
                envoy_cds: blob(b"c"),
                sds: BTreeMap::new(),
                host: HostTuning::default(),
            }),
            request: Request::default(),
        }
    }

    /// Sends a job and waits for its answer; returns the answer's `Debug` text.
    async fn job(
        session: &ActorRef<Job>,
        node: (&ActorRef<NodeMsg>, &std::sync::Mutex<Vec<String>>),
        pass: u64,
        target: Target,
        work: Work,
    ) -> String {
        let before = node.1.lock().unwrap().len();
        session
            .send_message(Job {
                pass,
                target,
                work,
                reply: node.0.clone(),
            })
            .unwrap();
        until("the job's answer", || node.1.lock().unwrap().len() > before).await;
        node.1.lock().unwrap()[before].clone()
    }

    #[tokio::test]
    async fn a_kept_session_is_reused_and_made_anew_after_a_transport_error_or_new_credentials() {
        let sshd = FakeSshd::start().await;
        let b = bed("t-session-reuse", RestartPolicy::default());
        let (node, seen) = recorder::<NodeMsg>("t-session-reuse-node".into()).await;
        let (session, _) = Actor::spawn(None, SshSessionActor, b.ctx.clone())
            .await
            .unwrap();
        let node = (&node, &*seen);

        // A command that fails on the VPS is not the connection's fault: it is kept.
        let first = job(&session, node, 1, target(&sshd, "a"), Work::Teardown).await;
        assert!(
            first.contains("pass: 1") && first.contains("TornDown(Err"),
            "{first}"
        );
        assert!(first.contains("CommandFailed"), "{first}");
        assert_eq!(sshd.connections(), 1);
        job(&session, node, 2, target(&sshd, "a"), Work::Teardown).await;
        assert_eq!(
            sshd.connections(),
            1,
            "the second job reuses the connection"
        );

        // The transport refuses a command: the session is dropped, the next job reconnects.
        sshd.answer(Answer::Refuse);
        let refused = job(&session, node, 3, target(&sshd, "a"), Work::Teardown).await;
        assert!(refused.contains("CommandRefused"), "{refused}");
        assert_eq!(sshd.connections(), 1);
        sshd.answer(Answer::Fail);
        job(&session, node, 4, target(&sshd, "a"), Work::Teardown).await;
        assert_eq!(
            sshd.connections(),
            2,
            "a fresh connection after the transport error"
        );

        // New credentials or options (another digest): a new connection, once.
        job(&session, node, 5, target(&sshd, "b"), Work::Teardown).await;
        job(&session, node, 6, target(&sshd, "b"), Work::Teardown).await;
        assert_eq!(sshd.connections(), 3);
        session.stop(None);
    }

    #[tokio::test]
    async fn a_connection_lost_between_jobs_is_reported_and_the_next_job_reconnects() {
        let sshd = FakeSshd::start().await;
        let b = bed("t-session-lost", RestartPolicy::default());
        let (node, seen) = recorder::<NodeMsg>("t-session-lost-node".into()).await;
        let (session, _) = Actor::spawn(None, SshSessionActor, b.ctx.clone())
            .await
            .unwrap();
        let node = (&node, &*seen);

        let answer = job(&session, node, 1, target(&sshd, "a"), converge()).await;
        assert!(answer.contains("Converged(Err"), "{answer}");
        sshd.hang_up().await;
        until("SessionLost", || {
            seen.lock().unwrap().iter().any(|m| m == "SessionLost")
        })
        .await;
        assert_eq!(seen.lock().unwrap().len(), 2, "{:?}", seen.lock().unwrap());
        job(&session, node, 2, target(&sshd, "a"), converge()).await;
        assert_eq!(sshd.connections(), 2);
        session.stop(None);
    }
}
