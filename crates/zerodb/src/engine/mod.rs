//! Databases and their pool of open connections. The submodules hold the limits, the values a
//! statement takes and returns, the authorizer, connection set-up and the statement runner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::{Action, Error, Grants, Result};

mod authorizer;
mod connection;
mod limits;
pub(crate) mod replicated;
mod run;
mod value;

use authorizer::authorize;
use connection::open_connection;
pub use limits::{CELL_OVERHEAD, Limits};
use run::{Mode, Outcome, Runner, map_error};
pub use value::{Access, ExecResult, QueryResult, Value};

/// Page cache of each connection, in KiB (`PRAGMA cache_size = -N`).
const CACHE_KIB: u64 = 2048;

/// How one call may be stopped early: a cancellation flag (set when the request that made the
/// call ends, see [`Control::cancel_on_drop`]) and an optional time budget that shortens every
/// statement's deadline (the request's remaining CPU budget).
#[derive(Clone, Debug, Default)]
pub struct Control {
    cancel: Arc<AtomicBool>,
    /// The node's turn the work runs in, if it runs in one (see [`Control::in_turn`]).
    turn: Option<SharedTurn>,
    /// The budget, counted from when the call's first statement starts (for the whole call:
    /// every statement of a batch).
    budget: Option<Duration>,
    started: std::sync::OnceLock<Instant>,
    /// Set when the statements are a replicated write applied from the log: deterministic
    /// bounds instead of the clock (see [`Replicated`]).
    replicated: Option<Replicated>,
}

/// The bounds of a write applied from the replicated log: the same on every replica, so that
/// every replica reaches the same outcome. The wall-clock statement limit and the request's
/// budget are replaced by a count of SQLite VM instructions, and the tenant's quota is
/// computed from the logical size (pages) of its other databases rather than their files and
/// WALs (whose sizes depend on each replica's checkpoints).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replicated {
    /// Most SQLite VM instructions per statement (counted in steps of
    /// [`PROGRESS_STEP`] instructions).
    pub(crate) max_instructions: u64,
    /// Logical bytes of the tenant's other databases.
    pub(crate) other_bytes: u64,
}

/// SQLite calls the progress handler every this many VM instructions.
pub(crate) const PROGRESS_STEP: u64 = 1000;

impl Control {
    /// A control that never cancels, with no budget beyond the statement time limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a time budget: statements of this call (all of them together, from when the first
    /// one starts running) stop with a `cpu` limit error when it runs out (the statement limit
    /// still applies when it is shorter).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Runs the statements in `turn`, one of the node's fair turns: a statement takes it at
    /// SQLite's first progress check, gives it back and waits for it again when asked (see
    /// [`zero_provider::HeldTurn`]) and gives it back when it ends; time spent waiting does not
    /// count against the statement's time limit.
    pub fn in_turn(mut self, turn: Box<dyn zero_provider::HeldTurn>) -> Self {
        self.turn = Some(Arc::new(Mutex::new(turn)));
        self
    }

    /// A control for a write applied from the replicated log.
    pub(crate) fn replicated(replicated: Replicated) -> Self {
        Control {
            replicated: Some(replicated),
            ..Self::default()
        }
    }

    /// Stops the running statement (at SQLite's next progress check) and every later one.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether [`Control::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// A guard that cancels this control when dropped: hold it in the future awaiting the
    /// database work, so that the work stops when the request ends (timeout, client gone).
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.cancel.clone())
    }
}

/// Cancels a [`Control`] when dropped.
#[derive(Debug)]
pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A held turn shared by a [`Control`] and the connection's progress handler.
type SharedTurn = Arc<Mutex<Box<dyn zero_provider::HeldTurn>>>;

#[derive(Clone, Debug)]
struct Entry {
    action: Action,
    table: String,
    /// The SQLite action code was a schema change (CREATE/DROP/ALTER).
    schema_op: bool,
    /// `ANALYZE` of the table (recorded as a read of it).
    analyze: bool,
    /// `CREATE TRIGGER` / `DROP TRIGGER` on the table.
    trigger: bool,
    /// `CREATE TABLE` of the table.
    create_table: bool,
}

/// Why SQLite's progress handler stopped a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interrupt {
    /// The statement time limit.
    Time,
    /// The call's budget (the request's remaining CPU time).
    Budget,
    /// The call was cancelled (its request ended).
    Cancelled,
    /// A replicated write used up its VM instructions.
    Instructions,
}

