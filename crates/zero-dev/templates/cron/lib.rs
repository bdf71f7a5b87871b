//! {{name}}: runs on a schedule and serves a page. Each tick (every 10 seconds, see zero.toml)
//! counts itself in the tenant's cache under `ticks:count`; `GET /ticks` shows the count.

use zerosdk::cache;
use zerosdk::zerochrono::{self, Tick};
use zerosdk::zeroproxy::{self, Error, Request};

#[zerochrono::handler]
fn tick(t: Tick) -> Result<(), String> {
    let n = cache::increment("ticks:count", 1, None).map_err(|e| e.to_string())?;
    println!(
        "tick {n} of schedule {} (due at {} ms)",
        t.schedule, t.scheduled_ms
    );
    Ok(())
}

#[zeroproxy::handler]
pub fn handler(_req: &mut Request) -> Result<String, Error> {
    let n = cache::get_string("ticks:count")?.unwrap_or_else(|| "0".into());
    Ok(format!("{n} ticks so far\n"))
}
