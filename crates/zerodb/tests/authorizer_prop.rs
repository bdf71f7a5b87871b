//! Property: under random grants, a statement that succeeds performed only granted actions (as
//! logged by the authorizer), and a statement touching an ungranted table fails.

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
fn statement() -> impl Strategy<Value = (String, Req)> {
    let tbl = 1u8..=3;
    (0u8..14, tbl.clone(), tbl, 0i64..5).prop_map(|(kind, i, j, k)| {
        use Action::*;
        let (ti, tj) = (t(i), t(j));
        match kind {
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
    fn authorizer_enforces_grants(mask in 0u16..4096, stmts in prop::collection::vec(statement(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let dbs = Databases::open(dir.path(), Limits::default()).unwrap();
        let name = format!("p{}", CASE.fetch_add(1, Ordering::Relaxed));
        let db = dbs.database("prop", &name).unwrap();
        let admin = StaticGrants::all();
        for i in 1..=3 {
            db.execute(&admin, &format!("CREATE TABLE t{i} (a INTEGER, b TEXT)"), &[]).unwrap();
            db.execute(&admin, &format!("INSERT INTO t{i} VALUES (1, 'x'), (2, 'y'), (3, 'z')"), &[]).unwrap();
        }
        let mut granted: Req = BTreeSet::new();
        let mut g = StaticGrants::new();
        for (ai, a) in Action::ALL.iter().enumerate() {
            for ti in 1..=3u8 {
                if mask & (1 << (ai * 3 + ti as usize - 1)) != 0 {
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
                Err(_) => {}
            }
            if !required.is_subset(&granted) {
                prop_assert!(result.is_err(), "{sql}: needs {required:?}, granted {granted:?}, but succeeded");
            }
        }
    }
}
