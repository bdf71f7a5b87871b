//! zerodb writes as a replicated state machine: [`DbMachine`], a [`zeroraft::StateMachine`]
//! whose commands are [`WriteCommand`]s, and the [`Replicator`] the provider sends writes
//! through.
//!
//! # What is in the log
//!
//! One [`WriteCommand`] per write call (`execute`, `batch`, or a `query` whose statement
//! writes): the tenant and database, the statements with their parameters, how they run
//! ([`WriteKind`]), the instruction bound of each statement and a [`GrantSet`]: the caller's
//! rights **evaluated when the write is proposed** for every table of the database at that
//! time and every table the statements name, plus whether each action is granted on every
//! table. The apply checks each (action, table) SQLite reports *while preparing the statement
//! on the state it runs on* against that set, so a trigger or view created between proposal
//! and apply is still checked against the writer's rights: a table absent from the set is
//! refused unless the action was granted on every table (fail closed). Nothing in the
//! command depends on the proposer's clock or files (its capability chain's expiry was
//! checked when the set was made; the apply never reads a clock).
//!
//! Reads are not in the log: a statement that SQLite reports read-only
//! (`sqlite3_stmt_readonly`, on the statement prepared by the proposer, never by parsing
//! text) runs on the local replica.
//!
//! # Determinism of the apply
//!
//! The apply runs each command in one SQLite transaction (`BEGIN IMMEDIATE`) under the
//! determinism rule (no clock or random functions in writes), the authorizer and every limit
//! of [`Limits`](crate::Limits), with two replaced by deterministic forms: the statement's
//! wall-clock limit becomes a count of SQLite VM instructions
//! ([`WriteCommand::max_instructions`], kind `"instructions"`), and the tenant quota counts
//! the logical size (pages) of the tenant's other databases, not their files and WALs. The
//! `[db]` limits must be the same on every node. `last_insert_id` starts at 0 for every
//! command, so it never depends on a replica's connection history. A refused or failed write
//! is a response ([`WriteResponse::Failed`]), the same on every replica; only a failure to
//! read or store the files themselves stops the node's Raft engine. A command that cannot
//! get a connection because the pool is momentarily full waits for one.
//!
//! # Applied index and the restart rule
//!
//! Each database file records, in the same transaction as the write, the log index of the
//! last command applied to it (the table `_zerodb_applied`, which the authorizer refuses to
//! every statement, whatever its grants). After each batch the machine records its overall
//! [`zeroraft::AppliedState`] in `ROOT/.zerodb-applied` (written to a temporary file and
//! renamed). On restart zeroraft re-applies the log after that overall state; a command whose
//! target file already holds an index ≥ its own is skipped ([`WriteResponse::AlreadyApplied`]),
//! so a crash between a file's commit and the overall record never applies a write twice. A
//! failed write changes nothing (its index included), and running it again on the same file
//! state fails the same way.
//!
//! # Snapshots
//!
//! A snapshot is every database file, each a consistent copy made with SQLite's online
//! backup API, framed with its tenant and name, after the overall applied state. Installing
//! one: (1) the files are written under `ROOT/.zerodb-install/` and synced; (2) the overall
//! record is removed (and the directory synced), so a crash from here on restarts with no
//! applied state, and zeroraft installs the latest snapshot again (its restart rule, since
//! the snapshot is stored before it is installed); (3) with every connection closed, the
//! tenant directories are replaced by the installed ones; (4) the overall record is written.
//! Leftovers of an interrupted install or snapshot are removed when the machine opens.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroraft::{AppliedState, Command, StateMachine, StateMachineError};

use crate::engine::replicated::{ApplyMode, ApplyOutcome};
use crate::engine::{Control, PROGRESS_STEP, Replicated};
use crate::{Action, Database, Databases, Error, ExecResult, Grants, QueryResult, Result, Value};

/// The default bound of one statement of a replicated write, in SQLite VM instructions
/// (about a second of SQLite's work on a current core).
pub const MAX_STATEMENT_INSTRUCTIONS: u64 = 500_000_000;

