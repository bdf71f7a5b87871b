//! The errors of zerochrono: each says what is wrong and how to fix it.

/// What went wrong with a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A declaration does not parse.
    #[error("{0}")]
    Invalid(String),
    /// The tenant would have more schedules than the node takes.
    #[error(
        "tenant `{tenant}` would have {requested} schedules, more than this node takes \
         ([chrono] max_schedules_per_tenant = {limit}); remove schedules from other apps or \
         declare fewer"
    )]
    TooManySchedules {
        /// The tenant.
        tenant: String,
        /// The cap.
        limit: usize,
        /// How many it would have.
        requested: usize,
    },
    /// A schedule asks for more retries than the node allows.
    #[error(
        "schedule `{name}` asks for {requested} retries, more than this node allows ([chrono] \
         max_retries = {limit})"
    )]
    TooManyRetries {
        /// The schedule.
        name: String,
        /// The cap.
        limit: u32,
        /// What was asked.
        requested: u32,
    },
    /// Two schedules of one app have the same name.
    #[error("two schedules are named `{0}`; give each schedule of an app its own name")]
    Duplicate(String),
    /// No such schedule.
    #[error(
        "app `{app}` of tenant `{tenant}` has no schedule `{name}` (`zero schedules list` shows them)"
    )]
    UnknownSchedule {
        /// The tenant.
        tenant: String,
        /// The app.
        app: String,
        /// The schedule asked for.
        name: String,
    },
    /// The schedule's previous run is still going.
    #[error("schedule `{0}` is still running its previous tick; try again when it has finished")]
    Busy(String),
    /// The tenant used its runs for this minute.
    #[error(
        "tenant `{tenant}` has started {limit} scheduled runs in the last minute, the most this \
         node allows ([chrono] max_runs_per_minute_per_tenant); try again later"
    )]
    RateLimited {
        /// The tenant.
        tenant: String,
        /// The cap.
        limit: usize,
    },
}

/// zerochrono's result.
pub type Result<T> = std::result::Result<T, Error>;
