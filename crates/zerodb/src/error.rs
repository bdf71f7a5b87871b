//! Errors that say what happened and how to fix it.

use crate::Action;

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
        cmd = action.command()
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
        /// (milliseconds per statement) or `"size"` (bytes per database).
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
    /// A tenant or database name is not valid.
    #[error(
        "invalid name `{0}`: tenant and database names are 1 to 63 characters of a-z, 0-9, `-` and `_`"
    )]
    InvalidName(String),
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
        _ => "reduce the work done by the statement",
    }
}

/// The rule refused for non-deterministic functions, shared by docs, errors and tests.
pub(crate) const NONDETERMINISTIC_WHY: &str = "non-deterministic functions (random(), randomblob(), \
     and date/time functions reading the clock: 'now', no time argument, CURRENT_TIME/DATE/TIMESTAMP) \
     are not allowed in statements that write, because writes are replicated and must give the same \
     result on every node; compute the value in the application and pass it as a parameter";
