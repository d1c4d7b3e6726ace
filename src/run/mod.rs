//! The operator process (`tunnel run`): loads what it pushes to the VPSes, serves the health
//! probes, connects to the API server, checks that the CRDs are served, then runs the actor
//! tree ([`crate::actors`]) until SIGTERM/SIGINT, or until the tree stops (non-zero exit: the
//! Deployment restarts the pod, and the new process rebuilds everything from the API server
//! and the VPSes).

pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use ractor::Actor;

use self::settings::{RunArgs, SettingsError};
use crate::actors::manager::{Manager, ManagerArgs};
use crate::actors::{self, Artefacts, Context};
use crate::crd::{EdgeNode, PortBinding};
use crate::leader::elector::Timings;
use crate::leader::fence::Fence;
use crate::leader::{self, Candidate, LeaderError};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::metrics_server::{self, Authorizer, MetricsServerError};
use crate::telemetry::probes;

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No kubeconfig or in-cluster configuration was usable.
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
    /// The CRDs are not installed (or not served) in the cluster.
    #[error(
        "the {kind} CRD is not served by the cluster ({source}); install it with `tunnel crds | kubectl apply -f -` or the Helm chart"
    )]
    MissingCrd {
        /// The kind that could not be listed.
        kind: &'static str,
        /// The API error.
        source: kube::Error,
    },
    /// The health probe address could not be bound.
    #[error("binding --health-probe-bind-address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A flag points at something unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A flag value is malformed.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The actor tree could not start, or stopped.
    #[error("the actor tree stopped: {0}")]
    Tree(String),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsServerError),
    /// Leadership was lost: the tree was stopped.
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

impl OperatorError {
    /// A stable UpperCamelCase label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "APIUnreachable",
            Self::MissingCrd { .. } => "CRDMissing",
            Self::Bind { .. } => "ProbeBindFailed",
            Self::Settings(e) => e.category(),
            Self::Flag { .. } => "InvalidFlag",
            Self::Tree(_) => "TreeStopped",
            Self::Leader(e) => e.category(),
            Self::Metrics(e) => e.category(),
        }
    }
}

