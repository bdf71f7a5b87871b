//! End-to-end tests of zerodb on a real node: components reach their tenant's databases through
//! `zero:db` (the `dbprobe` test component runs the SQL it is sent), every table action is
//! checked against the component's signed capabilities, limits trip with clear errors, tenants
//! are isolated, `zero db query` works for the owner only, and acknowledged inserts survive a
//! `kill -9`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value as Json, json};
use support::*;
use zero_auth::Keypair;
use zero_client::{Client, Grant};

/// Small database limits so that each one trips quickly.
const DB_LIMITS: &str = r#"
[db]
max_statement = 2000
max_rows = 50
statement_time_ms = 200
max_database_size = "256 KiB"
"#;

/// A node (development mode, the small [`DB_LIMITS`]) with tenants `acme` and `beta`.
fn db_world(name: &str) -> World {
    world_with(name, DB_LIMITS)
}

impl World {
    /// Signs dbprobe with `cmd`/`policy` for tenant `t` and deploys it at `/route`.
    fn deploy_probe(&self, t: &Tenant, tenant: &str, app: &str, cmd: &str, policy: &str) {
        let bytes = std::fs::read(guest_wasm("dbprobe")).unwrap();
        let grant = Grant {
            command: cmd.into(),
            policy: zero_client::parse_policy(policy).unwrap(),
            expires_in: None,
        };
        let signed = zero_client::sign_component(&bytes, &t.owner, &t.chain, &grant).unwrap();
        self.owner(t)
            .deploy(tenant, app, &[format!("/{app}")], &[], &signed)
            .unwrap();
    }

    /// Owner SQL through the management API.
    fn sql(&self, t: &Tenant, tenant: &str, db: &str, sql: &str, params: &[Json]) -> Json {
        self.owner(t)
            .db_query(tenant, db, sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }
}

/// Sends a dbprobe request to `/app` and returns its JSON answer.
fn probe(node: &NodeProc, app: &str, req: Json) -> Json {
    let resp = match agent()
        .post(&node.url(&format!("/{app}")))
        .send_string(&req.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            panic!(
                "/{app}: status {code}: {}",
                r.into_string().unwrap_or_default()
            )
        }
        Err(e) => panic!("/{app}: {e}"),
    };
    serde_json::from_str(&resp.into_string().unwrap()).unwrap()
}

fn query(db: &str, sql: &str, params: Json) -> Json {
    json!({"db": db, "op": "query", "sql": sql, "params": params})
}

fn execute(db: &str, sql: &str, params: Json) -> Json {
    json!({"db": db, "op": "execute", "sql": sql, "params": params})
}

/// Asserts a permission-denied error naming `action` and `table`.
fn assert_denied(answer: &Json, action: &str, table: &str) {
    let e = &answer["error"];
    assert_eq!(e["kind"], "permission-denied", "{answer}");
    assert_eq!(e["action"], action, "{answer}");
    assert_eq!(e["table"], table, "{answer}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(table) && msg.contains(&format!("/db/{action}")),
        "{msg}"
    );
}

fn rows(answer: &Json) -> &Vec<Json> {
    answer["ok"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("expected rows: {answer}"))
}

