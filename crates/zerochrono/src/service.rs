//! The schedules' event provider: [`Chrono`] keeps every app's schedules in a [`Scheduler`],
//! sleeps on its [`Clock`] until the next one is due, and runs each tick through the core
//! ([`zerocore::App::tick`], the same invocation path as HTTP: a fresh store, the same limits,
//! the core's fault classification and log line). Every run logs its start and its end with
//! tenant, app, schedule and run id, and runs inside a `tick` span carrying the schedule and
//! the run id, so the core's lines and the guest's output lines of the run carry them too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;
use zero_provider::admission::Admission;
use zero_provider::{EventProvider, Provider, Shutdown};
use zerocore::{Fault, Run, Tick, Unavailable};

use crate::scheduler::{Fire, Outcome, Scheduler, Status};
use crate::spec::Schedule;
use crate::{ChronoSettings, Clock, Result};

/// What a schedule runs: an app of the core. A trait so that the scheduler's own tests can
/// run it without components.
pub trait Target: Send + Sync + 'static {
    /// Prepares one tick's run (see [`zerocore::App::tick`]).
    fn tick(&self, run_id: Arc<str>, tick: Tick) -> std::result::Result<Run, Unavailable>;
}

impl Target for zerocore::App {
    fn tick(&self, run_id: Arc<str>, tick: Tick) -> std::result::Result<Run, Unavailable> {
        zerocore::App::tick(self, run_id, tick)
    }
}

/// What runs a schedule.
pub type TargetRef = Arc<dyn Target>;

/// How a run ended, as `zero schedules run` reports it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id.
    pub run_id: Arc<str>,
    /// `Ok`, or the fault (already logged).
    pub result: std::result::Result<(), String>,
    /// The fault's kind (`trap`, `wall_timeout`, `app_error`, …) when it failed.
    pub fault: Option<&'static str>,
}

/// Whether a fault is worth another attempt: traps, exhausted limits and the wall-clock
/// timeout are; an error the component returned, or one outside it, is not.
pub fn retryable(fault: &Fault) -> bool {
    !matches!(fault, Fault::Host(_) | Fault::Returned(_))
}

/// When each schedule of each app last ran, kept under a directory (one small JSON file per
/// app, replaced atomically and fsynced before the run starts), so that `catch_up = "last"`
/// knows what was missed across a restart, and a tick that started before a crash is not run
/// again after it.
struct Journal {
    dir: PathBuf,
    /// Serializes writes: two schedules of one app starting at once would otherwise write the
    /// same temporary file together.
    writing: Mutex<()>,
}

impl Journal {
    fn path(&self, tenant: &str, app: &str) -> PathBuf {
        self.dir.join(tenant).join(format!("{app}.json"))
    }

    fn read(&self, tenant: &str, app: &str) -> HashMap<String, DateTime<Utc>> {
        let path = self.path(tenant, app);
        let Ok(bytes) = std::fs::read(&path) else {
            return HashMap::new();
        };
        match serde_json::from_slice::<HashMap<String, i64>>(&bytes) {
            Ok(map) => map
                .into_iter()
                .filter_map(|(k, ms)| Some((k, Utc.timestamp_millis_opt(ms).single()?)))
                .collect(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the schedule journal is damaged; missed ticks of this app will not be caught up");
                HashMap::new()
            }
        }
    }

    /// Records `last` for the app, durably (blocking: call it off the async workers).
    fn write(&self, tenant: &str, app: &str, last: &HashMap<String, DateTime<Utc>>) {
        let map: HashMap<&str, i64> = last
            .iter()
            .map(|(k, t)| (k.as_str(), t.timestamp_millis()))
            .collect();
        let path = self.path(tenant, app);
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(
                &mut f,
                &serde_json::to_vec(&map).map_err(std::io::Error::other)?,
            )?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not record when the schedules last ran");
        }
    }

    fn remove(&self, tenant: &str, app: &str) {
        let _ = std::fs::remove_file(self.path(tenant, app));
    }
}

