mod common;

use common::{admin, grants, setup};
use std::time::Duration;
use zerodb::{Access, Action, Databases, Error, Limits, Value};

fn schema(db: &zerodb::Database) {
    let a = admin();
    for sql in [
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE todos (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), title TEXT)",
        "INSERT INTO users (id, name) VALUES (1, 'ann'), (2, 'bob')",
        "INSERT INTO todos (user_id, title) VALUES (1, 'a'), (2, 'b')",
    ] {
        db.execute(&a, sql, &[]).unwrap();
    }
}

fn denied(r: Result<impl std::fmt::Debug, Error>, action: Action, table: &str) {
    match r {
        Err(Error::PermissionDenied {
            action: a,
            table: t,
            db,
        }) => {
            assert_eq!((a, t.as_str(), db.as_str()), (action, table, "app"));
        }
        other => panic!("expected PermissionDenied {action} {table}, got {other:?}"),
    }
}

fn refused(r: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match r {
        Err(e @ Error::Refused { .. }) => {
            let s = e.to_string();
            assert!(s.to_lowercase().contains(&needle.to_lowercase()), "{s}");
        }
        other => panic!("expected Refused {needle}, got {other:?}"),
    }
}

#[test]
fn read_granted_per_table() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let g = grants(&[(Action::Read, "todos")]);
    let r = db
        .query(&g, "SELECT title FROM todos ORDER BY id", &[])
        .unwrap();
    assert_eq!(r.columns, vec!["title"]);
    assert_eq!(
        r.rows,
        vec![vec![Value::Text("a".into())], vec![Value::Text("b".into())]]
    );
    denied(
        db.query(&g, "SELECT name FROM users", &[]),
        Action::Read,
        "users",
    );
    denied(
        db.query(&g, "SELECT count(*) FROM users", &[]),
        Action::Read,
        "users",
    );
    let e = db
        .query(&g, "SELECT * FROM users", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("users") && e.contains("/db/read"), "{e}");
}

#[test]
fn write_create_delete_paired() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    // todos.user_id REFERENCES users(id): the foreign-key check reads users, and SQLite's
    // authorizer reports it, so inserting a todo also needs read on users.
    denied(
        db.execute(
            &grants(&[(Action::Write, "todos")]),
            "INSERT INTO todos (user_id, title) VALUES (1, 'x')",
            &[],
        ),
        Action::Read,
        "users",
    );
    let w = grants(&[(Action::Write, "todos"), (Action::Read, "users")]);
    db.execute(
        &w,
        "INSERT INTO todos (user_id, title) VALUES (1, 'x')",
        &[],
    )
    .unwrap();
    denied(
        db.execute(&w, "INSERT INTO users (name) VALUES ('x')", &[]),
        Action::Write,
        "users",
    );
    // UPDATE with a WHERE needs read too.
    denied(
        db.execute(&w, "UPDATE todos SET title = 'y' WHERE id = 1", &[]),
        Action::Read,
        "todos",
    );
    let wr = grants(&[
        (Action::Write, "todos"),
        (Action::Read, "todos"),
        (Action::Read, "users"),
    ]);
    assert_eq!(
        db.execute(&wr, "UPDATE todos SET title = 'y' WHERE id = 1", &[])
            .unwrap()
            .rows_affected,
        1
    );

    let d = grants(&[(Action::Delete, "todos"), (Action::Read, "users")]);
    assert_eq!(
        db.execute(&d, "DELETE FROM todos", &[])
            .unwrap()
            .rows_affected,
        3
    );
    denied(
        db.execute(&d, "DELETE FROM users", &[]),
        Action::Delete,
        "users",
    );
    denied(
        db.execute(&w, "DELETE FROM todos", &[]),
        Action::Delete,
        "todos",
    );

    let c = grants(&[(Action::Create, "notes")]);
    db.execute(
        &c,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        &[],
    )
    .unwrap();
    denied(
        db.execute(&c, "CREATE TABLE other (id INTEGER)", &[]),
        Action::Create,
        "other",
    );
    denied(
        db.execute(&c, "CREATE INDEX users_name ON users(name)", &[]),
        Action::Create,
        "users",
    );
    db.execute(&c, "CREATE INDEX notes_body ON notes(body)", &[])
        .unwrap();
    denied(
        db.execute(&c, "ALTER TABLE users ADD COLUMN x TEXT", &[]),
        Action::Create,
        "users",
    );
    db.execute(&c, "ALTER TABLE notes ADD COLUMN x TEXT", &[])
        .unwrap();
    denied(
        db.execute(&c, "DROP TABLE notes", &[]),
        Action::Delete,
        "notes",
    );
    let dn = grants(&[(Action::Delete, "notes")]);
    denied(
        db.execute(&dn, "DROP TABLE users", &[]),
        Action::Delete,
        "users",
    );
    db.execute(&dn, "DROP TABLE notes", &[]).unwrap();
    // Internal sqlite_* bookkeeping is not in the caller-visible log.
    assert_eq!(
        db.last_accesses(),
        vec![Access {
            action: Action::Delete,
            table: "notes".into()
        }]
    );
}

