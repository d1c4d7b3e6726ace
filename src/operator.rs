//! The operator process (`tunnel run`): connects to the API server, checks that the CRDs are
//! served, serves the health probes, and watches EdgeNodes and PortBindings until SIGTERM.
//!
//! Reconciliation (the actor tree of DESIGN.md §3) plugs in here; today the watches only log
//! what they see, so an operator deployed from the chart starts, reports healthy and shows
//! its view of the resources.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::crd::{EdgeNode, PortBinding};
use crate::health;

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
}

impl OperatorError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::MissingCrd { .. } => "missing_crd",
            Self::Bind { .. } => "bind",
        }
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(health_addr: SocketAddr) -> Result<(), OperatorError> {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: health_addr,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(health_addr), "serving health probes");
    let probes = tokio::spawn(health::serve(listener, ready.clone()));

    let client = Client::try_default()
        .await
        .map_err(OperatorError::Connect)?;
    let edge_nodes: Api<EdgeNode> = Api::all(client.clone());
    let port_bindings: Api<PortBinding> = Api::all(client);
    edge_nodes
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
    ready.store(true, Ordering::Relaxed);
    tracing::info!("watching EdgeNodes and PortBindings");

    let nodes = watcher(edge_nodes, watcher::Config::default()).for_each(|event| async move {
        match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                tracing::info!(
                    namespace = node.namespace().unwrap_or_default(),
                    name = node.name_any(),
                    address = node.spec.address,
                    "EdgeNode seen"
                );
            }
            Ok(watcher::Event::Delete(node)) => {
                tracing::info!(name = node.name_any(), "EdgeNode deleted");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "EdgeNode watch"),
        }
    });
    let bindings =
        watcher(port_bindings, watcher::Config::default()).for_each(|event| async move {
            match event {
                Ok(watcher::Event::Apply(pb) | watcher::Event::InitApply(pb)) => {
                    tracing::info!(
                        namespace = pb.namespace().unwrap_or_default(),
                        name = pb.name_any(),
                        bindings = pb.spec.bindings.len(),
                        "PortBinding seen"
                    );
                }
                Ok(watcher::Event::Delete(pb)) => {
                    tracing::info!(name = pb.name_any(), "PortBinding deleted");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "PortBinding watch"),
            }
        });

    tokio::select! {
        () = nodes => {}
        () = bindings => {}
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    probes.abort();
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
