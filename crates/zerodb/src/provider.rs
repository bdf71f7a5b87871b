//! The `zero:db` host provider: components reach their tenant's databases through the WIT
//! interface in `wit/zero-db` (package `zero:db@0.1.0`).
//!
//! [`DbProvider`] adds the interface to the linker and, for every store, records which tenant
//! and component run and the capability chain they carry ([`ChainGrants`]). A component opens a
//! database by name; the name is resolved within its own tenant only
//! ([`Databases::database`]`(tenant, name)`), so no name reaches another tenant's files. Each
//! statement's table accesses are then checked with
//! `chain.allows("/db/read" | "/db/write" | "/db/create" | "/db/delete", {tenant, component, db,
//! table})`, the answers cached per store. A component without a token may not open any
//! database.
//!
//! SQLite work runs on tokio's blocking pool (`spawn_blocking`), so a slow statement never stalls
//! the executor threads that serve other requests. Measured with `benches/todo.sh` (2 cores,
//! shared): a point read served at 0.70-0.73 of the hello app's req/s with `spawn_blocking`, and
//! at 0.56 with `block_in_place` (which also parks the executor thread for the statement).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker, Resource};
use zero_auth::{Chain, Command, Ipld};
use zero_provider::{HostState, Invocation, Provider, ResourceProvider};

use crate::{Action, Database, Databases, Grants};

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

/// Answers table-level questions from a component's capability chain, caching every answer
/// for the life of one store (one request).
pub struct ChainGrants {
    chain: Option<Arc<Chain>>,
    tenant: Arc<str>,
    component: Option<String>,
    cache: Mutex<HashMap<(Action, String, String), bool>>,
}

impl ChainGrants {
    /// Grants for `invocation`: its tenant, its component hash and its capability chain (`None`:
    /// nothing is granted).
    pub fn new(invocation: &Invocation) -> Self {
        ChainGrants {
            chain: invocation.settings.capabilities.clone(),
            tenant: invocation.tenant.clone(),
            component: invocation.settings.component.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the chain delegates any `/db/*` command at all (checked when a database is
    /// opened, before any table is known).
    pub fn any_db_command(&self) -> bool {
        let Some(chain) = &self.chain else {
            return false;
        };
        Action::ALL
            .iter()
            .any(|a| match Command::parse(a.command()) {
                Ok(cmd) => chain.capabilities().iter().all(|c| c.command.covers(&cmd)),
                Err(_) => false,
            })
    }

    fn ask(&self, action: Action, db: &str, table: &str) -> bool {
        let Some(chain) = &self.chain else {
            return false;
        };
        let Ok(cmd) = Command::parse(action.command()) else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if chain.expiration().is_some_and(|exp| exp <= now) {
            tracing::debug!(tenant = %self.tenant, db, table, %action, "zerodb: the component's capability token has expired");
            return false;
        }
        let mut args = std::collections::BTreeMap::new();
        args.insert("tenant".to_owned(), Ipld::String(self.tenant.to_string()));
        if let Some(c) = &self.component {
            args.insert("component".to_owned(), Ipld::String(c.clone()));
        }
        args.insert("db".to_owned(), Ipld::String(db.to_owned()));
        args.insert("table".to_owned(), Ipld::String(table.to_owned()));
        match chain.allows(&cmd, &Ipld::Map(args)) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(tenant = %self.tenant, db, table, %action, "zerodb: capability refused: {e}");
                false
            }
        }
    }
}

impl Grants for ChainGrants {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        let key = (action, db.to_owned(), table.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = cache.get(&key) {
            return *answer;
        }
        let answer = self.ask(action, db, table);
        cache.insert(key, answer);
        answer
    }
}

/// Per-store state of the provider, kept in [`HostState::extensions`].
struct DbStore {
    databases: Arc<Databases>,
    grants: Arc<ChainGrants>,
}

/// The zerodb resource provider.
pub struct DbProvider {
    databases: Arc<Databases>,
}

impl DbProvider {
    /// A provider serving the databases under `databases`.
    pub fn new(databases: Arc<Databases>) -> Self {
        DbProvider { databases }
    }
}

impl Provider for DbProvider {
    fn name(&self) -> &'static str {
        "zerodb"
    }
}

