//! What the replicated state machine ([`crate::replica`]) needs from the engine: classifying a
//! statement without running it, applying a write together with the file's applied index,
//! reading that index and a database's logical size, consistent copies, and closing every
//! connection while the files are replaced.

use super::authorizer::APPLIED_TABLE;
use super::*;

/// What preparing a statement (without running it) tells: whether it only reads, and every
/// table it names (as SQLite's authorizer reported them, lower-cased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Classified {
    /// `sqlite3_stmt_readonly`: the statement changes nothing in the database file.
    pub(crate) readonly: bool,
    /// The tables (and views) the statement reads, writes, creates or drops.
    pub(crate) tables: Vec<String>,
}

/// How a replicated write runs its statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApplyMode {
    /// Each statement as [`Database::execute`] (results: one [`ExecResult`] each).
    Execute,
    /// One statement as [`Database::query`] (result: its rows).
    Query,
    /// One statement as [`Database::run`] (result: rows and what it changed).
    Run,
}

/// The outcome of a replicated write's statements.
pub(crate) enum ApplyOutcome {
    /// One result per statement.
    Executed(Vec<ExecResult>),
    /// The rows of the one statement.
    Rows(QueryResult),
    /// The rows and the changes of the one statement.
    Ran(QueryResult, ExecResult),
}

impl Runner<'_> {
    /// Runs one of our own queries (unchecked by the authorizer) and returns its rows.
    fn internal_rows(&self, sql: &str) -> Result<Vec<Vec<Value>>> {
        lock(self.state).internal = true;
        let r = (|| -> rusqlite::Result<Vec<Vec<Value>>> {
            let mut stmt = self.conn.prepare(sql)?;
            let n = stmt.column_count();
            let rows = stmt.query_map([], |row| {
                (0..n)
                    .map(|i| row.get_ref(i).map(Value::from))
                    .collect::<rusqlite::Result<Vec<Value>>>()
            })?;
            rows.collect()
        })();
        let mut st = lock(self.state);
        st.internal = false;
        r.map_err(|e| map_error(e, &st, self.db.limits(), &self.db.name))
    }

    fn internal_integer(&self, sql: &str) -> Result<Option<i64>> {
        let rows = self.internal_rows(sql)?;
        Ok(match rows.first().and_then(|r| r.first()) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        })
    }

    fn applied_index(&self) -> Result<Option<u64>> {
        let exists = self.internal_integer(&format!(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '{APPLIED_TABLE}'"
        ))?;
        if exists != Some(1) {
            return Ok(None);
        }
        let index =
            self.internal_integer(&format!("SELECT idx FROM {APPLIED_TABLE} WHERE id = 0"))?;
        Ok(index.and_then(|i| u64::try_from(i).ok()))
    }
}

impl Database {
    /// Prepares `sql` under the authorizer, without checking grants or running it: whether
    /// it only reads, and the tables it names. Refusals that do not depend on the schema
    /// (ATTACH, PRAGMAs, the statement length, ...) are errors here already.
    pub(crate) fn classify(&self, sql: &str) -> Result<Classified> {
        let limits = self.limits();
        if sql.len() > limits.max_statement_bytes {
            return Err(Error::LimitExceeded {
                kind: "statement_length",
                limit: limits.max_statement_bytes as u64,
            });
        }
        let conn = self.connection()?;
        let conn = conn.conn()?;
        lock(&self.state).reset();
        let prepared = conn.prepare(sql);
        let mut st = lock(&self.state);
        let entries = std::mem::take(&mut st.entries);
        let result = match prepared {
            Ok(stmt) => {
                let mut tables: Vec<String> = entries.into_iter().map(|e| e.table).collect();
                tables.sort();
                tables.dedup();
                Ok(Classified {
                    readonly: stmt.readonly(),
                    tables,
                })
            }
            Err(e) => Err(map_error(e, &st, limits, &self.name)),
        };
        st.reset();
        result
    }

