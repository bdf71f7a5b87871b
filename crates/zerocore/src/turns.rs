//! Fair shares of the CPU between tenants.
//!
//! A guest runs only while it holds one of a few turns (`[engine] guest_slots`, by default one
//! per core, as many as there are async workers to run guests on). A turn is held for one
//! *slice*: one poll of the guest's future, from when the guest starts or resumes to when it
//! next yields (at an epoch tick, at most [`crate::TICK`] later, or when it awaits a host call:
//! a sleep, a statement, a network read). The guest then gives its turn back, and takes one
//! again when it is ready to run.
//!
//! When every turn is held, guests wait, and the next free turn goes to the waiter whose
//! tenant has used the least CPU lately (an exponentially decaying sum with a half-life of
//! [`HALF_LIFE`]); a request that has itself run longer than `[engine] heavy_after_ms` counts
//! as a quarter of a core more, so a tenant's light requests pass its heavy ones. CPU that
//! host work uses on a request's behalf elsewhere (a SQLite statement on the blocking pool) is
//! charged to its tenant too. So a tenant that keeps the node busy (a spinning guest, a flood of
//! cheap requests, runaway statements) waits behind every tenant that uses less, whatever its
//! number of requests, and a tenant alone on the node uses every core.
//!
//! A waiter does not wait for a running slice to end when it is clearly more entitled than a
//! holder (its score lower by [`PREEMPT_MARGIN`]): the turns ask for an early epoch tick,
//! which makes every running guest yield at its next check, and the turns freed go to the
//! best waiters. An early tick is charged as any tick (see `cpu_charge`): what the guest used
//! since its last tick, or one tick at its first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Half-life of a tenant's recent CPU use.
pub(crate) const HALF_LIFE: Duration = Duration::from_millis(100);

/// How much more entitled (in cores of recent use) a waiter must be than a running guest to
/// make it yield early.
pub(crate) const PREEMPT_MARGIN: f64 = 0.1;

/// What a request that has run longer than `heavy_after_ms` adds to its score, in cores.
pub(crate) const HEAVY_PENALTY: f64 = 0.25;

/// The least time between two early ticks while the first has not yet freed a turn (a holder
/// stuck in a long host call does not yield however often it is asked).
const PREEMPT_RETRY: Duration = Duration::from_millis(1);

/// The turns guests run in, shared by every request of every tenant.
pub(crate) struct Turns {
    inner: Mutex<Inner>,
    /// Asks every running guest to yield at its next epoch check.
    preempt: Box<dyn Fn() + Send + Sync>,
    /// Counts the times running guests were asked to yield: host work holding a turn checks
    /// it, as guests check the epoch.
    preemptions: AtomicU64,
    heavy_after_ns: u64,
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Turns")
            .field("slots", &inner.slots)
            .field("held", &inner.holders.len())
            .field("waiting", &inner.waiters())
            .finish()
    }
}

/// A held turn.
struct Holder {
    id: u64,
    tenant: Arc<str>,
    heavy: bool,
}

/// A tenant's waiters, each with the waker to call when it is granted a turn: light requests
/// first, then heavy ones, each in order of arrival.
#[derive(Default)]
struct Queue {
    light: VecDeque<(u64, Waker)>,
    heavy: VecDeque<(u64, Waker)>,
}