/// The file (under the databases' root) holding the machine's overall applied state.
const STATE_FILE: &str = ".zerodb-applied";
/// Where an install writes the incoming files before they replace the current ones.
const INSTALL_DIR: &str = ".zerodb-install";
/// Where a snapshot makes its consistent copies.
const SNAPSHOT_DIR: &str = ".zerodb-snapshot";
/// The first bytes of a snapshot.
const SNAPSHOT_MAGIC: &[u8; 8] = b"ZDBSNAP1";
/// How long an apply waits for a connection when the pool is full before giving up.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How a write's statements run, and so what its response holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    /// One statement, as `execute` (response: one [`ExecResult`]).
    Execute,
    /// Statements in one transaction, as `batch` (response: one [`ExecResult`] each).
    Batch,
    /// One statement that writes, as `query` (response: its rows).
    Query,
    /// One statement, as [`Database::run`] (response: its rows and what it changed).
    Run,
}

/// One statement with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The SQL text (one statement).
    pub sql: String,
    /// Its parameters, in placeholder order.
    pub params: Vec<Value>,
}

/// The caller's rights on one database of one tenant, evaluated when the write was proposed:
/// per action, whether it is granted on every table, and the tables it is granted on among
/// those the database and the statements named then. Serializable, so the apply checks the
/// same rights on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSet {
    tenant: String,
    database: String,
    /// Names of the actions granted on every table.
    every_table: BTreeSet<String>,
    /// (action name, table) pairs granted.
    tables: BTreeSet<(String, String)>,
}

impl GrantSet {
    /// Evaluates `grants` on database `database` of `tenant`: each action on every table,
    /// and each action on each of `tables`.
    pub fn capture(
        grants: &dyn Grants,
        tenant: &str,
        database: &str,
        tables: impl IntoIterator<Item = String>,
    ) -> GrantSet {
        let mut set = GrantSet {
            tenant: tenant.to_owned(),
            database: database.to_owned(),
            ..GrantSet::default()
        };
        for action in Action::ALL {
            if grants.allows_every_table(action, database) {
                set.every_table.insert(action.name().to_owned());
            }
        }
        let tables: BTreeSet<String> = tables.into_iter().map(|t| t.to_ascii_lowercase()).collect();
        for table in tables {
            for action in Action::ALL {
                if !set.every_table.contains(action.name())
                    && grants.allows(action, database, &table)
                {
                    set.tables.insert((action.name().to_owned(), table.clone()));
                }
            }
        }
        set
    }

    /// The tenant the rights were evaluated for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The database the rights were evaluated for.
    pub fn database(&self) -> &str {
        &self.database
    }
}

impl Grants for GrantSet {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        db == self.database
            && (self.every_table.contains(action.name())
                || self
                    .tables
                    .contains(&(action.name().to_owned(), table.to_ascii_lowercase())))
    }

    fn allows_every_table(&self, action: Action, db: &str) -> bool {
        db == self.database && self.every_table.contains(action.name())
    }
}

/// One replicated write: everything the apply needs, nothing that depends on the proposer's
/// clock or files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteCommand {
    /// The tenant owning the database.
    pub tenant: String,
    /// The database name.
    pub database: String,
    /// How the statements run.
    pub kind: WriteKind,
    /// The statements (one, except for [`WriteKind::Batch`]).
    pub statements: Vec<Statement>,
    /// The caller's rights, evaluated at proposal.
    pub grants: GrantSet,
    /// Most SQLite VM instructions per statement.
    pub max_instructions: u64,
}

impl WriteCommand {
    /// The command's bytes in the log.
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self)
            .map_err(|e| Error::Sqlite(format!("cannot encode the write command: {e}")))
    }

    /// Reads a command back from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<WriteCommand> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::Sqlite(format!("the write command is corrupt: {e}")))
    }
}

/// A failed write, as carried in a response (the serializable form of [`Error`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WriteError {
    /// [`Error::PermissionDenied`].
    PermissionDenied {
        action: String,
        db: String,
        table: String,
    },
    /// [`Error::Syntax`].
    Syntax {
        message: String,
        offset: Option<u64>,
    },
    /// [`Error::Constraint`].
    Constraint { message: String },
    /// [`Error::LimitExceeded`].
    LimitExceeded { kind: String, limit: u64 },
    /// [`Error::Refused`].
    Refused { what: String, why: String },
    /// [`Error::InvalidName`].
    InvalidName(String),
    /// Any other error, by its message.
    Other(String),
}

