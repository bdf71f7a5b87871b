//! End-to-end tests of zerocache on a real node: components reach their tenant's cache through
//! `zero:cache` (the `cacheprobe` test component runs the operation it is sent), every call is
//! checked against the component's signed capabilities (`/cache/read`, `/cache/write`, scoped
//! by `.key`), tenants are isolated, an unsigned component gets nothing, owners manage their
//! cache with `zero cache get|set|del` and never another tenant's, and the `cached-notes`
//! example serves a zerodb read from the cache.

mod support;

use serde_json::{Value as Json, json};
use support::*;
use zero_auth::{Delegation, Keypair};
use zero_client::Client;

/// Small cache limits so that each one trips quickly.
const CACHE: &str = r#"
[cache]
memory = "1 MiB"
max_key_size = 64
max_value_size = "1 KiB"
max_batch_keys = 4
"#;

/// Prefix-scoped policy used throughout.
const SESSIONS: &str = r#"[["like", ".key", "session:*"]]"#;

fn owner_client(w: &World, owner: &Keypair, chain: &[Delegation]) -> Client {
    Client::new(&w.api, copy_key(owner), chain.to_vec())
}

/// Signs `wasm` for `tenant` (acme or beta) with `cmd`/`policy` and deploys it at `/app`.
fn deploy(w: &World, tenant: &str, wasm: &str, app: &str, cmd: &str, policy: &str) {
    let (owner, chain) = owner_of(w, tenant);
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    let signed =
        zero_client::sign_component(&bytes, owner, chain, &grant(cmd, policy, None)).unwrap();
    owner_client(w, owner, chain)
        .deploy(tenant, app, &[format!("/{app}")], &[], &signed)
        .unwrap();
}

fn owner_of<'a>(w: &'a World, tenant: &str) -> (&'a Keypair, &'a [Delegation]) {
    match tenant {
        "acme" => (&w.acme.owner, &w.acme.chain),
        "beta" => (&w.beta.owner, &w.beta.chain),
        other => panic!("no tenant {other} in the test world"),
    }
}

/// Sends a cacheprobe request to `/app` and returns its JSON answer.
fn probe(node: &NodeProc, app: &str, req: Json) -> Json {
    let resp = match agent()
        .post(&node.url(&format!("/{app}")))
        .send_string(&req.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => panic!(
            "/{app}: status {code}: {}",
            r.into_string().unwrap_or_default()
        ),
        Err(e) => panic!("/{app}: {e}"),
    };
    serde_json::from_str(&resp.into_string().unwrap()).unwrap()
}

fn ok(answer: Json) -> Json {
    assert!(answer.get("error").is_none(), "expected success: {answer}");
    answer["ok"].clone()
}

/// Asserts a permission-denied error naming `key` and `command`, with directions.
fn assert_denied(answer: &Json, key: &str, command: &str) {
    let e = &answer["error"];
    assert_eq!(e["kind"], "permission-denied", "{answer}");
    assert_eq!(e["key"], key, "{answer}");
    assert_eq!(e["command"], command, "{answer}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(key) && msg.contains(command) && msg.contains("zero sign"),
        "{msg}"
    );
}

fn get(key: &str) -> Json {
    json!({"op": "get", "key": key})
}

fn set(key: &str, value: &str) -> Json {
    json!({"op": "set", "key": key, "value": value})
}

