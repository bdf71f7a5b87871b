//! The rules of schedules, on explicit times and on a [`ManualClock`]: no test sleeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::mpsc;
use zerocore::{Fault, Run, Tick, Unavailable};

use crate::*;

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, h, m, s).unwrap()
}

fn decl(name: &str, schedule: &str) -> ScheduleDecl {
    ScheduleDecl {
        name: name.into(),
        schedule: schedule.into(),
        time_zone: None,
        catch_up: CatchUp::None,
        retries: 0,
    }
}

fn parsed(d: &ScheduleDecl) -> Arc<Schedule> {
    Arc::new(Schedule::parse(d).unwrap())
}

type Sched = Scheduler<()>;

fn scheduler(settings: ChronoSettings) -> Sched {
    Scheduler::new(settings)
}

#[test]
fn cron_with_seconds_fires_on_its_seconds() {
    let s = parsed(&decl("tick", "*/5 * * * * *"));
    assert_eq!(s.next_after(at(10, 0, 3)), Some(at(10, 0, 5)));
    assert_eq!(s.next_after(at(10, 0, 5)), Some(at(10, 0, 10)));
    let half = at(10, 0, 5) + chrono::Duration::milliseconds(300);
    assert_eq!(s.next_after(half), Some(at(10, 0, 10)));
    assert_eq!(s.latest_at_or_before(half), Some(at(10, 0, 5)));
    assert_eq!(s.latest_at_or_before(at(10, 0, 5)), Some(at(10, 0, 5)));
    assert_eq!(s.latest_at_or_before(at(10, 0, 9)), Some(at(10, 0, 5)));
    let daily = parsed(&decl("daily", "0 30 6 * * *"));
    assert_eq!(
        daily.next_after(at(10, 0, 0)),
        Some(Utc.with_ymd_and_hms(2026, 1, 16, 6, 30, 0).unwrap())
    );
}

#[test]
fn cron_reads_its_time_zone_and_utc_is_the_default() {
    let mut d = decl("morning", "0 0 6 * * *");
    d.time_zone = Some("Europe/Paris".into());
    let paris = parsed(&d);
    // Winter: Paris is UTC+1; summer: UTC+2.
    assert_eq!(paris.next_after(at(0, 0, 0)), Some(at(5, 0, 0)));
    let july = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        paris.next_after(july),
        Some(Utc.with_ymd_and_hms(2026, 7, 1, 4, 0, 0).unwrap())
    );
    let utc = parsed(&decl("morning", "0 0 6 * * *"));
    assert_eq!(utc.next_after(at(0, 0, 0)), Some(at(6, 0, 0)));
}

#[test]
fn intervals_are_aligned_on_the_epoch() {
    let s = parsed(&decl("sync", "every 30s"));
    assert_eq!(s.next_after(at(10, 0, 10)), Some(at(10, 0, 30)));
    assert_eq!(s.next_after(at(10, 0, 30)), Some(at(10, 1, 0)));
    assert_eq!(s.latest_at_or_before(at(10, 0, 59)), Some(at(10, 0, 30)));
    let ms = parsed(&decl("fast", "every 250ms"));
    assert_eq!(
        ms.next_after(at(10, 0, 0)),
        Some(at(10, 0, 0) + chrono::Duration::milliseconds(250))
    );
    assert!(
        matches!(parsed(&decl("h", "every 2h")).when, When::Every(d) if d == Duration::from_secs(7200))
    );
}