/// Every limit kind [`Error::LimitExceeded`] names.
const LIMIT_KINDS: [&str; 15] = [
    "statement_length",
    "rows",
    "time",
    "size",
    "value_size",
    "result_size",
    "statements",
    "databases",
    "quota",
    "open_databases",
    "handles",
    "cpu",
    "memory",
    "instructions",
    "connections",
];

impl From<&Error> for WriteError {
    fn from(e: &Error) -> WriteError {
        match e {
            Error::PermissionDenied { action, db, table } => WriteError::PermissionDenied {
                action: action.name().to_owned(),
                db: db.clone(),
                table: table.clone(),
            },
            Error::Syntax { message, offset } => WriteError::Syntax {
                message: message.clone(),
                offset: offset.map(|o| o as u64),
            },
            Error::Constraint { message } => WriteError::Constraint {
                message: message.clone(),
            },
            Error::LimitExceeded { kind, limit } => WriteError::LimitExceeded {
                kind: (*kind).to_owned(),
                limit: *limit,
            },
            Error::Refused { what, why } => WriteError::Refused {
                what: what.clone(),
                why: why.clone(),
            },
            Error::InvalidName(n) => WriteError::InvalidName(n.clone()),
            other => WriteError::Other(other.to_string()),
        }
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Error {
        match e {
            WriteError::PermissionDenied { action, db, table } => {
                match Action::ALL.into_iter().find(|a| a.name() == action) {
                    Some(action) => Error::PermissionDenied { action, db, table },
                    None => Error::Sqlite(format!(
                        "permission denied: {action} on table `{table}` of database `{db}`"
                    )),
                }
            }
            WriteError::Syntax { message, offset } => Error::Syntax {
                message,
                offset: offset.and_then(|o| usize::try_from(o).ok()),
            },
            WriteError::Constraint { message } => Error::Constraint { message },
            WriteError::LimitExceeded { kind, limit } => {
                match LIMIT_KINDS.into_iter().find(|k| *k == kind) {
                    Some(kind) => Error::LimitExceeded { kind, limit },
                    None => Error::Sqlite(format!("limit exceeded: {kind} limit is {limit}")),
                }
            }
            WriteError::Refused { what, why } => Error::Refused { what, why },
            WriteError::InvalidName(n) => Error::InvalidName(n),
            WriteError::Other(m) => Error::Sqlite(m),
        }
    }
}

/// The machine's answer to one [`WriteCommand`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteResponse {
    /// [`WriteKind::Execute`] and [`WriteKind::Batch`]: one result per statement.
    Executed(Vec<ExecResult>),
    /// [`WriteKind::Query`]: the statement's rows.
    Rows(QueryResult),
    /// [`WriteKind::Run`]: the statement's rows and what it changed.
    Ran(QueryResult, ExecResult),
    /// The write was refused or failed; nothing changed.
    Failed(WriteError),
    /// The command was applied to its file before this replica restarted (the restart
    /// rule); only a replica catching up sees this, never the writer.
    AlreadyApplied,
}

impl WriteResponse {
    /// The response's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self)
            .map_err(|e| Error::Sqlite(format!("cannot encode the write response: {e}")))
    }

    /// Reads a response back from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<WriteResponse> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::Sqlite(format!("the write response is corrupt: {e}")))
    }

    fn failed(self) -> Error {
        match self {
            WriteResponse::Failed(e) => e.into(),
            WriteResponse::AlreadyApplied => Error::Sqlite(
                "internal: the write was applied before this node restarted; its result is \
                 not known"
                    .into(),
            ),
            _ => Error::Sqlite("internal: the write's response does not match its kind".into()),
        }
    }

    /// The result of an [`WriteKind::Execute`].
    pub fn into_exec(self) -> Result<ExecResult> {
        match self {
            WriteResponse::Executed(mut v) if v.len() == 1 => Ok(v.remove(0)),
            other => Err(other.failed()),
        }
    }

    /// The results of a [`WriteKind::Batch`].
    pub fn into_batch(self) -> Result<Vec<ExecResult>> {
        match self {
            WriteResponse::Executed(v) => Ok(v),
            other => Err(other.failed()),
        }
    }

    /// The rows of a [`WriteKind::Query`].
    pub fn into_rows(self) -> Result<QueryResult> {
        match self {
            WriteResponse::Rows(q) => Ok(q),
            other => Err(other.failed()),
        }
    }

    /// The rows and changes of a [`WriteKind::Run`].
    pub fn into_ran(self) -> Result<(QueryResult, ExecResult)> {
        match self {
            WriteResponse::Ran(q, e) => Ok((q, e)),
            other => Err(other.failed()),
        }
    }
}