/// Says how Envoy will reach the VPSes, and warns when it cannot reach any.
fn log_envoy_install(envoy: &crate::enroll::EnvoyInstall) {
    use crate::enroll::EnvoyInstall;
    match envoy {
        EnvoyInstall::Push { version, binaries } => {
            let architectures: Vec<&str> = binaries.keys().map(|a| a.uname()).collect();
            tracing::info!(mode = "push", %version, ?architectures, "Envoy install");
        }
        EnvoyInstall::Download {
            version,
            url_template,
            sha256,
        } => {
            let pinned: Vec<&str> = sha256.keys().map(|a| a.uname()).collect();
            tracing::info!(mode = "download", %version, %url_template, ?pinned, "Envoy install");
            if pinned.is_empty() {
                tracing::warn!(
                    %version,
                    "no SHA-256 is pinned for this Envoy version: every VPS will refuse the download; give --envoy-sha256 ARCH=HEX, or binaries in --envoy-dir"
                );
            }
        }
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), OperatorError> {
    let tunnelctl = settings::load_tunnelctl(&args.tunnelctl_dir)?;
    let envoy = settings::load_envoy(
        &args.envoy_dir,
        &args.envoy_version,
        &args.envoy_download_url,
        &args.envoy_sha256,
    )?;
    log_envoy_install(&envoy);

    let ready = Arc::new(AtomicBool::new(false));
    let health_addr = args.health_probe_bind_address;
    let listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: health_addr,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(health_addr), "serving health probes");
    let probes = tokio::spawn(probes::serve(listener, ready.clone()));

    let timings = Timings {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    timings.validate().map_err(|message| OperatorError::Flag {
        flag: "--leader-elect-*",
        message,
    })?;

    let config = kube::Config::infer()
        .await
        .map_err(|e| OperatorError::Connect(kube::Error::InferConfig(e)))?;
    // Unfenced: the Lease itself and the CRD check. The tree gets a fenced one below.
    let client = Client::try_from(config.clone()).map_err(OperatorError::Connect)?;
    check_crds(&client).await?;

    let metrics = Metrics::new();
    let metrics_task = match args.metrics_bind_address.0 {
        Some(addr) => {
            let options = metrics_server::Options {
                addr,
                secure: args.metrics_secure,
                cert_dir: args.metrics_cert_path.clone().unwrap_or_default(),
                cert_name: args.metrics_cert_name.clone(),
                key_name: args.metrics_cert_key.clone(),
                http2: args.enable_http2,
            };
            let (listener, tls) = metrics_server::bind(&options).await?;
            // A standby serves metrics too; its reviews go through the unfenced client.
            let authorizer = options.secure.then(|| Authorizer::new(client.clone()));
            Some(tokio::spawn(metrics_server::serve(
                listener,
                tls,
                metrics.clone(),
                authorizer,
                options.http2,
            )))
        }
        None => None,
    };

    let mut candidate = if args.leader_elect {
        let namespace = args
            .leader_elect_namespace
            .clone()
            .unwrap_or_else(leader::pod_namespace);
        let mut candidate = Candidate::new(client.clone(), &namespace, leader::identity(), timings);
        // A standby is healthy and ready: it is waiting, and a rollout must not wait on it.
        ready.store(true, Ordering::Relaxed);
        tokio::select! {
            () = candidate.acquire() => {}
            () = shutdown_signal() => {
                tracing::info!("shutting down before becoming the leader");
                probes.abort();
                if let Some(task) = &metrics_task {
                    task.abort();
                }
                return Ok(());
            }
        }
        ready.store(false, Ordering::Relaxed);
        Some(candidate)
    } else {
        None
    };
    let fence = candidate
        .as_ref()
        .map_or_else(Fence::always_open, Candidate::fence);
    let client = fence.client(config).map_err(OperatorError::Connect)?;
    metrics.set_leader(true);

    let uplink_pod_options = args.uplink_pod_options();
    let artefacts = Artefacts {
        tunnelctl,
        envoy,
        uplink_image: format!("{}/uplink:{}", args.image_repo, args.image_tag),
    };
    let uplink_log = (
        std::env::var("LOG_FORMAT").unwrap_or_else(|_| "json".into()),
        std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()),
    );
    let context_client = client.clone();
    let context_metrics = metrics.clone();
    let context_fence = fence.clone();
    let make_context = Box::new(move |stores| Context {
        recorder: kube::runtime::events::Recorder::new(context_client.clone(), actors::reporter()),
        client: context_client,
        stores,
        secret_data: actors::secrets::SecretData::default(),
        artefacts,
        resync: args.resync_period,
        ssh_keepalive: args.ssh_keepalive_interval,
        ssh_slots: Arc::new(actors::ssh_slots::SshSlots::new(usize::from(
            args.max_concurrent_reconciles,
        ))),
        prefix: format!("tunnel-{}", std::process::id()),
        schedule: actors::edge_node::core::Schedule::default(),
        restarts: actors::restarts::RestartPolicy::default(),
        uplink_log,
        uplink_pod_options,
        allow_restricted_targets: args.allow_restricted_targets,
        cross_namespace_targets: args.cross_namespace_targets,
        load_balancers: crate::plan::load_balancer::LoadBalancerSettings {
            classless: args.load_balancer_classless,
        },
        metrics: context_metrics,
        fence: context_fence,
        edges: Arc::default(),
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        max_concurrent_reconciles = args.max_concurrent_reconciles,
        resync = ?args.resync_period,
        allow_restricted_targets = args.allow_restricted_targets,
        cross_namespace_targets = args.cross_namespace_targets.as_str(),
        load_balancer_classless = args.load_balancer_classless,
        "starting the actor tree"
    );
    let (manager, mut handle) = Actor::spawn(
        None,
        Manager,
        ManagerArgs {
            make_context,
            client,
            ready: ready.clone(),
            watch_namespaces: args.watch_namespaces.clone(),
            discovery_period: args.gateway_api_discovery_period,
        },
    )
    .await
    .map_err(|e| OperatorError::Tree(e.to_string()))?;

    let hold = async {
        match candidate.as_mut() {
            Some(c) => c.hold().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        joined = &mut handle => Err(OperatorError::Tree(match joined {
            Ok(()) => "the Manager stopped".into(),
            Err(e) => e.to_string(),
        })),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            manager.stop(Some("shutdown".into()));
            Ok(())
        }
        lost = hold => {
            tracing::error!(error = %lost, "stopping the actor tree");
            manager.stop(Some("leadership lost".into()));
            metrics.set_leader(false);
            Err(OperatorError::Leader(lost))
        }
    };
    ready.store(false, Ordering::Relaxed);
    if result.is_ok()
        && let Some(candidate) = candidate.as_mut()
    {
        // Let the next leader start at once, but only after this tree stopped writing.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut handle).await;
        candidate.release().await;
    }
    probes.abort();
    if let Some(task) = &metrics_task {
        task.abort();
    }
    result
}

async fn check_crds(client: &Client) -> Result<(), OperatorError> {
    let edge_nodes: Api<EdgeNode> = Api::all(client.clone());
    let port_bindings: Api<PortBinding> = Api::all(client.clone());
    let nodes = edge_nodes
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|source| OperatorError::MissingCrd {
            kind: "EdgeNode",
            source,
        })?;
    port_bindings
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|source| OperatorError::MissingCrd {
            kind: "PortBinding",
            source,
        })?;
    if let Some(first) = nodes.items.first() {
        tracing::debug!(name = first.name_any(), "CRDs served");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
