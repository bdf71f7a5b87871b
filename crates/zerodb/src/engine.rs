//! Databases, connections, the authorizer, limits and statement execution.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::ffi::ErrorCode;
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::error::NONDETERMINISTIC_WHY;
use crate::{Action, Error, Grants, Result};

/// Per-statement, per-database, per-tenant and node-wide limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum statement length in bytes, checked before the statement is prepared.
    pub max_statement_bytes: usize,
    /// Maximum rows a query may return (and an `execute` may step through).
    pub max_rows: usize,
    /// Maximum wall-clock time per statement, enforced by SQLite's progress handler.
    pub max_statement_time: Duration,
    /// Maximum size of one database file in bytes (`PRAGMA max_page_count`).
    pub max_database_bytes: u64,
    /// Largest string or blob SQLite may build or store (`SQLITE_LIMIT_LENGTH`): bounds
    /// `zeroblob`, `randomblob`, `printf`, `group_concat`, `||` and bound parameters.
    pub max_value_bytes: usize,
    /// Largest result of one query: the sum over its cells of the value's bytes plus
    /// [`CELL_OVERHEAD`] each.
    pub max_result_bytes: usize,
    /// Most statements in one batch.
    pub max_batch_statements: usize,
    /// Most databases one tenant may have.
    pub max_databases_per_tenant: usize,
    /// Most bytes all databases of one tenant may take together (files and their WAL).
    pub max_tenant_bytes: u64,
    /// Most database connections open at once on the node (each holds three file
    /// descriptors); the least recently used idle one is closed to make room.
    pub max_open_databases: usize,
    /// Most database connections one tenant may have open at once.
    pub max_open_databases_per_tenant: usize,
    /// Most bytes SQLite may allocate in the whole process (`sqlite3_hard_heap_limit64`),
    /// page caches included; 0 leaves it unset.
    pub max_sqlite_heap_bytes: u64,
}

/// What one result cell costs against [`Limits::max_result_bytes`] on top of its bytes.
pub const CELL_OVERHEAD: usize = 32;

/// Page cache of each connection, in KiB (`PRAGMA cache_size = -N`).
const CACHE_KIB: u64 = 2048;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_statement_bytes: 100_000,
            max_rows: 10_000,
            max_statement_time: Duration::from_secs(1),
            max_database_bytes: 256 * 1024 * 1024,
            max_value_bytes: 4 << 20,
            max_result_bytes: 16 << 20,
            max_batch_statements: 100,
            max_databases_per_tenant: 32,
            max_tenant_bytes: 1 << 30,
            max_open_databases: 64,
            max_open_databases_per_tenant: 8,
            max_sqlite_heap_bytes: 256 << 20,
        }
    }
}

/// How one call may be stopped early: a cancellation flag (set when the request that made the
/// call ends, see [`Control::cancel_on_drop`]) and an optional time budget that shortens every
/// statement's deadline (the request's remaining CPU budget).
#[derive(Clone, Debug, Default)]
pub struct Control {
    cancel: Arc<AtomicBool>,
    /// The budget, counted from when the call's first statement starts (for the whole call:
    /// every statement of a batch).
    budget: Option<Duration>,
    started: std::sync::OnceLock<Instant>,
}

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

/// A SQL value, used both for parameters and result cells.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

/// What an `execute` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    /// Rows inserted, updated or deleted by the statement (0 for DDL).
    pub rows_affected: u64,
    /// The rowid of the last inserted row on this connection.
    pub last_insert_id: i64,
}

/// Rows returned by a `query`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// One (action, table) pair a statement performed, as reported by SQLite's authorizer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    /// The action.
    pub action: Action,
    /// The table (or view) name, lower-cased.
    pub table: String,
}

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
    /// The call's budget in milliseconds, when it set the deadline.
    budget_ms: u64,
    cancel: Option<Arc<AtomicBool>>,
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

    /// Whether database `name` of `tenant` exists on disk.
    pub fn exists(&self, tenant: &str, name: &str) -> Result<bool> {
        Ok(self.path_of(tenant, name)?.exists())
    }

    /// Number of connections open now (node-wide).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.pool).open.len()
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

