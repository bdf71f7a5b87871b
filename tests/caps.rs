//! End-to-end tests of components carrying several capabilities (one delegation chain per
//! capability in the `ucan` section) on a real node, written as attacks paired with the
//! legitimate use: each capability is granted exactly and nothing more, one bad chain (another
//! tenant's, one bound to another component, a repeated one, too many) refuses the component at
//! deploy naming the chain, revoking one chain's delegation stops the app, the one-chain form
//! still deploys, and every refusal at run time (files, databases, cache, outgoing HTTP) is
//! logged in the app's log line with the `zero.toml` line to add.

mod support;

use serde_json::{Value as Json, json};
use support::*;
use zero_auth::Delegation;
use zero_client::Grant;

/// The capabilities of the notes app: read the site, and everything on table `notes`.
const SITE_READ: &str = r#"/fs/read [["==", ".path", "/site"]]"#;
const NOTES_DB: &str = r#"/db [["==", ".db", "app"], ["==", ".table", "notes"]]"#;

fn caps(specs: &[&str]) -> Vec<Grant> {
    specs
        .iter()
        .map(|s| zero_client::parse_capability(s, None).unwrap())
        .collect()
}

/// `wasm` signed by acme's owner with each of `grants`.
fn signed_with(w: &World, wasm: &str, grants: &[Grant]) -> Vec<u8> {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    zero_client::sign_component_grants(&bytes, &w.acme.owner, &w.acme.chain, grants).unwrap()
}

/// The chains of a signed component's `ucan` section.
fn chains_of(bytes: &[u8]) -> Vec<Vec<Delegation>> {
    let sections = zero_component::custom_sections(bytes).unwrap();
    let s = sections.iter().find(|s| s.name == "ucan").unwrap();
    zero_auth::component::decode_chains(&bytes[s.data.clone()]).unwrap()
}

/// `bytes` without its token, with `chains` embedded instead.
fn with_chains(bytes: &[u8], chains: &[Vec<Delegation>]) -> Vec<u8> {
    let unsigned = zero_component::strip_custom_section(bytes, "ucan").unwrap();
    zero_component::append_custom_section(
        &unsigned,
        "ucan",
        &zero_auth::component::encode_chains(chains).unwrap(),
    )
}

/// One fsprobe operation: its data, or `error KIND`.
fn fs(w: &World, app: &str, op: &str, path: &str) -> String {
    let r = get(&w.node.url(&format!("/{app}?op={op}&path={path}&data=x")));
    assert_eq!(r.status, 200, "{app} {op} {path}: {}", r.body);
    let v: Json = serde_json::from_str(&r.body).unwrap();
    if v["ok"] == true {
        v["data"].as_str().unwrap().to_string()
    } else {
        format!("error {}", v["error"].as_str().unwrap())
    }
}

fn post(w: &World, app: &str, req: Json) -> Json {
    let r = agent()
        .post(&w.node.url(&format!("/{app}")))
        .send_string(&req.to_string())
        .unwrap_or_else(|e| panic!("/{app}: {e}"));
    serde_json::from_str(&r.into_string().unwrap()).unwrap()
}

fn msg(v: &Json) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// Waits for the node's log line of `app` that carries `hint`.
fn wait_hint(w: &World, app: &str, hint: &str) {
    w.node
        .wait_log(hint, |v| v["app"] == app && msg(v).contains(hint));
}