#[test]
fn joins_subqueries_views_triggers_cannot_reach_forbidden_tables() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let g = grants(&[(Action::Read, "todos")]);
    denied(
        db.query(
            &g,
            "SELECT t.title, u.name FROM todos t JOIN users u ON u.id = t.user_id",
            &[],
        ),
        Action::Read,
        "users",
    );
    denied(
        db.query(
            &g,
            "SELECT title FROM todos WHERE user_id IN (SELECT id FROM users)",
            &[],
        ),
        Action::Read,
        "users",
    );
    denied(
        db.query(
            &g,
            "WITH x AS (SELECT name FROM users) SELECT * FROM x",
            &[],
        ),
        Action::Read,
        "users",
    );
    // A view over users, created by someone with create rights: reading it needs read on users,
    // because SQLite's authorizer reports the reads of the underlying table.
    db.execute(
        &admin(),
        "CREATE VIEW user_names AS SELECT name FROM users",
        &[],
    )
    .unwrap();
    let v = grants(&[(Action::Read, "user_names")]);
    denied(
        db.query(&v, "SELECT * FROM user_names", &[]),
        Action::Read,
        "users",
    );
    let vu = grants(&[(Action::Read, "user_names"), (Action::Read, "users")]);
    assert_eq!(
        db.query(&vu, "SELECT * FROM user_names", &[])
            .unwrap()
            .rows
            .len(),
        2
    );
    // A trigger on todos that writes users: inserting into todos needs write on users too.
    db.execute(
        &admin(),
        "CREATE TRIGGER todo_audit AFTER INSERT ON todos BEGIN UPDATE users SET name = name || '!' WHERE id = new.user_id; END",
        &[],
    )
    .unwrap();
    let w = grants(&[(Action::Write, "todos"), (Action::Read, "users")]);
    let r = db.execute(
        &w,
        "INSERT INTO todos (user_id, title) VALUES (1, 'z')",
        &[],
    );
    assert!(
        matches!(r, Err(Error::PermissionDenied { ref table, .. }) if table == "users"),
        "{r:?}"
    );
    // Nothing was written.
    assert_eq!(
        db.query(&admin(), "SELECT count(*) FROM todos", &[])
            .unwrap()
            .rows[0][0],
        Value::Integer(2)
    );
    // Creating a trigger needs every right on every table, since its body runs later with the
    // rights of whoever fires it: even every action on both tables is not enough.
    let mut c = zerodb::StaticGrants::new();
    for a in Action::ALL {
        c.insert(a, "*", "todos");
        c.insert(a, "*", "users");
    }
    let r = db.execute(
        &c,
        "CREATE TRIGGER t2 AFTER DELETE ON todos BEGIN SELECT 1; END",
        &[],
    );
    assert!(
        matches!(&r, Err(Error::Refused { what, why }) if what.contains("CREATE TRIGGER on table `todos`") && why.contains("every right on every table")),
        "{r:?}"
    );
    let r = db.execute(&c, "DROP TRIGGER todo_audit", &[]);
    assert!(
        matches!(&r, Err(Error::Refused { what, .. }) if what.contains("DROP TRIGGER")),
        "{r:?}"
    );
    db.execute(
        &admin(),
        "CREATE TRIGGER t2 AFTER DELETE ON todos BEGIN SELECT 1; END",
        &[],
    )
    .unwrap();
    // SQLite's tables are reachable only with their own grant, also inside schema statements.
    let r = db.execute(&c, "CREATE TABLE copy AS SELECT * FROM sqlite_master", &[]);
    assert!(
        matches!(&r, Err(Error::Refused { what, .. }) if what.contains("AS SELECT")),
        "{r:?}"
    );
    denied(
        db.execute(
            &c,
            "INSERT INTO users (name) SELECT sql FROM sqlite_master",
            &[],
        ),
        Action::Read,
        "sqlite_master",
    );
    // ANALYZE summarises rows (samples included) into sqlite_stat*: it reads every table.
    let only_todos = grants(&[(Action::Read, "todos")]);
    denied(
        db.execute(&only_todos, "ANALYZE", &[]),
        Action::Read,
        "users",
    );
    db.execute(&admin(), "ANALYZE", &[]).unwrap();
    denied(
        db.query(&c, "SELECT * FROM sqlite_stat1", &[]),
        Action::Read,
        "sqlite_stat1",
    );
    denied(
        db.execute(&c, "DROP TABLE sqlite_stat1", &[]),
        Action::Delete,
        "sqlite_stat1",
    );
    db.execute(&c, "ANALYZE todos", &[]).unwrap();
    // Schema changes SQLite checks with its own queries keep working for a table's grantee.
    db.execute(
        &c,
        "ALTER TABLE todos ADD COLUMN z INTEGER NOT NULL DEFAULT 0 CHECK (z >= 0)",
        &[],
    )
    .unwrap();
    db.execute(&c, "CREATE INDEX todos_z ON todos (z)", &[])
        .unwrap();
    db.execute(&c, "DROP INDEX todos_z", &[]).unwrap();
    db.execute(&c, "ALTER TABLE users RENAME COLUMN name TO full_name", &[])
        .unwrap();
    // sqlite_schema is not readable without a grant.
    denied(
        db.query(&g, "SELECT sql FROM sqlite_schema", &[]),
        Action::Read,
        "sqlite_master",
    );
}

