//! Property: under random grants, a statement that succeeds performed only granted actions (as
//! logged by the authorizer), and a statement touching an ungranted table fails.
//!
//! Besides plain tables `t1`..`t3` (which the statements create and drop), the database has
//! `t4`, the view `t7` over `t4`, and `t5` with an admin's triggers copying every insert,
//! update and delete into `t6`: reading the view needs read on `t4`, inserting into or updating
//! `t5` needs write on `t6`, deleting from `t5` needs delete on `t6`. The statements also
//! replace `t1`..`t3` by views over each other or over `t4`..`t7` (`CREATE VIEW` needs create
//! on the view; reading it then needs read on every table under it, views over views
//! included) and drop those views. Creating
//! a trigger needs every right on every table (never granted here), `CREATE TABLE … AS SELECT`
//! is refused, `ANALYZE t` needs read on `t`, and SQLite's own `sqlite_*` tables need a grant of
//! their own to be read or dropped (never granted here), whatever the statement around them.

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use zerodb::{Action, Databases, Error, Limits, StaticGrants};

type Req = BTreeSet<(Action, String)>;

fn t(i: u8) -> String {
    format!("t{i}")
}

fn req(items: &[(Action, u8)]) -> Req {
    items.iter().map(|(a, i)| (*a, t(*i))).collect()
}

/// A statement and the (action, table) pairs it certainly performs.
fn named(items: &[(Action, &str)]) -> Req {
    items.iter().map(|(a, t)| (*a, t.to_string())).collect()
}

fn statement() -> impl Strategy<Value = (String, Req)> {
    let tbl = 1u8..=3;
    (0u8..29, tbl.clone(), 1u8..=7, 0i64..5).prop_map(|(kind, i, j, k)| {
        use Action::*;
        // `j` names any table, view or trigger target (1 to 7); the statements that create,
        // write or drop use `i` (1 to 3) and read `j` only where a missing table is harmless.
        let (ti, tj) = (t(i), t(j));
        match kind {
            25 => (
                format!("CREATE VIEW {ti} AS SELECT a, b FROM {tj}"),
                req(&[(Create, i)]),
            ),
            26 => (format!("DROP VIEW {ti}"), req(&[(Delete, i)])),
            27 => (
                format!("UPDATE t5 SET b = 'u{k}' WHERE a = {k}"),
                req(&[(Write, 5), (Read, 5), (Write, 6)]),
            ),
            28 => (
                format!("DELETE FROM t5 WHERE a = {k}"),
                req(&[(Delete, 5), (Read, 5), (Delete, 6)]),
            ),
            14 => ("SELECT a FROM t7".into(), req(&[(Read, 7), (Read, 4)])),
            15 => (
                format!("SELECT a FROM {ti} WHERE a IN (SELECT a FROM t7)"),
                req(&[(Read, i), (Read, 7), (Read, 4)]),
            ),
            16 => (
                format!("INSERT INTO t5 (a, b) VALUES ({k}, 'x')"),
                req(&[(Write, 5), (Write, 6)]),
            ),
            17 => (
                format!("CREATE TRIGGER tg{k}_{ti} AFTER INSERT ON {ti} BEGIN SELECT 1; END"),
                named(&[(Create, "every table")]),
            ),
            18 => (
                format!("CREATE TABLE c{k} AS SELECT * FROM sqlite_master"),
                named(&[(Read, "sqlite_master")]),
            ),
            19 => (format!("ANALYZE {ti}"), req(&[(Read, i)])),
            20 => (
                format!("INSERT INTO {ti} (a, b) SELECT rootpage, sql FROM sqlite_master"),
                named(&[(Write, &ti), (Read, "sqlite_master")]),
            ),
            21 => (
                "SELECT * FROM sqlite_stat1".into(),
                named(&[(Read, "sqlite_stat1")]),
            ),
            22 => (
                "DROP TABLE sqlite_stat1".into(),
                named(&[(Delete, "sqlite_stat1")]),
            ),
            23 => (
                format!("CREATE TABLE c{k} AS SELECT a, b FROM {ti}"),
                named(&[(Create, "no CREATE TABLE AS")]),
            ),
            24 => (
                format!(
                    "ALTER TABLE {ti} ADD COLUMN c{k} INTEGER NOT NULL DEFAULT 0 CHECK (c{k} >= 0)"
                ),
                req(&[(Create, i)]),
            ),
            0 => (format!("SELECT a, b FROM {ti}"), req(&[(Read, i)])),
            1 => (
                format!("SELECT a FROM {ti} WHERE a > {k}"),
                req(&[(Read, i)]),
            ),
            2 => (
                format!("SELECT x.a, y.b FROM {ti} x JOIN {tj} y ON x.a = y.a"),
                req(&[(Read, i), (Read, j)]),
            ),
            3 => (
                format!("SELECT a FROM {ti} WHERE a IN (SELECT a FROM {tj} WHERE a < {k})"),
                req(&[(Read, i), (Read, j)]),
            ),
            4 => (
                format!("INSERT INTO {ti} (a, b) VALUES ({k}, 'v{k}')"),
                req(&[(Write, i)]),
            ),
            5 => (
                format!("INSERT INTO {ti} (a, b) SELECT a + 10, b FROM {tj}"),
                req(&[(Write, i), (Read, j)]),
            ),
            6 => (
                format!("UPDATE {ti} SET b = 'u' WHERE a = {k}"),
                req(&[(Write, i), (Read, i)]),
            ),
            7 => (format!("UPDATE {ti} SET b = 'u'"), req(&[(Write, i)])),
            8 => (
                format!("UPDATE {ti} SET b = (SELECT max(b) FROM {tj})"),
                req(&[(Write, i), (Read, j)]),
            ),
            9 => (
                format!("DELETE FROM {ti} WHERE a IN (SELECT a FROM {tj})"),
                req(&[(Delete, i), (Read, i), (Read, j)]),
            ),
            10 => (format!("DELETE FROM {ti}"), req(&[(Delete, i)])),
            11 => (
                format!("CREATE TABLE {ti} (a INTEGER, b TEXT)"),
                req(&[(Create, i)]),
            ),
            12 => (format!("DROP TABLE {ti}"), req(&[(Delete, i)])),
            _ => (
                format!("CREATE INDEX ix{k}_{ti} ON {ti}(a)"),
                req(&[(Create, i)]),
            ),
        }
    })
}