/// The attack: a component signed with `/fs/read` on `/site` and `/db` on table `notes` (two
/// chains, where one chain would need `/` with an `or` policy that also grants writing the
/// site) tries to write the site, read elsewhere, and reach other tables. Each is refused, and
/// the node logs what was not granted with the `zero.toml` line to add (the guest's database
/// error carries it too); what it was granted works. Signed with `zero sign --cap` twice, and
/// `zero inspect` lists both capabilities.
#[test]
fn a_component_gets_each_of_its_capabilities_and_nothing_more() {
    let w = world("caps-exact");
    let mut owner = w.owner(&w.acme);
    owner
        .fs_put("acme", "/site/index.html", &b"<h1>notes</h1>"[..], true)
        .unwrap();
    owner
        .fs_put("acme", "/secret/a.txt", &b"s3cret"[..], true)
        .unwrap();
    owner
        .fs_put("acme", "/uploads/a.txt", &b"up"[..], true)
        .unwrap();
    for sql in [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE TABLE secrets (v TEXT)",
        "INSERT INTO secrets VALUES ('hidden')",
    ] {
        owner.db_query("acme", "app", sql, &[]).unwrap();
    }

    // Signed through the CLI, with two --cap.
    let key = w.dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let proof = w.dir.join("acme.ucan");
    zero_client::write_chain(&proof, &w.acme.chain).unwrap();
    let out = w.dir.join("fsprobe.zero.wasm");
    let (code, stdout, err) = zero(&[
        "sign",
        guest_wasm("fsprobe").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
        "--cap",
        SITE_READ,
        "--cap",
        NOTES_DB,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let (code, stdout, _) = zero(&["inspect", out.to_str().unwrap()]);
    assert_eq!(code, 0);
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {stdout}"))
            .to_string()
    };
    let first = line("capability 1 of 2: /fs/read ");
    assert!(
        first.contains("/site") && first.contains(".component"),
        "{first}"
    );
    let second = line("capability 2 of 2: /db ");
    assert!(
        second.contains("notes") && second.contains(".component"),
        "{second}"
    );
    // A bad capability is refused with directions.
    let (code, _, err) = zero(&[
        "sign",
        guest_wasm("fsprobe").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
        "--cap",
        "/fs/read [[",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not JSON") && err.contains("e.g. '/fs/read"),
        "{err}"
    );

    let fsprobe = std::fs::read(&out).unwrap();
    assert_eq!(chains_of(&fsprobe).len(), 2);
    owner
        .deploy("acme", "files", &["/files".into()], &[], &fsprobe)
        .unwrap();
    let dbprobe = signed_with(&w, "dbprobe", &caps(&[SITE_READ, NOTES_DB]));
    owner
        .deploy("acme", "notes", &["/notes".into()], &[], &dbprobe)
        .unwrap();

    // Files: reading the site works; writing it, or reading elsewhere, does not.
    assert_eq!(
        fs(&w, "files", "read", "/site/index.html"),
        "<h1>notes</h1>"
    );
    assert_eq!(
        fs(&w, "files", "write", "/site/index.html"),
        "error PermissionDenied"
    );
    assert_eq!(
        fs(&w, "files", "read", "/site/index.html"),
        "<h1>notes</h1>",
        "the refused write changed nothing"
    );
    wait_hint(
        &w,
        "files",
        r#"not granted: /fs/write on /site/index.html; add to zero.toml: [capabilities.files] write = ["/site"]"#,
    );
    // Outside every granted directory: the guest's own libc finds no preopen for it.
    assert!(fs(&w, "files", "read", "/secret/a.txt").starts_with("error "));
    assert_eq!(
        fs(&w, "files", "create", "/site/new.txt"),
        "error PermissionDenied"
    );
    wait_hint(
        &w,
        "files",
        r#"not granted: /fs/create on /site/new.txt; add to zero.toml: [capabilities.files] write = ["/site"]"#,
    );
    // A component that may only write uploads is refused reading them.
    let uploads = signed_with(
        &w,
        "fsprobe",
        &caps(&[r#"/fs/write [["==", ".path", "/uploads"]]"#]),
    );
    owner
        .deploy("acme", "uploads", &["/uploads".into()], &[], &uploads)
        .unwrap();
    assert_eq!(fs(&w, "uploads", "write", "/uploads/a.txt"), "");
    assert_eq!(
        fs(&w, "uploads", "read", "/uploads/a.txt"),
        "error PermissionDenied"
    );
    wait_hint(
        &w,
        "uploads",
        r#"not granted: /fs/read on /uploads/a.txt; add to zero.toml: [capabilities.files] read = ["/uploads"]"#,
    );

    // Databases: the notes table, every action; other tables, none.
    let a = post(
        &w,
        "notes",
        json!({"db": "app", "op": "execute", "sql": "INSERT INTO notes (body) VALUES ('hi')", "params": []}),
    );
    assert!(a.get("ok").is_some(), "{a}");
    let a = post(
        &w,
        "notes",
        json!({"db": "app", "op": "query", "sql": "SELECT body FROM notes", "params": []}),
    );
    assert_eq!(a["ok"]["rows"], json!([["hi"]]), "{a}");
    let a = post(
        &w,
        "notes",
        json!({"db": "app", "op": "query", "sql": "SELECT v FROM secrets", "params": []}),
    );
    let hint = r#"not granted: /db/read on table `secrets` of database `app`; add to zero.toml: [capabilities.databases.app] read = ["secrets"]"#;
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    assert_eq!(a["error"]["table"], "secrets", "{a}");
    assert!(
        a["error"]["message"].as_str().unwrap().contains(hint),
        "{a}"
    );
    wait_hint(&w, "notes", hint);
    let a = post(
        &w,
        "notes",
        json!({"db": "app", "op": "execute", "sql": "CREATE TABLE more (x)", "params": []}),
    );
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    wait_hint(
        &w,
        "notes",
        r#"[capabilities.databases.app] write = ["more"]"#,
    );
    // Another database is not reachable at all.
    let a = post(
        &w,
        "notes",
        json!({"db": "other", "op": "query", "sql": "SELECT 1", "params": []}),
    );
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    wait_hint(
        &w,
        "notes",
        "[capabilities.databases.other] write = [\"TABLE\"]",
    );
}

/// The attack: a section where one chain of two is bad: signed for another tenant, bound to
/// another component, or not bound at all; one chain repeated; more chains than allowed.
/// Each is refused at deploy, naming the chain and why; the same good chains deploy. The
/// one-chain form (`zero_client::sign_component`) still deploys. Then the owner revokes the
/// delegation of one of the two chains of a deployed app: it stops, and deploying it again is
/// refused naming that chain.
#[test]
fn one_bad_chain_refuses_the_component_and_revoking_one_stops_it() {
    let w = world("caps-chains");
    let mut owner = w.owner(&w.acme);
    let bytes = std::fs::read(guest_wasm("hello")).unwrap();
    let good = signed_with(&w, "hello", &caps(&[SITE_READ, NOTES_DB]));
    let chains = chains_of(&good);
    let hash = zero_component::content_hash(&good).unwrap().to_string();
    let deploy = |owner: &mut zero_client::Client, app: &str, b: &[u8]| {
        owner.deploy("acme", app, &[format!("/{app}")], &[], b)
    };

    // Another tenant's chain, bound to this very component.
    let bound = |g: &str| {
        let mut grant = zero_client::parse_capability(g, None).unwrap();
        let mut st = grant.policy.statements().to_vec();
        st.push(zero_auth::component::binding_statement(&hash));
        grant.policy = zero_auth::Policy::new(st);
        grant
    };
    let beta = zero_client::extend_chain(
        &w.beta.owner,
        &w.beta.chain,
        w.beta.owner.did(),
        &bound("/db"),
    )
    .unwrap();
    let e = refused(deploy(
        &mut owner,
        "mixed",
        &with_chains(&bytes, &[chains[0].clone(), beta]),
    ));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "MatchError"),
        "{}",
        e.message
    );
    assert!(
        e.message.starts_with("capability 2 of 2 (`/db`): ")
            && e.message
                .contains("scoped to a different tenant than `acme`")
            && !e.message.contains("beta"),
        "{}",
        e.message
    );

    // A chain bound to another component (copied from a signed `echo`).
    let other = signed_with(&w, "echo", &caps(&[NOTES_DB]));
    let stolen = chains_of(&other).remove(0);
    let e = refused(deploy(
        &mut owner,
        "stolen",
        &with_chains(&bytes, &[chains[0].clone(), stolen]),
    ));
    assert_eq!(e.error, "HashMismatch", "{}", e.message);
    assert!(
        e.message.starts_with("capability 2 of 2 (`/db`)"),
        "{}",
        e.message
    );

    // A chain bound to nothing.
    let unbound = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        w.acme.owner.did(),
        &zero_client::parse_capability("/cache", None).unwrap(),
    )
    .unwrap();
    let e = refused(deploy(
        &mut owner,
        "unbound",
        &with_chains(&bytes, &[unbound, chains[1].clone()]),
    ));
    assert_eq!(e.error, "HashMismatch", "{}", e.message);
    assert!(
        e.message.starts_with("capability 1 of 2 (`/cache`)")
            && e.message.contains("not bound to a component hash"),
        "{}",
        e.message
    );

    // A repeated chain, and too many chains.
    let e = refused(deploy(
        &mut owner,
        "twice",
        &with_chains(
            &bytes,
            &[chains[0].clone(), chains[1].clone(), chains[0].clone()],
        ),
    ));
    assert_eq!(e.error, "Malformed", "{}", e.message);
    assert!(
        e.message.contains("chain 2 repeats chain 0"),
        "{}",
        e.message
    );
    let many: Vec<Grant> = (0..=zero_auth::component::MAX_CHAINS)
        .map(|i| {
            zero_client::parse_capability(
                &format!("/cache/read [[\"==\", \".key\", \"k{i}\"]]"),
                None,
            )
            .unwrap()
        })
        .collect();
    let e = zero_client::sign_component_grants(&bytes, &w.acme.owner, &w.acme.chain, &many)
        .unwrap_err()
        .to_string();
    assert!(e.contains("17 capabilities, more than the 16"), "{e}");
    let too_many: Vec<Vec<Delegation>> = many
        .iter()
        .map(|g| {
            let mut g = g.clone();
            let mut st = g.policy.statements().to_vec();
            st.push(zero_auth::component::binding_statement(&hash));
            g.policy = zero_auth::Policy::new(st);
            zero_client::extend_chain(&w.acme.owner, &w.acme.chain, w.acme.owner.did(), &g).unwrap()
        })
        .collect();
    let e = refused(deploy(&mut owner, "many", &with_chains(&bytes, &too_many)));
    assert_eq!(e.error, "Malformed", "{}", e.message);
    assert!(
        e.message
            .contains("17 capability chains, more than the 16 allowed"),
        "{}",
        e.message
    );
    // Nothing was deployed by the refused calls.
    for app in ["mixed", "stolen", "unbound", "twice", "many"] {
        assert_eq!(get(&w.node.url(&format!("/{app}"))).status, 404, "{app}");
    }

    // The legitimate uses: the two good chains, and the one-chain form.
    deploy(&mut owner, "app", &good).unwrap();
    assert_eq!(get(&w.node.url("/app")).body, "Hello, World!\n");
    let one = signed(&w, "hello", &grant("/fs/read", "[]", None));
    let sections = zero_component::custom_sections(&one).unwrap();
    let s = sections.iter().find(|s| s.name == "ucan").unwrap();
    assert!(zero_auth::component::decode_section(&one[s.data.clone()]).is_ok());
    deploy(&mut owner, "single", &one).unwrap();
    assert_eq!(get(&w.node.url("/single")).body, "Hello, World!\n");

    // Revoking the delegation one chain relies on stops the app; the other app stays.
    // Through the CLI, which asks which delegation of a component with several chains.
    let key = w.dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let file = w.dir.join("hello.zero.wasm");
    std::fs::write(&file, &good).unwrap();
    let revoke = |cid: Option<&str>| {
        let mut args = vec!["revoke"];
        args.extend(cid);
        args.extend([
            "--chain",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--api",
            &w.api,
        ]);
        zero(&args)
    };
    let (code, _, err) = revoke(None);
    assert_ne!(code, 0);
    assert!(
        err.contains("carries 2 capability chains; name the CID of the delegation to revoke"),
        "{err}"
    );
    let leaf = chains[1].last().unwrap().cid().to_string();
    let (code, out, err) = revoke(Some(&leaf));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"stopped_apps\": 1"), "{out}");
    assert_eq!(get(&w.node.url("/app")).status, 404);
    assert_eq!(get(&w.node.url("/single")).body, "Hello, World!\n");
    w.node
        .wait_log("stop log", |v| msg(v).contains("was revoked"));
    let e = refused(deploy(&mut owner, "app", &good));
    assert_eq!(e.error, "Revoked", "{}", e.message);
    assert!(
        e.message.starts_with("capability 2 of 2 (`/db`)"),
        "{}",
        e.message
    );
}