#[test]
fn parameters_are_inert() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let g = grants(&[
        (Action::Write, "todos"),
        (Action::Read, "todos"),
        (Action::Read, "users"),
    ]);
    let evil = "x'); DROP TABLE users; --";
    let r = db
        .execute(
            &g,
            "INSERT INTO todos (user_id, title) VALUES (?1, ?2)",
            &[Value::Integer(1), Value::Text(evil.into())],
        )
        .unwrap();
    assert_eq!(r.rows_affected, 1);
    let q = db
        .query(
            &g,
            "SELECT title FROM todos WHERE id = ?1",
            &[Value::Integer(r.last_insert_id)],
        )
        .unwrap();
    assert_eq!(q.rows[0][0], Value::Text(evil.into()));
    let q = db
        .query(
            &g,
            "SELECT title FROM todos WHERE title = ?1",
            &[Value::Text("' OR 1=1 --".into())],
        )
        .unwrap();
    assert!(q.rows.is_empty());
    // users still there
    assert_eq!(
        db.query(&admin(), "SELECT count(*) FROM users", &[])
            .unwrap()
            .rows[0][0],
        Value::Integer(2)
    );
    // Typed values round-trip.
    db.execute(&admin(), "CREATE TABLE v (a, b, c, d, e)", &[])
        .unwrap();
    let vals = vec![
        Value::Null,
        Value::Integer(-7),
        Value::Real(1.5),
        Value::Text("é".into()),
        Value::Blob(vec![0, 255]),
    ];
    db.execute(&admin(), "INSERT INTO v VALUES (?, ?, ?, ?, ?)", &vals)
        .unwrap();
    assert_eq!(
        db.query(&admin(), "SELECT * FROM v", &[]).unwrap().rows,
        vec![vals]
    );
    // Wrong parameter count is a clear error.
    let e = db.query(&admin(), "SELECT ?1", &[]).unwrap_err();
    assert!(e.to_string().contains("parameter"), "{e}");
}