struct Runner<'a> {
    db: &'a Database,
    conn: &'a Connection,
    state: &'a Arc<Mutex<State>>,
    grants: &'a dyn Grants,
    ctl: &'a Control,
}

enum Mode {
    Exec,
    Query,
    Both,
}

enum Outcome {
    Exec(ExecResult),
    Query(QueryResult),
    Both(QueryResult, ExecResult),
}

impl Runner<'_> {
    fn internal(&self, sql: &str) -> Result<()> {
        lock(self.state).internal = true;
        let r = self.conn.execute_batch(sql);
        let mut st = lock(self.state);
        st.internal = false;
        r.map_err(|e| map_error(e, &st, self.db.limits(), &self.db.name))
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        match self.run(sql, params, Mode::Exec)? {
            Outcome::Exec(r) => Ok(r),
            _ => unreachable!("exec mode returns ExecResult"),
        }
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        match self.run(sql, params, Mode::Query)? {
            Outcome::Query(r) => Ok(r),
            _ => unreachable!("query mode returns QueryResult"),
        }
    }

    fn run(&self, sql: &str, params: &[Value], mode: Mode) -> Result<Outcome> {
        let limits = self.db.limits();
        lock(self.state).last_accesses.clear();
        if sql.len() > limits.max_statement_bytes {
            return Err(Error::LimitExceeded {
                kind: "statement_length",
                limit: limits.max_statement_bytes as u64,
            });
        }
        if self.ctl.is_cancelled() {
            return Err(Error::Cancelled);
        }
        lock(self.state).reset();
        let prepared = self.conn.prepare(sql);
        let mut stmt = {
            let mut st = lock(self.state);
            let stmt = prepared.map_err(|e| map_error(e, &st, limits, &self.db.name))?;
            let entries = std::mem::take(&mut st.entries);
            let accesses = self.check_entries(&entries, st.saw_select)?;
            st.last_accesses = accesses;
            st.bookkeeping = entries
                .iter()
                .any(|e| (e.schema_op || e.analyze) && !is_internal(&e.table));
            st.writing = entries.iter().any(|e| e.action != Action::Read);
            st.approved = entries
                .iter()
                .map(|e| (e.action, e.table.clone()))
                .collect();
            stmt
        };
        if !stmt.readonly() {
            self.set_size_limit()?;
        }
        {
            let mut st = lock(self.state);
            st.stepping = true;
            let now = Instant::now();
            let until = self
                .ctl
                .budget
                .map(|b| (b, *self.ctl.started.get_or_init(|| now) + b));
            st.deadline = Some(match until {
                Some((b, until)) if until < now + limits.max_statement_time => {
                    st.budget_ms = b.as_millis() as u64;
                    (until, Interrupt::Budget)
                }
                _ => (now + limits.max_statement_time, Interrupt::Time),
            });
            st.cancel = Some(self.ctl.cancel.clone());
        }
        let result = (|| -> rusqlite::Result<std::result::Result<Outcome, Error>> {
            let expected = stmt.parameter_count();
            if expected != params.len() {
                return Ok(Err(Error::Syntax {
                    message: format!(
                        "the statement has {expected} parameter(s) but {} value(s) were given",
                        params.len()
                    ),
                    offset: None,
                }));
            }
            let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
            let readonly = stmt.readonly();
            let ncols = columns.len();
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
            while let Some(row) = rows.next()? {
                if out.len() >= limits.max_rows {
                    return Ok(Err(Error::LimitExceeded {
                        kind: "rows",
                        limit: limits.max_rows as u64,
                    }));
                }
                if let Mode::Query | Mode::Both = mode {
                    let mut vals = Vec::with_capacity(ncols);
                    for i in 0..ncols {
                        let v = row.get_ref(i)?;
                        // Counted before copying, so an oversized result is never built.
                        bytes = bytes.saturating_add(cell_bytes(&v));
                        if bytes > limits.max_result_bytes {
                            return Ok(Err(Error::LimitExceeded {
                                kind: "result_size",
                                limit: limits.max_result_bytes as u64,
                            }));
                        }
                        vals.push(Value::from(v));
                    }
                    out.push(vals);
                } else {
                    out.push(Vec::new());
                }
            }
            let exec = ExecResult {
                rows_affected: if readonly { 0 } else { self.conn.changes() },
                last_insert_id: self.conn.last_insert_rowid(),
            };
            Ok(Ok(match mode {
                Mode::Query => Outcome::Query(QueryResult { columns, rows: out }),
                Mode::Exec => Outcome::Exec(exec),
                Mode::Both => Outcome::Both(QueryResult { columns, rows: out }, exec),
            }))
        })();
        drop(stmt);
        let mut st = lock(self.state);
        let out = match result {
            Ok(r) => r,
            Err(e) => Err(map_error(e, &st, limits, &self.db.name)),
        };
        st.stepping = false;
        st.writing = false;
        st.deadline = None;
        st.cancel = None;
        out
    }

    /// Phase 2 of a statement: every access the authorizer recorded while preparing must be
    /// granted. Returns the caller-visible accesses.
    fn check_entries(&self, entries: &[Entry], saw_select: bool) -> Result<Vec<Access>> {
        let db = &self.db.name;
        // The objects the statement itself creates, alters, drops or analyzes; SQLite's own
        // bookkeeping of sqlite_* tables is skipped only in such statements.
        let primary = entries
            .iter()
            .any(|e| (e.schema_op || e.analyze) && !is_internal(&e.table));
        let creates_table = entries
            .iter()
            .any(|e| e.create_table && !is_internal(&e.table));
        if creates_table && saw_select {
            // CREATE TABLE … AS SELECT is the one schema statement that runs a query, and
            // SQLite's bookkeeping reads of sqlite_* tables cannot be told from the query's.
            return Err(refused(
                "CREATE TABLE … AS SELECT",
                "create the table with its columns, then copy the rows with \
                 INSERT INTO … SELECT …, which is checked like any other write",
            ));
        }
        let schema_tables: Vec<&str> = entries
            .iter()
            .filter(|e| e.schema_op)
            .map(|e| e.table.as_str())
            .collect();
        let mut accesses = Vec::new();
        // The statement's own schema operation first, so that a refusal names it.
        let ordered = entries
            .iter()
            .filter(|e| e.schema_op)
            .chain(entries.iter().filter(|e| !e.schema_op));
        for e in ordered {
            if e.trigger {
                // A trigger runs later on behalf of whoever fires it: only a caller holding
                // every right on every table may create or drop one.
                let missing = Action::ALL
                    .into_iter()
                    .find(|a| !self.grants.allows_every_table(*a, db));
                if let Some(a) = missing {
                    return Err(refused(
                        format!(
                            "{} TRIGGER on table `{}`",
                            if e.action == Action::Create {
                                "CREATE"
                            } else {
                                "DROP"
                            },
                            e.table
                        ),
                        format!(
                            "a trigger runs later with the rights of whoever fires it, so \
                             creating or dropping one needs every right on every table of \
                             database `{db}` (/db/read, /db/write, /db/create and /db/delete \
                             with no .table restriction; {} is missing); ask the database's \
                             owner to create it",
                            format_args!("{}/{a}", crate::DB_NAMESPACE)
                        ),
                    ));
                }
            }
            if is_internal(&e.table) && primary {
                continue;
            }
            // SQLite's own checks while altering or indexing a table (e.g. ALTER TABLE
            // verifying existing rows) read that table: part of the schema operation.
            if e.action == Action::Read && !e.analyze && schema_tables.contains(&e.table.as_str()) {
                continue;
            }
            let a = Access {
                action: e.action,
                table: e.table.clone(),
            };
            if !accesses.contains(&a) {
                accesses.push(a);
            }
        }
        for a in &accesses {
            if !self.grants.allows(a.action, db, &a.table) {
                return Err(Error::PermissionDenied {
                    action: a.action,
                    db: db.clone(),
                    table: a.table.clone(),
                });
            }
        }
        Ok(accesses)
    }

    /// Sets `max_page_count` for a write: the database's own limit, or what is left of the
    /// tenant's quota after its other databases, whichever is smaller.
    fn set_size_limit(&self) -> Result<()> {
        let limits = self.db.limits();
        let others = self
            .db
            .shared
            .tenant_bytes_except(&self.db.tenant, &self.db.name);
        let left = limits.max_tenant_bytes.saturating_sub(others);
        let (kind, limit, bytes) = if left < limits.max_database_bytes {
            ("quota", limits.max_tenant_bytes, left)
        } else {
            ("size", limits.max_database_bytes, limits.max_database_bytes)
        };
        lock(self.state).size_limit = Some((kind, limit));
        lock(self.state).internal = true;
        let r = (|| -> rusqlite::Result<()> {
            let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (bytes / page_size.max(512) as u64).max(1);
            let _: i64 =
                self.conn
                    .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                        r.get(0)
                    })?;
            Ok(())
        })();
        let mut st = lock(self.state);
        st.internal = false;
        r.map_err(|e| map_error(e, &st, limits, &self.db.name))
    }
}

