//! The `zero:db` host provider: components reach their tenant's databases through the WIT
//! interface in `wit/zero-db` (package `zero:db@0.1.0`).
//!
//! [`DbProvider`] adds the interface to the linker. Once per deployment (its per-app phase) it
//! takes the component's capability checker ([`ScopedChain`], made once per deployment, answers
//! memoized); every store gets a [`DbInstance`] with that checker and its open handles, and the
//! host traits are implemented on its view ([`DbView`]). A component opens a database by name;
//! the name is resolved within its own tenant only
//! ([`Databases::database`]`(tenant, name)`), so no name reaches another tenant's files. Each
//! statement's table accesses are then checked with
//! `chain.allows("/db/read" | "/db/write" | "/db/create" | "/db/delete", {tenant, component, db,
//! table})`. A component without a token may not open any
//! database.
//!
//! SQLite work runs on tokio's blocking pool (`spawn_blocking`), so a slow statement never stalls
//! the executor threads that serve other requests. Measured with `benches/todo.sh` (2 cores,
//! shared): a point read served at 0.70-0.73 of the hello app's req/s with `spawn_blocking`, and
//! at 0.56 with `block_in_place` (which also parks the executor thread for the statement).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource};
use zero_auth::ScopedChain;
use zero_provider::{AppContext, HasView, Invocation, ResourceProvider, View};

use crate::replica::{Replicator, Statement, WriteCommand, WriteKind, plan_write};
use crate::{Action, Control, Database, Databases};

// Generated code: the WIT types carry the WIT's docs; the generated glue (linker helpers,
// world struct) has none of its own.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/zero-db",
        world: "zero:db/imports",
        imports: { default: async | trappable },
        with: {
            "zero:db/db.database": super::DbHandle,
        },
    });
}

/// The WIT types of `zero:db/db`, as generated for the host.
pub use bindings::zero::db::db as wit;

/// The WIT interface this provider supplies.
pub const INTERFACE: &str = "zero:db/db";

/// An open database handle held in a store's resource table.
pub struct DbHandle {
    db: Arc<Database>,
}

/// What the provider keeps per deployment: the grants of the component's chain.
pub struct DbApp {
    grants: Arc<ScopedChain>,
}

/// What the provider keeps per store.
pub struct DbInstance {
    databases: Arc<Databases>,
    replicator: Option<Arc<dyn Replicator>>,
    grants: Arc<ScopedChain>,
    /// Databases opened by this request (each handle holds a resource-table entry).
    handles: usize,
}

/// What the host functions of `zero:db` see: the store's [`DbInstance`], its resource table,
/// the invocation and the request's CPU meter.
pub type DbView<'a> = View<'a, DbInstance>;

/// The [`HasData`] of `zero:db`'s host functions: they run on a [`DbView`].
struct DbData;

impl HasData for DbData {
    type Data<'a> = DbView<'a>;
}

/// Most databases one request may open (handles in its resource table).
pub const MAX_HANDLES_PER_REQUEST: usize = 16;

/// The zerodb resource provider.
pub struct DbProvider {
    databases: Arc<Databases>,
    replicator: Option<Arc<dyn Replicator>>,
}

impl DbProvider {
    /// A provider serving the databases under `databases`, running every statement on them
    /// directly (a node alone).
    pub fn new(databases: Arc<Databases>) -> Self {
        DbProvider {
            databases,
            replicator: None,
        }
    }

    /// A provider whose writes go through `replicator` (the cluster's log, applied by
    /// [`crate::replica::DbMachine`] on every replica over `databases`): a call whose
    /// statements SQLite reports read-only runs on `databases` here; any other is proposed as
    /// a [`crate::replica::WriteCommand`] and answered with the machine's response.
    pub fn with_replicator(databases: Arc<Databases>, replicator: Arc<dyn Replicator>) -> Self {
        DbProvider {
            databases,
            replicator: Some(replicator),
        }
    }
}

impl ResourceProvider for DbProvider {
    type App = DbApp;
    type Instance = DbInstance;

    fn name(&self) -> &'static str {
        "zerodb"
    }

    fn interfaces(&self) -> Vec<String> {
        vec![INTERFACE.to_owned()]
    }

    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        wit::add_to_linker::<T, DbData>(linker, T::view)?;
        Ok(())
    }

    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<DbApp> {
        Ok(DbApp {
            grants: app.settings.grants.clone(),
        })
    }

    fn instance(&self, app: &Arc<DbApp>, _invocation: &Invocation) -> anyhow::Result<DbInstance> {
        Ok(DbInstance {
            databases: self.databases.clone(),
            replicator: self.replicator.clone(),
            grants: app.grants.clone(),
            handles: 0,
        })
    }
}