#[test]
fn each_command_is_granted_per_key_prefix_and_refused_without_it() {
    let w = world_with("cache-grants", CACHE);
    let node = &w.node;
    deploy(&w, "acme", "cacheprobe", "rw", "/cache", SESSIONS);
    deploy(&w, "acme", "cacheprobe", "ro", "/cache/read", SESSIONS);
    deploy(&w, "acme", "cacheprobe", "wo", "/cache/write", SESSIONS);

    // /cache (both commands) on session:*: every operation works there...
    assert_eq!(ok(probe(node, "rw", set("session:1", "alice"))), Json::Null);
    assert_eq!(ok(probe(node, "rw", get("session:1"))), "alice");
    assert_eq!(
        ok(probe(
            node,
            "rw",
            json!({"op": "get-many", "keys": ["session:1", "session:none"]})
        )),
        json!(["alice", null])
    );
    let incr = json!({"op": "increment", "key": "session:n", "delta": 2});
    assert_eq!(ok(probe(node, "rw", incr.clone())), 2);
    assert_eq!(ok(probe(node, "rw", incr)), 4);
    let cas = |expected: Json, new: &str| json!({"op": "cas", "key": "session:1", "expected": expected, "new": new});
    assert_eq!(ok(probe(node, "rw", cas(json!("bob"), "carol"))), false);
    assert_eq!(ok(probe(node, "rw", cas(json!("alice"), "carol"))), true);
    assert_eq!(ok(probe(node, "rw", get("session:1"))), "carol");
    assert_eq!(
        ok(probe(
            node,
            "rw",
            json!({"op": "delete", "key": "session:n"})
        )),
        Json::Null
    );
    assert_eq!(ok(probe(node, "rw", get("session:n"))), Json::Null);
    // ... and nowhere else.
    assert_denied(
        &probe(node, "rw", set("user:1", "x")),
        "user:1",
        "/cache/write",
    );
    assert_denied(&probe(node, "rw", get("user:1")), "user:1", "/cache/read");
    assert_denied(
        &probe(
            node,
            "rw",
            json!({"op": "get-many", "keys": ["session:1", "user:1"]}),
        ),
        "user:1",
        "/cache/read",
    );

    // /cache/read: reads only.
    assert_eq!(ok(probe(node, "ro", get("session:1"))), "carol");
    assert_denied(
        &probe(node, "ro", set("session:1", "mallory")),
        "session:1",
        "/cache/write",
    );
    assert_denied(
        &probe(node, "ro", json!({"op": "delete", "key": "session:1"})),
        "session:1",
        "/cache/write",
    );
    assert_denied(
        &probe(
            node,
            "ro",
            json!({"op": "increment", "key": "session:1", "delta": 1}),
        ),
        "session:1",
        "/cache/write",
    );
    assert_denied(&probe(node, "ro", get("user:1")), "user:1", "/cache/read");

    // /cache/write: writes only; increment and compare-and-swap reveal the value, so they
    // need read as well.
    assert_eq!(ok(probe(node, "wo", set("session:2", "dave"))), Json::Null);
    assert_denied(
        &probe(node, "wo", get("session:2")),
        "session:2",
        "/cache/read",
    );
    assert_denied(
        &probe(
            node,
            "wo",
            json!({"op": "cas", "key": "session:2", "expected": "dave", "new": "dave"}),
        ),
        "session:2",
        "/cache/read",
    );
    assert_denied(
        &probe(
            node,
            "wo",
            json!({"op": "increment", "key": "session:2", "delta": 0}),
        ),
        "session:2",
        "/cache/read",
    );
    assert_denied(
        &probe(node, "wo", set("user:2", "x")),
        "user:2",
        "/cache/write",
    );
    assert_eq!(
        ok(probe(
            node,
            "wo",
            json!({"op": "delete", "key": "session:2"})
        )),
        Json::Null
    );
    assert_eq!(ok(probe(node, "rw", get("session:2"))), Json::Null);
    // Nothing the refused calls tried took effect.
    assert_eq!(ok(probe(node, "rw", get("session:1"))), "carol");
    let mut owner = owner_client(&w, &w.acme.owner, &w.acme.chain);
    assert_eq!(owner.cache_get("acme", "user:1").unwrap(), None);
    assert_eq!(owner.cache_get("acme", "user:2").unwrap(), None);
}

#[test]
fn limits_answer_errors_that_name_the_setting() {
    let w = world_with("cache-limits", CACHE);
    let node = &w.node;
    deploy(&w, "acme", "cacheprobe", "all", "/cache", "[]");
    let big = "x".repeat(1025);
    let e = &probe(node, "all", set("k", &big))["error"];
    assert_eq!(e["kind"], "limit-exceeded", "{e}");
    assert_eq!(e["limit_kind"], "value-size", "{e}");
    assert_eq!(e["limit"], 1024, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("max_value_size"),
        "{e}"
    );
    let long = "k".repeat(65);
    let e = &probe(node, "all", get(&long))["error"];
    assert_eq!(e["limit_kind"], "key-size", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("max_key_size"),
        "{e}"
    );
    let e = &probe(
        node,
        "all",
        json!({"op": "get-many", "keys": ["a", "b", "c", "d", "e"]}),
    )["error"];
    assert_eq!(e["limit_kind"], "batch-keys", "{e}");
    ok(probe(node, "all", set("word", "hello")));
    let e = &probe(
        node,
        "all",
        json!({"op": "increment", "key": "word", "delta": 1}),
    )["error"];
    assert_eq!(e["kind"], "not-an-integer", "{e}");
    assert!(e["message"].as_str().unwrap().contains("\"hello\""), "{e}");
    let e = &probe(
        node,
        "all",
        json!({"op": "set", "key": "t", "value": "v", "ttl_ms": 0}),
    )["error"];
    assert_eq!(e["kind"], "invalid", "{e}");
    assert_eq!(ok(probe(node, "all", get("k"))), Json::Null);
}