/// What one result cell costs against [`Limits::max_result_bytes`].
fn cell_bytes(v: &ValueRef<'_>) -> usize {
    CELL_OVERHEAD
        + match v {
            ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
            _ => 0,
        }
}

/// Tables SQLite maintains itself (`sqlite_schema`, `sqlite_sequence`, `sqlite_stat1`, ...).
fn is_internal(table: &str) -> bool {
    table.starts_with("sqlite_")
}

fn refused(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Refused {
        what: what.into(),
        why: why.into(),
    }
}

/// Turns a rusqlite error into ours, using what the callbacks recorded.
fn map_error(e: rusqlite::Error, st: &State, limits: &Limits, db: &str) -> Error {
    if let Some((what, why)) = &st.refusal {
        return refused(what.clone(), why.clone());
    }
    if let Some((action, table)) = &st.stepping_denial {
        return Error::PermissionDenied {
            action: *action,
            db: db.to_owned(),
            table: table.clone(),
        };
    }
    if let Some(f) = &st.nondeterministic {
        return refused(
            format!("{f}() in a statement that writes"),
            NONDETERMINISTIC_WHY,
        );
    }
    match st.interrupted {
        Some(Interrupt::Time) => {
            return Error::LimitExceeded {
                kind: "time",
                limit: limits.max_statement_time.as_millis() as u64,
            };
        }
        Some(Interrupt::Budget) => {
            return Error::LimitExceeded {
                kind: "cpu",
                limit: st.budget_ms,
            };
        }
        Some(Interrupt::Cancelled) => return Error::Cancelled,
        None => {}
    }
    match e {
        rusqlite::Error::SqlInputError { msg, offset, .. } => Error::Syntax {
            message: msg,
            offset: usize::try_from(offset).ok(),
        },
        rusqlite::Error::SqliteFailure(err, msg) => {
            let message = msg.unwrap_or_else(|| err.to_string());
            match err.code {
                ErrorCode::ConstraintViolation => Error::Constraint { message },
                ErrorCode::DiskFull => {
                    let (kind, limit) =
                        st.size_limit.unwrap_or(("size", limits.max_database_bytes));
                    Error::LimitExceeded { kind, limit }
                }
                ErrorCode::OutOfMemory => Error::LimitExceeded {
                    kind: "memory",
                    limit: limits.max_sqlite_heap_bytes,
                },
                ErrorCode::OperationInterrupted => Error::LimitExceeded {
                    kind: "time",
                    limit: limits.max_statement_time.as_millis() as u64,
                },
                ErrorCode::TooBig => Error::LimitExceeded {
                    kind: "value_size",
                    limit: limits.max_value_bytes as u64,
                },
                ErrorCode::AuthorizationForStatementDenied => {
                    refused("statement", format!("not authorized: {message}"))
                }
                ErrorCode::Unknown => Error::Syntax {
                    message,
                    offset: None,
                },
                _ => Error::Sqlite(message),
            }
        }
        rusqlite::Error::MultipleStatement => refused(
            "multiple statements",
            "send one statement per call; use transaction() or batch() to group statements",
        ),
        rusqlite::Error::InvalidParameterCount(got, expected) => Error::Syntax {
            message: format!(
                "the statement has {expected} parameter(s) but {got} value(s) were given"
            ),
            offset: None,
        },
        other => Error::Sqlite(other.to_string()),
    }
}