#[test]
fn declarations_parse_from_the_command_line_and_bad_ones_say_why() {
    let d = ScheduleDecl::parse_arg("report=0 0 6 * * *;tz=Europe/Paris;catch_up=last;retries=2")
        .unwrap();
    assert_eq!(d.name, "report");
    assert_eq!(d.schedule, "0 0 6 * * *");
    assert_eq!(d.time_zone.as_deref(), Some("Europe/Paris"));
    assert_eq!(d.catch_up, CatchUp::Last);
    assert_eq!(d.retries, 2);
    assert_eq!(ScheduleDecl::parse_arg(&d.to_arg()).unwrap(), d);
    assert_eq!(
        ScheduleDecl::parse_arg("tick=*/5 * * * * *").unwrap(),
        decl("tick", "*/5 * * * * *")
    );

    let err = |arg: &str| match ScheduleDecl::parse_arg(arg) {
        Ok(d) => Schedule::parse(&d)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    assert!(err("*/5 * * * * *").contains("no `=`"));
    assert!(err("t=* * * * *;retries=x").contains("whole number"));
    assert!(err("t=* * * * * *;color=red").contains("unknown option `color`"));
    assert!(err("t=* * * * * *;catch_up=all").contains("`last` or `none`"));
    let five = err("t=*/5 * * * *");
    assert!(
        five.contains("5 fields") && five.contains("seconds first"),
        "{five}"
    );
    assert!(err("t=61 * * * * *").contains("not a cron expression"));
    assert!(err("t=* * * * * *;tz=Mars/Olympus").contains("not a time zone"));
    assert!(err("Bad Name=* * * * * *").contains("not a schedule name"));
    assert!(err("t=every 5 parsecs").contains("not an interval"));
    assert!(err("t=every 0s").contains("longer than 0"));
    assert!(err("t=0 0 0 1 1 * 2001").contains("never fires"));
}

#[test]
fn config_tables_deserialize_and_refuse_unknown_keys() {
    #[derive(serde::Deserialize)]
    struct App {
        schedules: Vec<ScheduleDecl>,
    }
    let app: App = toml::from_str(
        "schedules = [{ name = \"a\", schedule = \"every 1m\" }, { name = \"b\", schedule = \"0 0 * * * *\", time_zone = \"Asia/Tokyo\", catch_up = \"last\", retries = 1 }]",
    )
    .unwrap();
    assert_eq!(app.schedules[0], decl("a", "every 1m"));
    assert_eq!(app.schedules[1].catch_up, CatchUp::Last);
    let bad = toml::from_str::<App>("schedules = [{ name = \"a\", cron = \"x\" }]");
    assert!(
        bad.err()
            .unwrap()
            .to_string()
            .contains("unknown field `cron`")
    );
    let s: ChronoSettings =
        toml::from_str("max_schedules_per_tenant = 3\nretry_backoff_ms = 10").unwrap();
    assert_eq!(s.max_schedules_per_tenant, 3);
    assert_eq!(s.retry_backoff, Duration::from_millis(10));
    assert!(toml::from_str::<ChronoSettings>("max_runs = 1").is_err());
    let zero = ChronoSettings {
        max_runs_per_minute_per_tenant: 0,
        ..ChronoSettings::default()
    };
    assert!(
        zero.validate()
            .unwrap_err()
            .contains("max_runs_per_minute_per_tenant")
    );
}

fn install(s: &mut Sched, app: &str, decls: &[ScheduleDecl], now: DateTime<Utc>) -> Result<()> {
    s.install(
        "acme",
        app,
        (),
        decls.iter().map(parsed).collect(),
        &HashMap::new(),
        now,
    )
}

#[test]
fn a_tick_that_finds_the_previous_run_going_is_skipped() {
    let mut s = scheduler(ChronoSettings::default());
    install(&mut s, "app", &[decl("tick", "* * * * * *")], at(10, 0, 0)).unwrap();
    assert_eq!(s.next_wake(), Some(at(10, 0, 1)));
    assert!(s.poll(at(10, 0, 0)).0.is_empty());
    let (fires, _) = s.poll(at(10, 0, 1));
    assert_eq!(fires.len(), 1);
    assert_eq!((fires[0].scheduled, fires[0].attempt), (at(10, 0, 1), 1));
    // Still going at the next two ticks: both skipped.
    for t in [at(10, 0, 2), at(10, 0, 3)] {
        let (fires, skips) = s.poll(t);
        assert!(fires.is_empty());
        assert_eq!(skips, vec![(Arc::from("tick"), Skip::Overlap)]);
    }
    assert!(s.list("acme", None)[0].running);
    assert_eq!(s.list("acme", None)[0].skipped_overlap, 2);
    assert_eq!(s.finished(&fires[0], Outcome::Done, at(10, 0, 3)), None);
    let (next, _) = s.poll(at(10, 0, 4));
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].run_id, fires[0].run_id);
}

