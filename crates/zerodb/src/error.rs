//! Errors that say what happened and how to fix it.

use crate::{Action, DB_NAMESPACE};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong executing a statement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller lacks the capability for `action` on `table`.
    #[error(
        "permission denied: {action} on table `{table}` of database `{db}` is not granted \
         (needs capability {cmd} with .db = \"{db}\" and .table = \"{table}\")",
        cmd = format_args!("{DB_NAMESPACE}/{action}")
    )]
    PermissionDenied {
        /// The action that was refused.
        action: Action,
        /// The database name.
        db: String,
        /// The table (or view) name.
        table: String,
    },
    /// The SQL could not be parsed or refers to something that does not exist.
    #[error("SQL error: {message}{}; fix the statement", offset.map(|o| format!(" (at byte offset {o})")).unwrap_or_default())]
    Syntax {
        /// SQLite's message.
        message: String,
        /// Byte offset of the offending token in the statement, when SQLite reports one.
        offset: Option<usize>,
    },
    /// A UNIQUE, NOT NULL, CHECK, FOREIGN KEY or PRIMARY KEY constraint failed.
    #[error("constraint violation: {message}")]
    Constraint {
        /// SQLite's message (names the constraint or column).
        message: String,
    },
    /// A configured limit was reached; the statement had no effect.
    #[error("limit exceeded: {kind} limit is {limit}; {}", limit_hint(kind))]
    LimitExceeded {
        /// Which limit: `"statement_length"` (bytes), `"rows"` (rows returned), `"time"`
        /// (milliseconds per statement), `"size"` (bytes per database), `"value_size"` (bytes
        /// of one string or blob), `"result_size"` (bytes of one result), `"statements"`
        /// (statements per batch), `"databases"` (databases per tenant), `"quota"` (bytes of
        /// all of a tenant's databases), `"open_databases"` (connections open at once),
        /// `"handles"` (databases open by one request), `"cpu"` (the request's remaining CPU
        /// budget, milliseconds), `"memory"` (bytes SQLite may allocate on the node) or
        /// `"instructions"` (SQLite VM instructions per statement of a replicated write, which
        /// is bounded by a count rather than the clock so that every replica agrees).
        kind: &'static str,
        /// The configured value of that limit.
        limit: u64,
    },
    /// The statement uses a feature zerodb never allows.
    #[error("refused: {what}: {why}")]
    Refused {
        /// What was refused (e.g. `ATTACH`, `PRAGMA journal_mode`, `random()`).
        what: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// The request that made the call ended (timed out or its client went away) before the
    /// statement finished; it had no effect.
    #[error("cancelled: the request ended before the statement finished; nothing was changed")]
    Cancelled,
    /// A tenant or database name is not valid.
    #[error(
        "invalid name `{0}`: tenant and database names are 1 to 63 characters of a-z, 0-9, `-` and `_`"
    )]
    InvalidName(String),
    /// A write could not be committed through the cluster's log (no leader reachable, no
    /// quorum, the node shutting down); it was not acknowledged, and retrying is safe only
    /// if the caller can tell whether it took effect.
    #[error(
        "unavailable: the write was not committed through the cluster's log: {0}; it was not \
         acknowledged; retry when the cluster has a leader and a quorum"
    )]
    Unavailable(String),
    /// Another SQLite error.
    #[error("sqlite error: {0}")]
    Sqlite(String),
    /// A filesystem error while creating the database directory.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

fn limit_hint(kind: &str) -> &'static str {
    match kind {
        "statement_length" => "send a shorter statement (use parameters for large values)",
        "rows" => "add a LIMIT clause or page through the results",
        "time" => "the statement was interrupted; add an index or narrow the query",
        "size" => "the database is full; delete data or ask for a larger quota",
        "value_size" => {
            "a string or blob would be larger than that many bytes; store large values as files"
        }
        "result_size" => {
            "the result would be larger than that many bytes; select fewer columns or rows, or page through them"
        }
        "statements" => "send fewer statements per batch",
        "databases" => "the tenant has that many databases; drop one or ask for a larger limit",
        "quota" => {
            "the tenant's databases together take that many bytes; delete data or ask for a larger quota"
        }
        "open_databases" => {
            "that many databases are in use right now; retry shortly or use fewer databases at once"
        }
        "handles" => "this request opened that many databases; reuse the open handle",
        "cpu" => {
            "the request's CPU budget (milliseconds left) ran out while the statement ran; narrow the query"
        }
        "memory" => "SQLite's memory on this node is exhausted; retry with a smaller statement",
        "instructions" => {
            "the replicated write ran that many SQLite instructions; add an index or write fewer rows per statement"
        }
        _ => "reduce the work done by the statement",
    }
}

/// The rule refused for non-deterministic functions, shared by docs, errors and tests.
pub(crate) const NONDETERMINISTIC_WHY: &str = "non-deterministic functions (random(), randomblob(), \
     and date/time functions reading the clock: 'now', no time argument, CURRENT_TIME/DATE/TIMESTAMP) \
     are not allowed in statements that write, because writes are replicated and must give the same \
     result on every node; compute the value in the application and pass it as a parameter";