impl Queue {
    fn side(&mut self, heavy: bool) -> &mut VecDeque<(u64, Waker)> {
        if heavy {
            &mut self.heavy
        } else {
            &mut self.light
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Turns in all (a turn is free only while nobody waits: a turn given back goes to a
    /// waiter).
    slots: usize,
    holders: Vec<Holder>,
    /// Waiters by tenant.
    waiting: HashMap<Arc<str>, Queue>,
    /// Waiters that were handed a turn and have not come for it yet.
    granted: HashSet<u64>,
    tenants: HashMap<Arc<str>, Use>,
    /// Size of `tenants` at which the tenants idle long enough are forgotten.
    prune_at: usize,
    next: u64,
    /// When an early tick was last asked for, while it has not freed a turn yet.
    preempting: Option<Instant>,
}

/// A tenant's recent CPU use: a sum of nanoseconds decaying with [`HALF_LIFE`].
#[derive(Debug, Clone, Copy)]
struct Use {
    ns: f64,
    at: Instant,
}

impl Use {
    fn decayed(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.ns * (-age / HALF_LIFE.as_secs_f64()).exp2()
    }
}

impl Inner {
    fn waiters(&self) -> usize {
        self.waiting
            .values()
            .map(|q| q.light.len() + q.heavy.len())
            .sum()
    }

    /// A guest's score (lower is more entitled): its tenant's recent use in cores (the
    /// decaying sum's rate), plus [`HEAVY_PENALTY`] for a heavy request.
    fn score(&self, tenant: &str, heavy: bool, now: Instant) -> f64 {
        let rate = self.tenants.get(tenant).map_or(0.0, |u| {
            u.decayed(now) * std::f64::consts::LN_2 / HALF_LIFE.as_secs_f64() / 1e9
        });
        rate + if heavy { HEAVY_PENALTY } else { 0.0 }
    }

    fn charge(&mut self, tenant: &Arc<str>, ns: u64, now: Instant) {
        if ns == 0 {
            return;
        }
        match self.tenants.get_mut(tenant) {
            Some(u) => {
                u.ns = u.decayed(now) + ns as f64;
                u.at = now;
            }
            None => {
                if self.tenants.len() >= self.prune_at {
                    // Tenants whose use has decayed below a microsecond are as good as new.
                    self.tenants.retain(|_, u| u.decayed(now) >= 1_000.0);
                    self.prune_at = (self.tenants.len() * 2).max(64);
                }
                self.tenants.insert(
                    tenant.clone(),
                    Use {
                        ns: ns as f64,
                        at: now,
                    },
                );
            }
        }
    }

    /// Gives turn `id` back: to the most entitled waiter if there is one (returning its
    /// waker, to be woken once the lock is released), else to the free turns.
    fn give_back(&mut self, id: u64, now: Instant) -> Option<Waker> {
        if let Some(i) = self.holders.iter().position(|h| h.id == id) {
            self.holders.swap_remove(i);
        }
        self.preempting = None;
        let best = self
            .waiting
            .iter()
            .map(|(tenant, q)| {
                let heavy = q.light.is_empty();
                (self.score(tenant, heavy, now), tenant, heavy)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, tenant, heavy)| (tenant.clone(), heavy));
        let (tenant, heavy) = best?;
        let queue = self.waiting.get_mut(&tenant)?;
        let (waiter, waker) = queue.side(heavy).pop_front()?;
        if queue.light.is_empty() && queue.heavy.is_empty() {
            self.waiting.remove(&tenant);
        }
        self.holders.push(Holder {
            id: waiter,
            tenant,
            heavy,
        });
        self.granted.insert(waiter);
        Some(waker)
    }
}

impl Turns {
    /// `slots` turns (at least one); `preempt` makes every running guest yield at its next
    /// epoch check (it increments the engines' epochs); a request is heavy once it has run for
    /// `heavy_after`.
    pub(crate) fn new(
        slots: usize,
        heavy_after: Duration,
        preempt: Box<dyn Fn() + Send + Sync>,
    ) -> Arc<Turns> {
        Arc::new(Turns {
            inner: Mutex::new(Inner {
                slots: slots.max(1),
                prune_at: 64,
                ..Inner::default()
            }),
            preempt,
            preemptions: AtomicU64::new(0),
            heavy_after_ns: u64::try_from(heavy_after.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `guest` (the future that instantiates and calls a guest) in turns charged to
    /// `tenant`.
    pub(crate) fn run<F: Future + Unpin>(
        self: &Arc<Self>,
        tenant: Arc<str>,
        guest: F,
    ) -> Scheduled<F> {
        Scheduled {
            turns: self.clone(),
            tenant,
            guest,
            queued: None,
            ran_ns: 0,
            stats: None,
        }
    }

    /// The pass through the turns of a slice of `tenant` that ran outside them: a reused WASI
    /// 0.3 instance, whose event loop runs in a task the instance pool spawns, where no
    /// [`Scheduled`] wraps it. Charges the slice's `ran_ns` to the tenant, then waits as a guest
    /// waits for a turn (behind every more entitled waiter; heavy once the instance has run
    /// `total_ns` past `heavy_after_ms`) and gives the turn back as soon as it is granted: the
    /// next slice runs without holding one (see the WASI 0.3 section of docs/security.md).
    pub(crate) fn pass(
        self: &Arc<Self>,
        tenant: Arc<str>,
        ran_ns: u64,
        total_ns: u64,
    ) -> Scheduled<std::future::Ready<()>> {
        self.lock().charge(&tenant, ran_ns, Instant::now());
        Scheduled {
            turns: self.clone(),
            tenant,
            guest: std::future::ready(()),
            queued: None,
            ran_ns: total_ns,
            stats: None,
        }
    }

    /// Takes a turn for a guest of `tenant` if one is free (then nobody waits); otherwise
    /// queues the guest (returning its waiter's key) and, if it is clearly more entitled than
    /// a running guest, asks the running guests to yield.
    fn take(&self, tenant: &Arc<str>, heavy: bool, waker: &Waker) -> Result<u64, Waiter> {
        let now = Instant::now();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        if inner.holders.len() < inner.slots {
            inner.holders.push(Holder {
                id,
                tenant: tenant.clone(),
                heavy,
            });
            return Ok(id);
        }
        inner
            .waiting
            .entry(tenant.clone())
            .or_default()
            .side(heavy)
            .push_back((id, waker.clone()));
        let score = inner.score(tenant, heavy, now);
        let worst = inner
            .holders
            .iter()
            .map(|h| inner.score(&h.tenant, h.heavy, now))
            .fold(f64::NEG_INFINITY, f64::max);
        let asked_lately = inner
            .preempting
            .is_some_and(|at| now.saturating_duration_since(at) < PREEMPT_RETRY);
        if worst > score + PREEMPT_MARGIN && !asked_lately {
            inner.preempting = Some(now);
            drop(inner);
            self.preemptions.fetch_add(1, Ordering::Relaxed);
            (self.preempt)();
        }
        Err(Waiter {
            id,
            heavy,
            since: now,
        })
    }

    /// Whether `tenant`'s `waiter` was granted its turn; if not, its waker is updated.
    fn granted(&self, tenant: &str, waiter: Waiter, waker: &Waker) -> bool {
        let mut inner = self.lock();
        if inner.granted.remove(&waiter.id) {
            return true;
        }
        if let Some(q) = inner.waiting.get_mut(tenant)
            && let Some((_, w)) = q
                .side(waiter.heavy)
                .iter_mut()
                .find(|(id, _)| *id == waiter.id)
        {
            w.clone_from(waker);
        }
        false
    }

    /// Ends a slice of `tenant` that ran for `ns` in turn `id`.
    fn give_back(&self, id: u64, tenant: &Arc<str>, ns: u64) {
        if let Some(w) = self.hand_on(id, tenant, ns) {
            w.wake();
        }
    }

    /// Ends a slice as [`Turns::give_back`] does, the slice of a guest that yielded at an epoch
    /// tick: the guest it goes to is woken only once this thread has polled for I/O, as the
    /// yielding guest is. Woken at once, it would run next on this thread, and so would the
    /// guest it hands its turn on to: while guests that use every slice they get hold every
    /// turn, an async worker would go from slice to slice without looking at its sockets for
    /// the dozens of slices between its regular checks, and every connection it serves would
    /// wait that long to be read or written.
    fn give_back_at_yield(&self, id: u64, tenant: &Arc<str>, ns: u64) {
        if let Some(w) = self.hand_on(id, tenant, ns) {
            defer_wake(&w);
        }
    }

    /// Charges a slice and gives its turn back, returning the waker of the waiter it went to.
    fn hand_on(&self, id: u64, tenant: &Arc<str>, ns: u64) -> Option<Waker> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.charge(tenant, ns, now);
        inner.give_back(id, now)
    }

    /// A waiter gone (its request ended while it waited): out of the queue, or its turn, if it
    /// had been granted one, passed on.
    fn cancel(&self, tenant: &str, waiter: Waiter) {
        let waker = {
            let mut inner = self.lock();
            if inner.granted.remove(&waiter.id) {
                inner.give_back(waiter.id, Instant::now())
            } else {
                if let Some(q) = inner.waiting.get_mut(tenant) {
                    q.side(waiter.heavy).retain(|(id, _)| *id != waiter.id);
                    if q.light.is_empty() && q.heavy.is_empty() {
                        inner.waiting.remove(tenant);
                    }
                }
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Turns held and waiters now (for tests).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.holders.len(), inner.waiters())
    }
}

/// The turns as host work of one tenant's requests sees them (see
/// [`zero_provider::CpuTurns`]): a blocking thread waits for a turn as a guest does, and gives
/// it back after a slice or when a more entitled guest waits.
#[derive(Debug)]
pub(crate) struct TenantTurns {
    turns: Arc<Turns>,
    tenant: Arc<str>,
}

impl TenantTurns {
    /// `tenant`'s host work in `turns`.
    pub(crate) fn new(turns: Arc<Turns>, tenant: Arc<str>) -> TenantTurns {
        TenantTurns { turns, tenant }
    }

    /// Blocks the calling thread until it holds a turn; returns the turn and the time waited.
    fn take_blocking(&self, heavy: bool) -> (u64, Duration) {
        let started = Instant::now();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let waiter = match self.turns.take(&self.tenant, heavy, &waker) {
            Ok(id) => return (id, Duration::ZERO),
            Err(waiter) => waiter,
        };
        while !self.turns.granted(&self.tenant, waiter, &waker) {
            // Woken by the grant; the timeout only guards against a lost wake-up.
            std::thread::park_timeout(Duration::from_millis(50));
        }
        (waiter.id, started.elapsed())
    }
}

/// Wakes a thread parked waiting for a turn.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl zero_provider::CpuTurns for TenantTurns {
    fn turn(&self) -> Box<dyn zero_provider::HeldTurn> {
        Box::new(HostTurn {
            turns: TenantTurns::new(self.turns.clone(), self.tenant.clone()),
            held: None,
            slices: 0,
        })
    }
}

/// A turn for host work on a blocking thread.
#[derive(Debug)]
struct HostTurn {
    turns: TenantTurns,
    /// The turn, when held: its id, since when, and [`Turns::preemptions`] then.
    held: Option<(u64, Instant, u64)>,
    /// Slices run to their end so far: work that has run a whole slice is heavy, and its
    /// tenant's light requests pass it.
    slices: u64,
}

impl zero_provider::HeldTurn for HostTurn {
    fn checkpoint(&mut self) -> Duration {
        let t = &self.turns;
        if let Some((_, since, preemptions)) = self.held {
            let asked = t.turns.preemptions.load(Ordering::Relaxed) != preemptions;
            if !asked && since.elapsed() < crate::TICK {
                return Duration::ZERO;
            }
            self.slices += 1;
            self.pause();
        }
        let t = &self.turns;
        let (id, waited) = t.take_blocking(self.slices > 0);
        self.held = Some((
            id,
            Instant::now(),
            t.turns.preemptions.load(Ordering::Relaxed),
        ));
        waited
    }

    fn pause(&mut self) {
        if let Some((id, since, _)) = self.held.take() {
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.turns.turns.give_back(id, &self.turns.tenant, ns);
        }
    }
}

impl Drop for HostTurn {
    fn drop(&mut self) {
        zero_provider::HeldTurn::pause(self);
    }
}

/// A queued guest: its key, whether it waits as a heavy request, and since when.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    id: u64,
    heavy: bool,
    since: Instant,
}

/// How a guest run in turns fared, for the log line of a run that failed (a run cut at its
/// wall-clock limit while it waited for a turn tells a starved guest from a slow one).
#[derive(Debug, Default)]
pub(crate) struct TurnStats {
    /// Slices run.
    slices: AtomicU64,
    /// Time spent waiting for a turn, in nanoseconds, the wait under way included once the
    /// run is dropped.
    waited_ns: AtomicU64,
    /// The longest single wait for a turn, in nanoseconds.
    longest_wait_ns: AtomicU64,
    /// Whether the run was waiting for a turn when it was dropped.
    waiting_at_end: std::sync::atomic::AtomicBool,
}

impl TurnStats {
    /// Slices run so far.
    pub(crate) fn slices(&self) -> u64 {
        self.slices.load(Ordering::Relaxed)
    }

    /// Time waited for turns so far, in milliseconds.
    pub(crate) fn waited_ms(&self) -> u64 {
        self.waited_ns.load(Ordering::Relaxed) / 1_000_000
    }

    /// The longest single wait for a turn so far, in milliseconds.
    pub(crate) fn longest_wait_ms(&self) -> u64 {
        self.longest_wait_ns.load(Ordering::Relaxed) / 1_000_000
    }

    /// Whether the run was waiting for a turn when it ended (it was cut while queued).
    pub(crate) fn waiting_at_end(&self) -> bool {
        self.waiting_at_end.load(Ordering::Relaxed)
    }

    fn waited(&self, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns.fetch_add(ns, Ordering::Relaxed);
        self.longest_wait_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// A guest's future run in turns (see [`Turns::run`]).
pub(crate) struct Scheduled<F> {
    turns: Arc<Turns>,
    tenant: Arc<str>,
    guest: F,
    /// The waiter while it waits for a turn.
    queued: Option<Waiter>,
    /// Wall time the guest's slices took, in nanoseconds.
    ran_ns: u64,
    /// Where the run's slices and waits are counted.
    stats: Option<Arc<TurnStats>>,
}

impl<F> Scheduled<F> {
    /// The same run, counting its slices and waits in `stats`.
    pub(crate) fn counted(mut self, stats: Arc<TurnStats>) -> Scheduled<F> {
        self.stats = Some(stats);
        self
    }
}

impl<F: Future + Unpin> Future for Scheduled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let id = match this.queued {
            Some(waiter) => {
                if !this.turns.granted(&this.tenant, waiter, cx.waker()) {
                    return Poll::Pending;
                }
                this.queued = None;
                if let Some(stats) = &this.stats {
                    stats.waited(waiter.since);
                }
                waiter.id
            }
            None => {
                let heavy = this.ran_ns > this.turns.heavy_after_ns;
                match this.turns.take(&this.tenant, heavy, cx.waker()) {
                    Ok(id) => id,
                    Err(waiter) => {
                        this.queued = Some(waiter);
                        return Poll::Pending;
                    }
                }
            }
        };
        if let Some(stats) = &this.stats {
            stats.slices.fetch_add(1, Ordering::Relaxed);
        }
        let start = Instant::now();
        YIELDED.set(false);
        let out = Pin::new(&mut this.guest).poll(cx);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        this.ran_ns = this.ran_ns.saturating_add(ns);
        if out.is_pending() && YIELDED.take() {
            this.turns.give_back_at_yield(id, &this.tenant, ns);
        } else {
            this.turns.give_back(id, &this.tenant, ns);
        }
        out
    }
}

thread_local! {
    /// Set by [`yielding`] while a guest's slice runs on this thread.
    static YIELDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tells the turns that the guest polled on this thread yields at an epoch tick (its slice
/// ends with the tick, not in a host call): called from the epoch callback.
pub(crate) fn yielding() {
    YIELDED.set(true);
}

/// Wakes `waker` once the async worker this runs on has polled for I/O (as
/// `tokio::task::yield_now` wakes the task that yields), or at once off the async workers.
fn defer_wake(waker: &Waker) {
    let mut deferred = std::pin::pin!(tokio::task::yield_now());
    // Polled once, `yield_now` hands the waker of its context to the worker's deferred
    // wake-ups and returns pending; dropped then, it leaves that wake-up in place.
    let _ = deferred.as_mut().poll(&mut Context::from_waker(waker));
}

impl<F> Drop for Scheduled<F> {
    fn drop(&mut self) {
        if let Some(waiter) = self.queued.take() {
            self.turns.cancel(&self.tenant, waiter);
            if let Some(stats) = &self.stats {
                stats.waited(waiter.since);
                stats.waiting_at_end.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn turns(slots: usize) -> (Arc<Turns>, Arc<AtomicUsize>) {
        let preempted = Arc::new(AtomicUsize::new(0));
        let p = preempted.clone();
        let turns = Turns::new(
            slots,
            Duration::from_millis(10),
            Box::new(move || {
                p.fetch_add(1, Ordering::Relaxed);
            }),
        );
        (turns, preempted)
    }

    fn t(name: &str) -> Arc<str> {
        name.into()
    }

    #[test]
    fn a_free_turn_is_taken_and_given_back() {
        let (turns, _) = turns(2);
        let w = Waker::noop();
        let (a, b) = (t("a"), t("b"));
        let first = turns.take(&a, false, w).unwrap();
        let second = turns.take(&a, false, w).unwrap();
        assert_eq!(turns.counts(), (2, 0));
        // A third waits...
        let third = turns.take(&b, false, w).unwrap_err();
        assert_eq!(turns.counts(), (2, 1));
        assert!(!turns.granted(&b, third, w));
        // ...and is handed the first turn given back.
        turns.give_back(first, &a, 1_000);
        assert_eq!(turns.counts(), (2, 0));
        assert!(turns.granted(&b, third, w));
        turns.give_back(second, &a, 1_000);
        turns.give_back(third.id, &b, 1_000);
        assert_eq!(turns.counts(), (0, 0));
        // Every turn is free again.
        assert!(turns.take(&a, false, w).is_ok());
        assert!(turns.take(&a, false, w).is_ok());
    }

    #[test]
    fn the_tenant_that_used_least_gets_the_next_turn_whatever_the_order_of_arrival() {
        let (turns, _) = turns(1);
        let w = Waker::noop();
        let (busy, light) = (t("busy"), t("light"));
        let held = turns.take(&busy, false, w).unwrap();
        turns.give_back(held, &busy, 50_000_000);
        let held = turns.take(&busy, false, w).unwrap();
        // The busy tenant queues three slices, then the light tenant one.
        let queued: Vec<_> = (0..3)
            .map(|_| turns.take(&busy, false, w).unwrap_err())
            .collect();
        let light_one = turns.take(&light, false, w).unwrap_err();
        turns.give_back(held, &busy, 1_000_000);
        assert!(
            turns.granted(&light, light_one, w),
            "the light tenant goes first"
        );
        assert!(queued.iter().all(|&k| !turns.granted(&busy, k, w)));
        turns.give_back(light_one.id, &light, 100_000);
        // Then the busy tenant's, in order of arrival.
        assert!(turns.granted(&busy, queued[0], w));
        assert!(!turns.granted(&busy, queued[1], w));
        turns.give_back(queued[0].id, &busy, 1);
        assert!(turns.granted(&busy, queued[1], w));
        assert!(!turns.granted(&busy, queued[2], w));
    }

    #[test]
    fn a_slice_outside_the_turns_is_charged_and_waits_behind_more_entitled_waiters() {
        let (turns, _) = turns(1);
        let mut cx = Context::from_waker(Waker::noop());
        let (reused, light) = (t("reused"), t("light"));
        // A free turn: the pass goes through at once and leaves the turn free.
        let mut pass = turns.pass(reused.clone(), 80_000_000, 0);
        assert!(Pin::new(&mut pass).poll(&mut cx).is_ready());
        assert_eq!(turns.counts(), (0, 0));
        // The slice was charged: with the turn held and both waiting, the light tenant's
        // guest goes first, the reused instance's next slice after it.
        let held = turns.take(&light, false, Waker::noop()).unwrap();
        let mut pass = turns.pass(reused.clone(), 1_000_000, 0);
        assert!(Pin::new(&mut pass).poll(&mut cx).is_pending());
        let waiting = turns.take(&light, false, Waker::noop()).unwrap_err();
        assert_eq!(turns.counts(), (1, 2));
        turns.give_back(held, &light, 1_000);
        assert!(turns.granted(&light, waiting, Waker::noop()));
        assert!(Pin::new(&mut pass).poll(&mut cx).is_pending());
        turns.give_back(waiting.id, &light, 1_000);
        assert!(Pin::new(&mut pass).poll(&mut cx).is_ready());
        assert_eq!(
            turns.counts(),
            (0, 0),
            "the pass holds no turn once through"
        );
        // A pass dropped while it waits leaves the queue.
        let held = turns.take(&light, false, Waker::noop()).unwrap();
        let mut pass = turns.pass(reused, 0, 0);
        assert!(Pin::new(&mut pass).poll(&mut cx).is_pending());
        drop(pass);
        assert_eq!(turns.counts(), (1, 0));
        turns.give_back(held, &light, 1);
    }

    #[test]
    fn a_tenants_light_requests_pass_its_heavy_ones() {
        let (turns, _) = turns(1);
        let w = Waker::noop();
        let a = t("a");
        let held = turns.take(&a, false, w).unwrap();
        let heavy = turns.take(&a, true, w).unwrap_err();
        let light = turns.take(&a, false, w).unwrap_err();
        turns.give_back(held, &a, 1);
        assert!(turns.granted(&a, light, w));
        assert!(!turns.granted(&a, heavy, w));
        turns.give_back(light.id, &a, 1);
        assert!(turns.granted(&a, heavy, w));
    }

    #[test]
    fn a_more_entitled_waiter_makes_running_guests_yield_but_an_equal_one_does_not() {
        let (turns, preempted) = turns(1);
        let w = Waker::noop();
        let (busy, light) = (t("busy"), t("light"));
        let held = turns.take(&busy, false, w).unwrap();
        turns.give_back(held, &busy, 80_000_000);
        let held = turns.take(&busy, false, w).unwrap();
        // The busy tenant's own next slice waits its turn without asking anyone to yield.
        let own = turns.take(&busy, false, w).unwrap_err();
        assert_eq!(preempted.load(Ordering::Relaxed), 0);
        // A light tenant's asks for an early tick, once until a turn is freed.
        let first = turns.take(&light, false, w).unwrap_err();
        assert_eq!(preempted.load(Ordering::Relaxed), 1);
        let second = turns.take(&light, false, w).unwrap_err();
        assert_eq!(preempted.load(Ordering::Relaxed), 1);
        turns.give_back(held, &busy, 100_000);
        assert!(turns.granted(&light, first, w));
        // Once a turn was freed, a light waiter may ask again (the light tenant holds the
        // turn now, and a heavy request of another idle tenant does not outrank it by the
        // margin).
        let heavy = turns.take(&t("idle"), true, w).unwrap_err();
        assert_eq!(preempted.load(Ordering::Relaxed), 1);
        turns.cancel(&busy, own);
        turns.cancel(&light, second);
        turns.cancel(&t("idle"), heavy);
        assert_eq!(turns.counts(), (1, 0));
    }

    #[test]
    fn a_waiter_that_goes_away_passes_its_turn_on() {
        let (turns, _) = turns(1);
        let w = Waker::noop();
        let (a, b, c) = (t("a"), t("b"), t("c"));
        let held = turns.take(&a, false, w).unwrap();
        let gone = turns.take(&b, false, w).unwrap_err();
        let next = turns.take(&c, false, w).unwrap_err();
        turns.give_back(held, &a, 1);
        // `gone` or `next` was granted the turn; `gone`'s request ends before it comes for it.
        turns.cancel(&b, gone);
        assert!(turns.granted(&c, next, w));
        turns.give_back(next.id, &c, 1);
        assert_eq!(turns.counts(), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scheduled_futures_run_in_turns_and_a_spinning_tenant_waits_behind_a_light_one() {
        let (turns, _) = turns(1);
        // A busy tenant's guest that yields after every slice of 2 ms of work, forever...
        let spin = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let guest = std::future::poll_fn(move |cx| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(2) {}
                    cx.waker().wake_by_ref();
                    Poll::<()>::Pending
                });
                turns.run("busy".into(), guest).await
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        // ...while a light tenant's one-slice guests each get a turn and complete.
        let slices_seen = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let seen = slices_seen.clone();
            let guest = std::future::poll_fn(move |_| {
                seen.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(7)
            });
            let out = turns.run("light".into(), guest).await;
            assert_eq!(out, 7);
        }
        assert_eq!(slices_seen.load(Ordering::Relaxed), 20);
        spin.abort();
        let _ = spin.await;
        // The aborted spinner gave back its turn or its place in the queue.
        assert_eq!(turns.counts(), (0, 0));
    }

    /// A guest that yields at every tick as the epoch callback makes it ([`yielding`], and its
    /// own wake-up deferred as `yield_now` defers it), one slice of 1 ms per poll; counts its
    /// slices.
    fn ticking_guest(slices: Arc<AtomicUsize>) -> impl Future<Output = ()> + Unpin + Send {
        std::future::poll_fn(move |cx| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(1) {}
            slices.fetch_add(1, Ordering::Relaxed);
            yielding();
            defer_wake(cx.waker());
            Poll::Pending
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_handed_on_at_a_tick_reach_their_waiters_on_a_busy_worker() {
        let (turns, _) = turns(1);
        // Two guests of one tenant share the one turn, each handing it to the other at every
        // tick (the wake-up of the one it goes to deferred until the worker polls for I/O)...
        let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let spinners: Vec<_> = counts
            .iter()
            .map(|c| {
                let turns = turns.clone();
                let guest = ticking_guest(c.clone());
                tokio::spawn(async move { turns.run("busy".into(), guest).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...and both go on: no hand-on was lost.
        let before: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert!(before.iter().all(|&n| n > 0), "both guests ran: {before:?}");
        // A light tenant's guests get the turn between their ticks, and a timer on the same
        // workers fires (the workers poll their drivers between slices).
        for _ in 0..10 {
            let out = tokio::time::timeout(
                Duration::from_secs(5),
                turns.run("light".into(), std::future::ready(7)),
            )
            .await
            .expect("the light guest got a turn");
            assert_eq!(out, 7);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (c, b) in counts.iter().zip(&before) {
            assert!(c.load(Ordering::Relaxed) > *b, "every guest kept running");
        }
        for s in spinners {
            s.abort();
            let _ = s.await;
        }
        assert_eq!(turns.counts(), (0, 0));
    }

    #[test]
    fn a_deferred_wake_off_the_async_workers_wakes_at_once() {
        let woken = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        defer_wake(&Waker::from(Arc::new(Count(woken.clone()))));
        assert_eq!(woken.load(Ordering::Relaxed), 1);
    }
}