#[test]
fn missed_ticks_are_not_replayed() {
    let mut s = scheduler(ChronoSettings::default());
    // The node was down for an hour: nothing runs at start, the first tick is the next one.
    let last = HashMap::from([("tick".to_string(), at(9, 0, 0))]);
    s.install(
        "acme",
        "app",
        (),
        vec![parsed(&decl("tick", "0 * * * * *"))],
        &last,
        at(10, 0, 30),
    )
    .unwrap();
    assert!(s.poll(at(10, 0, 30)).0.is_empty());
    assert_eq!(s.next_wake(), Some(at(10, 1, 0)));
    // A loop woken late (ten ticks due) runs the schedule once, for the latest tick.
    let mut e = scheduler(ChronoSettings::default());
    install(&mut e, "app", &[decl("tick", "* * * * * *")], at(10, 0, 0)).unwrap();
    let (fires, _) = e.poll(at(10, 0, 10));
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].scheduled, at(10, 0, 10));
    assert_eq!(e.next_wake(), Some(at(10, 0, 11)));
}

#[test]
fn catch_up_last_runs_the_latest_missed_tick_once() {
    let mut d = decl("tick", "0 * * * * *");
    d.catch_up = CatchUp::Last;
    let mut s = scheduler(ChronoSettings::default());
    let last = HashMap::from([("tick".to_string(), at(9, 0, 0))]);
    s.install("acme", "app", (), vec![parsed(&d)], &last, at(10, 0, 30))
        .unwrap();
    assert_eq!(s.next_wake(), Some(at(10, 0, 0)));
    let (fires, _) = s.poll(at(10, 0, 30));
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].scheduled, at(10, 0, 0));
    s.finished(&fires[0], Outcome::Done, at(10, 0, 31));
    assert!(s.poll(at(10, 0, 31)).0.is_empty());
    assert_eq!(s.next_wake(), Some(at(10, 1, 0)));

    // Nothing was missed (it last ran at the latest tick): nothing to catch up.
    let mut s = scheduler(ChronoSettings::default());
    let last = HashMap::from([("tick".to_string(), at(10, 0, 0))]);
    s.install("acme", "app", (), vec![parsed(&d)], &last, at(10, 0, 30))
        .unwrap();
    assert!(s.poll(at(10, 0, 30)).0.is_empty());
    // Never ran before: nothing to catch up either.
    let mut s = scheduler(ChronoSettings::default());
    s.install(
        "acme",
        "app",
        (),
        vec![parsed(&d)],
        &HashMap::new(),
        at(10, 0, 30),
    )
    .unwrap();
    assert!(s.poll(at(10, 0, 30)).0.is_empty());
}

#[test]
fn a_run_that_traps_is_retried_with_backoff_at_most_retries_times() {
    let settings = ChronoSettings::default();
    assert_eq!(settings.backoff(1), Duration::from_secs(1));
    assert_eq!(settings.backoff(2), Duration::from_secs(2));
    assert_eq!(settings.backoff(40), Duration::from_secs(60));
    let mut s = scheduler(settings);
    let mut d = decl("job", "0 * * * * *");
    d.retries = 2;
    install(&mut s, "app", &[d], at(10, 0, 30)).unwrap();
    let (fires, _) = s.poll(at(10, 1, 0));
    let first = &fires[0];
    assert_eq!(
        s.finished(first, Outcome::Retryable, at(10, 1, 0)),
        Some(at(10, 1, 1))
    );
    assert_eq!(s.next_wake(), Some(at(10, 1, 1)));
    assert!(s.poll(at(10, 1, 0)).0.is_empty());
    let (second, _) = s.poll(at(10, 1, 1));
    assert_eq!(
        (second[0].attempt, &second[0].run_id, second[0].scheduled),
        (2, &first.run_id, at(10, 1, 0))
    );
    assert_eq!(
        s.finished(&second[0], Outcome::Retryable, at(10, 1, 1)),
        Some(at(10, 1, 3))
    );
    let (third, _) = s.poll(at(10, 1, 3));
    assert_eq!(third[0].attempt, 3);
    // Out of retries: the run is over and the schedule free.
    assert_eq!(
        s.finished(&third[0], Outcome::Retryable, at(10, 1, 3)),
        None
    );
    assert!(!s.list("acme", None)[0].running);
    // A failure that is not worth retrying (the component returned an error) is not retried.
    let (fires, _) = s.poll(at(10, 2, 0));
    assert_eq!(s.finished(&fires[0], Outcome::Failed, at(10, 2, 0)), None);
    assert!(!s.list("acme", None)[0].running);
}

