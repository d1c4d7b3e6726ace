//! An SSH server in the test process standing in for a VPS (russh's server side, on
//! loopback): it accepts any key, counts the connections it was given, and answers every
//! command the way a test asks, so the SSH session actor's reuse, drop and loss handling run
//! over a real SSH connection without root, sshd or a VPS. It never runs what it is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{LineEnding, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::sync::watch;

/// How the server answers a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Exit status 1 with a line on stderr: the command ran and failed (not the transport).
    Fail,
    /// `SSH_MSG_CHANNEL_FAILURE` to the exec request: the transport refused it, the
    /// connection stays up.
    Refuse,
}

/// The running server.
#[derive(Debug)]
pub struct FakeSshd {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    answer: watch::Sender<Answer>,
    /// Every live connection's handle, to end them all at once.
    handles: Arc<std::sync::Mutex<Vec<russh::server::Handle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSshd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSshd {
    /// Starts it on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(russh::server::Config {
            keys: vec![key(7)],
            auth_rejection_time: std::time::Duration::ZERO,
            ..Default::default()
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let (answer, answers) = watch::channel(Answer::Fail);
        let handles = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, kept) = (connections.clone(), handles.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let each = Handler {
                    answers: answers.clone(),
                };
                if let Ok(running) = russh::server::run_stream(config.clone(), stream, each).await {
                    kept.lock().unwrap().push(running.handle());
                    tokio::spawn(running);
                }
            }
        });
        Self {
            addr,
            connections,
            answer,
            handles,
            task,
        }
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// From now on, commands are answered so.
    pub fn answer(&self, answer: Answer) {
        self.answer.send_replace(answer);
    }

    /// Ends every open connection (the VPS went away).
    pub async fn hang_up(&self) {
        let handles: Vec<_> = self.handles.lock().unwrap().drain(..).collect();
        for handle in handles {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "bye".into(), "en".into())
                .await;
        }
    }

    /// A client private key in OpenSSH form (any key is accepted).
    pub fn client_key() -> String {
        key(9).to_openssh(LineEnding::LF).unwrap().to_string()
    }
}

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

struct Handler {
    answers: watch::Receiver<Answer>,
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let answer = *self.answers.borrow();
        match answer {
            Answer::Refuse => session.channel_failure(channel)?,
            Answer::Fail => {
                session.channel_success(channel)?;
                session.extended_data(channel, 1, &b"no\n"[..])?;
                session.exit_status_request(channel, 1)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
        }
        Ok(())
    }
}
