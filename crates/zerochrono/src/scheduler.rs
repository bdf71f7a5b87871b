//! The scheduling rules, as a state machine on explicit times (no clock, no tasks), so that
//! every rule is tested by stepping time: which ticks fire, which are skipped and why, when a
//! failed run is tried again, and the per-tenant caps.
//!
//! - **No overlap**: a schedule has at most one run going (its retries included). A tick that
//!   finds it still going is skipped and logged.
//! - **No replay**: ticks due while nothing ran them (the node was down, or the loop was late)
//!   fire at most once, as the latest of them, and only when the schedule says
//!   `catch_up = "last"` for those missed while the node was down; otherwise the next tick is
//!   the first after the schedule was installed.
//! - **Retries**: a run that trapped or timed out is tried again, at most `retries` times,
//!   after [`ChronoSettings::backoff`] (doubling from `retry_backoff_ms`).
//! - **Caps**: a tenant's apps declare at most `max_schedules_per_tenant` schedules together,
//!   and start at most `max_runs_per_minute_per_tenant` runs in any 60 seconds; a tick beyond
//!   that is skipped and logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::spec::{CatchUp, Schedule};
use crate::{ChronoSettings, Error, Result};

/// One attempt to start: the schedule, the tick it is for, and the attempt number.
#[derive(Debug, Clone)]
pub struct Fire<T> {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The app.
    pub app: Arc<str>,
    /// What runs it.
    pub target: T,
    /// The schedule's name.
    pub schedule: Arc<str>,
    /// The run's id (the same for its retries).
    pub run_id: Arc<str>,
    /// When the tick was due.
    pub scheduled: DateTime<Utc>,
    /// When this attempt starts.
    pub actual: DateTime<Utc>,
    /// 1, then 2 for the first retry, …
    pub attempt: u32,
    /// Whether it was asked for (`zero schedules run`) rather than due: it is not retried.
    pub manual: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to the end.
    Done,
    /// It failed in a way that is worth trying again (a trap, a limit, the wall-clock timeout).
    Retryable,
    /// It failed for good (the component returned an error, or it could not start).
    Failed,
}

/// Why a due tick did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The schedule's previous run was still going.
    Overlap,
    /// The tenant had used its runs of the minute.
    RateLimited,
}

/// A tick that did not run: the schedule's name and why.
pub type Skipped = (Arc<str>, Skip);

/// A schedule's state as `zero schedules list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The app.
    pub app: String,
    /// The declaration.
    #[serde(flatten)]
    pub decl: crate::ScheduleDecl,
    /// When it is next due (milliseconds since the Unix epoch), if ever.
    pub next_ms: Option<i64>,
    /// When its latest run was due, if it ran since it was installed or last restart.
    pub last_ms: Option<i64>,
    /// Whether a run is going (or waiting for its retry).
    pub running: bool,
    /// When the run going is tried again (milliseconds since the Unix epoch), if it failed.
    pub retry_ms: Option<i64>,
    /// Ticks skipped because the previous run was still going.
    pub skipped_overlap: u64,
    /// Ticks skipped because of the tenant's runs-per-minute cap.
    pub skipped_rate: u64,
}

struct Slot {
    schedule: Arc<Schedule>,
    name: Arc<str>,
    next: Option<DateTime<Utc>>,
    /// The run going (its id), retries included.
    running: Option<Arc<str>>,
    /// A retry waiting for its time: (when, the attempt it failed).
    retry: Option<(DateTime<Utc>, Fire<()>)>,
    last: Option<DateTime<Utc>>,
    skipped_overlap: u64,
    skipped_rate: u64,
}

struct AppEntry<T> {
    target: T,
    slots: Vec<Slot>,
}

/// The scheduling state of every app's schedules.
pub struct Scheduler<T> {
    settings: ChronoSettings,
    apps: BTreeMap<(Arc<str>, Arc<str>), AppEntry<T>>,
    /// When each tenant's runs of the last minute started.
    runs: HashMap<Arc<str>, VecDeque<DateTime<Utc>>>,
}

/// A new run id.
fn run_id() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