/// PRAGMAs allowed (read-only schema introspection) and whether they name a table to read.
fn pragma_allowed(name: &str, value: Option<&str>) -> Option<Option<String>> {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "table_info" | "table_xinfo" | "index_list" | "foreign_key_list" => {
            let t = value?
                .trim()
                .trim_matches(|c| c == '\'' || c == '"' || c == '`');
            Some(Some(t.to_ascii_lowercase()))
        }
        "user_version" | "data_version" | "foreign_keys" if value.is_none() => Some(None),
        _ => None,
    }
}

fn authorize(st: &mut State, ctx: AuthContext<'_>) -> Authorization {
    if st.internal {
        return Authorization::Allow;
    }
    let db = ctx.database_name.unwrap_or("main");
    // (action, table, kind)
    let access: (Action, &str, Kind) = match ctx.action {
        AuthAction::Select => {
            st.saw_select = true;
            return Authorization::Allow;
        }
        AuthAction::Recursive => return Authorization::Allow,
        AuthAction::Read { table_name, .. } => (Action::Read, table_name, Kind::Plain),
        AuthAction::Insert { table_name } => (Action::Write, table_name, Kind::Plain),
        AuthAction::Update { table_name, .. } => (Action::Write, table_name, Kind::Plain),
        AuthAction::Delete { table_name } => (Action::Delete, table_name, Kind::Plain),
        AuthAction::CreateTable { table_name } => (Action::Create, table_name, Kind::CreateTable),
        AuthAction::CreateIndex { table_name, .. } => (Action::Create, table_name, Kind::Schema),
        AuthAction::CreateView { view_name } => (Action::Create, view_name, Kind::Schema),
        AuthAction::CreateTrigger { table_name, .. } => (Action::Create, table_name, Kind::Trigger),
        AuthAction::AlterTable { table_name, .. } => {
            st.saw_alter = true;
            (Action::Create, table_name, Kind::Schema)
        }
        AuthAction::DropTable { table_name } => (Action::Delete, table_name, Kind::Schema),
        AuthAction::DropIndex { table_name, .. } => (Action::Delete, table_name, Kind::Schema),
        AuthAction::DropView { view_name } => (Action::Delete, view_name, Kind::Schema),
        AuthAction::DropTrigger { table_name, .. } => (Action::Delete, table_name, Kind::Trigger),
        // ANALYZE summarises the table's rows (samples included) into sqlite_stat*: a read.
        AuthAction::Analyze { table_name } => (Action::Read, table_name, Kind::Analyze),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } if st.saw_alter && pragma_name.eq_ignore_ascii_case("quick_check") => {
            // SQLite's own check of existing rows after ALTER TABLE ADD COLUMN … NOT NULL/CHECK.
            let _ = pragma_value;
            return Authorization::Allow;
        }
        AuthAction::Function { function_name } => {
            if function_name.eq_ignore_ascii_case("load_extension") {
                return refuse(
                    st,
                    "load_extension()",
                    "extension loading is disabled in zerodb",
                );
            }
            return Authorization::Allow;
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            return match pragma_allowed(pragma_name, pragma_value) {
                Some(None) => Authorization::Allow,
                Some(Some(table)) => record(st, Action::Read, &table, Kind::Plain),
                None => refuse(
                    st,
                    format!("PRAGMA {pragma_name}"),
                    "only the read-only PRAGMAs table_info, table_xinfo, index_list, \
                     foreign_key_list, user_version, data_version and foreign_keys are allowed; \
                     connection settings are fixed by zerodb",
                ),
            };
        }
        AuthAction::Attach { .. } => {
            return refuse(st, "ATTACH", "a statement can only use its own database");
        }
        AuthAction::Detach { .. } => {
            return refuse(st, "DETACH", "a statement can only use its own database");
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            return refuse(
                st,
                "BEGIN/COMMIT/ROLLBACK/SAVEPOINT",
                "use Database::transaction (zero:db transactions) to group statements",
            );
        }
        AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => {
            return refuse(
                st,
                "TEMP objects",
                "create ordinary tables, views, indexes and triggers instead",
            );
        }
        AuthAction::CreateVtable { .. } | AuthAction::DropVtable { .. } => {
            return refuse(st, "virtual tables", "virtual tables are not supported");
        }
        // Rebuilding indexes changes no data; SQLite also issues this internally (e.g. for
        // ALTER TABLE).
        AuthAction::Reindex { .. } => return Authorization::Allow,
        other => {
            return refuse(
                st,
                format!("{other:?}"),
                "this SQLite operation is not supported",
            );
        }
    };
    let (action, table, kind) = access;
    let table = table.to_ascii_lowercase();
    if st.saw_alter && table == "pragma_quick_check" {
        return Authorization::Allow;
    }
    if table.starts_with("pragma_") {
        return refuse(
            st,
            format!("table-valued PRAGMA {table}"),
            "use the allowed PRAGMA statements instead",
        );
    }
    if db != "main" && !is_internal(&table) {
        return refuse(
            st,
            format!("database `{db}`"),
            "only the main database is reachable",
        );
    }
    record(st, action, &table, kind)
}