#[test]
fn a_retry_pending_keeps_the_schedule_busy() {
    let mut s = scheduler(ChronoSettings {
        retry_backoff: Duration::from_secs(5),
        ..ChronoSettings::default()
    });
    let mut d = decl("job", "* * * * * *");
    d.retries = 1;
    install(&mut s, "app", &[d], at(10, 0, 0)).unwrap();
    let (fires, _) = s.poll(at(10, 0, 1));
    s.finished(&fires[0], Outcome::Retryable, at(10, 0, 1));
    let (fires, skips) = s.poll(at(10, 0, 2));
    assert!(fires.is_empty());
    assert_eq!(skips[0].1, Skip::Overlap);
}

#[test]
fn a_tenant_has_a_cap_on_schedules() {
    let settings = ChronoSettings {
        max_schedules_per_tenant: 2,
        max_retries: 3,
        ..ChronoSettings::default()
    };
    let mut s = scheduler(settings);
    let t = at(10, 0, 0);
    install(
        &mut s,
        "a",
        &[decl("x", "every 1m"), decl("y", "every 1m")],
        t,
    )
    .unwrap();
    let err = install(&mut s, "b", &[decl("z", "every 1m")], t).unwrap_err();
    assert_eq!(
        err,
        Error::TooManySchedules {
            tenant: "acme".into(),
            limit: 2,
            requested: 3
        }
    );
    assert!(err.to_string().contains("max_schedules_per_tenant = 2"));
    // Replacing an app's own schedules counts them once; another tenant has its own cap.
    install(
        &mut s,
        "a",
        &[decl("x", "every 1m"), decl("w", "every 5m")],
        t,
    )
    .unwrap();
    s.install(
        "globex",
        "b",
        (),
        vec![parsed(&decl("z", "every 1m"))],
        &HashMap::new(),
        t,
    )
    .unwrap();
    // An app without schedules needs none of the cap.
    install(&mut s, "c", &[], t).unwrap();
    let mut greedy = decl("r", "every 1m");
    greedy.retries = 4;
    assert!(matches!(
        install(&mut s, "a", &[greedy], t),
        Err(Error::TooManyRetries { limit: 3, .. })
    ));
    assert_eq!(
        install(
            &mut s,
            "a",
            &[decl("x", "every 1m"), decl("x", "every 2m")],
            t
        ),
        Err(Error::Duplicate("x".into()))
    );
    assert!(s.remove("acme", "a"));
    install(&mut s, "b", &[decl("z", "every 1m")], t).unwrap();
}

#[test]
fn a_tenant_has_a_cap_on_runs_per_minute() {
    let settings = ChronoSettings {
        max_runs_per_minute_per_tenant: 3,
        ..ChronoSettings::default()
    };
    let mut s = scheduler(settings);
    install(&mut s, "app", &[decl("tick", "* * * * * *")], at(10, 0, 0)).unwrap();
    s.install(
        "globex",
        "app",
        (),
        vec![parsed(&decl("tick", "*/5 * * * * *"))],
        &HashMap::new(),
        at(10, 0, 0),
    )
    .unwrap();
    let mut ran = 0;
    for sec in 1..=5 {
        let (fires, skips) = s.poll(at(10, 0, sec));
        for f in &fires {
            s.finished(f, Outcome::Done, at(10, 0, sec));
        }
        ran += fires.iter().filter(|f| &*f.tenant == "acme").count();
        if sec > 3 {
            assert_eq!(skips, vec![(Arc::from("tick"), Skip::RateLimited)]);
            assert!(fires.iter().all(|f| &*f.tenant == "globex"));
        }
        // The other tenant is not held back by acme's cap.
        assert_eq!(fires.iter().any(|f| &*f.tenant == "globex"), sec == 5);
    }
    assert_eq!(ran, 3);
    assert_eq!(s.list("acme", None)[0].skipped_rate, 2);
    let manual = s.run_now("acme", "app", "tick", at(10, 0, 30)).unwrap_err();
    assert!(
        manual
            .to_string()
            .contains("max_runs_per_minute_per_tenant")
    );
    // A minute after the first run, runs are admitted again.
    let (fires, _) = s.poll(at(10, 1, 1));
    assert_eq!(fires.iter().filter(|f| &*f.tenant == "acme").count(), 1);
}

