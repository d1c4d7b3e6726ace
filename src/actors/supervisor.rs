//! The supervisors: one actor per object of a kind (EdgeNode, PortBinding), spawned linked,
//! looked up by name. ractor has no restart policy, so this one overrides
//! `handle_supervisor_evt`: a failed child is respawned after a jittered exponential delay
//! within its own restart budget ([`super::restarts`]); past the budget it is parked (its
//! object shows `RestartLoop`) until its object changes or a cool-down passes. One child never
//! takes its supervisor, or its siblings, down.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use super::Context;
use super::restarts::{AfterFailure, RestartBudget};
use crate::jitter::jitter;
use crate::object_key::ObjectKey;

/// A kind of child the supervisor manages.
pub trait Child: Actor<Arguments = (Arc<Context>, ObjectKey)> + Default {
    /// The kind's name (actor names, logs).
    const KIND: &'static str;
    /// The message that tells a child its object changed.
    fn changed() -> Self::Msg;
    /// Reports a parked child on its object (condition and Event).
    fn parked(
        ctx: Arc<Context>,
        key: ObjectKey,
        message: String,
    ) -> impl Future<Output = ()> + Send;
}

/// Messages of a supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// The object exists and its spec (or what it depends on) changed: make sure its actor
    /// runs and tell it. A parked child is given a fresh budget.
    Upsert(ObjectKey),
    /// The object is gone: stop its actor.
    Remove(ObjectKey),
    /// These are all the objects there are (after a relist): stop the others.
    Sync(Vec<ObjectKey>),
    /// A restart delay passed.
    Respawn(ObjectKey),
}

/// The generic supervisor.
#[derive(Debug)]
pub struct Supervisor<C>(std::marker::PhantomData<C>);

impl<C> Default for Supervisor<C> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[derive(Debug)]
struct Entry<M: ractor::Message> {
    actor: Option<ActorRef<M>>,
    budget: RestartBudget,
}

impl<M: ractor::Message> Default for Entry<M> {
    fn default() -> Self {
        Self {
            actor: None,
            budget: RestartBudget::default(),
        }
    }
}

/// A supervisor's state.
pub struct SupervisorState<M: ractor::Message> {
    ctx: Arc<Context>,
    children: BTreeMap<ObjectKey, Entry<M>>,
    by_id: HashMap<ActorId, ObjectKey>,
    restarts: u64,
}

impl<M: ractor::Message> std::fmt::Debug for SupervisorState<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorState")
            .field("children", &self.children.len())
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl<C: Child> Actor for Supervisor<C> {
    type Msg = SupervisorMsg;
    type State = SupervisorState<C::Msg>;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            children: BTreeMap::new(),
            by_id: HashMap::new(),
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Upsert(key) => {
                let entry = state.children.entry(key.clone()).or_default();
                if entry.budget.is_parked() {
                    info!(kind = C::KIND, object = %key, "object changed: un-parking its actor");
                    entry.budget.unpark();
                    state.ctx.metrics.actor_parked(C::KIND, false);
                }
                if let Some(actor) = &entry.actor {
                    let _ = actor.send_message(C::changed());
                } else {
                    spawn::<C>(&myself, state, key).await;
                }
            }
            SupervisorMsg::Remove(key) => {
                let removed = state.children.remove(&key);
                if removed.as_ref().is_some_and(|e| e.budget.is_parked()) {
                    state.ctx.metrics.actor_parked(C::KIND, false);
                }
                if let Some(entry) = removed
                    && let Some(actor) = entry.actor
                {
                    state.by_id.remove(&actor.get_id());
                    actor.stop(Some("object deleted".into()));
                    state.ctx.metrics.actor_stopped(C::KIND);
                }
            }
            SupervisorMsg::Sync(keys) => {
                let leftovers: Vec<ObjectKey> = state
                    .children
                    .keys()
                    .filter(|k| !keys.contains(k))
                    .cloned()
                    .collect();
                for key in leftovers {
                    myself.send_message(SupervisorMsg::Remove(key))?;
                }
            }
            SupervisorMsg::Respawn(key) => {
                let wanted = state.children.get(&key).is_some_and(|e| e.actor.is_none());
                if wanted {
                    if let Some(entry) = state.children.get_mut(&key)
                        && entry.budget.is_parked()
                    {
                        // The cool-down passed.
                        entry.budget.unpark();
                        state.ctx.metrics.actor_parked(C::KIND, false);
                    }
                    spawn::<C>(&myself, state, key).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                // Its own children (the SSH session of an EdgeNode) go with it.
                cell.stop_children(Some("parent failed".into()));
                let Some(key) = state.by_id.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let Some(entry) = state.children.get_mut(&key) else {
                    return Ok(());
                };
                entry.actor = None;
                state.restarts += 1;
                state.ctx.metrics.actor_stopped(C::KIND);
                let decision = entry.budget.failed(&state.ctx.restarts, Instant::now());
                warn!(kind = C::KIND, object = %key, error = %error, ?decision, "actor failed");
                match decision {
                    AfterFailure::Restart(delay) => {
                        state.ctx.metrics.actor_restarted(C::KIND);
                        let delay = jitter(delay, state.restarts);
                        myself.send_after(delay, move || SupervisorMsg::Respawn(key));
                    }
                    AfterFailure::Park(cool_down) => {
                        state.ctx.metrics.actor_parked(C::KIND, true);
                        let message = format!(
                            "the {} actor failed {} times within {:?} and is parked; it is retried when the object changes or after {:?} (last error: {error})",
                            C::KIND,
                            entry.budget.recent(),
                            state.ctx.restarts.window,
                            cool_down
                        );
                        let ctx = state.ctx.clone();
                        let parked_key = key.clone();
                        tokio::spawn(async move { C::parked(ctx, parked_key, message).await });
                        myself.send_after(cool_down, move || SupervisorMsg::Respawn(key));
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A child that stopped on its own: its object is gone (or being removed).
                if let Some(key) = state.by_id.remove(&cell.get_id()) {
                    info!(kind = C::KIND, object = %key, ?reason, "actor stopped");
                    state.ctx.metrics.actor_stopped(C::KIND);
                    state.children.remove(&key);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn spawn<C: Child>(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState<C::Msg>,
    key: ObjectKey,
) {
    let name = state.ctx.name(C::KIND, &key);
    let cell: ActorCell = myself.get_cell();
    match Actor::spawn_linked(
        Some(name),
        C::default(),
        (state.ctx.clone(), key.clone()),
        cell,
    )
    .await
    {
        Ok((actor, _)) => {
            state.ctx.metrics.actor_started(C::KIND);
            state.by_id.insert(actor.get_id(), key.clone());
            state.children.entry(key).or_default().actor = Some(actor);
        }
        Err(e) => {
            // E.g. the name of a child still stopping: try again shortly.
            warn!(kind = C::KIND, object = %key, error = %e, "spawning the actor");
            let delay = jitter(state.ctx.restarts.min_delay, state.restarts);
            myself.send_after(delay, move || SupervisorMsg::Respawn(key));
        }
    }
}
