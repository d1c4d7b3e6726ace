//! The global bound on SSH work, `--max-concurrent-reconciles`: at most that many jobs talk to
//! their VPSes at once. A first pass (a VPS this operator has not yet brought to its desired
//! state: an enrollment may push Envoy, about 100 MB, and start both units) takes seconds to
//! minutes; a later pass takes milliseconds. With one plain queue, fifty EdgeNodes applied at
//! once put every quick re-check behind every first enrollment. So first passes may hold at
//! most all slots but one: with two or more slots, one is always left to the quick passes,
//! which queue among themselves. The bound on all of them together is unchanged.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots, shared by every SSH session actor.
#[derive(Debug)]
pub struct SshSlots {
    all: Arc<Semaphore>,
    first: Arc<Semaphore>,
}

/// Which queue a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// The first pass on a VPS since this actor started, or since its last pass failed.
    First,
    /// A VPS this actor has converged and that has not failed since.
    Again,
}

/// A held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _first: Option<OwnedSemaphorePermit>,
}

impl SshSlots {
    /// `limit` slots (at least one).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            all: Arc::new(Semaphore::new(limit)),
            first: Arc::new(Semaphore::new(limit.saturating_sub(1).max(1))),
        }
    }

    /// Waits for a slot; `None` only if the slots were closed.
    pub async fn acquire(&self, kind: PassKind) -> Option<Slot> {
        let first = match kind {
            PassKind::First => Some(self.first.clone().acquire_owned().await.ok()?),
            PassKind::Again => None,
        };
        let all = self.all.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _all: all,
            _first: first,
        })
    }

    /// Slots free now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.all.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_passes_leave_one_slot_to_the_others_and_all_stay_bounded() {
        let slots = Arc::new(SshSlots::new(3));
        let a = slots.acquire(PassKind::First).await.unwrap();
        let b = slots.acquire(PassKind::First).await.unwrap();
        // A third first pass waits although a slot is free...
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(PassKind::First).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(slots.available(), 1);
        // ... which a later pass takes at once.
        let c = slots.acquire(PassKind::Again).await.unwrap();
        assert_eq!(slots.available(), 0);
        // Nothing more runs while three do, of either kind.
        let again = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire(PassKind::Again).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!again.is_finished());
        drop(c);
        again.await.unwrap().unwrap();
        drop(a);
        waiting.await.unwrap().unwrap();
        drop(b);
        assert_eq!(slots.available(), 3);
    }

    #[tokio::test]
    async fn one_slot_serves_both_kinds_one_at_a_time() {
        let slots = SshSlots::new(1);
        let first = slots.acquire(PassKind::First).await.unwrap();
        assert_eq!(slots.available(), 0);
        drop(first);
        let again = slots.acquire(PassKind::Again).await.unwrap();
        assert_eq!(slots.available(), 0);
        drop(again);
        let _first = slots.acquire(PassKind::First).await.unwrap();
        assert_eq!(SshSlots::new(0).available(), 1, "at least one slot");
    }
}