struct Inner {
    scheduler: Mutex<Scheduler<TargetRef>>,
    clock: Arc<dyn Clock>,
    wake: Notify,
    journal: Option<Journal>,
    wall_time: Duration,
    /// The node's and each tenant's run slots, shared with the HTTP provider: a run takes one
    /// of each, so that schedules cannot take the instances admitted requests need.
    admission: Arc<Admission>,
    /// Runs by tenant and outcome (the node's metrics).
    runs: prometheus_client::metrics::family::Family<
        RunLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// The labels of the run counter: the tenant and how the run ended (`done`, `retryable`,
/// `failed`), never the schedule's or the app's name (see `zero_provider::metrics`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RunLabels {
    tenant: String,
    outcome: &'static str,
}

impl zero_provider::metrics::Metrics for Chrono {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "runs",
            "Scheduled runs (manual ones included), by tenant and outcome: done, retryable (a retry is due) or failed",
            self.inner.runs.clone(),
        );
    }
}

/// The schedules' event provider (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct Chrono {
    inner: Arc<Inner>,
}

impl Chrono {
    /// A provider with `settings`, on `clock`, keeping when schedules last ran under
    /// `journal` (none: nothing is caught up after a restart). `wall_time` is the core's
    /// wall-clock limit of a run: how long shutdown waits for runs in flight. Each run takes
    /// a slot of the node and of its tenant from `admission` (shared with the other event
    /// providers); a run that finds none free ends as retryable (`busy`).
    pub fn new(
        settings: ChronoSettings,
        clock: Arc<dyn Clock>,
        journal: Option<PathBuf>,
        wall_time: Duration,
        admission: Arc<Admission>,
    ) -> Chrono {
        Chrono {
            inner: Arc::new(Inner {
                scheduler: Mutex::new(Scheduler::new(settings)),
                clock,
                wake: Notify::new(),
                journal: journal.map(|dir| Journal {
                    dir,
                    writing: Mutex::new(()),
                }),
                wall_time,
                admission,
                runs: Default::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scheduler<TargetRef>> {
        self.inner
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Parses declarations and checks them against the caps, for `tenant`'s app `app`
    /// (replacing what it declares now), without installing them.
    pub fn check(
        &self,
        tenant: &str,
        app: &str,
        decls: &[crate::ScheduleDecl],
    ) -> Result<Vec<Arc<Schedule>>> {
        let schedules = decls
            .iter()
            .map(|d| Schedule::parse(d).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        self.lock().check(tenant, app, &schedules)?;
        Ok(schedules)
    }

    /// Installs (or replaces) an app's schedules, run by `target` (see
    /// [`Scheduler::install`]); no schedules removes them.
    pub fn install(
        &self,
        tenant: &str,
        app: &str,
        target: TargetRef,
        schedules: Vec<Arc<Schedule>>,
    ) -> Result<()> {
        let last = match &self.inner.journal {
            Some(j) => j.read(tenant, app),
            None => HashMap::new(),
        };
        let now = self.inner.clock.now();
        let empty = schedules.is_empty();
        self.lock()
            .install(tenant, app, target, schedules, &last, now)?;
        if empty && let Some(j) = &self.inner.journal {
            j.remove(tenant, app);
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Removes an app's schedules (and their journal).
    pub fn remove(&self, tenant: &str, app: &str) {
        self.lock().remove(tenant, app);
        if let Some(j) = &self.inner.journal {
            j.remove(tenant, app);
        }
        self.inner.wake.notify_one();
    }

    /// The schedules of a tenant (of one app, when given).
    pub fn list(&self, tenant: &str, app: Option<&str>) -> Vec<Status> {
        self.lock().list(tenant, app)
    }

    /// The settings.
    pub fn settings(&self) -> ChronoSettings {
        self.lock().settings().clone()
    }

    /// Runs a schedule now and waits for the end of the run (not retried): refused when the
    /// schedule is unknown, still running, or its tenant at its runs-per-minute cap.
    pub async fn run_now(&self, tenant: &str, app: &str, name: &str) -> Result<RunReport> {
        let now = self.inner.clock.now();
        let fire = self.lock().run_now(tenant, app, name, now)?;
        Ok(self.inner.clone().execute(fire).await)
    }
}

impl Inner {
    /// Runs one attempt through the core, logs it, and records its end.
    async fn execute(self: Arc<Self>, fire: Fire<TargetRef>) -> RunReport {
        if self.journal.is_some() {
            let last = self
                .scheduler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_runs(&fire.tenant, &fire.app);
            let (inner, tenant, app) = (self.clone(), fire.tenant.clone(), fire.app.clone());
            let recorded = tokio::task::spawn_blocking(move || {
                if let Some(j) = &inner.journal {
                    j.write(&tenant, &app, &last);
                }
            })
            .await;
            if let Err(e) = recorded {
                tracing::warn!(tenant = %fire.tenant, app = %fire.app, error = %e, "could not record when the schedules last ran");
            }
        }
        let span = tracing::info_span!("tick", tenant = %fire.tenant, app = %fire.app, schedule = %fire.schedule, run_id = %fire.run_id, attempt = fire.attempt);
        let start = std::time::Instant::now();
        let tick = Tick {
            schedule: fire.schedule.to_string(),
            scheduled_ms: millis(fire.scheduled),
            actual_ms: millis(fire.actual),
            attempt: fire.attempt,
        };
        let result = async {
            tracing::info!(tenant = %fire.tenant, app = %fire.app, schedule = %fire.schedule, run_id = %fire.run_id, attempt = fire.attempt, scheduled = %fire.scheduled, manual = fire.manual, "scheduled run started");
            let _slots = match self.admission.admit(&self.admission.tenant(&fire.tenant)) {
                Ok(slots) => slots,
                Err(refused) => {
                    return Err((true, "busy", format!("the run could not start: {refused}")));
                }
            };
            match fire.target.tick(fire.run_id.clone(), tick) {
                Ok(run) => run.await.map_err(|f| (retryable(&f), f.kind(), f.to_string())),
                Err(why) => Err((false, "unavailable", unavailable(&why))),
            }
        }
        .instrument(span)
        .await;
        let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match &result {
            Ok(()) => Outcome::Done,
            Err((true, _, _)) => Outcome::Retryable,
            Err((false, _, _)) => Outcome::Failed,
        };
        self.runs
            .get_or_create(&RunLabels {
                tenant: fire.tenant.to_string(),
                outcome: match outcome {
                    Outcome::Done => "done",
                    Outcome::Retryable => "retryable",
                    Outcome::Failed => "failed",
                },
            })
            .inc();
        let retry = self
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished(&fire, outcome, self.clock.now());
        match &result {
            Ok(()) => {
                tracing::info!(tenant = %fire.tenant, app = %fire.app, schedule = %fire.schedule, run_id = %fire.run_id, attempt = fire.attempt, elapsed_ms, "scheduled run finished")
            }
            Err((_, kind, message)) => {
                tracing::warn!(tenant = %fire.tenant, app = %fire.app, schedule = %fire.schedule, run_id = %fire.run_id, attempt = fire.attempt, elapsed_ms, fault = kind, retry_at = ?retry, "scheduled run failed: {message}")
            }
        }
        if retry.is_some() {
            self.wake.notify_one();
        }
        RunReport {
            run_id: fire.run_id.clone(),
            fault: result.as_ref().err().map(|(_, kind, _)| *kind),
            result: result.map_err(|(_, _, m)| m),
        }
    }
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn unavailable(why: &Unavailable) -> String {
    match why {
        Unavailable::Failed => "the app failed to load or was stopped".into(),
        Unavailable::Expired => "the app's authority expired".into(),
        Unavailable::NoEntry => format!("the app does not export `{}`", zerocore::TICK_HANDLER),
        Unavailable::Start => "the node could not create the run's store".into(),
        Unavailable::Invalid(e) => e.clone(),
    }
}

impl Provider for Chrono {
    fn name(&self) -> &'static str {
        "zerochrono"
    }
}

#[async_trait::async_trait]
impl EventProvider for Chrono {
    async fn serve(&self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut running = JoinSet::new();
        loop {
            let now = self.inner.clock.now();
            let (fires, _skipped) = self.lock().poll(now);
            for fire in fires {
                running.spawn(self.inner.clone().execute(fire));
            }
            while running.try_join_next().is_some() {}
            let wake = self.lock().next_wake();
            let sleep = async {
                match wake {
                    Some(t) => self.inner.clock.sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("zerochrono stopped; waiting for runs in flight");
        let grace = self.inner.wall_time + Duration::from_secs(1);
        if tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("some scheduled runs were still going after the grace period");
        }
        Ok(())
    }
}