#[test]
fn refused_features() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let a = admin();
    refused(
        db.execute(&a, "ATTACH DATABASE '/tmp/x.sqlite' AS x", &[]),
        "ATTACH",
    );
    refused(db.execute(&a, "DETACH DATABASE main", &[]), "DETACH");
    refused(
        db.execute(&a, "PRAGMA journal_mode = DELETE", &[]),
        "PRAGMA journal_mode",
    );
    refused(
        db.execute(&a, "PRAGMA writable_schema = ON", &[]),
        "PRAGMA writable_schema",
    );
    refused(
        db.execute(&a, "PRAGMA user_version = 3", &[]),
        "PRAGMA user_version",
    );
    refused(
        db.query(&a, "SELECT load_extension('/tmp/evil.so')", &[]),
        "load_extension",
    );
    refused(db.execute(&a, "BEGIN", &[]), "BEGIN");
    refused(db.execute(&a, "CREATE TEMP TABLE tt (a)", &[]), "TEMP");
    refused(
        db.query(&a, "SELECT * FROM pragma_journal_mode", &[]),
        "PRAGMA",
    );
    refused(
        db.execute(&a, "SELECT 1; SELECT 2", &[]),
        "multiple statements",
    );
    // Allowed read-only pragmas, table_info needs read on the table.
    assert_eq!(
        db.query(&a, "PRAGMA user_version", &[]).unwrap().rows[0][0],
        Value::Integer(0)
    );
    let g = grants(&[(Action::Read, "todos")]);
    assert_eq!(
        db.query(&g, "PRAGMA table_info(todos)", &[])
            .unwrap()
            .rows
            .len(),
        3
    );
    denied(
        db.query(&g, "PRAGMA table_info(users)", &[]),
        Action::Read,
        "users",
    );
    // journal mode is still WAL.
    let mode: String = rusqlite_mode(db.path());
    assert_eq!(mode, "wal");
}

fn rusqlite_mode(path: &std::path::Path) -> String {
    // Read the WAL flag from the header: bytes 18 and 19 are 2 in WAL mode.
    let bytes = std::fs::read(path).unwrap();
    if bytes[18] == 2 && bytes[19] == 2 {
        "wal".into()
    } else {
        "other".into()
    }
}

