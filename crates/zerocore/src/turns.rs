//! Turns for heavy guests: a guest that has used more than `[engine] heavy_after_ms` of CPU in
//! its request runs only while it holds one of a few turns (`[engine] heavy_slots`, by default
//! one fewer than the machine's cores), so that however many heavy guests there are, an async
//! worker is left for the light requests of every other tenant (a hello takes well under a
//! millisecond; behind a queue of guests each running a 5 ms tick it would wait for all of
//! them).
//!
//! A heavy guest gives its turn back at every epoch tick, when it yields anyway, and waits for
//! a turn again, in order of arrival; time spent waiting is wall time, not CPU time. A guest
//! keeps its turn while it awaits a host call (a sleep, a statement, a network read); a turn
//! held for more than [`STALE_TICKS`] ticks without the guest coming back to yield is taken by
//! the next waiting guest, so a guest that sleeps holds no turn for long, and when it comes back
//! it waits for a turn at its next tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Ticks after which a turn whose holder has not come back is given to a waiting guest.
pub(crate) const STALE_TICKS: u32 = 2;

/// The turns heavy guests run in.
#[derive(Debug)]
pub(crate) struct Turns {
    slots: Mutex<Vec<Option<Lease>>>,
    freed: Notify,
    next_id: AtomicU64,
    stale: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    id: u64,
    since: Instant,
}

/// A turn held by one guest; given back when dropped (unless it was taken from it since).
#[derive(Debug)]
pub(crate) struct Turn {
    turns: Arc<Turns>,
    slot: usize,
    id: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.release(self.slot, self.id);
    }
}

impl Turns {
    /// `slots` turns (at least one); a turn is stale after [`STALE_TICKS`] of `tick`.
    pub(crate) fn new(slots: usize, tick: Duration) -> Arc<Turns> {
        Arc::new(Turns {
            slots: Mutex::new(vec![None; slots.max(1)]),
            freed: Notify::new(),
            next_id: AtomicU64::new(1),
            stale: tick * STALE_TICKS,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Lease>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free or stale slot, taken for `id`.
    fn try_take(&self, id: u64) -> Option<usize> {
        let now = Instant::now();
        let mut slots = self.lock();
        let slot = slots
            .iter()
            .position(|s| s.is_none_or(|l| now.duration_since(l.since) >= self.stale))?;
        slots[slot] = Some(Lease { id, since: now });
        Some(slot)
    }

    /// Waits for a turn: the first slot that is free, or stale.
    pub(crate) async fn take(self: &Arc<Self>) -> Turn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so that a turn given back meanwhile wakes this waiter.
            freed.as_mut().enable();
            if let Some(slot) = self.try_take(id) {
                return Turn {
                    turns: self.clone(),
                    slot,
                    id,
                };
            }
            // Woken when a turn is given back, or after a while to look for a stale one.
            let _ = tokio::time::timeout(self.stale, freed).await;
        }
    }

    fn release(&self, slot: usize, id: u64) {
        {
            let mut slots = self.lock();
            match slots.get_mut(slot) {
                Some(s) if s.is_some_and(|l| l.id == id) => *s = None,
                _ => return,
            }
        }
        self.freed.notify_one();
    }

    /// Turns held now (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_bounded_given_back_and_taken_when_stale() {
        let tick = Duration::from_millis(20);
        let turns = Turns::new(1, tick);
        let first = turns.take().await;
        assert_eq!(turns.held(), 1);
        // A second guest waits while the first holds the only turn...
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take().await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiting.is_finished());
        // ...and gets it as soon as it is given back.
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(turns.held(), 1);
        // A holder that does not come back loses its turn once it is stale; giving back a turn
        // taken from it frees nothing.
        let started = Instant::now();
        let third = turns.take().await;
        assert!(started.elapsed() >= tick * STALE_TICKS - Duration::from_millis(5));
        drop(second);
        assert_eq!(turns.held(), 1);
        drop(third);
        assert_eq!(turns.held(), 0);
    }
}