/// How an access was reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reading or changing rows.
    Plain,
    /// Creating a table.
    CreateTable,
    /// Creating, altering or dropping an index or view, altering or dropping a table.
    Schema,
    /// Creating or dropping a trigger.
    Trigger,
    /// `ANALYZE` of a table.
    Analyze,
}

fn record(st: &mut State, action: Action, table: &str, kind: Kind) -> Authorization {
    if st.stepping && st.bookkeeping && is_internal(table) {
        // SQLite's own reads while it runs a schema statement (ANALYZE loading sqlite_stat*).
        return Authorization::Allow;
    }
    if st.stepping {
        // SQLite re-prepared the statement (schema changed): only already-approved accesses.
        let ok = st.approved.iter().any(|(a, t)| *a == action && t == table);
        if !ok {
            if st.stepping_denial.is_none() {
                st.stepping_denial = Some((action, table.to_owned()));
            }
            return Authorization::Deny;
        }
        return Authorization::Allow;
    }
    st.entries.push(Entry {
        action,
        table: table.to_owned(),
        schema_op: matches!(kind, Kind::Schema | Kind::Trigger | Kind::CreateTable),
        analyze: kind == Kind::Analyze,
        trigger: kind == Kind::Trigger,
        create_table: kind == Kind::CreateTable,
    });
    Authorization::Allow
}