#[test]
fn tenants_are_isolated_and_an_unsigned_component_gets_nothing() {
    let w = world_with("cache-tenants", CACHE);
    let node = &w.node;
    deploy(&w, "acme", "cacheprobe", "acme-probe", "/cache", "[]");
    deploy(&w, "beta", "cacheprobe", "beta-probe", "/cache", "[]");
    ok(probe(node, "acme-probe", set("session:same", "acme's")));
    ok(probe(node, "beta-probe", set("session:same", "beta's")));
    assert_eq!(ok(probe(node, "acme-probe", get("session:same"))), "acme's");
    assert_eq!(ok(probe(node, "beta-probe", get("session:same"))), "beta's");
    ok(probe(
        node,
        "beta-probe",
        json!({"op": "delete", "key": "session:same"}),
    ));
    assert_eq!(ok(probe(node, "acme-probe", get("session:same"))), "acme's");
    assert_eq!(
        ok(probe(node, "beta-probe", get("session:same"))),
        Json::Null
    );
    // The same numbers through the management API: each owner sees only their own.
    let mut acme = owner_client(&w, &w.acme.owner, &w.acme.chain);
    assert_eq!(
        acme.cache_get("acme", "session:same").unwrap().as_deref(),
        Some(&b"acme's"[..])
    );

    // An unsigned component is served, but every cache call is refused.
    let bytes = std::fs::read(guest_wasm("cacheprobe")).unwrap();
    acme.deploy("acme", "unsigned", &["/unsigned".into()], &[], &bytes)
        .unwrap();
    for req in [
        get("session:same"),
        set("session:same", "x"),
        json!({"op": "increment", "key": "session:same", "delta": 1}),
    ] {
        let answer = probe(node, "unsigned", req);
        assert_eq!(answer["error"]["kind"], "permission-denied", "{answer}");
        let msg = answer["error"]["message"].as_str().unwrap();
        assert!(msg.contains("no capability token"), "{msg}");
    }
    assert_eq!(ok(probe(node, "acme-probe", get("session:same"))), "acme's");
}

