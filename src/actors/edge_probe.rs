//! The check of each edge from outside (issue 20), the way a client sees it: every
//! [`PROBE_INTERVAL_SECS`] the probe actor opens a TCP connection to each public port each
//! EdgeNode serves (at each of its public addresses; a port passes when one address answers),
//! and feeds the result to the edge's damped verdict ([`EdgeHealth`]). An EdgeNode that serves
//! no TCP port (UDP only) is probed on its SSH port (the host is up). The relay's handshakes
//! count too: a probe fails while the EdgeNode's last pass found no uplink with a fresh
//! handshake (Envoy accepts connections it cannot forward anywhere, so a connect alone would
//! keep such an edge published).
//!
//! The verdicts live on the [`EdgeBoard`] in the tree's context: EdgeNode passes write the
//! targets, the sources' actors read the verdicts when they compose their statuses
//! ([`super::edge_set`]), and a change of verdict is told to the Manager, which makes the
//! sources of that EdgeNode write their statuses again.
//!
//! Cost: at most [`MAX_PORTS_PROBED`] ports and [`MAX_ADDRESSES_PROBED`] addresses per
//! EdgeNode, all probes of a round concurrent and bounded by [`PROBE_TIMEOUT_SECS`].

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;
use tracing::info;

use crate::object_key::ObjectKey;

use super::edge_health::{EdgeHealth, PROBE_INTERVAL_SECS, PROBE_TIMEOUT_SECS};
use super::edge_set::Outside;
use super::protocol::ManagerMsg;

/// The most public ports probed per EdgeNode each round.
pub const MAX_PORTS_PROBED: usize = 16;
/// The most public addresses probed per EdgeNode.
pub const MAX_ADDRESSES_PROBED: usize = 4;

/// What to probe of one edge: its public addresses and the TCP ports it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTargets {
    /// Public addresses (IP literals or host names).
    pub addresses: Vec<String>,
    /// TCP ports.
    pub ports: Vec<u16>,
    /// The last pass found at least one uplink with a fresh handshake with the relay.
    pub relay_up: bool,
}

#[derive(Debug, Default)]
struct Entry {
    targets: ProbeTargets,
    health: EdgeHealth,
}

/// The edges' targets and verdicts, shared by the tree.
#[derive(Debug, Default)]
pub struct EdgeBoard {
    entries: RwLock<BTreeMap<ObjectKey, Entry>>,
}

impl EdgeBoard {
    /// After a pass of `node`: what to probe from now on.
    pub fn set_targets(&self, node: &ObjectKey, mut targets: ProbeTargets) {
        targets.addresses.truncate(MAX_ADDRESSES_PROBED);
        targets.ports.sort_unstable();
        targets.ports.dedup();
        targets.ports.truncate(MAX_PORTS_PROBED);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.entry(node.clone()).or_default().targets = targets;
    }

    /// `node` is gone.
    pub fn forget(&self, node: &ObjectKey) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
    }

    /// The check's verdict on `node`.
    pub fn outside(&self, node: &ObjectKey) -> Outside {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .map_or(Outside::Unknown, |e| e.health.verdict())
    }

    fn targets(&self) -> Vec<(ObjectKey, ProbeTargets)> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, e)| !e.targets.addresses.is_empty() && !e.targets.ports.is_empty())
            .map(|(k, e)| (k.clone(), e.targets.clone()))
            .collect()
    }

    fn observe(&self, node: &ObjectKey, ok: bool, now: u64) -> Option<Outside> {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(node)?
            .health
            .observe(ok, now)
    }
}

/// Whether every port of `targets` accepts a TCP connection at one of its addresses.
async fn probe(targets: &ProbeTargets) -> bool {
    // Every (port, address) at once: a round takes one timeout at most, however many
    // addresses do not answer, so rounds never pile up behind the 2 s tick.
    let timeout = Duration::from_secs(PROBE_TIMEOUT_SECS);
    let mut all = tokio::task::JoinSet::new();
    for port in &targets.ports {
        for address in &targets.addresses {
            let (address, port) = (address.clone(), *port);
            all.spawn(async move {
                let connect = TcpStream::connect((address.as_str(), port));
                let ok = matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)));
                (port, ok)
            });
        }
    }
    let mut answered = std::collections::BTreeSet::new();
    while let Some(result) = all.join_next().await {
        if let Ok((port, true)) = result {
            answered.insert(port);
        }
    }
    targets.ports.iter().all(|p| answered.contains(p))
}

/// The probe actor's messages.
#[derive(Debug)]
pub enum ProbeMsg {
    /// Probe every edge.
    Tick,
}

/// The probe actor.
#[derive(Debug, Default)]
pub struct EdgeProbeActor;

/// Its state.
#[derive(Debug)]
pub struct EdgeProbeState {
    board: Arc<EdgeBoard>,
    manager: ActorRef<ManagerMsg>,
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for EdgeProbeActor {
    type Msg = ProbeMsg;
    type State = EdgeProbeState;
    type Arguments = (Arc<EdgeBoard>, ActorRef<ManagerMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (board, manager): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker =
            myself.send_interval(Duration::from_secs(PROBE_INTERVAL_SECS), || ProbeMsg::Tick);
        Ok(EdgeProbeState {
            board,
            manager,
            started: Instant::now(),
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        ProbeMsg::Tick: ProbeMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let edges = state.board.targets();
        let rounds = edges.iter().map(|(node, targets)| async move {
            (node.clone(), targets.relay_up && probe(targets).await)
        });
        let results = futures::future::join_all(rounds).await;
        let now = state.started.elapsed().as_secs();
        for (node, ok) in results {
            if let Some(verdict) = state.board.observe(&node, ok, now) {
                info!(node = %node, verdict = ?verdict, "edge check from outside changed");
                let _ = state.manager.send_message(ManagerMsg::EdgeHealth(node));
            }
        }
        Ok(())
    }
}
