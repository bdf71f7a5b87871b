//! The SQL authorizer, judged by what the data shows rather than by its own log. Each input is
//! a set of grants (per action and table) and a few statements, assembled from SQL fragments
//! (joins, subqueries, CTEs, views, a trigger an owner installed, `sqlite_*` tables, PRAGMAs,
//! ATTACH, functions) or arbitrary text, run as a component would run them against a scratch
//! database whose tables each hold a secret canary row. A statement may only ever:
//! - return a table's canary when reading that table was granted (through a view: reading the
//!   view's table), and
//! - change a table's rows or schema when writing, deleting or creating on it was granted.
//!   The oracle reads every table with an owner's grants after each statement and compares.
//!
//! Refusals are fine; panics are not.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zerodb::{Action, Databases, Limits, StaticGrants, Value};

/// The plain tables; `v7` is a view over `t4`, and an owner's trigger copies inserts into
/// `t5` to `t6`.
const TABLES: &[&str] = &["t1", "t2", "t3", "t4", "t5", "t6"];
const NAMES: &[&str] = &[
    "t1",
    "t2",
    "t3",
    "t4",
    "t5",
    "t6",
    "v7",
    "main.t1",
    "temp.t2",
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_stat1",
    "pragma_table_info('t3')",
    "x",
    "\"t1\"",
    "[t2]",
    "`t3`",
    "T4",
];
const EXPRS: &[&str] = &[
    "a",
    "b",
    "1",
    "'s'",
    "NULL",
    "a + 1",
    "(SELECT b FROM t3 LIMIT 1)",
    "(SELECT b FROM v7)",
    "(SELECT group_concat(b) FROM t2)",
    "printf('%s', b)",
    "hex(b)",
    "zeroblob(10)",
    "randomblob(4)",
    "length(b)",
    "load_extension('x')",
    "readfile('/etc/passwd')",
    "sqlite_version()",
    "(SELECT sql FROM sqlite_master LIMIT 1)",
    "json_extract(b, '$')",
    "count(*)",
    "max(a)",
    "typeof(b)",
    "?",
    ":p",
];
const TEMPLATES: &[&str] = &[
    "SELECT {e}, {e} FROM {n}",
    "SELECT * FROM {n} WHERE a IN (SELECT a FROM {n})",
    "SELECT x.b FROM {n} x JOIN {n} y ON x.a = y.a",
    "WITH c AS (SELECT b FROM {n}) SELECT * FROM c",
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 5) SELECT {e} FROM r",
    "INSERT INTO {n} (a, b) VALUES ({e}, {e})",
    "INSERT INTO {n} (a, b) SELECT a, b FROM {n}",
    "INSERT INTO {n} DEFAULT VALUES",
    "REPLACE INTO {n} (a, b) VALUES (1, {e})",
    "INSERT INTO {n} (a, b) VALUES (1, 'x') ON CONFLICT DO UPDATE SET b = {e}",
    "UPDATE {n} SET b = {e}",
    "UPDATE {n} SET b = (SELECT b FROM {n} LIMIT 1) WHERE a = 1",
    "UPDATE {n} SET b = x.b FROM {n} x WHERE x.a = {n}.a",
    "DELETE FROM {n}",
    "DELETE FROM {n} WHERE a IN (SELECT a FROM {n})",
    "DELETE FROM {n} RETURNING *",
    "UPDATE {n} SET a = a RETURNING b",
    "CREATE TABLE {n} (a INTEGER, b TEXT)",
    "CREATE TABLE IF NOT EXISTS {n} AS SELECT * FROM {n}",
    "CREATE TEMP TABLE {n} (a, b)",
    "CREATE VIEW {n} AS SELECT * FROM {n}",
    "CREATE TEMP VIEW w AS SELECT b FROM {n}",
    "CREATE INDEX i_{i} ON {n}(a)",
    "CREATE TRIGGER g_{i} AFTER INSERT ON {n} BEGIN DELETE FROM {n}; END",
    "CREATE TEMP TRIGGER g_{i} AFTER INSERT ON {n} BEGIN DELETE FROM {n}; END",
    "DROP TABLE {n}",
    "DROP VIEW {n}",
    "DROP INDEX t1a",
    "DROP TRIGGER copy",
    "ALTER TABLE {n} RENAME TO {n}",
    "ALTER TABLE {n} ADD COLUMN c{i} TEXT DEFAULT {e}",
    "ALTER TABLE {n} RENAME COLUMN b TO c",
    "ALTER TABLE {n} DROP COLUMN b",
    "PRAGMA writable_schema = 1",
    "PRAGMA table_info({n})",
    "PRAGMA journal_mode = OFF",
    "PRAGMA foreign_keys = OFF",
    "ATTACH ':memory:' AS m",
    "ATTACH 'x.db' AS {n}",
    "DETACH m",
    "VACUUM",
    "VACUUM INTO 'copy.db'",
    "ANALYZE {n}",
    "REINDEX {n}",
    "SAVEPOINT s",
    "RELEASE s",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT * FROM {n} UNION SELECT * FROM {n}",
    "CREATE VIRTUAL TABLE {n} USING fts5(b)",
    "SELECT * FROM {n}, json_each({e})",
];