fn refuse(st: &mut State, what: impl Into<String>, why: impl Into<String>) -> Authorization {
    if st.refusal.is_none() {
        st.refusal = Some((what.into(), why.into()));
    }
    Authorization::Deny
}

/// Functions that can read the clock or a random source; see the crate docs for the rule.
const CLOCK_FUNCTIONS: [&str; 7] = [
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
];
const CLOCK_KEYWORDS: [&str; 3] = ["current_date", "current_time", "current_timestamp"];

fn reads_clock(name: &str, args: &[rusqlite::types::Value]) -> bool {
    use rusqlite::types::Value as V;
    let skip = usize::from(name == "strftime");
    if args.len() <= skip && name != "timediff" {
        return true;
    }
    args.iter().skip(skip).any(|a| match a {
        V::Text(s) => {
            let s = s.trim();
            s.eq_ignore_ascii_case("now")
                || s.eq_ignore_ascii_case("localtime")
                || s.eq_ignore_ascii_case("utc")
        }
        _ => false,
    })
}

fn to_rusqlite(v: ValueRef<'_>) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        ValueRef::Null => V::Null,
        ValueRef::Integer(i) => V::Integer(i),
        ValueRef::Real(f) => V::Real(f),
        ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => V::Blob(b.to_vec()),
    }
}