/// Shared between the connection's callbacks (authorizer, progress handler, functions) and the
/// code running statements.
#[derive(Default)]
struct State {
    /// Our own control statements (BEGIN/COMMIT, setup pragmas) run unchecked.
    internal: bool,
    /// Accesses recorded while preparing the current statement.
    entries: Vec<Entry>,
    /// The statement contains a SELECT (SQLite reported `SQLITE_SELECT`).
    saw_select: bool,
    /// The statement is an `ALTER TABLE` (SQLite then runs its own `pragma_quick_check`).
    saw_alter: bool,
    /// The first refusal (ATTACH, PRAGMA, ...) seen while preparing.
    refusal: Option<(String, String)>,
    /// The approved statement creates, alters, drops or analyzes an object of the caller's,
    /// so SQLite's own accesses to its `sqlite_*` tables are its bookkeeping.
    bookkeeping: bool,
    /// True while the approved statement runs; a re-prepare may only use approved accesses.
    stepping: bool,
    approved: Vec<(Action, String)>,
    stepping_denial: Option<(Action, String)>,
    /// The current statement writes: non-deterministic functions are refused.
    writing: bool,
    nondeterministic: Option<String>,
    deadline: Option<(Instant, Interrupt)>,
    /// Progress checks left to a replicated write's statement, and its instruction limit.
    instructions: Option<(u64, u64)>,
    /// The call's budget in milliseconds, when it set the deadline.
    budget_ms: u64,
    cancel: Option<Arc<AtomicBool>>,
    /// The turn the running statement holds, checked at every progress check.
    turn: Option<SharedTurn>,
    interrupted: Option<Interrupt>,
    /// The size limit in force for the current write: `("size", bytes)` or `("quota", bytes)`.
    size_limit: Option<(&'static str, u64)>,
    last_accesses: Vec<Access>,
}

impl State {
    fn reset(&mut self) {
        self.entries.clear();
        self.saw_select = false;
        self.saw_alter = false;
        self.refusal = None;
        self.bookkeeping = false;
        self.stepping = false;
        self.approved.clear();
        self.stepping_denial = None;
        self.writing = false;
        self.nondeterministic = None;
        self.deadline = None;
        self.instructions = None;
        self.interrupted = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Validates a tenant or database name: 1 to 63 characters of `a-z`, `0-9`, `-`, `_`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// What every database of one [`Databases`] shares: the root, the limits and the pool of open
/// connections.
struct Shared {
    root: PathBuf,
    limits: Limits,
    pool: Mutex<Pool>,
    /// Every database handed out, so that the pool can close any idle one.
    registry: Mutex<HashMap<(String, String), Weak<Database>>>,
    /// Statement counters (the node's metrics).
    stats: crate::metrics::DbStats,
}

/// The open connections, for the node-wide and per-tenant bounds and LRU closing.
#[derive(Default)]
struct Pool {
    clock: u64,
    /// (tenant, name) → last use, for every database whose connection is open.
    open: HashMap<(String, String), u64>,
}

impl Shared {
    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.root.join(tenant)
    }

    /// Bytes taken by the databases of `tenant` other than `except` (their files and WALs;
    /// the `-shm` index is SQLite's shared memory, not data).
    fn tenant_bytes_except(&self, tenant: &str, except: &str) -> u64 {
        let Ok(dir) = std::fs::read_dir(self.tenant_dir(tenant)) else {
            return 0;
        };
        let skip = [format!("{except}.sqlite"), format!("{except}.sqlite-wal")];
        dir.filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.ends_with(".sqlite") || name.ends_with(".sqlite-wal"))
                    && !skip.contains(&name)
            })
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    /// Number of databases `tenant` has on disk.
    fn tenant_databases(&self, tenant: &str) -> usize {
        let Ok(dir) = std::fs::read_dir(self.tenant_dir(tenant)) else {
            return 0;
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sqlite"))
            .count()
    }
}

/// The set of databases under one root directory: `root/<tenant>/<name>.sqlite`.
///
/// Connections are pooled: at most [`Limits::max_open_databases`] are open on the node and
/// [`Limits::max_open_databases_per_tenant`] per tenant; opening one more closes the least
/// recently used idle connection (it is reopened on its next statement), and when every
/// connection in the way is busy the call fails with `open_databases`.
pub struct Databases {
    shared: Arc<Shared>,
    open: Mutex<HashMap<(String, String), Arc<Database>>>,
}

impl Databases {
    /// Opens (creating if needed) the root directory, and sets SQLite's process-wide heap
    /// limit from [`Limits::max_sqlite_heap_bytes`].
    pub fn open(root: impl AsRef<Path>, limits: Limits) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)?;
        if limits.max_sqlite_heap_bytes > 0 {
            let n = i64::try_from(limits.max_sqlite_heap_bytes).unwrap_or(i64::MAX);
            // SAFETY: sqlite3_hard_heap_limit64 only stores the limit (under SQLite's own
            // mutex) and returns the previous one; it takes no pointers.
            unsafe {
                rusqlite::ffi::sqlite3_hard_heap_limit64(n);
            }
        }
        Ok(Databases {
            shared: Arc::new(Shared {
                root,
                limits,
                pool: Mutex::new(Pool::default()),
                registry: Mutex::new(HashMap::new()),
                stats: Default::default(),
            }),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The limits applied to every database.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The file of database `name` of `tenant`, after validating both names.
    pub fn path_of(&self, tenant: &str, name: &str) -> Result<PathBuf> {
        validate_name(tenant)?;
        validate_name(name)?;
        Ok(self.shared.root.join(tenant).join(format!("{name}.sqlite")))
    }

    /// The names of `tenant`'s databases, sorted (none when the tenant has none yet). Nothing
    /// is opened or created.
    pub fn list(&self, tenant: &str) -> Result<Vec<String>> {
        validate_name(tenant)?;
        let dir = match std::fs::read_dir(self.shared.tenant_dir(tenant)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        for entry in dir {
            let name = entry?.file_name();
            if let Some(db) = name.to_str().and_then(|n| n.strip_suffix(".sqlite"))
                && validate_name(db).is_ok()
            {
                names.push(db.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether database `name` of `tenant` exists on disk.
    pub fn exists(&self, tenant: &str, name: &str) -> Result<bool> {
        Ok(self.path_of(tenant, name)?.exists())
    }

    /// The statement counters.
    pub(crate) fn stats(&self) -> &crate::metrics::DbStats {
        &self.shared.stats
    }

    /// Number of connections open now (node-wide).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.pool).open.len()
    }

    /// The database `name` of `tenant` if [`Databases::database`] returned it before: a
    /// lookup under a lock, with no file system access, so cheap enough for an async thread
    /// (`None` otherwise: call [`Databases::database`]). Check the caller's right to the
    /// database before calling this.
    pub fn cached(&self, tenant: &str, name: &str) -> Option<Arc<Database>> {
        lock(&self.open)
            .get(&(tenant.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Opens database `name` of `tenant`, creating it if it does not exist (refused with
    /// `databases` when the tenant already has [`Limits::max_databases_per_tenant`]). The same
    /// [`Database`] is returned for the same (tenant, name) while this value lives. Check the
    /// caller's right to the database before calling this.
    pub fn database(&self, tenant: &str, name: &str) -> Result<Arc<Database>> {
        let path = self.path_of(tenant, name)?;
        let mut open = lock(&self.open);
        let key = (tenant.to_owned(), name.to_owned());
        if let Some(db) = open.get(&key) {
            return Ok(db.clone());
        }
        if !path.exists() {
            let limit = self.shared.limits.max_databases_per_tenant;
            if self.shared.tenant_databases(tenant) >= limit {
                return Err(Error::LimitExceeded {
                    kind: "databases",
                    limit: limit as u64,
                });
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Arc::new(Database {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            path,
            shared: self.shared.clone(),
            inner: Mutex::new(None),
            state: Arc::new(Mutex::new(State::default())),
        });
        lock(&self.shared.registry).insert(key.clone(), Arc::downgrade(&db));
        // Open (and so create) the file now, so that it counts against the tenant at once.
        drop(db.connection()?);
        open.insert(key, db.clone());
        Ok(db)
    }
}

struct Inner {
    conn: Connection,
}

/// One tenant's SQLite database. Statements are serialized on one connection, opened on
/// demand and closed when the pool needs room.
pub struct Database {
    tenant: String,
    name: String,
    path: PathBuf,
    shared: Arc<Shared>,
    inner: Mutex<Option<Inner>>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// The connection of a [`Database`], held for one call.
struct Conn<'a>(MutexGuard<'a, Option<Inner>>);

impl Conn<'_> {
    fn conn(&self) -> Result<&Connection> {
        self.0
            .as_ref()
            .map(|i| &i.conn)
            .ok_or_else(|| Error::Sqlite("internal: the connection is closed".into()))
    }
}

impl Database {
    fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn key(&self) -> (String, String) {
        (self.tenant.clone(), self.name.clone())
    }

    /// Locks this database's connection, opening it when closed (and closing the least
    /// recently used idle connections beyond the pool's bounds).
    fn connection(&self) -> Result<Conn<'_>> {
        let mut guard = lock(&self.inner);
        if guard.is_some() {
            let mut pool = lock(&self.shared.pool);
            pool.clock += 1;
            let now = pool.clock;
            pool.open.insert(self.key(), now);
            return Ok(Conn(guard));
        }
        self.make_room()?;
        let limits = self.limits().clone();
        {
            let mut st = lock(&self.state);
            st.internal = true;
        }
        let opened = open_connection(&self.path, &limits, &self.state);
        let mut st = lock(&self.state);
        st.internal = false;
        let conn = match opened {
            Ok(c) => c,
            Err(e) => {
                let err = map_error(e, &st, &limits, &self.name);
                drop(st);
                lock(&self.shared.pool).open.remove(&self.key());
                return Err(err);
            }
        };
        drop(st);
        *guard = Some(Inner { conn });
        Ok(Conn(guard))
    }

    /// Reserves a slot in the pool for this database, closing least recently used idle
    /// connections (node-wide, then of this tenant) beyond the bounds.
    fn make_room(&self) -> Result<()> {
        let limits = self.limits();
        let databases = self.open_databases_snapshot();
        let mut pool = lock(&self.shared.pool);
        let me = self.key();
        loop {
            let total = pool.open.len();
            let mine = pool.open.keys().filter(|(t, _)| *t == self.tenant).count();
            let (over_tenant, over_node) = (
                mine >= limits.max_open_databases_per_tenant,
                total >= limits.max_open_databases,
            );
            if !over_tenant && !over_node {
                break;
            }
            let mut candidates: Vec<(u64, (String, String))> = pool
                .open
                .iter()
                .filter(|(k, _)| **k != me && (!over_tenant || k.0 == self.tenant))
                .map(|(k, t)| (*t, k.clone()))
                .collect();
            candidates.sort();
            let mut closed = false;
            for (_, key) in candidates {
                let Some(db) = databases.get(&key) else {
                    // Not ours to close (should not happen): forget it.
                    pool.open.remove(&key);
                    closed = true;
                    break;
                };
                if let Ok(mut inner) = db.inner.try_lock()
                    && let Some(i) = inner.take()
                {
                    drop(i);
                    pool.open.remove(&key);
                    closed = true;
                    break;
                }
            }
            if !closed {
                let (kind, limit) = if over_tenant {
                    ("open_databases", limits.max_open_databases_per_tenant)
                } else {
                    ("open_databases", limits.max_open_databases)
                };
                return Err(Error::LimitExceeded {
                    kind,
                    limit: limit as u64,
                });
            }
        }
        pool.clock += 1;
        let now = pool.clock;
        pool.open.insert(me, now);
        Ok(())
    }

    fn open_databases_snapshot(&self) -> HashMap<(String, String), Arc<Database>> {
        lock(&self.shared.registry)
            .iter()
            .filter_map(|(k, w)| w.upgrade().map(|d| (k.clone(), d)))
            .collect()
    }
    /// The tenant owning this database.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The database name (the `.db` of capabilities).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one statement that does not return rows (or whose rows are discarded).
    pub fn execute(&self, grants: &dyn Grants, sql: &str, params: &[Value]) -> Result<ExecResult> {
        self.execute_with(&Control::new(), grants, sql, params)
    }

    /// [`Database::execute`] under `ctl`.
    pub fn execute_with(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecResult> {
        let conn = self.connection()?;
        self.runner(&conn, grants, ctl)?.execute(sql, params)
    }

    /// Runs one statement and returns its rows.
    pub fn query(&self, grants: &dyn Grants, sql: &str, params: &[Value]) -> Result<QueryResult> {
        self.query_with(&Control::new(), grants, sql, params)
    }

    /// [`Database::query`] under `ctl`.
    pub fn query_with(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        sql: &str,
        params: &[Value],
    ) -> Result<QueryResult> {
        let conn = self.connection()?;
        self.runner(&conn, grants, ctl)?.query(sql, params)
    }

    fn runner<'a>(
        &'a self,
        conn: &'a Conn<'_>,
        grants: &'a dyn Grants,
        ctl: &'a Control,
    ) -> Result<Runner<'a>> {
        Ok(Runner {
            db: self,
            conn: conn.conn()?,
            state: &self.state,
            grants,
            ctl,
        })
    }

    /// Runs `f` inside one transaction (`BEGIN IMMEDIATE`): committed atomically if `f` returns
    /// `Ok`, rolled back if it returns `Err` or panics.
    pub fn transaction<T>(
        &self,
        grants: &dyn Grants,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.transaction_with(&Control::new(), grants, f)
    }

    /// [`Database::transaction`] under `ctl`: a cancelled call is rolled back.
    pub fn transaction_with<T>(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let conn = self.connection()?;
        let run = self.runner(&conn, grants, ctl)?;
        run.internal("BEGIN IMMEDIATE")?;
        let mut tx = Transaction { run, done: false };
        let value = f(&mut tx)?;
        if tx.run.conn.is_autocommit() {
            tx.done = true;
            return Err(Error::Sqlite(
                "the transaction was rolled back by SQLite after an error; nothing was committed"
                    .into(),
            ));
        }
        if ctl.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let res = tx.run.internal("COMMIT");
        if res.is_ok() {
            tx.done = true;
        }
        res.map(|()| value)
    }

    /// Runs one statement and returns both its rows and what it changed (for callers that do
    /// not know in advance whether a statement reads or writes, like `zero db query`).
    pub fn run(
        &self,
        grants: &dyn Grants,
        sql: &str,
        params: &[Value],
    ) -> Result<(QueryResult, ExecResult)> {
        self.run_with(&Control::new(), grants, sql, params)
    }

    /// [`Database::run`] under `ctl`.
    pub fn run_with(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        sql: &str,
        params: &[Value],
    ) -> Result<(QueryResult, ExecResult)> {
        let conn = self.connection()?;
        match self
            .runner(&conn, grants, ctl)?
            .run(sql, params, Mode::Both)?
        {
            Outcome::Both(q, e) => Ok((q, e)),
            _ => Err(Error::Sqlite(
                "internal: unexpected statement outcome".into(),
            )),
        }
    }

    /// Runs several statements in one transaction; all or nothing. At most
    /// [`Limits::max_batch_statements`] statements.
    pub fn batch(
        &self,
        grants: &dyn Grants,
        statements: &[(&str, Vec<Value>)],
    ) -> Result<Vec<ExecResult>> {
        self.batch_with(&Control::new(), grants, statements)
    }

    /// [`Database::batch`] under `ctl`: cancelling stops it between statements too.
    pub fn batch_with(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        statements: &[(&str, Vec<Value>)],
    ) -> Result<Vec<ExecResult>> {
        let limit = self.limits().max_batch_statements;
        if statements.len() > limit {
            return Err(Error::LimitExceeded {
                kind: "statements",
                limit: limit as u64,
            });
        }
        self.transaction_with(ctl, grants, |tx| {
            statements
                .iter()
                .map(|(sql, params)| {
                    if ctl.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    tx.execute(sql, params)
                })
                .collect()
        })
    }

    /// The accesses the last statement performed (recorded by the authorizer when it was
    /// prepared), excluding SQLite's internal bookkeeping of schema operations.
    pub fn last_accesses(&self) -> Vec<Access> {
        let _conn = lock(&self.inner);
        lock(&self.state).last_accesses.clone()
    }
}

/// An open transaction handed to the closure of [`Database::transaction`].
pub struct Transaction<'a> {
    run: Runner<'a>,
    done: bool,
}

impl Transaction<'_> {
    /// Runs one statement inside the transaction.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        self.run.execute(sql, params)
    }

    /// Runs one query inside the transaction.
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        self.run.query(sql, params)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done && !self.run.conn.is_autocommit() {
            let _ = self.run.internal("ROLLBACK");
        }
    }
}

fn refused(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Refused {
        what: what.into(),
        why: why.into(),
    }
}
