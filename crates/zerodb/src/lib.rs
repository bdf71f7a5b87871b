//! `zerodb`: the SQLite core of zerocore's per-tenant SQL database provider.
//!
//! Every (tenant, database) pair is one SQLite file at `root/<tenant>/<name>.sqlite`, opened by
//! [`Databases::database`] in WAL mode with `synchronous=FULL` (an acknowledged commit survives a
//! crash), foreign keys on, `trusted_schema=OFF`, `SQLITE_DBCONFIG_DEFENSIVE` on and extension
//! loading disabled. Guests reach it through the `zero:db` WIT interface (`wit/zero-db`), served
//! by [`provider::DbProvider`]; the management API and `zero db query` use [`Database`] directly.
//!
//! # Capabilities
//!
//! Each call carries the caller's [`Grants`]. While SQLite prepares a statement its authorizer
//! reports every table the statement reads, writes (insert/update), creates (table, index, view,
//! trigger, `ALTER TABLE`) and deletes (rows, or drop), including the tables reached through
//! views, triggers, subqueries and joins. Each (action, table) must be granted (`/db/read`,
//! `/db/write`, `/db/create`, `/db/delete` scoped by `.db` and `.table`), or the call fails with
//! [`Error::PermissionDenied`] naming the action and table, before anything runs. A view does
//! not launder access: reading a view needs read access to the tables under it. SQLite's own
//! bookkeeping of `sqlite_*` tables is allowed for schema operations only.
//!
//! `ATTACH`/`DETACH`, `load_extension()`, TEMP objects, virtual tables, user-issued
//! `BEGIN`/`COMMIT`/`SAVEPOINT` (use [`Database::transaction`]) and every `PRAGMA` except the
//! read-only `table_info`, `table_xinfo`, `index_list`, `foreign_key_list` (which need read access
//! to the table they describe), `user_version`, `data_version` and `foreign_keys` are refused with
//! [`Error::Refused`].
//!
//! # Determinism rule
//!
//! Statements that write are replicated (later through a Raft log) and must compute the same
//! result on every node. So, **in any statement that inserts, updates, deletes or changes the
//! schema** (directly or through a trigger), these calls are refused when they execute:
//!
//! * `random()` and `randomblob(N)`;
//! * `CURRENT_DATE`, `CURRENT_TIME`, `CURRENT_TIMESTAMP` (also as column defaults);
//! * `date`, `time`, `datetime`, `julianday`, `unixepoch`, `strftime`, `timediff` when they read
//!   the clock or the node's time zone: no time value (`datetime()`, `strftime('%s')`), or an
//!   argument `'now'`, `'localtime'` or `'utc'` (whether written literally, bound as a parameter
//!   or read from a column).
//!
//! The error is [`Error::Refused`] with `what` = `"<function>() in a statement that writes"` and
//! `why` = "non-deterministic functions (...) are not allowed in statements that write, because
//! writes are replicated and must give the same result on every node; compute the value in the
//! application and pass it as a parameter". Read-only queries may use all of them.
//!
//! # Limits
//!
//! [`Limits`]: statement length (checked before preparing), rows returned, wall-clock time per
//! statement (SQLite progress handler) and database size (`max_page_count`), each reported as
//! [`Error::LimitExceeded`] with its kind.
#![deny(missing_docs)]

mod engine;
mod error;
mod grants;
pub mod provider;

pub use engine::{
    Access, CELL_OVERHEAD, CancelOnDrop, Control, Database, Databases, ExecResult, Limits,
    QueryResult, Transaction, Value, validate_name,
};
pub use error::{Error, Result};
pub use grants::{Action, ChainGrants, Grants, StaticGrants};
pub use provider::DbProvider;
