//! `zerochrono`: schedules, zerocore's second event provider. A component that exports
//! `zero:chrono/tick-handler` (`wit/zero-chrono`) runs at the ticks of the schedules its app
//! declares at deploy, through the core's invocation path ([`zerocore::App::tick`]), with the
//! same limits as an HTTP request. One component may export both `wasi:http` and the tick
//! handler, and be deployed once with routes and schedules.
//!
//! - [`ScheduleDecl`] / [`Schedule`]: declarations (`name=*/5 * * * * *;tz=Europe/Paris`) and
//!   their firing times: cron expressions with seconds (the `cron` crate) in a time zone
//!   (`chrono-tz`, UTC by default), or fixed intervals (`every 30s`, aligned on the Unix epoch).
//! - [`Scheduler`]: the rules, on explicit times: no overlapping runs of a schedule, no replay
//!   of missed ticks unless `catch_up = "last"`, retries with backoff after a trap or timeout,
//!   per-tenant caps on schedules and on runs per minute (see its module documentation).
//! - [`Chrono`]: the event provider: the scheduler on a [`Clock`] ([`ManualClock`] in tests),
//!   running each tick in the core and logging it with tenant, app, schedule and run id.
//! - [`ChronoSettings`]: the `[chrono]` section of `zerocore.toml`.
//! - [`provider::ChronoProvider`]: `zero:chrono/schedules`, an app reading its own schedules.
//!
//! Declaring a schedule at deploy needs `/chrono/schedule` in the deployer's chain, asked with
//! the arguments `{tenant, app, name, schedule}` (the node checks it; see `zero-node`), so an
//! owner can forbid, e.g., every-second schedules with a policy on `.schedule`.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod clock;
mod error;
pub mod provider;
pub mod scheduler;
mod service;
mod settings;
mod spec;

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use error::{Error, Result};
pub use provider::ChronoProvider;
pub use scheduler::{Fire, Outcome, Scheduler, Skip, Skipped, Status};
pub use service::{Chrono, RunReport, Target, TargetRef, retryable};
pub use settings::ChronoSettings;
pub use spec::{CatchUp, Schedule, ScheduleDecl, When};

/// The capability command that declaring a schedule needs in the deployer's chain.
pub const SCHEDULE_COMMAND: &str = "/chrono/schedule";

#[cfg(test)]
mod tests;