#[test]
fn run_now_refuses_unknown_and_busy_schedules() {
    let mut s = scheduler(ChronoSettings::default());
    install(&mut s, "app", &[decl("tick", "0 0 * * * *")], at(10, 0, 0)).unwrap();
    let unknown = s.run_now("acme", "app", "nope", at(10, 0, 0)).unwrap_err();
    assert!(unknown.to_string().contains("no schedule `nope`"));
    assert!(s.run_now("globex", "app", "tick", at(10, 0, 0)).is_err());
    let fire = s.run_now("acme", "app", "tick", at(10, 0, 0)).unwrap();
    assert!(fire.manual);
    assert_eq!(
        s.run_now("acme", "app", "tick", at(10, 0, 1)).unwrap_err(),
        Error::Busy("tick".into())
    );
    // A manual run is not retried.
    assert_eq!(s.finished(&fire, Outcome::Retryable, at(10, 0, 1)), None);
    assert!(s.run_now("acme", "app", "tick", at(10, 0, 2)).is_ok());
}

/// A target that reports every tick and traps on the first `traps` of them.
struct Probe {
    ticks: mpsc::UnboundedSender<Tick>,
    traps: AtomicU32,
}

impl Target for Probe {
    fn tick(&self, _run_id: Arc<str>, tick: Tick) -> std::result::Result<Run, Unavailable> {
        let trap = self
            .traps
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let ticks = self.ticks.clone();
        Ok(Box::pin(async move {
            let _ = ticks.send(tick);
            if trap {
                Err(Fault::Trap(
                    "wasm `unreachable` instruction executed".into(),
                ))
            } else {
                Ok(())
            }
        }))
    }
}

