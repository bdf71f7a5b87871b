//! `ticker`: one component with two triggers. Its schedules' ticks (`#[zerochrono::handler]`)
//! record the last tick in the tenant's cache (key `ticker:last`); its HTTP handler
//! (`#[zeroproxy::handler]`) shows it, with the app's schedules:
//!
//! `GET /` answers `200 {"last": {"schedule", "scheduled_ms", "actual_ms", "attempt",
//! "run_id"} | null, "schedules": [{"name", "expression", "time_zone", "next_ms"}]}`.

use serde::{Deserialize, Serialize};
use zerosdk::cache;
use zerosdk::zerochrono::{self, Tick};
use zerosdk::zeroproxy::{self, Error, Json, Request};

/// Where the last tick is kept.
const KEY: &str = "ticker:last";

/// The last tick, as kept in the cache.
#[derive(Serialize, Deserialize)]
struct LastTick {
    schedule: String,
    scheduled_ms: u64,
    actual_ms: u64,
    attempt: u32,
    run_id: String,
}

/// A schedule as the page shows it.
#[derive(Serialize)]
struct ScheduleView {
    name: String,
    expression: String,
    time_zone: String,
    next_ms: Option<u64>,
}

/// The page.
#[derive(Serialize)]
struct Page {
    last: Option<LastTick>,
    schedules: Vec<ScheduleView>,
}

#[zerochrono::handler]
fn tick(tick: Tick) -> Result<(), String> {
    println!("tick {} at {}", tick.schedule, tick.scheduled_ms);
    let last = LastTick {
        schedule: tick.schedule,
        scheduled_ms: tick.scheduled_ms,
        actual_ms: tick.actual_ms,
        attempt: tick.attempt,
        run_id: tick.run_id,
    };
    cache::set_json(KEY, &last, None).map_err(|e| format!("could not record the tick: {e}"))
}

#[zeroproxy::handler]
fn page(_req: &mut Request) -> Result<Json<Page>, Error> {
    let last = cache::get_json::<LastTick>(KEY)
        .map_err(|e| Error::internal(format!("reading the last tick failed: {e}")))?;
    let schedules = zerochrono::schedules()
        .into_iter()
        .map(|s| ScheduleView {
            name: s.name,
            expression: s.expression,
            time_zone: s.time_zone,
            next_ms: s.next_ms,
        })
        .collect();
    Ok(Json(Page { last, schedules }))
}