/// Converts an engine error into the WIT error variant, logging a refused capability in the
/// app's log line with the `zero.toml` line that grants it.
/// The guest sees the same line appended to the error's message.
fn refusal(invocation: &Invocation, e: crate::Error) -> wit::Error {
    let hint = match &e {
        crate::Error::PermissionDenied { action, db, table } => {
            crate::grants::refusal_hint(*action, db, table)
        }
        _ => return to_wit_error(e),
    };
    tracing::warn!(
        tenant = %invocation.tenant,
        app = %invocation.app,
        request_id = %invocation.request_id,
        "zerodb: {hint}"
    );
    match to_wit_error(e) {
        wit::Error::PermissionDenied(mut p) => {
            p.message = format!("{}; {hint}", p.message);
            wit::Error::PermissionDenied(p)
        }
        other => other,
    }
}

/// Converts an engine error into the WIT error variant.
pub fn to_wit_error(e: crate::Error) -> wit::Error {
    let message = e.to_string();
    match e {
        crate::Error::PermissionDenied { action, db, table } => {
            wit::Error::PermissionDenied(wit::PermissionDenied {
                database: db,
                action: Some(to_wit_action(action)),
                table: Some(table),
                message,
            })
        }
        crate::Error::Syntax { message, offset } => wit::Error::Syntax(wit::SyntaxError {
            message,
            offset: offset.and_then(|o| u32::try_from(o).ok()),
        }),
        crate::Error::Constraint { .. } => wit::Error::Constraint(message),
        crate::Error::LimitExceeded { kind, limit } => {
            wit::Error::LimitExceeded(wit::LimitExceeded {
                kind: match kind {
                    "statement_length" => wit::LimitKind::StatementLength,
                    "rows" => wit::LimitKind::Rows,
                    "time" | "cpu" | "instructions" => wit::LimitKind::Time,
                    "value_size" => wit::LimitKind::ValueSize,
                    "result_size" => wit::LimitKind::ResultSize,
                    "statements" => wit::LimitKind::Statements,
                    "databases" => wit::LimitKind::Databases,
                    "quota" => wit::LimitKind::Quota,
                    "open_databases" | "handles" => wit::LimitKind::OpenDatabases,
                    "memory" => wit::LimitKind::Memory,
                    _ => wit::LimitKind::Size,
                },
                limit,
                message,
            })
        }
        crate::Error::Refused { .. } => wit::Error::Refused(message),
        crate::Error::InvalidName(_) => wit::Error::Invalid(message),
        crate::Error::Cancelled
        | crate::Error::Unavailable(_)
        | crate::Error::Sqlite(_)
        | crate::Error::Io(_) => wit::Error::Other(message),
    }
}

fn to_wit_action(a: Action) -> wit::Action {
    match a {
        Action::Read => wit::Action::Read,
        Action::Write => wit::Action::Write,
        Action::Create => wit::Action::Create,
        Action::Delete => wit::Action::Delete,
    }
}

fn from_wit_value(v: wit::Value) -> crate::Value {
    match v {
        wit::Value::Null => crate::Value::Null,
        wit::Value::Integer(i) => crate::Value::Integer(i),
        wit::Value::Real(f) => crate::Value::Real(f),
        wit::Value::Text(s) => crate::Value::Text(s),
        wit::Value::Blob(b) => crate::Value::Blob(b),
    }
}

fn to_wit_value(v: crate::Value) -> wit::Value {
    match v {
        crate::Value::Null => wit::Value::Null,
        crate::Value::Integer(i) => wit::Value::Integer(i),
        crate::Value::Real(f) => wit::Value::Real(f),
        crate::Value::Text(s) => wit::Value::Text(s),
        crate::Value::Blob(b) => wit::Value::Blob(b),
    }
}

fn to_wit_exec(r: crate::ExecResult) -> wit::ExecResult {
    wit::ExecResult {
        rows_affected: r.rows_affected,
        last_insert_id: r.last_insert_id,
    }
}