/// The attack: a cache component granted reading `config:` keys sets a `note:` key, and an
/// app allowed to reach one host fetches another. Both are refused, and the node logs the
/// `zero.toml` line to add (the guest's cache error carries it too); the granted key and host
/// work.
#[test]
fn cache_and_outbound_refusals_name_the_manifest_line_to_add() {
    let w = world_with(
        "caps-hints",
        "[outbound]\nallow_private = [\"127.0.0.1/32\"]\n",
    );
    let mut owner = w.owner(&w.acme);
    let cache = signed_with(
        &w,
        "cacheprobe",
        &caps(&[r#"/cache/read [["like", ".key", "config:*"]]"#]),
    );
    owner
        .deploy("acme", "kv", &["/kv".into()], &[], &cache)
        .unwrap();
    let a = post(&w, "kv", json!({"op": "get", "key": "config:theme"}));
    assert_eq!(a.get("ok"), Some(&Json::Null), "{a}");
    let a = post(
        &w,
        "kv",
        json!({"op": "set", "key": "note:1", "value": "x"}),
    );
    let hint = r#"not granted: /cache/write on key `note:1`; add to zero.toml: [capabilities.cache] write = ["note:1"]"#;
    assert_eq!(a["error"]["kind"], "permission-denied", "{a}");
    assert!(
        a["error"]["message"].as_str().unwrap().contains(hint),
        "{a}"
    );
    wait_hint(&w, "kv", hint);

    let allowed = upstream("fine");
    let other = upstream("other");
    let fetcher = std::fs::read(guest_wasm("outgoing")).unwrap();
    owner
        .deploy(
            "acme",
            "fetch",
            &["/fetch".into()],
            &[allowed.to_string()],
            &fetcher,
        )
        .unwrap();
    let r = get_with(
        &w.node.url("/fetch"),
        "x-target",
        &format!("http://{allowed}/"),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "fine"));
    let r = get_with(
        &w.node.url("/fetch"),
        "x-target",
        &format!("http://{other}/"),
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    wait_hint(
        &w,
        "fetch",
        &format!(
            r#"not granted: outgoing HTTP to {other}; add to zero.toml: [app] outbound = ["{other}"]"#
        ),
    );
}
