//! Opening a connection: SQLite limits, pragmas, the deterministic SQL functions, the
//! authorizer and the progress handler that enforces deadlines and cancellation.

use super::*;

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
pub(super) fn set_limits(conn: &Connection, limits: &Limits) -> rusqlite::Result<()> {
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

pub(super) fn open_connection(
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
            // The statement's turn first (without the state locked: it may wait for a turn);
            // time spent waiting for it moves the deadline.
            let turn = lock(&st).turn.clone();
            let waited = turn.map_or(Duration::ZERO, |t| {
                t.lock().unwrap_or_else(|p| p.into_inner()).checkpoint()
            });
            let mut st = lock(&st);
            if !waited.is_zero()
                && let Some((d, _)) = st.deadline.as_mut()
            {
                *d += waited;
            }
            if st
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                st.interrupted = Some(Interrupt::Cancelled);
                return true;
            }
            if let Some((left, _)) = st.instructions.as_mut() {
                // A replicated write: a count, the same on every replica, never the clock.
                if *left == 0 {
                    st.interrupted = Some(Interrupt::Instructions);
                    return true;
                }
                *left -= 1;
                return false;
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