#[test]
fn nondeterministic_functions_refused_in_writes() {
    let (_d, _dbs, db) = setup(Limits::default());
    let a = admin();
    db.execute(&a, "CREATE TABLE t (x)", &[]).unwrap();
    for sql in [
        "INSERT INTO t VALUES (random())",
        "INSERT INTO t VALUES (randomblob(4))",
        "INSERT INTO t VALUES (datetime('now'))",
        "INSERT INTO t VALUES (datetime('NOW', '+1 day'))",
        "INSERT INTO t VALUES (date())",
        "INSERT INTO t VALUES (strftime('%s'))",
        "INSERT INTO t VALUES (unixepoch())",
        "INSERT INTO t VALUES (julianday('2024-01-01', 'localtime'))",
        "INSERT INTO t VALUES (CURRENT_TIMESTAMP)",
        "UPDATE t SET x = abs(random())",
        "DELETE FROM t WHERE x < julianday('now')",
    ] {
        // DELETE with no rows would not evaluate its WHERE; make sure there is a row.
        db.execute(&a, "INSERT INTO t VALUES (1)", &[]).unwrap();
        let r = db.execute(&a, sql, &[]);
        refused(r, "in a statement that writes");
    }
    // Through a parameter and through a column default.
    refused(
        db.execute(
            &a,
            "INSERT INTO t VALUES (datetime(?1))",
            &[Value::Text("now".into())],
        ),
        "datetime()",
    );
    db.execute(
        &a,
        "CREATE TABLE d (x, at TEXT DEFAULT CURRENT_TIMESTAMP)",
        &[],
    )
    .unwrap();
    refused(
        db.execute(&a, "INSERT INTO d (x) VALUES (1)", &[]),
        "current_timestamp()",
    );
    let e = db
        .execute(&a, "INSERT INTO t VALUES (random())", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("pass it as a parameter"), "{e}");
    // Deterministic date arithmetic is fine in writes; everything is fine in reads.
    db.execute(
        &a,
        "INSERT INTO t VALUES (datetime('2024-01-01 00:00:00', '+1 day'))",
        &[],
    )
    .unwrap();
    let r = db
        .query(&a, "SELECT x FROM t WHERE x LIKE '2024%'", &[])
        .unwrap();
    assert_eq!(
        r.rows,
        vec![vec![Value::Text("2024-01-02 00:00:00".into())]]
    );
    let r = db
        .query(
            &a,
            "SELECT random(), datetime('now'), CURRENT_TIMESTAMP, length(randomblob(3))",
            &[],
        )
        .unwrap();
    assert!(matches!(r.rows[0][0], Value::Integer(_)));
    assert!(matches!(&r.rows[0][1], Value::Text(s) if s.len() == 19));
    assert_eq!(r.rows[0][3], Value::Integer(3));
}

#[test]
fn errors_say_what_happened() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let a = admin();
    match db.query(&a, "SELECT * FRM users", &[]) {
        Err(Error::Syntax { message, offset }) => {
            assert!(message.contains("syntax error"), "{message}");
            assert_eq!(offset, Some(9));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.query(&a, "SELECT * FROM nope", &[]),
        Err(Error::Syntax { .. })
    ));
    match db.execute(&a, "INSERT INTO users (id, name) VALUES (3, 'ann')", &[]) {
        Err(Error::Constraint { message }) => assert!(message.contains("users.name"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Foreign keys are on.
    assert!(matches!(
        db.execute(
            &a,
            "INSERT INTO todos (user_id, title) VALUES (99, 'x')",
            &[]
        ),
        Err(Error::Constraint { .. })
    ));
}

#[test]
fn limits_trip_with_clear_errors() {
    let limits = Limits {
        max_statement_bytes: 200,
        max_rows: 5,
        max_statement_time: Duration::from_millis(200),
        max_database_bytes: 64 * 1024,
        ..Limits::default()
    };
    let (_d, _dbs, db) = setup(limits);
    let a = admin();
    db.execute(&a, "CREATE TABLE t (x)", &[]).unwrap();
    let long = format!("SELECT '{}'", "x".repeat(300));
    let e = db.query(&a, &long, &[]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "statement_length",
                limit: 200
            }
        ),
        "{e:?}"
    );

    for i in 0..10 {
        db.execute(&a, "INSERT INTO t VALUES (?1)", &[Value::Integer(i)])
            .unwrap();
    }
    assert_eq!(
        db.query(&a, "SELECT x FROM t LIMIT 5", &[])
            .unwrap()
            .rows
            .len(),
        5
    );
    let e = db.query(&a, "SELECT x FROM t", &[]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "rows",
                limit: 5
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("LIMIT"), "{e}");

    let started = std::time::Instant::now();
    let e = db
        .query(&a, "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c", &[])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "time",
                limit: 200
            }
        ),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let e = db
        .execute(&a, "INSERT INTO t SELECT zeroblob(1000) FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) SELECT n FROM c)", &[])
        .unwrap_err();
    assert!(
        matches!(e, Error::LimitExceeded { kind: "size", .. }),
        "{e:?}"
    );
    // The database still works after each limit.
    assert_eq!(
        db.query(&a, "SELECT count(*) FROM t", &[]).unwrap().rows[0][0],
        Value::Integer(10)
    );
}