struct Scratch {
    dbs: Databases,
    canary: String,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zerocore-fuzz-sql-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = Limits {
            max_statement_time: Duration::from_millis(100),
            ..Limits::default()
        };
        let dbs = Databases::open(&dir, limits).expect("a scratch directory for databases");
        let canary = format!("canary-{:016x}", rand_seed());
        Scratch { dbs, canary }
    })
}

/// A per-process secret, so that statement text cannot spell a canary by chance.
fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

fn statement(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return String::arbitrary(u);
    }
    let template = *u.choose(TEMPLATES)?;
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap_or(0);
        match &rest[start..=end] {
            "{n}" => out.push_str(u.choose(NAMES)?),
            "{e}" => out.push_str(u.choose(EXPRS)?),
            _ => out.push_str(&u.int_in_range(0u8..=9)?.to_string()),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every table's schema and rows, read with an owner's grants, in a stable order.
fn snapshot(db: &zerodb::Database) -> Vec<(String, String)> {
    let owner = StaticGrants::all();
    TABLES
        .iter()
        .map(|t| {
            let schema = db
                .query(
                    &owner,
                    "SELECT sql FROM sqlite_master WHERE name = ?",
                    &[Value::Text((*t).into())],
                )
                .map(|r| format!("{:?}", r.rows))
                .unwrap_or_default();
            let rows = db
                .query(&owner, &format!("SELECT * FROM {t} ORDER BY rowid"), &[])
                .map(|r| format!("{:?}", r.rows))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            (schema, rows)
        })
        .collect()
}

/// Drops whatever earlier inputs left in the scratch database (the connection is reused, so
/// temporary objects and an open transaction survive too).
fn reset(db: &zerodb::Database, owner: &StaticGrants) {
    let _ = db.execute(owner, "ROLLBACK", &[]);
    for (schema, master) in [("main", "sqlite_master"), ("temp", "sqlite_temp_master")] {
        let listed = db.query(
            owner,
            &format!(
                "SELECT type, name FROM {master} WHERE name NOT LIKE 'sqlite_%' AND type != 'index'"
            ),
            &[],
        );
        for row in listed.map(|r| r.rows).unwrap_or_default() {
            if let [Value::Text(kind), Value::Text(name)] = row.as_slice() {
                let quoted = name.replace('"', "\"\"");
                let _ = db.execute(
                    owner,
                    &format!("DROP {kind} IF EXISTS {schema}.\"{quoted}\""),
                    &[],
                );
            }
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let s = scratch();
    let name = format!("f{}", CASE.fetch_add(1, Ordering::Relaxed) % 8);
    let db = s.dbs.database("fuzz", &name).expect("a scratch database");
    let owner = StaticGrants::all();
    reset(&db, &owner);
    for t in TABLES {
        let setup = format!(
            "CREATE TABLE {t} (a INTEGER, b TEXT); INSERT INTO {t} VALUES (1, 'x'), (2, '{}-{t}')",
            s.canary
        );
        for sql in setup.split("; ") {
            db.execute(&owner, sql, &[]).expect("setup");
        }
    }
    for sql in [
        "CREATE VIEW v7 AS SELECT a, b FROM t4",
        "CREATE INDEX t1a ON t1(a)",
        "CREATE TRIGGER copy AFTER INSERT ON t5 BEGIN INSERT INTO t6 (a, b) VALUES (new.a, new.b); END",
    ] {
        db.execute(&owner, sql, &[]).expect("setup");
    }

    let mut grants = StaticGrants::new();
    let mut granted = std::collections::BTreeSet::new();
    for t in TABLES.iter().chain(&["v7"]) {
        for a in Action::ALL {
            if u.ratio(1, 3)? {
                grants.insert(a, &name, t);
                granted.insert((a, (*t).to_owned()));
            }
        }
    }
    let may = |a: Action, t: &str| granted.contains(&(a, t.to_owned()));

    for _ in 0..u.int_in_range(1..=4)? {
        let sql = statement(u)?;
        let params = [Value::Integer(1), Value::Text("p".into())];
        let before = snapshot(&db);
        let result = db.run(&grants, &sql, &params);
        let after = snapshot(&db);
        if let Ok((rows, _)) = &result {
            let text = format!("{:?}", rows.rows);
            for t in TABLES {
                if text.contains(&format!("{}-{t}", s.canary)) {
                    assert!(
                        may(Action::Read, t),
                        "{sql}: returned {t}'s canary without read on {t}"
                    );
                }
            }
        }
        for (i, t) in TABLES.iter().enumerate() {
            if before[i] != after[i] {
                assert!(
                    may(Action::Write, t) || may(Action::Delete, t) || may(Action::Create, t),
                    "{sql}: changed {t} without write, delete or create on it\nbefore {:?}\nafter {:?}",
                    before[i],
                    after[i]
                );
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