fn register_functions(
    conn: &Connection,
    limits: &Limits,
    state: &Arc<Mutex<State>>,
) -> rusqlite::Result<()> {
    // Built-in implementations, reached through a private in-memory connection, under the
    // same value limit (so that `randomblob(N)` cannot allocate past it either).
    let helper = Connection::open_in_memory()?;
    helper.set_limit(
        Limit::SQLITE_LIMIT_LENGTH,
        limit_i32(limits.max_value_bytes),
    )?;
    let helper = Arc::new(Mutex::new(helper));
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS;
    let all: Vec<(&'static str, i32)> = [("random", 0), ("randomblob", 1)]
        .into_iter()
        .chain(CLOCK_FUNCTIONS.iter().map(|n| (*n, -1)))
        .chain(CLOCK_KEYWORDS.iter().map(|n| (*n, 0)))
        .collect();
    for (name, nargs) in all {
        let helper = helper.clone();
        let state = state.clone();
        conn.create_scalar_function(name, nargs, flags, move |ctx| {
            let args: Vec<rusqlite::types::Value> = (0..ctx.len())
                .map(|i| to_rusqlite(ctx.get_raw(i)))
                .collect();
            let nondeterministic = match name {
                "random" | "randomblob" => true,
                n if CLOCK_KEYWORDS.contains(&n) => true,
                n => reads_clock(n, &args),
            };
            if nondeterministic {
                let mut st = lock(&state);
                if st.writing {
                    if st.nondeterministic.is_none() {
                        st.nondeterministic = Some(name.to_owned());
                    }
                    return Err(rusqlite::Error::UserFunctionError(
                        format!("{name}() is not allowed in a statement that writes").into(),
                    ));
                }
            }
            let sql = if CLOCK_KEYWORDS.contains(&name) {
                format!("SELECT {name}")
            } else {
                let ph: Vec<String> = (1..=args.len()).map(|i| format!("?{i}")).collect();
                format!("SELECT {name}({})", ph.join(","))
            };
            let h = lock(&helper);
            h.query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map_err(|e| match e {
                // Without a message, so that SQLite keeps the code (SQLITE_TOOBIG, NOMEM).
                rusqlite::Error::SqliteFailure(err, _) => rusqlite::Error::SqliteFailure(err, None),
                other => other,
            })
        })?;
    }
    Ok(())
}

fn limit_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX).max(1)
}

/// SQLite's run-time limits: the value and statement lengths from [`Limits`], and fixed bounds
/// on what one statement may ask the parser and the VM to build.
fn set_limits(conn: &Connection, limits: &Limits) -> rusqlite::Result<()> {
    conn.set_limit(
        Limit::SQLITE_LIMIT_LENGTH,
        limit_i32(limits.max_value_bytes),
    )?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        limit_i32(limits.max_statement_bytes),
    )?;
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_COLUMN, 1000),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, 200),
        (Limit::SQLITE_LIMIT_COMPOUND_SELECT, 100),
        (Limit::SQLITE_LIMIT_VDBE_OP, 1_000_000),
        (Limit::SQLITE_LIMIT_FUNCTION_ARG, 100),
        (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 10_000),
        (Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 1000),
        (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 16),
        (Limit::SQLITE_LIMIT_WORKER_THREADS, 0),
    ] {
        conn.set_limit(limit, value)?;
    }
    Ok(())
}

fn open_connection(
    path: &Path,
    limits: &Limits,
    state: &Arc<Mutex<State>>,
) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    set_limits(&conn, limits)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("could not enable WAL (journal_mode is {mode})")),
        ));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF; \
         PRAGMA cache_size = -{CACHE_KIB}; PRAGMA temp_store = FILE; PRAGMA mmap_size = 0;"
    ))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let max_pages = (limits.max_database_bytes / page_size.max(512) as u64).max(2);
    let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |r| {
        r.get(0)
    })?;
    conn.set_prepared_statement_cache_capacity(0);
    register_functions(&conn, limits, state)?;
    let st = state.clone();
    let mut conn = conn;
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        authorize(&mut lock(&st), ctx)
    }))?;
    let st = state.clone();
    conn.progress_handler(
        1000,
        Some(move || {
            let mut st = lock(&st);
            if st
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                st.interrupted = Some(Interrupt::Cancelled);
                return true;
            }
            match st.deadline {
                Some((d, why)) if Instant::now() >= d => {
                    st.interrupted = Some(why);
                    true
                }
                _ => false,
            }
        }),
    )?;
    Ok(conn)
}