    /// The names of the tables and views in the database now (lower-cased; zerodb's own
    /// table excluded).
    pub(crate) fn schema_tables(&self) -> Result<Vec<String>> {
        let conn = self.connection()?;
        let grants = crate::StaticGrants::new();
        let ctl = Control::new();
        let rows = self.runner(&conn, &grants, &ctl)?.internal_rows(
            "SELECT lower(name) FROM sqlite_schema WHERE type IN ('table', 'view') ORDER BY 1",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(t)) if t != APPLIED_TABLE => Some(t),
                _ => None,
            })
            .collect())
    }

    /// The index of the last replicated command applied to this file (`None`: none yet).
    pub(crate) fn applied_index(&self) -> Result<Option<u64>> {
        let conn = self.connection()?;
        let grants = crate::StaticGrants::new();
        let ctl = Control::new();
        self.runner(&conn, &grants, &ctl)?.applied_index()
    }

    /// The database's logical size: its pages times the page size (the same on every
    /// replica holding the same content, unlike the file and WAL sizes).
    pub(crate) fn logical_bytes(&self) -> Result<u64> {
        let conn = self.connection()?;
        let grants = crate::StaticGrants::new();
        let ctl = Control::new();
        let run = self.runner(&conn, &grants, &ctl)?;
        let pages = run.internal_integer("PRAGMA page_count")?.unwrap_or(0);
        let size = run.internal_integer("PRAGMA page_size")?.unwrap_or(0);
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
    }

    /// Applies one replicated write: in one transaction, records `index` as this file's
    /// applied index and runs `statements` (checked against `grants`, under `ctl`'s
    /// deterministic bounds). All or nothing: on an error nothing is changed, the index
    /// included. `last_insert_id` and `rows_affected` start at 0 for every write, so that they
    /// never depend on what this replica's connection did before.
    pub(crate) fn apply_write(
        &self,
        ctl: &Control,
        grants: &dyn Grants,
        index: u64,
        mode: ApplyMode,
        statements: &[(String, Vec<Value>)],
    ) -> Result<ApplyOutcome> {
        let index = i64::try_from(index).map_err(|_| {
            Error::Sqlite(format!("internal: log index {index} does not fit SQLite"))
        })?;
        self.transaction_with(ctl, grants, |tx| {
            // The size limit first, so that the index row is written under the same
            // max_page_count on every replica (not whatever this connection had).
            tx.run.set_size_limit()?;
            tx.run.internal(&format!(
                "CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} \
                 (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL); \
                 INSERT OR REPLACE INTO {APPLIED_TABLE} (id, idx) VALUES (0, {index}); \
                 DELETE FROM {APPLIED_TABLE} WHERE 0;"
            ))?;
            // Now last_insert_rowid() is 0 (the row just inserted) and changes() is 0 (the
            // DELETE), whatever this connection ran before: a statement that inserts nothing
            // or changes no row reports 0 on every replica.
            match mode {
                ApplyMode::Execute => statements
                    .iter()
                    .map(|(sql, params)| tx.execute(sql, params))
                    .collect::<Result<Vec<_>>>()
                    .map(ApplyOutcome::Executed),
                ApplyMode::Query | ApplyMode::Run => {
                    let [(sql, params)] = statements else {
                        return Err(refused(
                            format!("a replicated query of {} statements", statements.len()),
                            "a query is one statement",
                        ));
                    };
                    match tx.run.run(
                        sql,
                        params,
                        if mode == ApplyMode::Query {
                            Mode::Query
                        } else {
                            Mode::Both
                        },
                    )? {
                        Outcome::Query(q) => Ok(ApplyOutcome::Rows(q)),
                        Outcome::Both(q, e) => Ok(ApplyOutcome::Ran(q, e)),
                        Outcome::Exec(e) => Ok(ApplyOutcome::Executed(vec![e])),
                    }
                }
            }
        })
    }

    /// Writes a consistent copy of the database (as of its last commit) to the new file
    /// `path`, with SQLite's online backup API.
    pub(crate) fn backup_to(&self, path: &Path) -> Result<()> {
        let conn = self.connection()?;
        let src = conn.conn()?;
        let mut dst = Connection::open(path).map_err(|e| Error::Sqlite(e.to_string()))?;
        lock(&self.state).internal = true;
        let r = rusqlite::backup::Backup::new(src, &mut dst)
            .and_then(|b| b.run_to_completion(256, Duration::ZERO, None));
        lock(&self.state).internal = false;
        r.map_err(|e| Error::Sqlite(format!("backing up {}: {e}", self.path.display())))?;
        dst.close()
            .map_err(|(_, e)| Error::Sqlite(format!("closing {}: {e}", path.display())))
    }
}

impl Databases {
    /// The tenants that have a directory under the root, sorted.
    pub(crate) fn tenants(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.shared.root)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && validate_name(name).is_ok()
                && entry.file_type()?.is_dir()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Runs `f` with every connection closed and none able to open: each database handed out
    /// waits for its connection until `f` returns (used while the files are replaced). Handles
    /// of databases whose file `f` removed are forgotten.
    pub(crate) fn with_all_closed<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut open = lock(&self.open);
        let databases: Vec<Arc<Database>> = lock(&self.shared.registry)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut guards = Vec::with_capacity(databases.len());
        for db in &databases {
            let mut inner = lock(&db.inner);
            if inner.take().is_some() {
                lock(&self.shared.pool).open.remove(&db.key());
            }
            guards.push(inner);
        }
        let r = f();
        open.retain(|_, db| db.path.exists());
        drop(guards);
        r
    }
}
