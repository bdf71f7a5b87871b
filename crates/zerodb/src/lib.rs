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
//! Each call carries the caller's [`Grants`] (for the node, [`zero_auth::ScopedChain`], the one
//! capability checker). While SQLite prepares a statement its authorizer
//! reports every table the statement reads, writes (insert/update), creates (table, index, view,
//! trigger, `ALTER TABLE`) and deletes (rows, or drop), including the tables reached through
//! views, triggers, subqueries and joins. Each (action, table) must be granted (`/db/read`,
//! `/db/write`, `/db/create`, `/db/delete` scoped by `.db` and `.table`), or the call fails with
//! [`Error::PermissionDenied`] naming the action and table, before anything runs. A view does
//! not launder access: reading a view needs read access to the tables under it (SQLite reports
//! the reads of the underlying tables, with the view as their context, as well as the read of
//! the view), and a trigger's body is checked against the rights of whoever fires it (SQLite
//! compiles the body into the firing statement and reports its accesses then).
//!
//! What cannot be attributed safely is refused: creating or dropping a trigger needs every
//! right on every table of the database ([`Grants::allows_every_table`]), because its body
//! later runs on behalf of others (dropping a table that has triggers drops them, so it needs
//! the same); `CREATE TABLE … AS SELECT` is refused (create the table,
//! then `INSERT … SELECT`), because it is the one schema statement that runs a query and
//! SQLite's own reads of its tables could not be told apart from the query's. Accesses to
//! SQLite's own `sqlite_*` tables are skipped only as the bookkeeping of a statement that
//! creates, alters, drops or analyzes one of the caller's objects (itself checked); otherwise
//! reading or dropping them needs a grant on them like any table. `ANALYZE t` needs read on
//! `t`, since it copies samples of its rows into `sqlite_stat4`.
//!
//! Before a database is opened, and so before it can be created, the caller's chain must be
//! able to reach it ([`check_database`]).
//!
//! `ATTACH`/`DETACH`, `load_extension()`, TEMP objects, virtual tables, user-issued
//! `BEGIN`/`COMMIT`/`SAVEPOINT` (use [`Database::transaction`]) and every `PRAGMA` except the
//! read-only `table_info`, `table_xinfo`, `index_list`, `foreign_key_list` (which need read access
//! to the table they describe), `user_version`, `data_version` and `foreign_keys` are refused with
//! [`Error::Refused`].
//!
//! # Determinism rule
//!
//! Statements that write are replicated (through a Raft log, see [`replica`]) and must compute the same
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
//! statement (SQLite progress handler), database size (`max_page_count`), value size
//! (`SQLITE_LIMIT_LENGTH`, also on the helper that computes `randomblob`), result size (counted
//! before each value is copied), statements per batch, databases per tenant, the tenant's
//! quota over all its databases (`max_page_count` set before each write from what the others
//! use), connections open node-wide and per tenant (a pool closing the least recently used
//! idle connection) and SQLite's process-wide heap (`sqlite3_hard_heap_limit64`), each
//! reported as [`Error::LimitExceeded`] with its kind. Each connection also has fixed SQLite
//! limits (columns, expression depth, compound selects, VDBE program size, function
//! arguments, variables, LIKE pattern length, trigger depth), a 2 MiB page cache and a
//! file-backed temp store. A [`Control`] cancels a call's statements when its request ends and
//! bounds them by the request's remaining CPU budget.
//!
//! # Replication
//!
//! In a cluster, writes are commands of a replicated log applied by [`replica::DbMachine`]
//! (a `zeroraft::StateMachine`) on every node; the provider sends them through a
//! [`replica::Replicator`] ([`DbProvider::with_replicator`]) and runs read-only statements
//! (`sqlite3_stmt_readonly`) locally. The caller's rights travel in the command as a
//! [`replica::GrantSet`] evaluated at proposal and are checked by the authorizer at apply, on
//! the state the write runs on; the statement time limit becomes a VM instruction count and
//! the quota counts logical sizes, so that every replica reaches the same result,
//! `last_insert_id` included. Each file records the index of the last command applied to it
//! in `_zerodb_applied`, a table no statement may reach. See [`replica`] and
//! `docs/cluster.md` ("zerodb in the log"). With no replicator, nothing of this is used.
#![deny(missing_docs)]

mod engine;
mod error;
mod grants;
mod metrics;
pub mod provider;
pub mod replica;

pub use engine::{
    Access, CELL_OVERHEAD, CancelOnDrop, Control, Database, Databases, ExecResult, Limits,
    QueryResult, Transaction, Value, validate_name,
};
pub use error::{Error, Result};
pub use grants::{Action, DB_NAMESPACE, Grants, StaticGrants, check_database, table_command};
pub use provider::{DbApp, DbInstance, DbProvider, DbView};