#[test]
fn each_table_action_is_granted_per_table_and_refused_without_the_grant() {
    let w = db_world("db-actions");
    let (acme, node) = (&w.acme, &w.node);
    w.sql(
        acme,
        "acme",
        "app",
        "CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)",
        &[],
    );
    w.sql(
        acme,
        "acme",
        "app",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        &[],
    );
    w.sql(
        acme,
        "acme",
        "app",
        "INSERT INTO todos (title) VALUES ('milk')",
        &[],
    );
    w.sql(
        acme,
        "acme",
        "app",
        "INSERT INTO users (name) VALUES ('ann')",
        &[],
    );

    let on = |table: &str| format!(r#"[["==", ".db", "app"], ["==", ".table", "{table}"]]"#);
    w.deploy_probe(acme, "acme", "reader", "/db/read", &on("todos"));
    w.deploy_probe(acme, "acme", "writer", "/db/write", &on("todos"));
    w.deploy_probe(acme, "acme", "creator", "/db/create", &on("todos2"));
    w.deploy_probe(acme, "acme", "deleter", "/db/delete", &on("todos"));

    // Read: granted on todos, refused on users, and a join across both is refused.
    let a = probe(
        node,
        "reader",
        query("app", "SELECT title FROM todos", json!([])),
    );
    assert_eq!(rows(&a), &vec![json!(["milk"])], "{a}");
    let a = probe(
        node,
        "reader",
        query("app", "SELECT name FROM users", json!([])),
    );
    assert_denied(&a, "read", "users");
    let join = "SELECT t.title, u.name FROM todos t JOIN users u ON u.id = t.id";
    assert_denied(
        &probe(node, "reader", query("app", join, json!([]))),
        "read",
        "users",
    );
    // A subquery does not launder the access either.
    let sub = "SELECT title FROM todos WHERE id IN (SELECT id FROM users)";
    assert_denied(
        &probe(node, "reader", query("app", sub, json!([]))),
        "read",
        "users",
    );
    // The reader may not write.
    let ins = "INSERT INTO todos (title) VALUES ('x')";
    assert_denied(
        &probe(node, "reader", execute("app", ins, json!([]))),
        "write",
        "todos",
    );

    // Write: granted on todos, refused on users.
    let a = probe(
        node,
        "writer",
        execute(
            "app",
            "INSERT INTO todos (title) VALUES (?)",
            json!(["eggs"]),
        ),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    assert_eq!(a["ok"]["last_insert_id"], 2, "{a}");
    let a = probe(
        node,
        "writer",
        execute("app", "INSERT INTO users (name) VALUES ('bob')", json!([])),
    );
    assert_denied(&a, "write", "users");

    // Create: granted for todos2, refused for users2.
    let a = probe(
        node,
        "creator",
        execute("app", "CREATE TABLE todos2 (x)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    let a = probe(
        node,
        "creator",
        execute("app", "CREATE TABLE users2 (x)", json!([])),
    );
    assert_denied(&a, "create", "users2");

    // Delete: granted on todos, refused on users.
    let a = probe(
        node,
        "deleter",
        execute("app", "DELETE FROM users", json!([])),
    );
    assert_denied(&a, "delete", "users");
    let a = probe(
        node,
        "deleter",
        execute("app", "DELETE FROM todos", json!([])),
    );
    assert_eq!(a["ok"]["rows_affected"], 2, "{a}");

    // Nothing refused had an effect.
    let users = w.sql(acme, "acme", "app", "SELECT name FROM users", &[]);
    assert_eq!(users["rows"], json!([["ann"]]));
    let tables = w.sql(
        acme,
        "acme",
        "app",
        "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name",
        &[],
    );
    assert_eq!(tables["rows"], json!([["todos"], ["todos2"], ["users"]]));
}

#[test]
fn unsigned_components_are_denied_and_parameters_are_inert() {
    let w = db_world("db-unsigned");
    let (acme, node) = (&w.acme, &w.node);
    // Unsigned: no token, no database.
    let bytes = std::fs::read(guest_wasm("dbprobe")).unwrap();
    w.owner(acme)
        .deploy("acme", "unsigned", &["/unsigned".into()], &[], &bytes)
        .unwrap();
    let a = probe(node, "unsigned", query("app", "SELECT 1", json!([])));
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    assert_eq!(a["error"]["database"], "app", "{a}");
    assert!(a["error"]["action"].is_null(), "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no capability token"),
        "{a}"
    );
    // Signed for something else than /db: still no database.
    w.deploy_probe(acme, "acme", "fsonly", "/fs/read", "[]");
    let a = probe(node, "fsonly", query("app", "SELECT 1", json!([])));
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");

    // Injection through a parameter is stored as text, nothing runs.
    w.deploy_probe(acme, "acme", "rw", "/db", r#"[["==", ".db", "app"]]"#);
    let a = probe(
        node,
        "rw",
        execute("app", "CREATE TABLE notes (body TEXT)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    let evil = "x'); DROP TABLE notes; --";
    let a = probe(
        node,
        "rw",
        execute("app", "INSERT INTO notes VALUES (?)", json!([evil])),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    let a = probe(
        node,
        "rw",
        query(
            "app",
            "SELECT body FROM notes WHERE body = ?",
            json!([evil]),
        ),
    );
    assert_eq!(rows(&a), &vec![json!([evil])], "{a}");
    // Two statements in one call are refused, not run.
    let a = probe(
        node,
        "rw",
        execute("app", "DELETE FROM notes; DROP TABLE notes", json!([])),
    );
    assert_eq!(a["error"]["kind"], "refused", "{a}");
    let a = probe(
        node,
        "rw",
        query("app", "SELECT count(*) FROM notes", json!([])),
    );
    assert_eq!(rows(&a), &vec![json!([1])], "{a}");
    // Typed values round-trip.
    let a = probe(
        node,
        "rw",
        query(
            "app",
            "SELECT ?, ?, ?, ?, ?",
            json!([null, 42, 1.5, "t", {"blob": [0, 255]}]),
        ),
    );
    assert_eq!(
        rows(&a),
        &vec![json!([null, 42, 1.5, "t", {"blob": [0, 255]}])],
        "{a}"
    );
    // A syntax error carries SQLite's message and the offset.
    let a = probe(
        node,
        "rw",
        query("app", "SELECT * FROM notes WHERE", json!([])),
    );
    assert_eq!(a["error"]["kind"], "syntax", "{a}");
    // A bad database name is invalid.
    let a = probe(node, "rw", query("../acme", "SELECT 1", json!([])));
    assert_eq!(a["error"]["kind"], "invalid", "{a}");
}

#[test]
fn limits_trip_with_clear_errors_and_batches_are_all_or_nothing() {
    let w = db_world("db-limits");
    let (acme, node) = (&w.acme, &w.node);
    w.deploy_probe(acme, "acme", "lim", "/db", r#"[["==", ".db", "lim"]]"#);
    let limit = |a: &Json, kind: &str| {
        assert_eq!(a["error"]["kind"], "limit-exceeded", "{a}");
        assert_eq!(a["error"]["limit_kind"], kind, "{a}");
        assert!(
            a["error"]["message"].as_str().unwrap().contains("limit"),
            "{a}"
        );
    };
    // Rows (limit 50).
    let many =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100) SELECT x FROM c";
    let a = probe(node, "lim", query("lim", many, json!([])));
    limit(&a, "rows");
    assert_eq!(a["error"]["limit"], 50, "{a}");
    // Statement length (limit 2000 bytes).
    let long = format!("SELECT 1 {}", " ".repeat(2100));
    limit(
        &probe(node, "lim", query("lim", &long, json!([]))),
        "statement-length",
    );
    // Time (limit 200 ms).
    let slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    limit(&probe(node, "lim", query("lim", slow, json!([]))), "time");
    // Size (limit 256 KiB).
    let a = probe(
        node,
        "lim",
        execute("lim", "CREATE TABLE big (b BLOB)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    limit(
        &probe(
            node,
            "lim",
            execute(
                "lim",
                "INSERT INTO big VALUES (zeroblob(400000))",
                json!([]),
            ),
        ),
        "size",
    );

    // A batch is one transaction: a failing statement undoes the ones before it.
    let a = probe(
        node,
        "lim",
        execute(
            "lim",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
            json!([]),
        ),
    );
    assert!(a["ok"].is_object(), "{a}");
    let batch = |statements: Json| json!({"db": "lim", "op": "batch", "statements": statements});
    let a = probe(
        node,
        "lim",
        batch(json!([
            {"sql": "INSERT INTO t (v) VALUES (?)", "params": ["one"]},
            {"sql": "INSERT INTO t (v) VALUES (?)", "params": [null]},
        ])),
    );
    assert_eq!(a["error"]["kind"], "constraint", "{a}");
    let a = probe(
        node,
        "lim",
        query("lim", "SELECT count(*) FROM t", json!([])),
    );
    assert_eq!(rows(&a), &vec![json!([0])], "{a}");
    let a = probe(
        node,
        "lim",
        batch(json!([
            {"sql": "INSERT INTO t (v) VALUES (?)", "params": ["one"]},
            {"sql": "INSERT INTO t (v) VALUES (?)", "params": ["two"]},
        ])),
    );
    assert_eq!(a["ok"].as_array().map(Vec::len), Some(2), "{a}");
    let a = probe(
        node,
        "lim",
        query("lim", "SELECT v FROM t ORDER BY id", json!([])),
    );
    assert_eq!(rows(&a), &vec![json!(["one"]), json!(["two"])], "{a}");
}

#[test]
fn tenants_are_isolated_and_zero_db_query_serves_only_the_owner() {
    let w = db_world("db-tenants");
    let node = &w.node;
    let grant = r#"[["==", ".db", "shared"]]"#;
    w.deploy_probe(&w.acme, "acme", "acme-probe", "/db", grant);
    w.deploy_probe(&w.beta, "beta", "beta-probe", "/db", grant);
    for (app, who) in [("acme-probe", "acme"), ("beta-probe", "beta")] {
        let a = probe(
            node,
            app,
            execute("shared", "CREATE TABLE who (name TEXT)", json!([])),
        );
        assert!(a["ok"].is_object(), "{a}");
        let a = probe(
            node,
            app,
            execute("shared", "INSERT INTO who VALUES (?)", json!([who])),
        );
        assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    }
    for (app, who) in [("acme-probe", "acme"), ("beta-probe", "beta")] {
        let a = probe(
            node,
            app,
            query("shared", "SELECT name FROM who", json!([])),
        );
        assert_eq!(rows(&a), &vec![json!([who])], "{a}");
    }

    // The CLI: key and chain files on disk, like an owner would have them.
    let key = |t: &Tenant, name: &str| {
        let k = w.dir.join(format!("{name}.key"));
        t.owner.save(&k).unwrap();
        let c = w.dir.join(format!("{name}.ucan"));
        zero_client::write_chain(&c, &t.chain).unwrap();
        (k.display().to_string(), c.display().to_string())
    };
    let (acme_key, acme_chain) = key(&w.acme, "acme");
    let (beta_key, beta_chain) = key(&w.beta, "beta");
    let cli = |target: &str, sql: &str, extra: &[&str], k: &str, c: &str| {
        let mut args = vec!["db", "query", target, sql];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--key", k, "--proof", c, "--api", &w.api]);
        zero(&args)
    };
    // A migration, a parameterized write and a table.
    let (code, out, err) = cli(
        "acme/todo",
        "CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
        &[],
        &acme_key,
        &acme_chain,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "0 rows affected");
    let (code, out, err) = cli(
        "acme/todo",
        "INSERT INTO todos (title) VALUES (?), (?)",
        &["--param", "\"milk\"", "--param", "\"bread and butter\""],
        &acme_key,
        &acme_chain,
    );
    assert_eq!((code, out.trim()), (0, "2 rows affected"), "{err}");
    let (code, out, err) = cli(
        "acme/todo",
        "SELECT id, title FROM todos ORDER BY id",
        &[],
        &acme_key,
        &acme_chain,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "id | title\n---+-----------------\n1  | milk\n2  | bread and butter\n(2 rows)"
    );
    let (code, out, _) = cli(
        "acme/todo",
        "SELECT count(*) AS n FROM todos",
        &["--json"],
        &acme_key,
        &acme_chain,
    );
    assert_eq!(code, 0);
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"], json!([[2]]));
    // The component's data of the same tenant is reachable by its owner, not by beta's owner.
    let (code, out, err) = cli(
        "acme/shared",
        "SELECT name FROM who",
        &[],
        &acme_key,
        &acme_chain,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme") && !out.contains("beta"), "{out}");
    let (code, _, err) = cli(
        "acme/todo",
        "SELECT * FROM todos",
        &[],
        &beta_key,
        &beta_chain,
    );
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("MatchError"), "{err}");
    assert!(!err.contains("milk"), "{err}");
    // Errors from SQL are explained.
    let (code, _, err) = cli(
        "acme/todo",
        "SELECT * FROM nope",
        &[],
        &acme_key,
        &acme_chain,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no such table: nope"), "{err}");
}

/// The management API's refusal of `r`, as (status, error name, message).
fn api_refusal(r: anyhow::Result<Json>) -> (u16, String, String) {
    let e = r.expect_err("expected a refusal");
    let e = e.downcast::<zero_client::ApiError>().unwrap();
    (e.status, e.error.clone(), e.message.clone())
}

#[test]
fn a_delegation_scoped_to_a_table_works_over_the_management_api() {
    let w = db_world("db-mgmt-grants");
    let owner = |sql: &str| w.sql(&w.acme, "acme", "app", sql, &[]);
    owner("CREATE TABLE todos (id INTEGER PRIMARY KEY, t TEXT)");
    owner("CREATE TABLE keys (id INTEGER PRIMARY KEY, k TEXT)");
    owner("INSERT INTO keys (k) VALUES ('s3cret')");
    owner("CREATE VIEW key_view AS SELECT k FROM keys");
    // The owner delegates every /db command on `todos` of `app` to a teammate, exactly as
    // the README shows.
    let teammate = Keypair::generate().unwrap();
    let delegate = |to: &Keypair, policy: &str| {
        let chain = zero_client::extend_chain(
            &w.acme.owner,
            &w.acme.chain,
            to.did(),
            &Grant {
                command: "/db".into(),
                policy: zero_client::parse_policy(policy).unwrap(),
                expires_in: None,
            },
        )
        .unwrap();
        Client::new(&w.api, copy_key(to), chain)
    };
    let mut c = delegate(
        &teammate,
        r#"[["==", ".db", "app"], ["==", ".table", "todos"]]"#,
    );
    let mut q = |sql: &str| c.db_query("acme", "app", sql, &[]);
    let v = q("INSERT INTO todos (t) VALUES ('milk'), ('eggs')").unwrap();
    assert_eq!(v["rows_affected"], 2, "{v}");
    let v = q("SELECT t FROM todos ORDER BY id").unwrap();
    assert_eq!(v["rows"], json!([["milk"], ["eggs"]]));
    let v = q("DELETE FROM todos WHERE t = 'eggs'").unwrap();
    assert_eq!(v["rows_affected"], 1, "{v}");
    // Every way of touching `keys` is refused, naming it.
    for (sql, action) in [
        ("SELECT k FROM keys", "read"),
        (
            "SELECT t, k FROM todos JOIN keys ON keys.id = todos.id",
            "read",
        ),
        (
            "SELECT t FROM todos WHERE id IN (SELECT id FROM keys)",
            "read",
        ),
        ("INSERT INTO todos (t) SELECT k FROM keys", "read"),
        ("DELETE FROM keys", "delete"),
        ("SELECT * FROM key_view", "read"),
    ] {
        let (status, name, msg) = api_refusal(q(sql));
        assert_eq!(
            (status, name.as_str()),
            (403, "PermissionDenied"),
            "{sql}: {msg}"
        );
        let table = if sql.contains("key_view") && !msg.contains("`keys`") {
            "key_view"
        } else {
            "keys"
        };
        assert!(
            msg.contains(&format!("{action} on table `{table}`")),
            "{sql}: {msg}"
        );
    }
    // A trigger the owner put on todos that touches keys: the teammate's insert fires it, and
    // is refused naming keys (the body runs with the rights of whoever fires it).
    owner(
        "CREATE TRIGGER audit AFTER INSERT ON todos BEGIN UPDATE keys SET k = k WHERE id = new.id; END",
    );
    let (status, _, msg) = api_refusal(q("INSERT INTO todos (t) VALUES ('x')"));
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("on table `keys`"), "{msg}");
    // The teammate cannot plant a trigger of their own.
    let (status, name, msg) = api_refusal(q(
        "CREATE TRIGGER mine AFTER DELETE ON todos BEGIN SELECT 1; END",
    ));
    assert_eq!((status, name.as_str()), (400, "Refused"), "{msg}");
    assert!(msg.contains("every right on every table"), "{msg}");
    let v = owner("SELECT t FROM todos");
    assert_eq!(v["rows"], json!([["milk"]]));
    let v = owner("SELECT k FROM keys");
    assert_eq!(v["rows"], json!([["s3cret"]]));

    // A delegate scoped to another database gets nothing here, not even `SELECT 1`, and
    // creates no database by asking.
    let other = Keypair::generate().unwrap();
    let mut o = delegate(&other, r#"[["==", ".db", "other"]]"#);
    for (db, sql) in [
        ("app", "SELECT t FROM todos"),
        ("app", "SELECT 1"),
        ("fresh", "SELECT 1"),
    ] {
        let (status, name, msg) = api_refusal(o.db_query("acme", db, sql, &[]));
        assert_eq!((status, name.as_str()), (403, "MatchError"), "{msg}");
        assert!(msg.contains(".db") && msg.contains("other"), "{msg}");
        assert!(!msg.contains("milk"), "{msg}");
    }
    assert!(!w.data.join("db/acme/fresh.sqlite").exists());
    // A read-only delegation (`/db/read` on todos) reads, and its writes are refused by name.
    let reader = Keypair::generate().unwrap();
    let chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        reader.did(),
        &Grant {
            command: "/db/read".into(),
            policy: zero_client::parse_policy(r#"[["==", ".table", "todos"]]"#).unwrap(),
            expires_in: None,
        },
    )
    .unwrap();
    let mut r = Client::new(&w.api, reader, chain);
    let v = r
        .db_query("acme", "app", "SELECT t FROM todos", &[])
        .unwrap();
    assert_eq!(v["rows"], json!([["milk"]]));
    let (status, _, msg) = api_refusal(r.db_query("acme", "app", "DELETE FROM todos", &[]));
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("delete on table `todos`"), "{msg}");
    let v = o.db_query("acme", "other", "SELECT 1 AS one", &[]).unwrap();
    assert_eq!(v["rows"], json!([[1]]));
}

#[test]
fn every_acknowledged_insert_survives_kill_9() {
    // Default database limits: the check at the end reads every row.
    let w = world_with("db-kill9", "");
    w.deploy_probe(
        &w.acme,
        "acme",
        "ins",
        "/db",
        r#"[["==", ".db", "durable"]]"#,
    );
    let a = probe(
        &w.node,
        "ins",
        execute("durable", "CREATE TABLE t (n INTEGER NOT NULL)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    let url = w.node.url("/ins");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let mut acked = Vec::new();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = execute("durable", "INSERT INTO t VALUES (?)", json!([n]));
                match agent.post(&url).send_string(&req.to_string()) {
                    Ok(r) => {
                        let v: Json = serde_json::from_str(&r.into_string().unwrap_or_default())
                            .unwrap_or_default();
                        if v["ok"]["rows_affected"] == 1 {
                            acked.push(n);
                        }
                    }
                    Err(_) => break,
                }
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let World {
        dir,
        data,
        mut node,
        acme,
        ..
    } = w;
    node.child.kill().unwrap(); // SIGKILL
    let _ = node.child.wait();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 5,
        "too few inserts before the kill: {}",
        acked.len()
    );
    eprintln!("{} inserts acknowledged before SIGKILL", acked.len());
    drop(node);

    let node = World::config(&data).start(&dir);
    let api = format!("http://{}", node.admin);
    let mut owner = Client::new(&api, copy_key(&acme.owner), acme.chain.clone());
    let v = owner
        .db_query("acme", "durable", "SELECT n FROM t ORDER BY n", &[])
        .unwrap();
    let present: std::collections::HashSet<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // The restored app still serves.
    let a = probe(
        &node,
        "ins",
        query("durable", "SELECT count(*) FROM t", json!([])),
    );
    assert!(
        rows(&a)[0][0].as_i64().unwrap() >= acked.len() as i64,
        "{a}"
    );
}

#[test]
fn todo_example_signed_as_its_readme_says_serves_its_json_api() {
    let w = db_world("db-todo");
    let owner_key = w.dir.join("owner.key");
    w.acme.owner.save(&owner_key).unwrap();
    let chain = w.dir.join("acme.ucan");
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();
    let signed = w.dir.join("todo.zero.wasm");
    let (code, out, err) = zero(&[
        "sign",
        guest_wasm("todo").to_str().unwrap(),
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--cmd",
        "/db",
        "--policy",
        r#"[["==", ".db", "todo"]]"#,
        "-o",
        signed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = zero(&[
        "deploy",
        signed.to_str().unwrap(),
        "--tenant",
        "acme",
        "--route",
        "/todos",
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--api",
        &w.api,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let url = |p: &str| w.node.url(p);
    let post = |body: &str| match agent().post(&url("/todos")).send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let r = get(&url("/todos"));
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let (status, body) = post(r#"{"title": "milk"}"#);
    assert_eq!((status, body.as_str()), (201, r#"{"id":1}"#));
    let (status, body) = post(r#"{"title": "eggs"}"#);
    assert_eq!((status, body.as_str()), (201, r#"{"id":2}"#));
    let (status, body) = post(r#"{"nope": 1}"#);
    assert_eq!(status, 400, "{body}");
    let r = get(&url("/todos/1"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"done":false,"id":1,"title":"milk"}"#)
    );
    let r = get(&url("/todos"));
    let list: Json = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{}", r.body);
    let del = |p: &str| match agent().delete(&url(p)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(del("/todos/1"), 204);
    assert_eq!(del("/todos/1"), 404);
    assert_eq!(get(&url("/todos/1")).status, 404);
    assert_eq!(get(&url("/todos/x")).status, 400);
    // The owner sees the same data through the management API.
    let v = w.sql(&w.acme, "acme", "todo", "SELECT title FROM todos", &[]);
    assert_eq!(v["rows"], json!([["eggs"]]));

    // Another tenant's copy, signed for the `todos` table only: it works on its own data and
    // sees none of acme's; signed for reading only, its writes are refused with the reason.
    let sign_beta = |cmd: &str| {
        let g = Grant {
            command: cmd.into(),
            policy: zero_client::parse_policy(
                r#"[["==", ".db", "todo"], ["==", ".table", "todos"]]"#,
            )
            .unwrap(),
            expires_in: None,
        };
        let bytes = std::fs::read(guest_wasm("todo")).unwrap();
        zero_client::sign_component(&bytes, &w.beta.owner, &w.beta.chain, &g).unwrap()
    };
    w.owner(&w.beta)
        .deploy(
            "beta",
            "todo",
            &["/beta/todos".into()],
            &[],
            &sign_beta("/db"),
        )
        .unwrap();
    let r = get(&url("/beta/todos"));
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    w.owner(&w.beta)
        .deploy(
            "beta",
            "todo-ro",
            &["/ro/todos".into()],
            &[],
            &sign_beta("/db/read"),
        )
        .unwrap();
    let r = get(&url("/ro/todos"));
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let r = match agent()
        .post(&url("/ro/todos"))
        .send_string(r#"{"title": "x"}"#)
    {
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(r.0, 403, "{}", r.1);
    assert!(r.1.contains("write on table `todos`"), "{}", r.1);
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Asserts a management refusal `LimitExceeded` naming `kind`.
fn assert_api_limit(r: anyhow::Result<Json>, kind: &str) {
    let (status, name, msg) = api_refusal(r);
    assert_eq!((status, name.as_str()), (413, "LimitExceeded"), "{msg}");
    assert!(msg.contains(&format!("{kind} limit is")), "{msg}");
}

#[test]
fn sql_cannot_make_the_node_allocate_beyond_its_bounds() {
    // Default value size (4 MiB); results up to 8 MiB. Thirteen owner connections at once
    // from one address (127.0.0.1), past the management API's default per-client cap of 8.
    let w = world_with(
        "db-memory",
        "[db]\nstatement_time_ms = 5000\nmax_result_size = \"8 MiB\"\nmax_database_size = \"16 MiB\"\n\
         [admin]\nmax_connections_per_client = 32\n",
    );
    w.deploy_probe(&w.acme, "acme", "mem", "/db", r#"[["==", ".db", "x"]]"#);
    w.sql(&w.beta, "beta", "b", "CREATE TABLE t (v TEXT)", &[]);
    w.sql(&w.beta, "beta", "b", "INSERT INTO t VALUES ('ok')", &[]);
    // Warm up both paths so that the baseline includes the node's steady state.
    w.sql(&w.acme, "acme", "x", "SELECT 1", &[]);
    probe(&w.node, "mem", query("x", "SELECT 1", json!([])));
    let before = peak_rss_kib(w.node.child.id());

    let attacks = [
        "SELECT zeroblob(300000000)",
        "SELECT randomblob(300000000)",
        "SELECT printf('%.*c', 300000000, 'x')",
        "SELECT length(replace(hex(zeroblob(2000)), '0', hex(zeroblob(2000))))",
        "WITH RECURSIVE c(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM c WHERE length(s) < 300000000) SELECT length(s) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT length(group_concat(printf('%0300d', x))) FROM c",
    ];
    // Two of each at once through the management API, while another tenant is served.
    std::thread::scope(|scope| {
        let mut running = Vec::new();
        for sql in attacks {
            for _ in 0..2 {
                let mut c = w.owner(&w.acme);
                running.push(scope.spawn(move || (sql, c.db_query("acme", "x", sql, &[]))));
            }
        }
        let v = w.sql(&w.beta, "beta", "b", "SELECT v FROM t", &[]);
        assert_eq!(v["rows"], json!([["ok"]]));
        for h in running {
            let (sql, r) = h.join().unwrap();
            let (status, name, msg) = api_refusal(r);
            assert_eq!(
                (status, name.as_str()),
                (413, "LimitExceeded"),
                "{sql}: {msg}"
            );
            assert!(
                msg.contains("value_size limit is 4194304") && msg.contains("string or blob"),
                "{sql}: {msg}"
            );
        }
    });
    // And through a component, twice at once.
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    probe(
                        &w.node,
                        "mem",
                        query("x", "SELECT zeroblob(300000000)", json!([])),
                    )
                })
            })
            .collect();
        for h in running {
            let a = h.join().unwrap();
            assert_eq!(a["error"]["kind"], "limit-exceeded", "{a}");
            assert_eq!(a["error"]["limit_kind"], "value-size", "{a}");
            assert_eq!(a["error"]["limit"], 4 << 20, "{a}");
        }
    });
    // Many values, each under the value limit, cannot add up to a huge result either.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 40) SELECT zeroblob(1000000) FROM c";
    assert_api_limit(
        w.owner(&w.acme).db_query("acme", "x", many, &[]),
        "result_size",
    );
    let a = probe(&w.node, "mem", query("x", many, json!([])));
    assert_eq!(a["error"]["limit_kind"], "result-size", "{a}");
    assert!(
        a["error"]["message"].as_str().unwrap().contains("8388608"),
        "{a}"
    );

    let grown = peak_rss_kib(w.node.child.id()).saturating_sub(before);
    eprintln!("VmHWM before the attacks: {before} KiB, grown by {grown} KiB");
    assert!(
        grown < 256 * 1024,
        "the node's peak memory grew by {grown} KiB"
    );

    // Legitimate large values under the limits keep working.
    let v = w.sql(
        &w.acme,
        "acme",
        "x",
        "SELECT length(zeroblob(4000000)) AS n",
        &[],
    );
    assert_eq!(v["rows"], json!([[4000000]]));
    let v = w.sql(&w.acme, "acme", "x", "SELECT zeroblob(3) AS b", &[]);
    assert_eq!(v["rows"], json!([[{"hex": "000000"}]]));
    let a = probe(
        &w.node,
        "mem",
        execute("x", "CREATE TABLE big (b BLOB)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    let a = probe(
        &w.node,
        "mem",
        execute("x", "INSERT INTO big VALUES (zeroblob(2000000))", json!([])),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    let a = probe(
        &w.node,
        "mem",
        query("x", "SELECT length(b) FROM big", json!([])),
    );
    assert_eq!(rows(&a), &vec![json!([2000000])], "{a}");
    let v = w.sql(&w.beta, "beta", "b", "SELECT v FROM t", &[]);
    assert_eq!(v["rows"], json!([["ok"]]));
}

/// Open file descriptors of process `pid` on SQLite database files of `tenant`.
fn sqlite_fds(pid: u32, tenant: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains(&format!("/db/{tenant}/")) && p.ends_with(".sqlite")
        })
        .count()
}

#[test]
fn databases_are_granted_before_creation_counted_against_quotas_and_pooled() {
    let w = world_with(
        "db-count",
        "[db]\nmax_database_size = \"256 KiB\"\ntenant_quota = \"384 KiB\"\nmax_databases_per_tenant = 3\nmax_open_databases = 4\nmax_open_databases_per_tenant = 2\n",
    );
    let node = &w.node;
    // A component limited to `todo` cannot create (or open) any other database.
    w.deploy_probe(&w.acme, "acme", "todo", "/db", r#"[["==", ".db", "todo"]]"#);
    let a = probe(node, "todo", query("other", "SELECT 1", json!([])));
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    assert_eq!(a["error"]["database"], "other", "{a}");
    let msg = a["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("database `other`") && msg.contains(".db"),
        "{msg}"
    );
    assert!(!w.data.join("db/acme/other.sqlite").exists());
    let a = probe(node, "todo", query("todo", "SELECT 1", json!([])));
    assert_eq!(rows(&a), &vec![json!([1])], "{a}");

    // A component allowed any database name is held to the tenant's count…
    w.deploy_probe(&w.acme, "acme", "any", "/db", r#"[["like", ".db", "d*"]]"#);
    let a = probe(
        node,
        "any",
        json!({"op": "open-many", "dbs": ["d1", "d2", "d3"]}),
    );
    assert_eq!(a["error"]["kind"], "limit-exceeded", "{a}");
    assert_eq!(a["error"]["limit_kind"], "databases", "{a}");
    assert_eq!(a["error"]["limit"], 3, "{a}");
    assert_eq!(
        a["opened"], 2,
        "todo, d1 and d2 are the tenant's three databases: {a}"
    );
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("databases limit is 3"),
        "{a}"
    );
    // …while another tenant still creates its own.
    let v = w.sql(&w.beta, "beta", "d3", "SELECT 1 AS one", &[]);
    assert_eq!(v["rows"], json!([[1]]));

    // …and to one quota over all its databases (384 KiB, each database up to 256 KiB).
    for db in ["d1", "d2"] {
        let a = probe(
            node,
            "any",
            execute(db, "CREATE TABLE b (x BLOB)", json!([])),
        );
        assert!(a["ok"].is_object(), "{a}");
    }
    let a = probe(
        node,
        "any",
        execute("d1", "INSERT INTO b VALUES (zeroblob(200000))", json!([])),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    let a = probe(
        node,
        "any",
        execute("d2", "INSERT INTO b VALUES (zeroblob(200000))", json!([])),
    );
    assert_eq!(a["error"]["limit_kind"], "quota", "{a}");
    assert_eq!(a["error"]["limit"], 384 << 10, "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota limit is 393216"),
        "{a}"
    );
    let a = probe(
        node,
        "any",
        execute("d2", "INSERT INTO b VALUES (zeroblob(1000))", json!([])),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "small writes still fit: {a}");

    // Connections are pooled: acme used three databases, at most two stay open; each one
    // reopens on demand.
    for db in ["todo", "d1", "d2", "todo", "d1"] {
        let a = probe(node, "any", query(db, "SELECT 1", json!([])));
        if db != "todo" {
            assert_eq!(rows(&a), &vec![json!([1])], "{a}");
        }
        let fds = sqlite_fds(node.child.id(), "acme");
        assert!(fds <= 2, "{fds} acme database files open after {db}");
    }
    let v = w.sql(&w.acme, "acme", "todo", "SELECT 1 AS one", &[]);
    assert_eq!(v["rows"], json!([[1]]));

    // One request cannot hold more than 16 database handles.
    let dbs: Vec<String> = (0..17).map(|_| "d1".to_string()).collect();
    let a = probe(node, "any", json!({"op": "open-many", "dbs": dbs}));
    assert_eq!(a["error"]["limit_kind"], "open-databases", "{a}");
    assert_eq!(a["opened"], 16, "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("handles limit is 16"),
        "{a}"
    );
}

#[test]
fn statements_are_bounded_by_the_request_cpu_budget_and_batches_by_count() {
    let w = world_with(
        "db-budget",
        "[db]\nstatement_time_ms = 5000\nmax_batch_statements = 5\n",
    );
    w.deploy_probe(&w.acme, "acme", "cpu", "/db", r#"[["==", ".db", "b"]]"#);
    // TEST_LIMITS give a request 300 ms of CPU: a statement allowed 5 s stops when the
    // request's budget is spent, and the request ends as a CPU-limit fault.
    let slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let started = std::time::Instant::now();
    let (status, body) = match agent()
        .post(&w.node.url("/cpu"))
        .send_string(&query("b", slow, json!([])).to_string())
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let took = started.elapsed();
    eprintln!("the slow statement's request ended with {status} after {took:?}: {body}");
    if status == 200 {
        let a: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(a["error"]["limit_kind"], "time", "{a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cpu limit is"),
            "{a}"
        );
    } else {
        assert!(status >= 500, "{status} {body}");
        w.node
            .wait_log("a CPU-limit fault", |v| v.to_string().contains("cpu_limit"));
    }
    assert!(took < Duration::from_secs(3), "the statement ran {took:?}");
    // The database is free again at once, for the same tenant and the owner.
    let v = w.sql(&w.acme, "acme", "b", "SELECT 1 AS one", &[]);
    assert_eq!(v["rows"], json!([[1]]));
    let a = probe(&w.node, "cpu", query("b", "SELECT 2", json!([])));
    assert_eq!(rows(&a), &vec![json!([2])], "{a}");

    // A batch has at most 5 statements.
    let a = probe(
        &w.node,
        "cpu",
        execute("b", "CREATE TABLE t (n)", json!([])),
    );
    assert!(a["ok"].is_object(), "{a}");
    let batch = |n: usize| {
        let statements: Vec<Json> = (0..n)
            .map(|i| json!({"sql": "INSERT INTO t VALUES (?)", "params": [i]}))
            .collect();
        json!({"db": "b", "op": "batch", "statements": statements})
    };
    let a = probe(&w.node, "cpu", batch(6));
    assert_eq!(a["error"]["limit_kind"], "statements", "{a}");
    assert_eq!(a["error"]["limit"], 5, "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fewer statements per batch"),
        "{a}"
    );
    let a = probe(&w.node, "cpu", batch(5));
    assert_eq!(a["ok"].as_array().map(Vec::len), Some(5), "{a}");
    let v = w.sql(&w.acme, "acme", "b", "SELECT count(*) FROM t", &[]);
    assert_eq!(v["rows"], json!([[5]]));
}

#[test]
fn components_cannot_plant_triggers_or_copy_sqlite_tables() {
    let w = db_world("db-authorizer");
    let owner = |sql: &str| w.sql(&w.acme, "acme", "app", sql, &[]);
    owner("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)");
    owner("CREATE TABLE keys (id INTEGER PRIMARY KEY, k TEXT)");
    owner("CREATE INDEX keys_k ON keys (k)");
    owner("INSERT INTO keys (k) VALUES ('s3cret')");
    owner("ANALYZE");
    w.deploy_probe(
        &w.acme,
        "acme",
        "narrow",
        "/db",
        r#"[["==", ".db", "app"], ["==", ".table", "todos"]]"#,
    );
    let node = &w.node;
    // A trigger planted on todos would later run with the rights of whoever inserts.
    let a = probe(
        node,
        "narrow",
        execute(
            "app",
            "CREATE TRIGGER steal AFTER INSERT ON todos BEGIN INSERT INTO todos (title) SELECT k FROM keys; END",
            json!([]),
        ),
    );
    assert_eq!(a["error"]["kind"], "refused", "{a}");
    let msg = a["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("CREATE TRIGGER on table `todos`")
            && msg.contains("every right on every table"),
        "{msg}"
    );
    // SQLite's tables (schema, statistics with sampled rows) are not copied out either.
    for sql in [
        "INSERT INTO todos (title) SELECT sql FROM sqlite_master",
        "INSERT INTO todos (title) SELECT sample FROM sqlite_stat4",
    ] {
        let a = probe(node, "narrow", execute("app", sql, json!([])));
        assert_eq!(a["error"]["kind"], "permission-denied", "{sql}: {a}");
        assert!(
            a["error"]["table"].as_str().unwrap().starts_with("sqlite_"),
            "{sql}: {a}"
        );
    }
    let a = probe(
        node,
        "narrow",
        execute(
            "app",
            "CREATE TABLE todos2 AS SELECT * FROM sqlite_stat4",
            json!([]),
        ),
    );
    assert_eq!(a["error"]["kind"], "refused", "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("INSERT INTO"),
        "{a}"
    );
    // ANALYZE reads every table it summarises.
    assert_denied(
        &probe(node, "narrow", execute("app", "ANALYZE", json!([]))),
        "read",
        "keys",
    );
    // The legitimate uses keep working.
    let a = probe(node, "narrow", execute("app", "ANALYZE todos", json!([])));
    assert!(a["ok"].is_object(), "{a}");
    let a = probe(
        node,
        "narrow",
        execute(
            "app",
            "INSERT INTO todos (title) VALUES ('milk')",
            json!([]),
        ),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    owner(
        "CREATE TRIGGER stamp AFTER INSERT ON todos BEGIN UPDATE todos SET title = title || '!' WHERE id = new.id; END",
    );
    let a = probe(
        node,
        "narrow",
        execute(
            "app",
            "INSERT INTO todos (title) VALUES ('eggs')",
            json!([]),
        ),
    );
    assert_eq!(a["ok"]["rows_affected"], 1, "{a}");
    let v = owner("SELECT title FROM todos ORDER BY id");
    assert_eq!(v["rows"], json!([["milk"], ["eggs!"]]));
}

#[test]
fn a_statement_stops_when_its_management_request_ends() {
    // The management request times out after 1 s; the statement would be allowed 8 s.
    let w = world_with(
        "db-cancel",
        "[admin]\nrequest_timeout_ms = 1000\n[db]\nstatement_time_ms = 8000\n",
    );
    w.sql(&w.acme, "acme", "c", "CREATE TABLE t (n)", &[]);
    let slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let (status, name, msg) = api_refusal(w.owner(&w.acme).db_query("acme", "c", slow, &[]));
    assert_eq!((status, name.as_str()), (408, "Timeout"), "{msg}");
    // The statement was cancelled with its request: the database (one connection) is free at
    // once, instead of being held for the rest of the 8 s.
    let started = std::time::Instant::now();
    let v = w.sql(&w.acme, "acme", "c", "SELECT count(*) AS n FROM t", &[]);
    assert_eq!(v["rows"], json!([[0]]));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "the next query waited {waited:?}"
    );
}

#[test]
fn the_owner_lists_their_databases_without_opening_any_and_others_may_not() {
    let w = db_world("db-list");
    let mut owner = w.owner(&w.acme);
    assert_eq!(
        owner.list_databases("acme").unwrap()["databases"],
        json!([])
    );
    owner
        .db_query(
            "acme",
            "notes",
            "CREATE TABLE n (id INTEGER PRIMARY KEY)",
            &[],
        )
        .unwrap();
    owner
        .db_query(
            "acme",
            "app",
            "CREATE TABLE t (id INTEGER PRIMARY KEY)",
            &[],
        )
        .unwrap();
    let v = owner.list_databases("acme").unwrap();
    assert_eq!(v["databases"], json!(["app", "notes"]), "{v}");
    // Listing creates nothing: beta's list stays empty, and so does its directory.
    let mut beta = w.owner(&w.beta);
    assert_eq!(beta.list_databases("beta").unwrap()["databases"], json!([]));
    assert_eq!(beta.list_databases("beta").unwrap()["databases"], json!([]));
    // Another tenant's owner cannot list acme's, and the refusal names none of them.
    let e = refused(beta.list_databases("acme"));
    assert_eq!(e.status, 403, "{e}");
    assert!(!e.message.contains("notes"), "{e}");
    // A delegate scoped to one database cannot list them all; one given `/db/list` can.
    let delegate = |policy: &str, cmd: &str| {
        let to = Keypair::generate().unwrap();
        let chain = zero_client::extend_chain(
            &w.acme.owner,
            &w.acme.chain,
            to.did(),
            &Grant {
                command: cmd.into(),
                policy: zero_client::parse_policy(policy).unwrap(),
                expires_in: None,
            },
        )
        .unwrap();
        Client::new(&w.api, copy_key(&to), chain)
    };
    let e = refused(delegate(r#"[["==", ".db", "app"]]"#, "/db").list_databases("acme"));
    assert_eq!(e.status, 403, "{e}");
    let e = refused(delegate("[]", "/db/read").list_databases("acme"));
    assert_eq!(e.status, 403, "{e}");
    let v = delegate("[]", "/db/list").list_databases("acme").unwrap();
    assert_eq!(v["databases"], json!(["app", "notes"]), "{v}");
    // The CLI prints the same.
    let dir = test_dir("db-list-cli");
    let key = dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let chain = dir.join("acme.ucan");
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();
    let (code, out, err) = zero(&[
        "db",
        "list",
        "acme",
        "--key",
        key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--api",
        &w.api,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"notes\""), "{out}");
}