#[test]
fn transactions_commit_or_roll_back() {
    let (_d, _dbs, db) = setup(Limits::default());
    schema(&db);
    let g = grants(&[
        (Action::Write, "todos"),
        (Action::Read, "todos"),
        (Action::Read, "users"),
    ]);
    let n = db
        .transaction(&g, |tx| {
            tx.execute("INSERT INTO todos (user_id, title) VALUES (1, 'p')", &[])?;
            tx.execute("INSERT INTO todos (user_id, title) VALUES (1, 'q')", &[])?;
            Ok(tx.query("SELECT count(*) FROM todos", &[])?.rows[0][0].clone())
        })
        .unwrap();
    assert_eq!(n, Value::Integer(4));
    // A denied statement rolls the whole transaction back.
    let r = db.transaction(&g, |tx| {
        tx.execute("INSERT INTO todos (user_id, title) VALUES (1, 'r')", &[])?;
        tx.execute("INSERT INTO users (name) VALUES ('eve')", &[])?;
        Ok(())
    });
    denied(r, Action::Write, "users");
    assert_eq!(
        db.query(&g, "SELECT count(*) FROM todos", &[])
            .unwrap()
            .rows[0][0],
        Value::Integer(4)
    );
    // batch: all or nothing.
    let r = db.batch(
        &admin(),
        &[
            ("INSERT INTO users (id, name) VALUES (10, 'x')", vec![]),
            ("INSERT INTO users (id, name) VALUES (11, 'x')", vec![]),
        ],
    );
    assert!(matches!(r, Err(Error::Constraint { .. })), "{r:?}");
    assert_eq!(
        db.query(&admin(), "SELECT count(*) FROM users", &[])
            .unwrap()
            .rows[0][0],
        Value::Integer(2)
    );
    let r = db
        .batch(
            &admin(),
            &[(
                "INSERT INTO users (id, name) VALUES (?1, ?2)",
                vec![Value::Integer(10), Value::Text("x".into())],
            )],
        )
        .unwrap();
    assert_eq!(r[0].last_insert_id, 10);
    // A panic inside the closure rolls back and leaves the database usable.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = db.transaction(&admin(), |tx| {
            tx.execute("DELETE FROM todos", &[])?;
            panic!("boom");
            #[allow(unreachable_code)]
            Ok(())
        });
    }));
    assert!(res.is_err());
    assert_eq!(
        db.query(&g, "SELECT count(*) FROM todos", &[])
            .unwrap()
            .rows[0][0],
        Value::Integer(4)
    );
}

#[test]
fn tenants_are_isolated_and_names_validated() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::open(dir.path(), Limits::default()).unwrap();
    let a = dbs.database("acme", "app").unwrap();
    let b = dbs.database("globex", "app").unwrap();
    assert_ne!(a.path(), b.path());
    assert_eq!(a.path(), dir.path().join("acme").join("app.sqlite"));
    a.execute(&admin(), "CREATE TABLE secret (x)", &[]).unwrap();
    a.execute(&admin(), "INSERT INTO secret VALUES ('acme-only')", &[])
        .unwrap();
    assert!(matches!(
        b.query(&admin(), "SELECT * FROM secret", &[]),
        Err(Error::Syntax { .. })
    ));
    for bad in [
        "",
        "..",
        "../globex",
        "a/b",
        "A",
        "x.sqlite",
        "a b",
        &"x".repeat(64),
        "é",
    ] {
        assert!(
            matches!(dbs.database(bad, "app"), Err(Error::InvalidName(_))),
            "{bad}"
        );
        assert!(
            matches!(dbs.database("acme", bad), Err(Error::InvalidName(_))),
            "{bad}"
        );
    }
    dbs.database("t-1_x", &"y".repeat(63)).unwrap();
    // Same handle for the same name.
    assert!(std::sync::Arc::ptr_eq(
        &a,
        &dbs.database("acme", "app").unwrap()
    ));
    // Reopening from another Databases sees committed data.
    drop(dbs);
    let dbs2 = Databases::open(dir.path(), Limits::default()).unwrap();
    let a2 = dbs2.database("acme", "app").unwrap();
    assert_eq!(
        a2.query(&admin(), "SELECT x FROM secret", &[])
            .unwrap()
            .rows[0][0],
        Value::Text("acme-only".into())
    );
}