impl<T: Clone> Scheduler<T> {
    /// No schedules yet.
    pub fn new(settings: ChronoSettings) -> Self {
        Scheduler {
            settings,
            apps: BTreeMap::new(),
            runs: HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ChronoSettings {
        &self.settings
    }

    /// Checks that `tenant`'s app `app` may declare `schedules` (in place of what it declares
    /// now): their names are distinct, their retries within `max_retries`, and the tenant's
    /// total within `max_schedules_per_tenant`.
    pub fn check(&self, tenant: &str, app: &str, schedules: &[Arc<Schedule>]) -> Result<()> {
        for (i, s) in schedules.iter().enumerate() {
            if schedules[..i].iter().any(|o| o.name() == s.name()) {
                return Err(Error::Duplicate(s.name().to_string()));
            }
            if s.decl.retries > self.settings.max_retries {
                return Err(Error::TooManyRetries {
                    name: s.name().to_string(),
                    limit: self.settings.max_retries,
                    requested: s.decl.retries,
                });
            }
        }
        let others: usize = self
            .apps
            .iter()
            .filter(|((t, a), _)| **t == *tenant && **a != *app)
            .map(|(_, e)| e.slots.len())
            .sum();
        let requested = others + schedules.len();
        if !schedules.is_empty() && requested > self.settings.max_schedules_per_tenant {
            return Err(Error::TooManySchedules {
                tenant: tenant.to_string(),
                limit: self.settings.max_schedules_per_tenant,
                requested,
            });
        }
        Ok(())
    }

    /// Installs (or replaces) the schedules of an app at time `now`, checked as in
    /// [`Scheduler::check`]. `last` is when each schedule last ran (by name, from before a
    /// restart): a schedule with `catch_up = "last"` whose latest tick at or before `now` came
    /// after that fires it at once; every other schedule first fires at its first tick after
    /// `now`. A run of the replaced version still going keeps its slot busy (no overlap
    /// across a redeploy). Installing no schedules removes the app.
    pub fn install(
        &mut self,
        tenant: &str,
        app: &str,
        target: T,
        schedules: Vec<Arc<Schedule>>,
        last: &HashMap<String, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.check(tenant, app, &schedules)?;
        let key: (Arc<str>, Arc<str>) = (tenant.into(), app.into());
        let previous = self.apps.remove(&key);
        if schedules.is_empty() {
            return Ok(());
        }
        let slots = schedules
            .into_iter()
            .map(|schedule| {
                let name: Arc<str> = schedule.name().into();
                let before = previous
                    .as_ref()
                    .and_then(|p| p.slots.iter().find(|s| s.name == name));
                let last_ran = before.and_then(|s| s.last).or_else(|| last.get(&*name).copied());
                let missed = match (schedule.decl.catch_up, last_ran) {
                    (CatchUp::Last, Some(ran)) if before.is_none() => schedule
                        .latest_at_or_before(now)
                        .filter(|due| *due > ran),
                    _ => None,
                };
                if let Some(due) = missed {
                    tracing::info!(tenant, app, schedule = %name, due = %due, "catching up the latest tick missed while the node was down");
                }
                Slot {
                    next: missed.or_else(|| schedule.next_after(now)),
                    running: before.and_then(|s| s.running.clone()),
                    retry: None,
                    last: last_ran,
                    skipped_overlap: 0,
                    skipped_rate: 0,
                    schedule,
                    name,
                }
            })
            .collect();
        self.apps.insert(key, AppEntry { target, slots });
        Ok(())
    }

    /// Removes an app's schedules; `false` if it had none.
    pub fn remove(&mut self, tenant: &str, app: &str) -> bool {
        self.apps
            .remove(&(Arc::from(tenant), Arc::from(app)))
            .is_some()
    }

    /// Admits one run of `tenant` at `now` under its runs-per-minute cap.
    fn admit(&mut self, tenant: &Arc<str>, now: DateTime<Utc>) -> bool {
        let window = self.runs.entry(tenant.clone()).or_default();
        let minute_ago = now - chrono::Duration::seconds(60);
        while window.front().is_some_and(|t| *t <= minute_ago) {
            window.pop_front();
        }
        if window.len() >= self.settings.max_runs_per_minute_per_tenant {
            return false;
        }
        window.push_back(now);
        true
    }

    /// The attempts to start at `now`: retries whose time has come, and the schedules that are
    /// due (each at most once, for its latest due tick; see the module documentation). Ticks
    /// that cannot run are skipped, logged, and returned in the second list.
    pub fn poll(&mut self, now: DateTime<Utc>) -> (Vec<Fire<T>>, Vec<Skipped>) {
        let mut fires = Vec::new();
        let mut skips = Vec::new();
        let keys: Vec<(Arc<str>, Arc<str>)> = self.apps.keys().cloned().collect();
        for key in keys {
            let (tenant, app) = (key.0.clone(), key.1.clone());
            let count = self.apps.get(&key).map_or(0, |e| e.slots.len());
            for i in 0..count {
                // Retries first: they belong to a run already going.
                let retry = self.apps.get_mut(&key).and_then(|e| {
                    let slot = e.slots.get_mut(i)?;
                    match &slot.retry {
                        Some((at, _)) if *at <= now => slot.retry.take().map(|(_, f)| f),
                        _ => None,
                    }
                });
                if let Some(failed) = retry {
                    let admitted = self.admit(&tenant, now);
                    let Some(entry) = self.apps.get_mut(&key) else {
                        continue;
                    };
                    let target = entry.target.clone();
                    let Some(slot) = entry.slots.get_mut(i) else {
                        continue;
                    };
                    if admitted {
                        fires.push(Fire {
                            target,
                            actual: now,
                            attempt: failed.attempt + 1,
                            tenant: failed.tenant,
                            app: failed.app,
                            schedule: failed.schedule,
                            run_id: failed.run_id,
                            scheduled: failed.scheduled,
                            manual: false,
                        });
                    } else {
                        tracing::warn!(tenant = %tenant, app = %app, schedule = %slot.name, run_id = %failed.run_id, "retry abandoned: the tenant is at its runs-per-minute cap ([chrono] max_runs_per_minute_per_tenant)");
                        slot.running = None;
                        slot.skipped_rate += 1;
                        skips.push((slot.name.clone(), Skip::RateLimited));
                    }
                }
                let due = self.apps.get_mut(&key).and_then(|e| {
                    let slot = e.slots.get_mut(i)?;
                    let next = slot.next.filter(|n| *n <= now)?;
                    // Only the latest due tick fires; the next one is after now.
                    let latest = slot
                        .schedule
                        .latest_at_or_before(now)
                        .unwrap_or(next)
                        .max(next);
                    slot.next = slot.schedule.next_after(now);
                    Some((latest, slot.running.is_some(), slot.name.clone()))
                });
                let Some((scheduled, busy, name)) = due else {
                    continue;
                };
                if busy {
                    tracing::warn!(tenant = %tenant, app = %app, schedule = %name, due = %scheduled, "tick skipped: the schedule's previous run is still going");
                    if let Some(slot) = self.slot_mut(&key, i) {
                        slot.skipped_overlap += 1;
                    }
                    skips.push((name, Skip::Overlap));
                    continue;
                }
                if !self.admit(&tenant, now) {
                    tracing::warn!(tenant = %tenant, app = %app, schedule = %name, due = %scheduled, limit = self.settings.max_runs_per_minute_per_tenant, "tick skipped: the tenant is at its runs-per-minute cap ([chrono] max_runs_per_minute_per_tenant)");
                    if let Some(slot) = self.slot_mut(&key, i) {
                        slot.skipped_rate += 1;
                    }
                    skips.push((name, Skip::RateLimited));
                    continue;
                }
                let Some(entry) = self.apps.get_mut(&key) else {
                    continue;
                };
                let target = entry.target.clone();
                let Some(slot) = entry.slots.get_mut(i) else {
                    continue;
                };
                let id = run_id();
                slot.running = Some(id.clone());
                slot.last = Some(scheduled);
                fires.push(Fire {
                    tenant: tenant.clone(),
                    app: app.clone(),
                    target,
                    schedule: name,
                    run_id: id,
                    scheduled,
                    actual: now,
                    attempt: 1,
                    manual: false,
                });
            }
        }
        (fires, skips)
    }

    fn slot_mut(&mut self, key: &(Arc<str>, Arc<str>), i: usize) -> Option<&mut Slot> {
        self.apps.get_mut(key)?.slots.get_mut(i)
    }

    fn slot_of<U>(&mut self, fire: &Fire<U>) -> Option<&mut Slot> {
        self.apps
            .get_mut(&(fire.tenant.clone(), fire.app.clone()))?
            .slots
            .iter_mut()
            .find(|s| s.name == fire.schedule && s.running.as_ref() == Some(&fire.run_id))
    }

    /// Records how an attempt ended at `now`. A retryable failure with retries left is tried
    /// again after the backoff (returned); otherwise the run is over and the schedule free.
    pub fn finished<U>(
        &mut self,
        fire: &Fire<U>,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let backoff = self.settings.backoff(fire.attempt);
        let slot = self.slot_of(fire)?;
        let retries = slot.schedule.decl.retries;
        if outcome == Outcome::Retryable && !fire.manual && fire.attempt <= retries {
            let at = now + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::MAX);
            let failed = Fire {
                tenant: fire.tenant.clone(),
                app: fire.app.clone(),
                target: (),
                schedule: fire.schedule.clone(),
                run_id: fire.run_id.clone(),
                scheduled: fire.scheduled,
                actual: fire.actual,
                attempt: fire.attempt,
                manual: false,
            };
            slot.retry = Some((at, failed));
            return Some(at);
        }
        slot.running = None;
        None
    }

    /// A run of `tenant`'s app `app`'s schedule `name` asked for now (`zero schedules run`):
    /// refused when the schedule is unknown, its previous run is still going, or the tenant is
    /// at its cap. It is not retried.
    pub fn run_now(
        &mut self,
        tenant: &str,
        app: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Fire<T>> {
        let key: (Arc<str>, Arc<str>) = (tenant.into(), app.into());
        let unknown = || Error::UnknownSchedule {
            tenant: tenant.to_string(),
            app: app.to_string(),
            name: name.to_string(),
        };
        let slot = self
            .apps
            .get(&key)
            .and_then(|e| e.slots.iter().find(|s| &*s.name == name))
            .ok_or_else(unknown)?;
        if slot.running.is_some() {
            return Err(Error::Busy(name.to_string()));
        }
        if !self.admit(&key.0, now) {
            return Err(Error::RateLimited {
                tenant: tenant.to_string(),
                limit: self.settings.max_runs_per_minute_per_tenant,
            });
        }
        let entry = self.apps.get_mut(&key).ok_or_else(unknown)?;
        let target = entry.target.clone();
        let slot = entry
            .slots
            .iter_mut()
            .find(|s| &*s.name == name)
            .ok_or_else(unknown)?;
        let id = run_id();
        slot.running = Some(id.clone());
        slot.last = Some(now);
        Ok(Fire {
            tenant: key.0,
            app: key.1,
            target,
            schedule: slot.name.clone(),
            run_id: id,
            scheduled: now,
            actual: now,
            attempt: 1,
            manual: true,
        })
    }

    /// The earliest time something is due (a tick or a retry).
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.apps
            .values()
            .flat_map(|e| e.slots.iter())
            .flat_map(|s| [s.next, s.retry.as_ref().map(|(at, _)| *at)])
            .flatten()
            .min()
    }

    /// The schedules of `tenant` (of its app `app` only, when given), in app and declaration
    /// order.
    pub fn list(&self, tenant: &str, app: Option<&str>) -> Vec<Status> {
        self.apps
            .iter()
            .filter(|((t, a), _)| **t == *tenant && app.is_none_or(|app| **a == *app))
            .flat_map(|((_, a), e)| {
                e.slots.iter().map(move |s| Status {
                    app: a.to_string(),
                    decl: s.schedule.decl.clone(),
                    next_ms: s.next.map(|t| t.timestamp_millis()),
                    last_ms: s.last.map(|t| t.timestamp_millis()),
                    running: s.running.is_some(),
                    retry_ms: s.retry.as_ref().map(|(at, _)| at.timestamp_millis()),
                    skipped_overlap: s.skipped_overlap,
                    skipped_rate: s.skipped_rate,
                })
            })
            .collect()
    }

    /// When each schedule of an app last ran (for the journal).
    pub fn last_runs(&self, tenant: &str, app: &str) -> HashMap<String, DateTime<Utc>> {
        self.apps
            .get(&(Arc::from(tenant), Arc::from(app)))
            .map(|e| {
                e.slots
                    .iter()
                    .filter_map(|s| Some((s.name.to_string(), s.last?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