/// Waits until the app's schedule has no run going, or has one waiting for its retry; returns
/// the retry's time.
async fn settle(chrono: &Chrono) -> Option<i64> {
    loop {
        let s = chrono.list("acme", Some("app")).remove(0);
        if !s.running || s.retry_ms.is_some() {
            return s.retry_ms;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn the_provider_runs_ticks_on_its_clock_and_retries_traps() {
    let clock = Arc::new(ManualClock::new(
        at(10, 0, 0) + chrono::Duration::milliseconds(500),
    ));
    let dir = tempfile::tempdir().unwrap();
    let chrono = Chrono::new(
        ChronoSettings::default(),
        clock.clone(),
        Some(dir.path().to_path_buf()),
        Duration::from_secs(1),
        zero_provider::admission::Admission::unbounded(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        ticks: tx,
        traps: AtomicU32::new(1),
    });
    let mut d = decl("tick", "*/10 * * * * *");
    d.retries = 1;
    let schedules = chrono
        .check("acme", "app", std::slice::from_ref(&d))
        .unwrap();
    chrono
        .install("acme", "app", probe.clone(), schedules)
        .unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn({
        let chrono = chrono.clone();
        async move { zero_provider::EventProvider::serve(&chrono, shutdown).await }
    });
    clock.set(at(10, 0, 10));
    let first = rx.recv().await.unwrap();
    assert_eq!(
        (first.schedule.as_str(), first.scheduled_ms, first.attempt),
        ("tick", millis(at(10, 0, 10)), 1)
    );
    // It trapped: tried again after the backoff (1 s), for the same tick.
    let retry_at = settle(&chrono).await.unwrap();
    assert_eq!(retry_at, at(10, 0, 11).timestamp_millis());
    clock.set(at(10, 0, 11));
    let retry = rx.recv().await.unwrap();
    assert_eq!(
        (retry.scheduled_ms, retry.actual_ms, retry.attempt),
        (millis(at(10, 0, 10)), millis(at(10, 0, 11)), 2)
    );
    assert_eq!(settle(&chrono).await, None);
    clock.set(at(10, 0, 20));
    assert_eq!(rx.recv().await.unwrap().scheduled_ms, millis(at(10, 0, 20)));
    settle(&chrono).await;
    // A run asked for now reports its end.
    let report = chrono.run_now("acme", "app", "tick").await.unwrap();
    assert!(report.result.is_ok());
    assert_eq!(rx.recv().await.unwrap().attempt, 1);
    let listed = chrono.list("acme", Some("app"));
    assert_eq!(listed[0].next_ms, Some(at(10, 0, 30).timestamp_millis()));
    stop.send(true).unwrap();
    serving.await.unwrap().unwrap();

    // After a restart, a schedule that catches up runs its latest missed tick (the journal
    // says when it last ran) once.
    clock.set(at(10, 5, 5));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        ticks: tx,
        traps: AtomicU32::new(0),
    });
    let restarted = Chrono::new(
        ChronoSettings::default(),
        clock.clone(),
        Some(dir.path().to_path_buf()),
        Duration::from_secs(1),
        zero_provider::admission::Admission::unbounded(),
    );
    d.catch_up = CatchUp::Last;
    let schedules = restarted.check("acme", "app", &[d]).unwrap();
    restarted.install("acme", "app", probe, schedules).unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn({
        let chrono = restarted.clone();
        async move { zero_provider::EventProvider::serve(&chrono, shutdown).await }
    });
    let caught = rx.recv().await.unwrap();
    assert_eq!(caught.scheduled_ms, millis(at(10, 5, 0)));
    settle(&restarted).await;
    stop.send(true).unwrap();
    serving.await.unwrap().unwrap();
    assert!(rx.try_recv().is_err());
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap()
}

#[tokio::test]
async fn a_run_takes_the_nodes_and_its_tenants_run_slots_or_waits_for_its_retry() {
    let clock = Arc::new(ManualClock::new(at(10, 0, 0)));
    // One slot for the tenant: an HTTP request of the tenant holds it.
    let admission = zero_provider::admission::Admission::new(4, 1);
    let chrono = Chrono::new(
        ChronoSettings::default(),
        clock.clone(),
        None,
        Duration::from_secs(1),
        admission.clone(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        ticks: tx,
        traps: AtomicU32::new(0),
    });
    let mut d = decl("tick", "0 0 * * * *");
    d.retries = 1;
    let schedules = chrono.check("acme", "app", &[d]).unwrap();
    chrono.install("acme", "app", probe, schedules).unwrap();
    let held = admission
        .admit(&admission.tenant(&Arc::from("acme")))
        .unwrap();
    let report = chrono.run_now("acme", "app", "tick").await.unwrap();
    assert_eq!(report.fault, Some("busy"));
    let message = report.result.unwrap_err();
    assert!(
        message.contains("max_concurrent_requests_per_tenant (1)"),
        "{message}"
    );
    assert!(rx.try_recv().is_err(), "the component must not have run");
    // Another tenant's slot is its own.
    let globex = admission
        .admit(&admission.tenant(&Arc::from("globex")))
        .unwrap();
    drop(held);
    let report = chrono.run_now("acme", "app", "tick").await.unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    assert_eq!(rx.recv().await.unwrap().attempt, 1);
    // The run gave its slots back; with the node full, a run is refused at the node's limit.
    assert_eq!(admission.in_flight(), 1);
    let _full: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|t| admission.admit(&admission.tenant(&Arc::from(*t))).unwrap())
        .collect();
    let report = chrono.run_now("acme", "app", "tick").await.unwrap();
    assert!(
        report
            .result
            .unwrap_err()
            .contains("max_concurrent_requests (4)"),
    );
    drop(globex);
}