/// Runs SQLite work on the blocking pool, in one of the node's fair turns, under a [`Control`]
/// that is cancelled when the
/// awaiting future is dropped (the request ended: wall timeout, client gone), with the
/// request's remaining CPU budget as the statements' budget; the CPU time the work used on
/// its thread is charged to the request's CPU meter.
async fn blocking<T: Send + 'static>(
    view: &mut DbView<'_>,
    f: impl FnOnce(&Control) -> T + Send + 'static,
) -> wasmtime::Result<T> {
    let ctl = Control::new().with_budget(view.meter.cpu_left());
    let guard = ctl.cancel_on_drop();
    let turns = view.meter.cpu_turns();
    let (value, used) = tokio::task::spawn_blocking(move || {
        // The work runs in the node's fair turns, as guest code does (see
        // `zero_provider::CpuTurns`): a tenant's runaway statements wait behind other tenants.
        let ctl = match turns {
            Some(turns) => ctl.in_turn(turns.turn()),
            None => ctl,
        };
        let cpu_ns = || zero_provider::thread_cpu_ns().unwrap_or(0);
        let start = cpu_ns();
        let value = f(&ctl);
        (value, cpu_ns().saturating_sub(start))
    })
    .await
    .map_err(|e| wasmtime::Error::msg(format!("zerodb: the database task failed: {e}")))?;
    drop(guard);
    // Charged to the meter; the next epoch tick ends the guest if the budget is spent.
    view.meter.charge_cpu(Duration::from_nanos(used));
    Ok(value)
}

fn handle_db(
    view: &DbView<'_>,
    handle: &Resource<DbHandle>,
) -> wasmtime::Result<(Arc<Database>, Arc<ScopedChain>)> {
    let db = view.table.get(handle)?.db.clone();
    Ok((db, view.instance.grants.clone()))
}

/// Where a call's statements run: here (reads, or no replicator), or through the log.
enum Planned<T> {
    Local(crate::Result<T>),
    Replicate(WriteCommand),
}

use Planned::{Local, Replicate};

/// Whether a call's statements go through the log: `None` to run them here (no replicator,
/// or they only read); else the write command, or the refusal of planning it.
fn plan<T>(
    replicated: bool,
    db: &Database,
    grants: &ScopedChain,
    kind: WriteKind,
    statements: impl FnOnce() -> Vec<Statement>,
) -> Option<Planned<T>> {
    if !replicated {
        return None;
    }
    match plan_write(db, grants, kind, statements()) {
        Ok(None) => None,
        Ok(Some(command)) => Some(Replicate(command)),
        Err(e) => Some(Local(Err(e))),
    }
}

/// A call's result: the one it got here, or its replicated write's response read by `into`.
async fn settle<T>(
    replicator: Option<Arc<dyn Replicator>>,
    planned: Planned<T>,
    into: impl FnOnce(crate::replica::WriteResponse) -> crate::Result<T>,
) -> crate::Result<T> {
    match planned {
        Local(r) => r,
        Replicate(command) => submit(replicator, command).await.and_then(into),
    }
}

/// Sends `command` through the provider's replicator. A request that ends stops waiting for
/// the answer (the write may still be committed: the log decides).
async fn submit(
    replicator: Option<Arc<dyn Replicator>>,
    command: WriteCommand,
) -> crate::Result<crate::replica::WriteResponse> {
    let Some(replicator) = replicator else {
        return Err(crate::Error::Sqlite(
            "internal: a replicated write without a replicator".into(),
        ));
    };
    replicator.submit(command).await
}

impl wit::Host for DbView<'_> {}

