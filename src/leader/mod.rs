//! Leader election on a `coordination.k8s.io/v1` Lease, with its fence, in one room: the pure
//! elector ([`elector`], client-go's algorithm), the write [`fence`] on the tree's client, and
//! here the I/O around the elector: read the Lease, write what the core decides with optimistic
//! concurrency (a replace carrying the resourceVersion read, so two candidates can never both
//! win), and keep the [write fence](crate::leader::fence) open only as long as the core says.
//!
//! Our own rather than kube-lease-manager: that crate renews `grace` seconds before expiry
//! and tells its caller only a `bool`; we need the moment each renewal was *sent* to shut the
//! write fence before anyone else can take the Lease (docs/dependencies.md).

pub mod elector;
pub mod fence;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::leader::elector::{Elector, Record, Step, Timings};
use crate::leader::fence::Fence;

/// The Lease's name (the seed's leader-election ID, so an old and a new operator never lead
/// at once during a migration).
pub const LEASE_NAME: &str = "6f1468a9.achetronic.com";

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease was not renewed within the renew deadline (API unreachable, paused process,
    /// or another candidate holds it now).
    #[error("lost the leader Lease {namespace}/{name}: not renewed within {deadline:?}")]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The renew deadline.
        deadline: Duration,
    },
}

impl LeaderError {
    /// A stable label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Lost { .. } => "LeaderLost",
        }
    }
}

/// The identity of this process: the pod's name (or the host's) and the process id, so two
/// processes never share one.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "tunnel".into());
    format!("{host}_{}", std::process::id())
}

/// The namespace of this pod: `POD_NAMESPACE`, else the ServiceAccount's namespace file, else
/// `default`.
pub fn pod_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// One candidate: its Lease, its decisions and the fence it keeps.
#[derive(Debug)]
pub struct Candidate {
    api: Api<Lease>,
    namespace: String,
    elector: Elector,
    fence: Fence,
}

fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.map(|t| t.0),
        renew_time: spec.renew_time.map(|t| t.0),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn spec_of(record: &Record) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(record.holder.clone()),
        lease_duration_seconds: Some(record.lease_duration_seconds),
        acquire_time: record.acquire_time.map(MicroTime),
        renew_time: record.renew_time.map(MicroTime),
        lease_transitions: Some(record.transitions),
        ..LeaseSpec::default()
    }
}

impl Candidate {
    /// A candidate for the Lease in `namespace`, with a client that is *not* fenced.
    pub fn new(client: Client, namespace: &str, identity: String, timings: Timings) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            elector: Elector::new(identity, timings),
            fence: Fence::shut(),
        }
    }

    /// The fence this candidate opens while it leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        self.elector.identity()
    }

    /// One attempt to acquire or renew; true when we hold the Lease afterwards.
    async fn attempt(&mut self) -> bool {
        let started = Instant::now();
        let deadline = self.elector.timings().renew_deadline;
        let result = tokio::time::timeout(deadline, self.try_write(started)).await;
        match result {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                warn!(lease = LEASE_NAME, error = %e, "leader election: the Lease could not be read or written");
                false
            }
            Err(_) => {
                warn!(
                    lease = LEASE_NAME,
                    "leader election: the Lease request timed out"
                );
                false
            }
        }
    }

    async fn try_write(&mut self, started: Instant) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(LEASE_NAME).await?;
        let record = current.as_ref().map(record_of);
        let step = self
            .elector
            .decide(record.as_ref(), Instant::now(), Timestamp::now());
        let written = match step {
            Step::Wait => return Ok(false),
            Step::Create(record) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec_of(&record)),
                };
                self.api.create(&PostParams::default(), &lease).await?;
                record
            }
            Step::Update(record) => {
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec_of(&record));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await?;
                record
            }
        };
        let until = self.elector.written(written, started, Instant::now());
        self.fence.open_until(until);
        Ok(true)
    }

    fn pause(&self) -> Duration {
        // client-go's jitter: up to 1.2 × the retry period, random per wait (not the process
        // id: it is 1 in every container, so every replica waited the same).
        let retry = self.elector.timings().retry_period;
        let spread =
            f64::from(u32::try_from(crate::jitter::random_seed() % 100).unwrap_or(0)) / 500.0;
        retry.mul_f64(1.0 + spread)
    }

    /// Returns once this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        info!(
            lease = LEASE_NAME,
            namespace = self.namespace,
            identity = self.identity(),
            "waiting to become the leader"
        );
        loop {
            if self.attempt().await {
                info!(
                    lease = LEASE_NAME,
                    identity = self.identity(),
                    "became the leader"
                );
                return;
            }
            tokio::time::sleep(self.pause()).await;
        }
    }

    /// Renews the Lease every retry period; returns when it was not renewed within the renew
    /// deadline (the fence is shut by then).
    pub async fn hold(&mut self) -> LeaderError {
        loop {
            tokio::time::sleep(self.elector.timings().retry_period).await;
            let renewed = self.attempt().await;
            if !renewed && self.elector.lost(Instant::now()) {
                warn!(
                    lease = LEASE_NAME,
                    identity = self.identity(),
                    "lost the leader Lease"
                );
                self.fence.close();
                return LeaderError::Lost {
                    namespace: self.namespace.clone(),
                    name: LEASE_NAME.into(),
                    deadline: self.elector.timings().renew_deadline,
                };
            }
        }
    }

    /// Lets the Lease go (on shutdown, after the tree stopped) so the next candidate takes
    /// over at once; a failure is logged (the Lease then expires on its own).
    pub async fn release(&mut self) {
        self.fence.close();
        let result = async {
            let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
                return Ok::<_, kube::Error>(());
            };
            if let Some(record) = self.elector.release(&record_of(&lease), Timestamp::now()) {
                lease.spec = Some(spec_of(&record));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await?;
                info!(lease = LEASE_NAME, "released the leader Lease");
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(5), result).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "releasing the leader Lease"),
            Err(_) => warn!("releasing the leader Lease timed out"),
        }
    }
}