#[test]
fn run_returns_rows_and_changes_and_checks_tables_like_query() {
    let (_dir, _dbs, db) = setup(Limits::default());
    schema(&db);
    let a = admin();
    let (rows, exec) = db
        .run(
            &a,
            "INSERT INTO users (name) VALUES (?)",
            &[Value::Text("cy".into())],
        )
        .unwrap();
    assert!(rows.columns.is_empty() && rows.rows.is_empty());
    assert_eq!((exec.rows_affected, exec.last_insert_id), (1, 3));
    let (rows, exec) = db
        .run(
            &a,
            "SELECT name FROM users WHERE id = ?",
            &[Value::Integer(3)],
        )
        .unwrap();
    assert_eq!(rows.columns, vec!["name".to_string()]);
    assert_eq!(rows.rows, vec![vec![Value::Text("cy".into())]]);
    assert_eq!(exec.rows_affected, 0);
    let (rows, exec) = db
        .run(&a, "UPDATE users SET name = upper(name) RETURNING id", &[])
        .unwrap();
    assert_eq!((rows.rows.len(), exec.rows_affected), (3, 3));
    let only_todos = grants(&[(Action::Read, "todos")]);
    denied(
        db.run(&only_todos, "SELECT name FROM users", &[]),
        Action::Read,
        "users",
    );
}

#[test]
fn values_results_and_batches_are_bounded() {
    let limits = Limits {
        max_value_bytes: 64 << 10,
        max_result_bytes: 100 << 10,
        max_batch_statements: 3,
        max_rows: 1000,
        ..Limits::default()
    };
    let (_d, _dbs, db) = setup(limits);
    let a = admin();
    for sql in [
        "SELECT zeroblob(1000000)",
        "SELECT randomblob(1000000)",
        "SELECT printf('%.*c', 1000000, 'x')",
        "WITH RECURSIVE c(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM c) SELECT length(s) FROM c",
    ] {
        let e = db.query(&a, sql, &[]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded {
                    kind: "value_size",
                    limit: 65536
                }
            ),
            "{sql}: {e:?}"
        );
        assert!(e.to_string().contains("string or blob"), "{e}");
    }
    let e = db
        .query(&a, "SELECT ?", &[Value::Blob(vec![0; 100_000])])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "value_size",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        db.query(&a, "SELECT length(zeroblob(60000))", &[])
            .unwrap()
            .rows,
        vec![vec![Value::Integer(60000)]]
    );
    let e = db
        .query(
            &a,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT zeroblob(60000) FROM c",
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "result_size",
                limit: 102400
            }
        ),
        "{e:?}"
    );
    // Many small cells count their overhead too.
    let e = db
        .query(
            &a,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 999) SELECT x, x, x, x FROM c",
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "result_size",
                ..
            }
        ),
        "{e:?}"
    );
    db.execute(&a, "CREATE TABLE t (x)", &[]).unwrap();
    let stmt = |n: i64| ("INSERT INTO t VALUES (?)", vec![Value::Integer(n)]);
    let e = db
        .batch(&a, &[stmt(1), stmt(2), stmt(3), stmt(4)])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "statements",
                limit: 3
            }
        ),
        "{e:?}"
    );
    assert_eq!(db.batch(&a, &[stmt(1), stmt(2), stmt(3)]).unwrap().len(), 3);
}