impl ResourceProvider for DbProvider {
    fn interfaces(&self) -> Vec<String> {
        vec![INTERFACE.to_owned()]
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> anyhow::Result<()> {
        wit::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        Ok(())
    }

    fn configure_store(&self, state: &mut HostState) -> anyhow::Result<()> {
        let grants = Arc::new(ChainGrants::new(&state.invocation));
        state.extensions.insert(DbStore {
            databases: self.databases.clone(),
            grants,
        });
        Ok(())
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
                    "time" => wit::LimitKind::Time,
                    _ => wit::LimitKind::Size,
                },
                limit,
                message,
            })
        }
        crate::Error::Refused { .. } => wit::Error::Refused(message),
        crate::Error::InvalidName(_) => wit::Error::Invalid(message),
        crate::Error::Sqlite(_) | crate::Error::Io(_) => wit::Error::Other(message),
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

/// Runs SQLite work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> wasmtime::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| wasmtime::Error::msg(format!("zerodb: the database task failed: {e}")))
}

fn store(state: &HostState) -> wasmtime::Result<&DbStore> {
    state.extensions.get::<DbStore>().ok_or_else(|| {
        wasmtime::Error::msg("zerodb: the store was not configured by the zerodb provider")
    })
}

fn handle_db(
    state: &HostState,
    handle: &Resource<DbHandle>,
) -> wasmtime::Result<(Arc<Database>, Arc<ChainGrants>)> {
    let db = state.table.get(handle)?.db.clone();
    Ok((db, store(state)?.grants.clone()))
}

impl wit::Host for HostState {}

impl wit::HostDatabase for HostState {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<DbHandle>, wit::Error>> {
        let st = store(self)?;
        if let Err(e) = crate::validate_name(&name) {
            return Ok(Err(to_wit_error(e)));
        }
        if !st.grants.any_db_command() {
            let why = if st.grants.chain.is_none() {
                "the component carries no capability token"
            } else {
                "the component's capability token grants no /db command"
            };
            return Ok(Err(wit::Error::PermissionDenied(wit::PermissionDenied {
                database: name.clone(),
                action: None,
                table: None,
                message: format!(
                    "permission denied: database `{name}`: {why}; sign the component with a \
                     /db capability, e.g. `zero sign --cmd /db --policy '[[\"==\", \".db\", \"{name}\"]]'`"
                ),
            })));
        }
        let databases = st.databases.clone();
        let tenant = self.invocation.tenant.clone();
        let opened = blocking(move || databases.database(&tenant, &name)).await?;
        match opened {
            Ok(db) => Ok(Ok(self.table.push(DbHandle { db })?)),
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
        let result = blocking(move || db.query(&*grants, &sql, &params)).await?;
        Ok(result
            .map(|r| wit::Rows {
                columns: r.columns,
                rows: r
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(to_wit_value).collect())
                    .collect(),
            })
            .map_err(to_wit_error))
    }

    async fn execute(
        &mut self,
        handle: Resource<DbHandle>,
        sql: String,
        params: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<wit::ExecResult, wit::Error>> {
        let (db, grants) = handle_db(self, &handle)?;
        let params: Vec<crate::Value> = params.into_iter().map(from_wit_value).collect();
        let result = blocking(move || db.execute(&*grants, &sql, &params)).await?;
        Ok(result.map(to_wit_exec).map_err(to_wit_error))
    }

    async fn batch(
        &mut self,
        handle: Resource<DbHandle>,
        statements: Vec<wit::Statement>,
    ) -> wasmtime::Result<Result<Vec<wit::ExecResult>, wit::Error>> {
        let (db, grants) = handle_db(self, &handle)?;
        let result = blocking(move || {
            let (sqls, params): (Vec<String>, Vec<Vec<crate::Value>>) = statements
                .into_iter()
                .map(|s| (s.sql, s.params.into_iter().map(from_wit_value).collect()))
                .unzip();
            let stmts: Vec<(&str, Vec<crate::Value>)> =
                sqls.iter().map(String::as_str).zip(params).collect();
            db.batch(&*grants, &stmts)
        })
        .await?;
        Ok(result
            .map(|v| v.into_iter().map(to_wit_exec).collect())
            .map_err(to_wit_error))
    }

    async fn drop(&mut self, handle: Resource<DbHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
