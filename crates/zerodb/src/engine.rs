//! Databases, connections, the authorizer, limits and statement execution.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// Per-statement and per-database limits.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_statement_bytes: 100_000,
            max_rows: 10_000,
            max_statement_time: Duration::from_secs(1),
            max_database_bytes: 256 * 1024 * 1024,
        }
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
}

/// Shared between the connection's callbacks (authorizer, progress handler, functions) and the
/// code running statements.
#[derive(Default)]
struct State {
    /// Our own control statements (BEGIN/COMMIT, setup pragmas) run unchecked.
    internal: bool,
    /// Accesses recorded while preparing the current statement.
    entries: Vec<Entry>,
    /// The first refusal (ATTACH, PRAGMA, ...) seen while preparing.
    refusal: Option<(String, String)>,
    /// True while the approved statement runs; a re-prepare may only use approved accesses.
    stepping: bool,
    approved: Vec<(Action, String)>,
    stepping_denial: Option<(Action, String)>,
    /// The current statement writes: non-deterministic functions are refused.
    writing: bool,
    nondeterministic: Option<String>,
    deadline: Option<Instant>,
    timed_out: bool,
    last_accesses: Vec<Access>,
}

impl State {
    fn reset(&mut self) {
        self.entries.clear();
        self.refusal = None;
        self.stepping = false;
        self.approved.clear();
        self.stepping_denial = None;
        self.writing = false;
        self.nondeterministic = None;
        self.deadline = None;
        self.timed_out = false;
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

/// The set of databases under one root directory: `root/<tenant>/<name>.sqlite`.
pub struct Databases {
    root: PathBuf,
    limits: Limits,
    open: Mutex<HashMap<(String, String), Arc<Database>>>,
}

impl Databases {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: impl AsRef<Path>, limits: Limits) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)?;
        Ok(Databases {
            root,
            limits,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits applied to every database.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The file of database `name` of `tenant`, after validating both names.
    pub fn path_of(&self, tenant: &str, name: &str) -> Result<PathBuf> {
        validate_name(tenant)?;
        validate_name(name)?;
        Ok(self.root.join(tenant).join(format!("{name}.sqlite")))
    }

    /// Whether database `name` of `tenant` exists on disk.
    pub fn exists(&self, tenant: &str, name: &str) -> Result<bool> {
        Ok(self.path_of(tenant, name)?.exists())
    }

    /// Opens database `name` of `tenant`, creating it if it does not exist. The same
    /// [`Database`] is returned for the same (tenant, name) while this value lives.
    pub fn database(&self, tenant: &str, name: &str) -> Result<Arc<Database>> {
        let path = self.path_of(tenant, name)?;
        let mut open = lock(&self.open);
        if let Some(db) = open.get(&(tenant.to_owned(), name.to_owned())) {
            return Ok(db.clone());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Arc::new(Database::open_file(
            tenant,
            name,
            &path,
            self.limits.clone(),
        )?);
        open.insert((tenant.to_owned(), name.to_owned()), db.clone());
        Ok(db)
    }
}

struct Inner {
    conn: Connection,
    state: Arc<Mutex<State>>,
}

/// One tenant's SQLite database. Statements are serialized on one connection.
pub struct Database {
    tenant: String,
    name: String,
    path: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
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

impl Database {
    fn open_file(tenant: &str, name: &str, path: &Path, limits: Limits) -> Result<Self> {
        let state = Arc::new(Mutex::new(State {
            internal: true,
            ..State::default()
        }));
        let conn = open_connection(path, &limits, &state)
            .map_err(|e| map_error(e, &lock(&state), &limits, name))?;
        lock(&state).internal = false;
        Ok(Database {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            path: path.to_path_buf(),
            limits,
            inner: Mutex::new(Inner { conn, state }),
        })
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
        let inner = lock(&self.inner);
        let run = Runner {
            db: self,
            conn: &inner.conn,
            state: &inner.state,
            grants,
        };
        run.execute(sql, params)
    }

    /// Runs one statement and returns its rows.
    pub fn query(&self, grants: &dyn Grants, sql: &str, params: &[Value]) -> Result<QueryResult> {
        let inner = lock(&self.inner);
        let run = Runner {
            db: self,
            conn: &inner.conn,
            state: &inner.state,
            grants,
        };
        run.query(sql, params)
    }

    /// Runs `f` inside one transaction (`BEGIN IMMEDIATE`): committed atomically if `f` returns
    /// `Ok`, rolled back if it returns `Err` or panics.
    pub fn transaction<T>(
        &self,
        grants: &dyn Grants,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let inner = lock(&self.inner);
        let run = Runner {
            db: self,
            conn: &inner.conn,
            state: &inner.state,
            grants,
        };
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
        let inner = lock(&self.inner);
        let run = Runner {
            db: self,
            conn: &inner.conn,
            state: &inner.state,
            grants,
        };
        match run.run(sql, params, Mode::Both)? {
            Outcome::Both(q, e) => Ok((q, e)),
            _ => Err(Error::Sqlite(
                "internal: unexpected statement outcome".into(),
            )),
        }
    }

    /// Runs several statements in one transaction; all or nothing.
    pub fn batch(
        &self,
        grants: &dyn Grants,
        statements: &[(&str, Vec<Value>)],
    ) -> Result<Vec<ExecResult>> {
        self.transaction(grants, |tx| {
            statements
                .iter()
                .map(|(sql, params)| tx.execute(sql, params))
                .collect()
        })
    }

    /// The accesses the last statement performed (recorded by the authorizer when it was
    /// prepared), excluding SQLite's internal bookkeeping of schema operations.
    pub fn last_accesses(&self) -> Vec<Access> {
        let inner = lock(&self.inner);
        lock(&inner.state).last_accesses.clone()
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
        r.map_err(|e| map_error(e, &st, &self.db.limits, &self.db.name))
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
        let limits = &self.db.limits;
        lock(self.state).last_accesses.clear();
        if sql.len() > limits.max_statement_bytes {
            return Err(Error::LimitExceeded {
                kind: "statement_length",
                limit: limits.max_statement_bytes as u64,
            });
        }
        lock(self.state).reset();
        let prepared = self.conn.prepare(sql);
        let mut stmt = {
            let mut st = lock(self.state);
            let stmt = prepared.map_err(|e| map_error(e, &st, limits, &self.db.name))?;
            // Phase 2: every access recorded while preparing must be granted.
            let entries = std::mem::take(&mut st.entries);
            let schema = entries.iter().any(|e| e.schema_op);
            let mut accesses = Vec::new();
            let schema_tables: Vec<&str> = entries
                .iter()
                .filter(|e| e.schema_op)
                .map(|e| e.table.as_str())
                .collect();
            for e in &entries {
                if is_internal(&e.table) && schema {
                    continue;
                }
                // SQLite's own checks while altering or indexing a table (e.g. ALTER TABLE
                // verifying existing rows) read that table: part of the schema operation.
                if e.action == Action::Read && schema_tables.contains(&e.table.as_str()) {
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
            st.last_accesses = accesses.clone();
            for a in &accesses {
                if !self.grants.allows(a.action, &self.db.name, &a.table) {
                    return Err(Error::PermissionDenied {
                        action: a.action,
                        db: self.db.name.clone(),
                        table: a.table.clone(),
                    });
                }
            }
            st.writing = entries.iter().any(|e| e.action != Action::Read);
            st.approved = entries
                .iter()
                .map(|e| (e.action, e.table.clone()))
                .collect();
            st.stepping = true;
            st.deadline = Some(Instant::now() + limits.max_statement_time);
            stmt
        };
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
                        vals.push(Value::from(row.get_ref(i)?));
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
        out
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
    if st.timed_out {
        return Error::LimitExceeded {
            kind: "time",
            limit: limits.max_statement_time.as_millis() as u64,
        };
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
                ErrorCode::DiskFull => Error::LimitExceeded {
                    kind: "size",
                    limit: limits.max_database_bytes,
                },
                ErrorCode::OperationInterrupted => Error::LimitExceeded {
                    kind: "time",
                    limit: limits.max_statement_time.as_millis() as u64,
                },
                ErrorCode::TooBig => Error::LimitExceeded {
                    kind: "statement_length",
                    limit: limits.max_statement_bytes as u64,
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
    // (action, table, schema_op)
    let access: (Action, &str, bool) = match ctx.action {
        AuthAction::Select | AuthAction::Recursive => return Authorization::Allow,
        AuthAction::Read { table_name, .. } => (Action::Read, table_name, false),
        AuthAction::Insert { table_name } => (Action::Write, table_name, false),
        AuthAction::Update { table_name, .. } => (Action::Write, table_name, false),
        AuthAction::Delete { table_name } => (Action::Delete, table_name, false),
        AuthAction::CreateTable { table_name } => (Action::Create, table_name, true),
        AuthAction::CreateIndex { table_name, .. } => (Action::Create, table_name, true),
        AuthAction::CreateView { view_name } => (Action::Create, view_name, true),
        AuthAction::CreateTrigger { table_name, .. } => (Action::Create, table_name, true),
        AuthAction::AlterTable { table_name, .. } => (Action::Create, table_name, true),
        AuthAction::DropTable { table_name } => (Action::Delete, table_name, true),
        AuthAction::DropIndex { table_name, .. } => (Action::Delete, table_name, true),
        AuthAction::DropView { view_name } => (Action::Delete, view_name, true),
        AuthAction::DropTrigger { table_name, .. } => (Action::Delete, table_name, true),
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
                Some(Some(table)) => record(st, Action::Read, &table, false),
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
        // Rebuilding indexes or statistics changes no data; SQLite also issues these
        // internally (e.g. for ALTER TABLE).
        AuthAction::Reindex { .. } | AuthAction::Analyze { .. } => return Authorization::Allow,
        other => {
            return refuse(
                st,
                format!("{other:?}"),
                "this SQLite operation is not supported",
            );
        }
    };
    let (action, table, schema_op) = access;
    let table = table.to_ascii_lowercase();
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
    record(st, action, &table, schema_op)
}

fn record(st: &mut State, action: Action, table: &str, schema_op: bool) -> Authorization {
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
        schema_op,
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

fn register_functions(conn: &Connection, state: &Arc<Mutex<State>>) -> rusqlite::Result<()> {
    // Built-in implementations, reached through a private in-memory connection.
    let helper = Arc::new(Mutex::new(Connection::open_in_memory()?));
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
        })?;
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
    let sql_len = i32::try_from(limits.max_statement_bytes)
        .unwrap_or(i32::MAX)
        .max(1);
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, sql_len)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("could not enable WAL (journal_mode is {mode})")),
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF;",
    )?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let max_pages = (limits.max_database_bytes / page_size.max(512) as u64).max(2);
    let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |r| {
        r.get(0)
    })?;
    conn.set_prepared_statement_cache_capacity(0);
    register_functions(&conn, state)?;
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
            match st.deadline {
                Some(d) if Instant::now() >= d => {
                    st.timed_out = true;
                    true
                }
                _ => false,
            }
        }),
    )?;
    Ok(conn)
}
