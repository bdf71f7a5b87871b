//! Running statements on one connection: preparing, checking the recorded accesses against
//! the grants, stepping within the limits, and mapping SQLite's errors.

use super::*;
use rusqlite::ffi::ErrorCode;

use super::authorizer::is_internal;
use crate::error::NONDETERMINISTIC_WHY;

pub(super) struct Runner<'a> {
    pub(super) db: &'a Database,
    pub(super) conn: &'a Connection,
    pub(super) state: &'a Arc<Mutex<State>>,
    pub(super) grants: &'a dyn Grants,
    pub(super) ctl: &'a Control,
}

pub(super) enum Mode {
    Exec,
    Query,
    Both,
}

pub(super) enum Outcome {
    Exec(ExecResult),
    Query(QueryResult),
    Both(QueryResult, ExecResult),
}

impl Runner<'_> {
    pub(super) fn internal(&self, sql: &str) -> Result<()> {
        lock(self.state).internal = true;
        let r = self.conn.execute_batch(sql);
        let mut st = lock(self.state);
        st.internal = false;
        r.map_err(|e| map_error(e, &st, self.db.limits(), &self.db.name))
    }

    pub(super) fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        match self.run(sql, params, Mode::Exec)? {
            Outcome::Exec(r) => Ok(r),
            _ => unreachable!("exec mode returns ExecResult"),
        }
    }

    pub(super) fn query(&self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        match self.run(sql, params, Mode::Query)? {
            Outcome::Query(r) => Ok(r),
            _ => unreachable!("query mode returns QueryResult"),
        }
    }

    /// Runs one statement, counted in the node's metrics.
    pub(super) fn run(&self, sql: &str, params: &[Value], mode: Mode) -> Result<Outcome> {
        let start = Instant::now();
        let result = self.run_counted(sql, params, mode);
        self.db.shared.stats.record(
            &self.db.tenant,
            result.is_ok(),
            start.elapsed().as_secs_f64(),
        );
        result
    }

    fn run_counted(&self, sql: &str, params: &[Value], mode: Mode) -> Result<Outcome> {
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
            if let Some(r) = self.ctl.replicated {
                st.deadline = None;
                st.instructions = Some((r.max_instructions / PROGRESS_STEP, r.max_instructions));
            } else {
                st.deadline = Some(match until {
                    Some((b, until)) if until < now + limits.max_statement_time => {
                        st.budget_ms = b.as_millis() as u64;
                        (until, Interrupt::Budget)
                    }
                    _ => (now + limits.max_statement_time, Interrupt::Time),
                });
            }
            st.cancel = Some(self.ctl.cancel.clone());
            st.turn = self.ctl.turn.clone();
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
        st.instructions = None;
        st.cancel = None;
        // The turn is held only while a statement steps: given back before the next one
        // waits for its connection or the call ends.
        if let Some(turn) = st.turn.take() {
            turn.lock().unwrap_or_else(|p| p.into_inner()).pause();
        }
        out
    }

    /// Phase 2 of a statement: every access the authorizer recorded while preparing must be
    /// granted. Returns the caller-visible accesses.
    pub(super) fn check_entries(&self, entries: &[Entry], saw_select: bool) -> Result<Vec<Access>> {
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
    pub(super) fn set_size_limit(&self) -> Result<()> {
        let limits = self.db.limits();
        let others = match self.ctl.replicated {
            Some(r) => r.other_bytes,
            None => self
                .db
                .shared
                .tenant_bytes_except(&self.db.tenant, &self.db.name),
        };
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

/// Turns a rusqlite error into ours, using what the callbacks recorded.
pub(super) fn map_error(e: rusqlite::Error, st: &State, limits: &Limits, db: &str) -> Error {
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
        Some(Interrupt::Instructions) => {
            return Error::LimitExceeded {
                kind: "instructions",
                limit: st.instructions.map_or(0, |(_, limit)| limit),
            };
        }
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