static CASE: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn authorizer_enforces_grants(mask in 0u32..(1 << 28), stmts in prop::collection::vec(statement(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let dbs = Databases::open(dir.path(), Limits::default()).unwrap();
        let name = format!("p{}", CASE.fetch_add(1, Ordering::Relaxed));
        let db = dbs.database("prop", &name).unwrap();
        let admin = StaticGrants::all();
        for i in 1..=6 {
            db.execute(&admin, &format!("CREATE TABLE t{i} (a INTEGER, b TEXT)"), &[]).unwrap();
            db.execute(&admin, &format!("INSERT INTO t{i} VALUES (1, 'x'), (2, 'y'), (3, 'z')"), &[]).unwrap();
        }
        db.execute(&admin, "CREATE INDEX t1a ON t1(a)", &[]).unwrap();
        db.execute(&admin, "CREATE VIEW t7 AS SELECT a, b FROM t4", &[]).unwrap();
        db.execute(&admin, "CREATE TRIGGER copy AFTER INSERT ON t5 BEGIN INSERT INTO t6 (a, b) VALUES (new.a, new.b); END", &[]).unwrap();
        db.execute(&admin, "CREATE TRIGGER copy_update AFTER UPDATE ON t5 BEGIN UPDATE t6 SET b = new.b WHERE a = old.a; END", &[]).unwrap();
        db.execute(&admin, "CREATE TRIGGER copy_delete AFTER DELETE ON t5 BEGIN DELETE FROM t6 WHERE a = old.a; END", &[]).unwrap();
        let mut granted: Req = BTreeSet::new();
        let mut g = StaticGrants::new();
        for (ai, a) in Action::ALL.iter().enumerate() {
            for ti in 1..=7u8 {
                if mask & (1 << (ai * 7 + ti as usize - 1)) != 0 {
                    granted.insert((*a, t(ti)));
                    g.insert(*a, &name, &t(ti));
                }
            }
        }
        for (sql, required) in stmts {
            let result = if sql.starts_with("SELECT") {
                db.query(&g, &sql, &[]).map(|_| ())
            } else {
                db.execute(&g, &sql, &[]).map(|_| ())
            };
            let log: Req = db.last_accesses().into_iter().map(|a| (a.action, a.table)).collect();
            match &result {
                Ok(()) => {
                    prop_assert!(log.is_subset(&granted), "{sql}: log {log:?} not within {granted:?}");
                    prop_assert!(required.is_subset(&log), "{sql}: log {log:?} misses {required:?}");
                }
                Err(Error::PermissionDenied { action, table, .. }) => {
                    prop_assert!(!granted.contains(&(*action, table.clone())), "{sql}: denied a granted {action} {table}");
                }
                Err(Error::Refused { what, .. }) => {
                    prop_assert!(
                        what.contains("TRIGGER") || what.contains("AS SELECT"),
                        "{sql}: unexpected refusal {what}"
                    );
                }
                Err(_) => {}
            }
            if !required.is_subset(&granted) {
                prop_assert!(result.is_err(), "{sql}: needs {required:?}, granted {granted:?}, but succeeded");
            }
        }
    }
}