#[test]
fn a_cancelled_call_stops_its_statement_and_a_budget_shortens_it() {
    let limits = Limits {
        max_statement_time: Duration::from_secs(20),
        ..Limits::default()
    };
    let (_d, _dbs, db) = setup(limits);
    let a = admin();
    let slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let ctl = zerodb::Control::new();
    let started = std::time::Instant::now();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| db.query_with(&ctl, &a, slow, &[]));
        std::thread::sleep(Duration::from_millis(200));
        drop(ctl.cancel_on_drop());
        h.join().unwrap()
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A cancelled call runs nothing more.
    let r = db.execute_with(&ctl, &a, "CREATE TABLE never (x)", &[]);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(db.query(&a, "SELECT * FROM never", &[]).is_err());
    // A budget shorter than the statement limit stops the statement as `cpu`.
    let ctl = zerodb::Control::new().with_budget(Duration::from_millis(100));
    let r = db.query_with(&ctl, &a, slow, &[]);
    assert!(
        matches!(
            r,
            Err(Error::LimitExceeded {
                kind: "cpu",
                limit: 100
            })
        ),
        "{r:?}"
    );
    assert_eq!(db.query(&a, "SELECT 1", &[]).unwrap().rows.len(), 1);
}

#[test]
fn tenants_have_a_database_count_a_quota_and_a_bounded_pool() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_database_bytes: 256 << 10,
        max_tenant_bytes: 400 << 10,
        max_databases_per_tenant: 2,
        max_open_databases: 3,
        max_open_databases_per_tenant: 2,
        ..Limits::default()
    };
    let dbs = Databases::open(dir.path(), limits).unwrap();
    let a = admin();
    let one = dbs.database("t", "one").unwrap();
    let two = dbs.database("t", "two").unwrap();
    let e = dbs.database("t", "three").unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "databases",
                limit: 2
            }
        ),
        "{e:?}"
    );
    assert!(!dbs.exists("t", "three").unwrap());
    for db in [&one, &two] {
        db.execute(&a, "CREATE TABLE b (x)", &[]).unwrap();
    }
    one.execute(&a, "INSERT INTO b VALUES (zeroblob(200000))", &[])
        .unwrap();
    let e = two
        .execute(&a, "INSERT INTO b VALUES (zeroblob(250000))", &[])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                kind: "quota",
                limit: 409600
            }
        ),
        "{e:?}"
    );
    two.execute(&a, "INSERT INTO b VALUES (zeroblob(1000))", &[])
        .unwrap();
    // The pool: two per tenant, three on the node; the least recently used idle one closes.
    let u: Vec<_> = (0..2)
        .map(|i| dbs.database("u", &format!("u{i}")).unwrap())
        .collect();
    assert!(dbs.open_connections() <= 3);
    for db in u.iter().chain([&one, &two]) {
        assert_eq!(db.query(&a, "SELECT 1", &[]).unwrap().rows.len(), 1);
        assert!(dbs.open_connections() <= 3, "{}", dbs.open_connections());
    }
    assert_eq!(
        one.query(&a, "SELECT length(x) FROM b", &[]).unwrap().rows,
        vec![vec![Value::Integer(200000)]]
    );
}

/// `Databases::cached` answers only what `Databases::database` opened before, for that tenant
/// and name only: it never creates a database, nor finds another tenant's one of the same name.
#[test]
fn cached_finds_only_a_database_opened_before_for_the_same_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::open(dir.path(), Limits::default()).unwrap();
    assert!(dbs.cached("acme", "app").is_none());
    assert!(
        !dbs.exists("acme", "app").unwrap(),
        "a lookup creates nothing"
    );
    let opened = dbs.database("acme", "app").unwrap();
    let again = dbs.cached("acme", "app").expect("opened before");
    assert!(std::sync::Arc::ptr_eq(&opened, &again));
    assert!(dbs.cached("evil", "app").is_none(), "another tenant's name");
    assert!(dbs.cached("acme", "other").is_none());
    assert!(dbs.cached("acme", "../acme/app").is_none());
}