impl wit::HostDatabase for DbView<'_> {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<DbHandle>, wit::Error>> {
        let st = &*self.instance;
        if let Err(e) = crate::validate_name(&name) {
            return Ok(Err(to_wit_error(e)));
        }
        if st.handles >= MAX_HANDLES_PER_REQUEST {
            return Ok(Err(to_wit_error(crate::Error::LimitExceeded {
                kind: "handles",
                limit: MAX_HANDLES_PER_REQUEST as u64,
            })));
        }
        if let Err(e) = crate::check_database(&st.grants, &name) {
            let why = if !st.grants.has_token() {
                "the component carries no capability token".to_owned()
            } else {
                format!("the component's capability token does not reach it ({e})")
            };
            let hint = crate::grants::open_refusal_hint(&name);
            tracing::warn!(
                tenant = %self.invocation.tenant,
                app = %self.invocation.app,
                request_id = %self.invocation.request_id,
                "zerodb: {hint}"
            );
            return Ok(Err(wit::Error::PermissionDenied(wit::PermissionDenied {
                database: name.clone(),
                action: None,
                table: None,
                message: format!(
                    "permission denied: database `{name}`: {why}; sign the component with a \
                     /db capability for it, e.g. `zero sign --cmd /db --policy '[[\"==\", \".db\", \"{name}\"]]'`; {hint}"
                ),
            })));
        }
        // A database opened before is a lookup: no hop to the blocking pool (the first open
        // creates its directory and file, and opens its connection, there).
        let opened = match st.databases.cached(&self.invocation.tenant, &name) {
            Some(db) => Ok(db),
            None => {
                let databases = st.databases.clone();
                let tenant = self.invocation.tenant.clone();
                blocking(self, move |_| databases.database(&tenant, &name)).await?
            }
        };
        match opened {
            Ok(db) => {
                let handle = self.table.push(DbHandle { db })?;
                self.instance.handles += 1;
                Ok(Ok(handle))
            }
            Err(e) => Ok(Err(to_wit_error(e))),
        }
    }

    async fn query(
        &mut self,
        handle: Resource<DbHandle>,
        sql: String,
        params: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<wit::Rows, wit::Error>> {
        let (db, grants) = handle_db(self, &handle)?;
        let params: Vec<crate::Value> = params.into_iter().map(from_wit_value).collect();
        let replicated = self.instance.replicator.is_some();
        let planned = blocking(self, move |ctl| {
            let statement = || {
                vec![Statement {
                    sql: sql.clone(),
                    params: params.clone(),
                }]
            };
            if let Some(p) = plan(replicated, &db, &grants, WriteKind::Query, statement) {
                return p;
            }
            Local(db.query_with(ctl, &*grants, &sql, &params))
        })
        .await?;
        let result = settle(self.instance.replicator.clone(), planned, |r| r.into_rows()).await;
        Ok(result
            .map(|r| wit::Rows {
                columns: r.columns,
                rows: r
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(to_wit_value).collect())
                    .collect(),
            })
            .map_err(|e| refusal(self.invocation, e)))
    }

    async fn execute(
        &mut self,
        handle: Resource<DbHandle>,
        sql: String,
        params: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<wit::ExecResult, wit::Error>> {
        let (db, grants) = handle_db(self, &handle)?;
        let params: Vec<crate::Value> = params.into_iter().map(from_wit_value).collect();
        let replicated = self.instance.replicator.is_some();
        let planned = blocking(self, move |ctl| {
            let statement = || {
                vec![Statement {
                    sql: sql.clone(),
                    params: params.clone(),
                }]
            };
            if let Some(p) = plan(replicated, &db, &grants, WriteKind::Execute, statement) {
                return p;
            }
            Local(db.execute_with(ctl, &*grants, &sql, &params))
        })
        .await?;
        let result = settle(self.instance.replicator.clone(), planned, |r| r.into_exec()).await;
        Ok(result
            .map(to_wit_exec)
            .map_err(|e| refusal(self.invocation, e)))
    }

    async fn batch(
        &mut self,
        handle: Resource<DbHandle>,
        statements: Vec<wit::Statement>,
    ) -> wasmtime::Result<Result<Vec<wit::ExecResult>, wit::Error>> {
        let (db, grants) = handle_db(self, &handle)?;
        let replicated = self.instance.replicator.is_some();
        let limit = self.instance.databases.limits().max_batch_statements;
        let planned = blocking(self, move |ctl| {
            let (sqls, params): (Vec<String>, Vec<Vec<crate::Value>>) = statements
                .into_iter()
                .map(|s| (s.sql, s.params.into_iter().map(from_wit_value).collect()))
                .unzip();
            let statements = || {
                sqls.iter()
                    .zip(&params)
                    .map(|(sql, params)| Statement {
                        sql: sql.clone(),
                        params: params.clone(),
                    })
                    .collect()
            };
            let replicate = replicated && sqls.len() <= limit;
            if let Some(p) = plan(replicate, &db, &grants, WriteKind::Batch, statements) {
                return p;
            }
            let stmts: Vec<(&str, Vec<crate::Value>)> =
                sqls.iter().map(String::as_str).zip(params).collect();
            Local(db.batch_with(ctl, &*grants, &stmts))
        })
        .await?;
        let result = settle(self.instance.replicator.clone(), planned, |r| {
            r.into_batch()
        })
        .await;
        Ok(result
            .map(|v| v.into_iter().map(to_wit_exec).collect())
            .map_err(|e| refusal(self.invocation, e)))
    }

    async fn drop(&mut self, handle: Resource<DbHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.instance.handles = self.instance.handles.saturating_sub(1);
        Ok(())
    }
}