#[test]
fn owners_manage_their_cache_and_not_another_tenants() {
    let w = world_with("cache-mgmt", CACHE);
    let node = &w.node;
    deploy(&w, "acme", "cacheprobe", "probe", "/cache", SESSIONS);
    let mut acme = owner_client(&w, &w.acme.owner, &w.acme.chain);
    let mut beta = owner_client(&w, &w.beta.owner, &w.beta.chain);

    // The owner sets, the component reads; the component sets, the owner reads.
    acme.cache_set("acme", "session:op", b"from the owner", None)
        .unwrap();
    assert_eq!(
        ok(probe(node, "probe", get("session:op"))),
        "from the owner"
    );
    ok(probe(node, "probe", set("session:app", "from the app")));
    assert_eq!(
        acme.cache_get("acme", "session:app").unwrap().as_deref(),
        Some(&b"from the app"[..])
    );
    assert_eq!(acme.cache_get("acme", "session:none").unwrap(), None);

    // Another tenant's owner can neither read, write nor delete acme's keys.
    let e = refused(beta.cache_get("acme", "session:op").map(|_| Json::Null));
    assert_eq!(e.status, 403, "{e}");
    assert!(e.message.contains(".tenant"), "{e}");
    let e = refused(beta.cache_set("acme", "session:op", b"stolen", None));
    assert_eq!(e.status, 403, "{e}");
    let e = refused(beta.cache_delete("acme", "session:op"));
    assert_eq!(e.status, 403, "{e}");
    assert_eq!(
        acme.cache_get("acme", "session:op").unwrap().as_deref(),
        Some(&b"from the owner"[..])
    );
    // Beta's own namespace is separate.
    beta.cache_set("beta", "session:op", b"beta's", None)
        .unwrap();
    assert_eq!(
        acme.cache_get("acme", "session:op").unwrap().as_deref(),
        Some(&b"from the owner"[..])
    );

    // A delegate scoped to a key prefix gets exactly that prefix.
    let reader = Keypair::generate().unwrap();
    let chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        reader.did(),
        &grant("/cache/read", SESSIONS, Some(600)),
    )
    .unwrap();
    let mut delegate = Client::new(&w.api, copy_key(&reader), chain);
    assert!(delegate.cache_get("acme", "session:op").unwrap().is_some());
    let e = refused(delegate.cache_get("acme", "user:1").map(|_| Json::Null));
    assert_eq!((e.status, e.error.as_str()), (403, "MatchError"), "{e}");
    let e = refused(delegate.cache_set("acme", "session:op", b"x", None));
    assert_eq!((e.status, e.error.as_str()), (403, "InvalidClaim"), "{e}");

    // Delete, and a time to live.
    acme.cache_delete("acme", "session:op").unwrap();
    assert_eq!(acme.cache_get("acme", "session:op").unwrap(), None);
    acme.cache_set("acme", "session:ttl", b"brief", Some(300))
        .unwrap();
    assert!(acme.cache_get("acme", "session:ttl").unwrap().is_some());
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(acme.cache_get("acme", "session:ttl").unwrap(), None);

    // The Admin may manage any tenant's cache; a value over the limit is refused.
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    admin
        .cache_set("acme", "session:admin", b"a", None)
        .unwrap();
    let e = refused(admin.cache_set("acme", "session:big", &[b'x'; 2048], None));
    assert_eq!(e.status, 413, "{e}");

    // The CLI: `zero cache set|get|del`.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("owner.key");
    let proof = dir.path().join("acme.ucan");
    w.acme.owner.save(&key).unwrap();
    zero_client::write_chain(&proof, &w.acme.chain).unwrap();
    let auth = |args: &[&str]| -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--api",
            &w.api,
            "--key",
            key.to_str().unwrap(),
            "--proof",
            proof.to_str().unwrap(),
        ]);
        zero(&all)
    };
    let (code, _, err) = auth(&["cache", "set", "acme", "session:cli", "hello cli"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = auth(&["cache", "get", "acme", "session:cli"]);
    assert_eq!((code, out.as_str()), (0, "hello cli"), "{err}");
    let (code, _, err) = auth(&["cache", "del", "acme", "session:cli"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = auth(&["cache", "get", "acme", "session:cli"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not in the cache"), "{err}");
    let (code, _, err) = auth(&["cache", "get", "beta", "session:op"]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
}

#[test]
fn the_cached_notes_example_serves_a_database_read_from_the_cache() {
    let w = world_with("cache-notes", CACHE);
    let node = &w.node;
    deploy(
        &w,
        "acme",
        "cached_notes",
        "notes",
        "/",
        r#"[["or", [["==", ".db", "notes"], ["like", ".key", "note:*"]]]]"#,
    );
    let put = |text: &str| {
        let r = agent()
            .put(&node.url("/notes/1"))
            .send_string(&json!({"text": text}).to_string())
            .unwrap();
        assert_eq!(r.status(), 204);
    };
    let read = || {
        let r = agent().get(&node.url("/notes/1")).call().unwrap();
        let cache = r.header("x-cache").unwrap_or_default().to_string();
        (cache, r.into_string().unwrap())
    };
    put("milk");
    let (cache, body) = read();
    assert_eq!(cache, "miss");
    assert_eq!(body, r#"{"id":1,"text":"milk"}"#);
    let (cache, body) = read();
    assert_eq!(cache, "hit");
    assert_eq!(body, r#"{"id":1,"text":"milk"}"#);
    // What the app cached is in the tenant's cache under its key.
    let mut acme = owner_client(&w, &w.acme.owner, &w.acme.chain);
    assert_eq!(
        acme.cache_get("acme", "note:1").unwrap().as_deref(),
        Some(body.as_bytes())
    );
    // A write drops the cached answer: the next read goes to the database.
    put("eggs");
    let (cache, body) = read();
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("miss", r#"{"id":1,"text":"eggs"}"#)
    );
    // The token reaches neither other keys nor files.
    match agent().get(&node.url("/notes/x")).call() {
        Err(ureq::Error::Status(400, _)) => {}
        other => panic!("expected 400, got {other:?}"),
    }
}