/// Decides how `statements` run on `db` for a caller holding `grants`: `Ok(None)` when every
/// statement only reads (SQLite's `sqlite3_stmt_readonly` on the prepared statement), so
/// they run locally; otherwise the [`WriteCommand`] to replicate. A statement that does not
/// prepare here for a reason the schema can change (an unknown table: this replica may be
/// behind) makes the call a write for `execute` and `batch`, so the leader's state decides;
/// for `query` it is returned (reads are local). Other refusals (ATTACH, PRAGMAs, length) are
/// returned at once.
pub fn plan_write(
    db: &Database,
    grants: &dyn Grants,
    kind: WriteKind,
    statements: Vec<Statement>,
) -> Result<Option<WriteCommand>> {
    let mut readonly = true;
    let mut tables: BTreeSet<String> = BTreeSet::new();
    for s in &statements {
        match db.classify(&s.sql) {
            Ok(c) => {
                readonly &= c.readonly;
                tables.extend(c.tables);
            }
            Err(Error::Syntax { .. }) if kind != WriteKind::Query => readonly = false,
            Err(e) => return Err(e),
        }
    }
    if readonly {
        return Ok(None);
    }
    tables.extend(db.schema_tables()?);
    let grants = GrantSet::capture(grants, db.tenant(), db.name(), tables);
    Ok(Some(WriteCommand {
        tenant: db.tenant().to_owned(),
        database: db.name().to_owned(),
        kind,
        statements,
        grants,
        max_instructions: MAX_STATEMENT_INSTRUCTIONS,
    }))
}

/// The boxed future a [`Replicator`] returns.
pub type Submitted<'a> = Pin<Box<dyn Future<Output = Result<WriteResponse>> + Send + 'a>>;

/// Where the provider sends writes when the node is part of a cluster: commits the command
/// through the log (forwarding it to the leader when needed) and returns the state machine's
/// response. An `Err` means the write was not acknowledged ([`Error::Unavailable`]); a write
/// that was refused is an `Ok(WriteResponse::Failed)`.
pub trait Replicator: Send + Sync + 'static {
    /// Submits `command` and waits for its response.
    fn submit(&self, command: WriteCommand) -> Submitted<'_>;
}

/// A node running [`DbMachine`] alone as its state machine replicates writes itself (a
/// follower forwards them to the leader; [`Error::Unavailable`] when none commits them in
/// time).
impl Replicator for zeroraft::RaftNode<DbMachine> {
    fn submit(&self, command: WriteCommand) -> Submitted<'_> {
        Box::pin(async move {
            let bytes = command.encode()?;
            let written = self
                .write(bytes)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            WriteResponse::decode(&written.response)
        })
    }
}

/// zerodb as a replicated state machine over the databases of one [`Databases`] root. See
/// the [module docs](self).
pub struct DbMachine {
    databases: Arc<Databases>,
    state_file: PathBuf,
    applied: Option<Vec<u8>>,
    /// Logical bytes of each database, as of this machine's last apply to it.
    sizes: HashMap<(String, String), u64>,
}

