//! End-to-end tests of zerodb on a real node: components reach their tenant's databases through
//! `zero:db` (the `dbprobe` test component runs the SQL it is sent), every table action is
//! checked against the component's signed capabilities, limits trip with clear errors, tenants
//! are isolated, `zero db query` works for the owner only, and acknowledged inserts survive a
//! `kill -9`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value as Json, json};
use support::*;
use zero_auth::{Delegation, Keypair};
use zero_client::{Client, Grant};

/// Small database limits so that each one trips quickly.
const DB_LIMITS: &str = r#"
[db]
max_statement = 2000
max_rows = 50
statement_time_ms = 200
max_database_size = "256 KiB"
"#;

fn node_config(data: &Path, db_limits: &str) -> String {
    format!(
        "[node]\ndata_dir = {:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n{TEST_LIMITS}\n{db_limits}\n",
        data.display().to_string()
    )
}

struct Tenant {
    owner: Keypair,
    chain: Vec<Delegation>,
}

struct World {
    dir: PathBuf,
    data: PathBuf,
    node: NodeProc,
    api: String,
    acme: Tenant,
    beta: Tenant,
}

fn copy_key(k: &Keypair) -> Keypair {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.key");
    k.save(&p).unwrap();
    Keypair::load(&p).unwrap()
}

/// A node (development mode, the small [`DB_LIMITS`]) with tenants `acme` and `beta`.
fn world(name: &str) -> World {
    world_with(name, DB_LIMITS)
}

fn world_with(name: &str, db_limits: &str) -> World {
    let dir = test_dir(name);
    let data = dir.join("data");
    let node = NodeProc::start(&dir, &node_config(&data, db_limits));
    let api = format!("http://{}", node.admin);
    let admin = Keypair::load(data.join("admin.key")).unwrap();
    let mut admin_client = Client::new(&api, copy_key(&admin), vec![]);
    let mut tenant = |name: &str| {
        let owner = Keypair::generate().unwrap();
        admin_client.create_tenant(name, owner.did()).unwrap();
        let chain = vec![zero_client::owner_delegation(&admin, name, owner.did(), None).unwrap()];
        Tenant { owner, chain }
    };
    let acme = tenant("acme");
    let beta = tenant("beta");
    World {
        dir,
        data,
        node,
        api,
        acme,
        beta,
    }
}

impl World {
    fn owner(&self, t: &Tenant) -> Client {
        Client::new(&self.api, copy_key(&t.owner), t.chain.clone())
    }

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
    let w = world("db-actions");
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
    let w = world("db-unsigned");
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
    let w = world("db-limits");
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
    let w = world("db-tenants");
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

#[test]
fn table_grants_apply_to_management_queries_too() {
    let w = world("db-mgmt-grants");
    // The owner delegates to a colleague every /db command, on `todos` only (the /db/query
    // invocation itself names no table, which selects null).
    let colleague = Keypair::generate().unwrap();
    let grant = |cmd: &str, policy: &str| Grant {
        command: cmd.into(),
        policy: zero_client::parse_policy(policy).unwrap(),
        expires_in: None,
    };
    w.sql(&w.acme, "acme", "app", "CREATE TABLE todos (t TEXT)", &[]);
    w.sql(&w.acme, "acme", "app", "CREATE TABLE users (u TEXT)", &[]);
    let chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        colleague.did(),
        &grant(
            "/db",
            r#"[["or", [["==", ".table", "todos"], ["==", ".table", null]]]]"#,
        ),
    )
    .unwrap();
    let mut c = Client::new(&w.api, colleague, chain);
    let v = c
        .db_query("acme", "app", "SELECT t FROM todos", &[])
        .unwrap();
    assert_eq!(v["columns"], json!(["t"]));
    let e = c
        .db_query("acme", "app", "SELECT u FROM users", &[])
        .expect_err("users is not granted");
    let e = e.downcast::<zero_client::ApiError>().unwrap();
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "PermissionDenied"),
        "{}",
        e.message
    );
    assert!(e.message.contains("read on table `users`"), "{}", e.message);
    let e = c
        .db_query("acme", "app", "INSERT INTO users VALUES ('x')", &[])
        .expect_err("users is not granted");
    let e = e.downcast::<zero_client::ApiError>().unwrap();
    assert!(
        e.message.contains("write on table `users`"),
        "{}",
        e.message
    );
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
        api: _,
        acme,
        beta: _,
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

    let node = NodeProc::start(&dir, &node_config(&data, ""));
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
    let w = world("db-todo");
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