fn sm_error(what: &str, e: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::new(format!("zerodb: {what}: {e}"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_dir_if_exists(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether an error comes from this replica's circumstances (not the command), so that the
/// apply must not turn it into a response.
fn is_local(e: &Error) -> bool {
    matches!(
        e,
        Error::Io(_)
            | Error::Cancelled
            | Error::Unavailable(_)
            | Error::LimitExceeded {
                kind: "open_databases" | "memory",
                ..
            }
    )
}

impl DbMachine {
    /// The machine over `databases` (whose root holds the files and the machine's own
    /// record), with the applied state it recorded, if any. Removes what an interrupted
    /// install or snapshot left.
    pub fn open(databases: Arc<Databases>) -> std::result::Result<DbMachine, StateMachineError> {
        let root = databases.root().to_path_buf();
        remove_dir_if_exists(&root.join(INSTALL_DIR))
            .map_err(|e| sm_error("removing an interrupted install", e))?;
        remove_dir_if_exists(&root.join(SNAPSHOT_DIR))
            .map_err(|e| sm_error("removing an interrupted snapshot", e))?;
        let state_file = root.join(STATE_FILE);
        let applied = match std::fs::read(&state_file) {
            Ok(bytes) => {
                AppliedState::from_bytes(&bytes)?;
                Some(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(sm_error(&format!("reading {}", state_file.display()), e)),
        };
        Ok(DbMachine {
            databases,
            state_file,
            applied,
            sizes: HashMap::new(),
        })
    }

    /// The databases this machine writes (also the ones local reads use).
    pub fn databases(&self) -> &Arc<Databases> {
        &self.databases
    }

    /// Retries `f` while it fails for a momentary local reason (the connection pool full),
    /// up to [`POOL_WAIT`].
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let until = Instant::now() + POOL_WAIT;
        loop {
            match f() {
                Err(e @ Error::LimitExceeded { .. }) if is_local(&e) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// The logical bytes of `tenant`'s databases other than `except`.
    fn other_bytes(&mut self, tenant: &str, except: &str) -> Result<u64> {
        let mut total = 0u64;
        for name in self.databases.list(tenant)? {
            if name == except {
                continue;
            }
            let key = (tenant.to_owned(), name.clone());
            let bytes = match self.sizes.get(&key) {
                Some(b) => *b,
                None => {
                    let b =
                        self.retrying(|| self.databases.database(tenant, &name)?.logical_bytes())?;
                    self.sizes.insert(key, b);
                    b
                }
            };
            total = total.saturating_add(bytes);
        }
        Ok(total)
    }

    /// Applies one command; `Err` only for a local failure.
    fn apply_one(&mut self, index: u64, data: &[u8]) -> Result<WriteResponse> {
        let command = match WriteCommand::decode(data) {
            Ok(c) => c,
            Err(e) => return Ok(WriteResponse::Failed(WriteError::from(&e))),
        };
        match self.run(index, &command) {
            Ok(r) => Ok(r),
            Err(e) if is_local(&e) => Err(e),
            Err(e) => Ok(WriteResponse::Failed(WriteError::from(&e))),
        }
    }

    fn run(&mut self, index: u64, c: &WriteCommand) -> Result<WriteResponse> {
        crate::validate_name(&c.tenant)?;
        crate::validate_name(&c.database)?;
        if c.grants.tenant != c.tenant || c.grants.database != c.database {
            // Rights evaluated for one database never reach another.
            return Err(Error::Refused {
                what: format!(
                    "a write to database `{}` of tenant `{}`",
                    c.database, c.tenant
                ),
                why: format!(
                    "the caller's rights were evaluated for database `{}` of tenant `{}`",
                    c.grants.database, c.grants.tenant
                ),
            });
        }
        let (mode, count_ok) = match c.kind {
            WriteKind::Execute => (ApplyMode::Execute, c.statements.len() == 1),
            WriteKind::Batch => (ApplyMode::Execute, true),
            WriteKind::Query => (ApplyMode::Query, c.statements.len() == 1),
            WriteKind::Run => (ApplyMode::Run, c.statements.len() == 1),
        };
        let limit = self.databases.limits().max_batch_statements;
        if c.kind == WriteKind::Batch && c.statements.len() > limit {
            return Err(Error::LimitExceeded {
                kind: "statements",
                limit: limit as u64,
            });
        }
        if !count_ok {
            return Err(Error::Refused {
                what: format!("a {:?} write of {} statements", c.kind, c.statements.len()),
                why: "execute, query and run take exactly one statement; use batch".into(),
            });
        }
        let db = self.retrying(|| self.databases.database(&c.tenant, &c.database))?;
        if self
            .retrying(|| db.applied_index())?
            .is_some_and(|i| i >= index)
        {
            return Ok(WriteResponse::AlreadyApplied);
        }
        let other_bytes = self.other_bytes(&c.tenant, &c.database)?;
        let ctl = Control::replicated(Replicated {
            max_instructions: c.max_instructions.max(PROGRESS_STEP),
            other_bytes,
        });
        let statements: Vec<(String, Vec<Value>)> = c
            .statements
            .iter()
            .map(|s| (s.sql.clone(), s.params.clone()))
            .collect();
        let outcome = self.retrying(|| db.apply_write(&ctl, &c.grants, index, mode, &statements));
        let size = self.retrying(|| db.logical_bytes())?;
        self.sizes
            .insert((c.tenant.clone(), c.database.clone()), size);
        Ok(match outcome? {
            ApplyOutcome::Executed(v) => WriteResponse::Executed(v),
            ApplyOutcome::Rows(q) => WriteResponse::Rows(q),
            ApplyOutcome::Ran(q, e) => WriteResponse::Ran(q, e),
        })
    }

    /// Records the overall applied state (temporary file, then rename).
    fn record(&mut self, state: &[u8]) -> std::result::Result<(), StateMachineError> {
        let tmp = self.state_file.with_extension("tmp");
        std::fs::write(&tmp, state)
            .and_then(|()| std::fs::rename(&tmp, &self.state_file))
            .map_err(|e| sm_error(&format!("recording {}", self.state_file.display()), e))?;
        self.applied = Some(state.to_vec());
        Ok(())
    }

    /// [`StateMachine::apply`] with the applied state as bytes.
    pub fn apply_commands(
        &mut self,
        commands: &[Command<'_>],
        state: &[u8],
    ) -> std::result::Result<Vec<Vec<u8>>, StateMachineError> {
        let mut responses = Vec::with_capacity(commands.len());
        for c in commands {
            let response = self
                .apply_one(c.index, c.data)
                .map_err(|e| sm_error(&format!("applying log entry {}", c.index), e))?;
            responses.push(
                response
                    .encode()
                    .map_err(|e| sm_error("encoding a response", e))?,
            );
        }
        self.record(state)?;
        Ok(responses)
    }

    /// [`StateMachine::snapshot`].
    fn write_snapshot(
        &mut self,
        out: &mut dyn Write,
    ) -> std::result::Result<(), StateMachineError> {
        let root = self.databases.root().to_path_buf();
        let work = root.join(SNAPSHOT_DIR);
        remove_dir_if_exists(&work).map_err(|e| sm_error("clearing the snapshot directory", e))?;
        std::fs::create_dir_all(&work)
            .map_err(|e| sm_error("creating the snapshot directory", e))?;
        out.write_all(SNAPSHOT_MAGIC)?;
        let state = self.applied.clone().unwrap_or_default();
        out.write_all(&(state.len() as u32).to_be_bytes())?;
        out.write_all(&state)?;
        let tenants = self
            .databases
            .tenants()
            .map_err(|e| sm_error("listing tenants", e))?;
        for tenant in tenants {
            let names = self
                .databases
                .list(&tenant)
                .map_err(|e| sm_error("listing databases", e))?;
            for name in names {
                let copy = work.join("copy.sqlite");
                let db = self
                    .retrying(|| self.databases.database(&tenant, &name))
                    .map_err(|e| sm_error("opening a database to snapshot", e))?;
                self.retrying(|| {
                    let _ = std::fs::remove_file(&copy);
                    db.backup_to(&copy)
                })
                .map_err(|e| sm_error(&format!("copying {tenant}/{name}"), e))?;
                let mut file = std::fs::File::open(&copy)?;
                let size = file.metadata()?.len();
                out.write_all(&[1])?;
                for part in [tenant.as_str(), name.as_str()] {
                    out.write_all(&[part.len() as u8])?;
                    out.write_all(part.as_bytes())?;
                }
                out.write_all(&size.to_be_bytes())?;
                let copied = std::io::copy(&mut file, out)?;
                if copied != size {
                    return Err(sm_error(
                        &format!("copying {tenant}/{name}"),
                        format!("{copied} bytes read of {size}"),
                    ));
                }
                drop(file);
                std::fs::remove_file(&copy)?;
            }
        }
        out.write_all(&[0])?;
        remove_dir_if_exists(&work)?;
        Ok(())
    }

    /// [`StateMachine::install`] with the applied state as bytes.
    pub fn install_snapshot(
        &mut self,
        snapshot: &mut dyn Read,
        state: &[u8],
    ) -> std::result::Result<(), StateMachineError> {
        let root = self.databases.root().to_path_buf();
        let staging = root.join(INSTALL_DIR);
        remove_dir_if_exists(&staging)?;
        std::fs::create_dir_all(&staging)?;
        let corrupt = |why: &str| sm_error("the snapshot is corrupt", why);
        let mut magic = [0u8; 8];
        snapshot.read_exact(&mut magic)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(corrupt("it is not a zerodb snapshot (bad magic)"));
        }
        let mut len = [0u8; 4];
        snapshot.read_exact(&mut len)?;
        let mut recorded = vec![0u8; u32::from_be_bytes(len) as usize];
        snapshot.read_exact(&mut recorded)?;
        if !recorded.is_empty() {
            AppliedState::from_bytes(&recorded)?;
        }
        // (1) Every file, written and synced under the staging directory.
        loop {
            let mut tag = [0u8; 1];
            snapshot.read_exact(&mut tag)?;
            match tag[0] {
                0 => break,
                1 => {}
                _ => return Err(corrupt("unknown frame")),
            }
            let mut parts = Vec::with_capacity(2);
            for _ in 0..2 {
                let mut n = [0u8; 1];
                snapshot.read_exact(&mut n)?;
                let mut bytes = vec![0u8; n[0] as usize];
                snapshot.read_exact(&mut bytes)?;
                let name = String::from_utf8(bytes).map_err(|_| corrupt("a name is not UTF-8"))?;
                crate::validate_name(&name).map_err(|e| sm_error("the snapshot is corrupt", e))?;
                parts.push(name);
            }
            let mut size = [0u8; 8];
            snapshot.read_exact(&mut size)?;
            let size = u64::from_be_bytes(size);
            let dir = staging.join(&parts[0]);
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.sqlite", parts[1]));
            let mut file = std::fs::File::create(&path)?;
            let copied = std::io::copy(&mut (&mut *snapshot).take(size), &mut file)?;
            if copied != size {
                return Err(corrupt("a database file is truncated"));
            }
            file.sync_all()?;
            drop(file);
            let mut header = [0u8; 16];
            std::fs::File::open(&path)?.read_exact(&mut header)?;
            if &header != b"SQLite format 3\0" {
                return Err(corrupt("a database file is not SQLite"));
            }
        }
        for entry in std::fs::read_dir(&staging)? {
            sync_dir(&entry?.path())?;
        }
        sync_dir(&staging)?;
        // (2) No applied state from here until (4): a crash makes zeroraft install again.
        match std::fs::remove_file(&self.state_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.applied = None;
        sync_dir(&root)?;
        // (3) The tenant directories replaced, with every connection closed.
        let swapped = self.databases.with_all_closed(|| -> std::io::Result<()> {
            for tenant in self.databases.tenants().map_err(std::io::Error::other)? {
                std::fs::remove_dir_all(root.join(&tenant))?;
            }
            for entry in std::fs::read_dir(&staging)? {
                let entry = entry?;
                std::fs::rename(entry.path(), root.join(entry.file_name()))?;
            }
            sync_dir(&root)
        });
        swapped.map_err(|e| sm_error("replacing the databases with the snapshot's", e))?;
        remove_dir_if_exists(&staging)?;
        self.sizes.clear();
        // (4) The applied state of the snapshot.
        self.record(state)
    }
}

impl StateMachine for DbMachine {
    fn applied_state(&mut self) -> std::result::Result<Option<Vec<u8>>, StateMachineError> {
        Ok(self.applied.clone())
    }

    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> std::result::Result<Vec<Vec<u8>>, StateMachineError> {
        self.apply_commands(commands, state.as_bytes())
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::result::Result<(), StateMachineError> {
        self.write_snapshot(out)
    }

    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> std::result::Result<(), StateMachineError> {
        self.install_snapshot(snapshot, state.as_bytes())
    }
}
