//! The web console (`/console/` on the management listener): its static files and their
//! headers, path traversal, the absence of any cross-origin or cookie path into the API, the
//! Admin's tenant list, and the page itself in a real headless Chromium (Playwright, driven by
//! `console/tests/e2e.mjs`) signing in, listing, deploying, following traffic and removing
//! against a real node.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use zero_client::Client;

/// The raw answer (status line and headers, body) to a request written byte for byte, so that
/// no client library normalizes the path first.
fn raw_get(addr: std::net::SocketAddr, target: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_ascii_lowercase(), body.to_string()),
        None => (text.to_ascii_lowercase(), String::new()),
    }
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The security headers every console answer carries.
fn assert_secured(head: &str, what: &str) {
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(h), "{what}: no `{h}` in\n{head}");
    }
    assert!(
        !head.contains("set-cookie"),
        "{what} sets a cookie:\n{head}"
    );
    assert!(
        !head.contains("access-control-allow"),
        "{what} allows cross-origin reads:\n{head}"
    );
}

#[test]
fn the_console_is_served_with_strict_headers_and_nothing_outside_it() {
    let w = world("console-static");
    let admin = w.node.admin;
    let (head, page) = raw_get(admin, "/console/");
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert_secured(&head, "the page");
    assert!(page.contains("<title>zerocore console</title>"), "{page}");
    // No inline script: the page loads its one module from this origin.
    assert!(!page.contains("<script>") && !page.contains("<script type=\"module\">"));
    let (head2, page2) = raw_get(admin, "/console");
    assert_eq!(status_of(&head2), 200, "{head2}");
    assert_eq!(page, page2);

    // Every asset the page names is served with its type and cached for good.
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/console/assets/"))
        .collect();
    assert!(assets.len() >= 2, "{page}");
    for a in &assets {
        let (head, body) = raw_get(admin, a);
        assert_eq!(status_of(&head), 200, "{a}: {head}");
        let ty = if a.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(head.contains(&format!("content-type: {ty}")), "{a}: {head}");
        assert!(
            head.contains("cache-control: public, max-age=31536000, immutable"),
            "{a}: {head}"
        );
        assert_secured(&head, a);
        assert!(!body.is_empty());
    }

    // Unknown files, traversal and encoded tricks are 404, never a file or an API answer.
    let js = assets.iter().find(|a| a.ends_with(".js")).unwrap();
    let js_name = js.rsplit('/').next().unwrap();
    for target in [
        "/console/nope.html",
        "/console/../v1/node",
        "/console/assets/../index.html",
        "/console/%2e%2e/v1/node",
        "/console/assets/%2e%2e%2findex.html",
        "/console/..%2f..%2fCargo.toml",
        "/console/assets//../../Cargo.toml",
        "/console/./index.html",
        "/console/%69ndex.html",
        "/console/index.html%00",
        "/console/assets",
        &format!("/console/assets/{}", js_name.to_uppercase()),
        "/console/assets/../../../../etc/passwd",
        "/consolex",
    ] {
        let (head, body) = raw_get(admin, target);
        let status = status_of(&head);
        assert_eq!(status, 404, "{target}: {head}\n{body}");
        assert!(
            !body.contains("\"did\""),
            "{target} reached the API: {body}"
        );
        assert!(!body.contains("<html"), "{target} served the page: {body}");
    }
    // The page's own files are not on the HTTP listener (apps' traffic), only on management.
    assert_ne!(get(&w.node.url("/console/")).status, 200);
}

#[test]
fn the_api_has_no_cross_origin_or_ambient_path_for_a_page_on_another_origin() {
    let w = world("console-csrf");
    let addr = w.node.admin;
    // What a page on another origin can send without a preflight: a form POST (no
    // Authorization header) is refused, with no cookie to ride on.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = "tenant=evil&owner=did%3Akey%3Az6Mk";
    write!(
        s,
        "POST /v1/tenants HTTP/1.1\r\nhost: 127.0.0.1\r\norigin: http://evil.example\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 401"), "{buf}");
    assert!(buf.contains("MissingInvocation"), "{buf}");
    let lower = buf.to_ascii_lowercase();
    assert!(!lower.contains("access-control-allow"), "{buf}");
    assert!(!lower.contains("set-cookie"), "{buf}");
    // The preflight a cross-origin page needs before it may send `Authorization` finds no
    // CORS grant, so the browser never sends the signed request.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "OPTIONS /v1/tenants/acme/apps HTTP/1.1\r\nhost: 127.0.0.1\r\norigin: http://evil.example\r\n\
         access-control-request-method: GET\r\naccess-control-request-headers: authorization, ucan-proofs\r\n\
         connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let lower = buf.to_ascii_lowercase();
    assert!(!lower.starts_with("http/1.1 2"), "{buf}");
    assert!(!lower.contains("access-control-allow"), "{buf}");
}

#[test]
fn the_admin_lists_tenants_and_an_owner_may_not() {
    let w = world("console-tenants");
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    let v = admin.list_tenants().unwrap();
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta"], "{v}");
    assert_eq!(
        v["tenants"][0]["owner"].as_str().unwrap(),
        w.acme.owner.did().to_string()
    );
    assert_eq!(v["tenants"][0]["apps"], 0);
    // An owner holds `/` within its tenant, which is not tenant administration.
    let e = refused(w.owner(&w.acme).list_tenants());
    assert_eq!(e.status, 403, "{e}");
    assert!(!e.message.contains("beta"), "{e}");
    // A key the Admin delegated `/tenant/list` to may list them.
    let operator = zero_auth::Keypair::generate().unwrap();
    let delegation = zero_auth::Delegation::builder(
        operator.did().clone(),
        zero_auth::Command::parse("/tenant/list").unwrap(),
        None,
    )
    .subject(w.admin.did().clone())
    .sign(&w.admin)
    .unwrap();
    let mut op = Client::new(&w.api, copy_key(&operator), vec![delegation]);
    assert_eq!(
        op.list_tenants().unwrap()["tenants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The CLI says the same.
    let dir = test_dir("console-tenants-cli");
    let key = dir.join("admin.key");
    w.admin.save(&key).unwrap();
    let (code, out, err) = zero(&[
        "tenant",
        "list",
        "--key",
        key.to_str().unwrap(),
        "--api",
        &w.api,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"acme\"") && out.contains("\"beta\""),
        "{out}"
    );
}

/// `console/node_modules` (from `npm ci`, which scripts/setup.sh runs), or a clear failure.
fn console_dir() -> PathBuf {
    let dir = repo_root().join("console");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "{} has no node_modules/playwright-core: run `bash scripts/setup.sh` (it runs `npm ci` \
         in console/ and installs Debian's chromium)",
        dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `bash scripts/setup.sh` (it installs Debian's chromium)"
    );
    dir
}

#[test]
fn the_console_in_a_real_browser_signs_in_deploys_follows_traffic_and_removes() {
    let console = console_dir();
    let w = world("console-browser");
    // What the page finds: app `hello` deployed with the CLI's library, `boom`, which traps, and
    // database `notes`.
    let mut owner = w.owner(&w.acme);
    let hello = signed(&w, "hello", &grant("/", "[]", None));
    owner
        .deploy("acme", "hello", &["/hello".into()], &[], &hello)
        .unwrap();
    let boom = signed(&w, "panic", &grant("/", "[]", None));
    owner
        .deploy("acme", "boom", &["/boom".into()], &[], &boom)
        .unwrap();
    for sql in [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB)",
        "INSERT INTO notes (body, data) VALUES ('milk', x'00ff'), ('<b>eggs</b>', NULL)",
    ] {
        owner.db_query("acme", "notes", sql, &[]).unwrap();
    }

    // The files `zero` keeps: the owner's key, the chain, the Admin's key, a signed component.
    let dir = test_dir("console-browser-files");
    let key = dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let chain = dir.join("acme.ucan");
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();
    let component = dir.join("web.zero.wasm");
    std::fs::write(&component, signed(&w, "hello", &grant("/", "[]", None))).unwrap();
    let out = repo_root().join("target/console-e2e");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let mut child = Command::new("node")
        .arg("tests/e2e.mjs")
        .current_dir(&console)
        .env("CONSOLE_URL", format!("{}/console/", w.api))
        .env("HTTP_URL", format!("http://{}", w.node.addr))
        .env("OWNER_KEY", &key)
        .env("OWNER_CHAIN", &chain)
        .env("ADMIN_KEY", w.data.join("admin.key"))
        .env("COMPONENT", &component)
        .env("OUT_DIR", &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (scripts/setup.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser test did not finish within 300 s; see {}",
                out.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{stdout}\n{stderr}\n(screenshot in {})",
        out.display()
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("the browser test printed no result ({e}):\n{stdout}"));
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["signed"].as_u64().unwrap() >= 5, "{result}");
    assert!(result["chartTotal"].as_u64().unwrap() >= 12, "{result}");
    for shot in ["console-owner.png", "console-admin.png"] {
        let png = std::fs::read(out.join(shot)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot} is not a PNG");
    }

    // What the page did, seen from the node: `web` was deployed (its route answered the
    // traffic) and removed again; `hello` and `boom` are untouched.
    let apps = owner.list_apps("acme").unwrap();
    let names: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{apps}");
    assert!(
        names.contains(&"hello") && names.contains(&"boom"),
        "{apps}"
    );
    assert_eq!(get(&w.node.url("/web")).status, 404);
    w.node.wait_log("the console's deploy", |v| {
        v["message"] == "app deployed" && v["app"] == "web"
    });
    w.node.wait_log("the console's removal", |v| {
        v["message"] == "app removed" && v["app"] == "web"
    });
}

/// Signs an invocation with the console's `src/ucan.js` under Node (`console/tests/sign.mjs`).
fn console_sign(
    key: &Path,
    chain: Option<&Path>,
    aud: &str,
    cmd: &str,
    args: &str,
) -> serde_json::Value {
    let out = Command::new("node")
        .arg("tests/sign.mjs")
        .current_dir(console_dir())
        .env("KEY_FILE", key)
        .env(
            "CHAIN_FILE",
            chain.map(|c| c.as_os_str()).unwrap_or_default(),
        )
        .env("AUD", aud)
        .env("CMD", cmd)
        .env("ARGS", args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "sign.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_consoles_invocations_are_byte_for_byte_what_zero_auth_verifies() {
    use zero_auth::{InvocationToken, Ipld};
    let w = world("console-sign");
    let node: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/v1/node", w.api)).body).unwrap();
    let node_did = node["did"].as_str().unwrap();
    let dir = test_dir("console-sign-files");
    let key = dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let chain = dir.join("acme.ucan");
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();

    let signed = console_sign(
        &key,
        Some(&chain),
        node_did,
        "/app/list",
        r#"{"tenant": "acme", "list": ["a", 1, true, null], "map": {"zz": 1, "b": -2}}"#,
    );
    assert_eq!(signed["tenant"], "acme", "{signed}");
    assert_eq!(signed["did"], w.acme.owner.did().to_string());
    let b64 = signed["invocation"].as_str().unwrap();
    let inv = InvocationToken::from_base64(b64).unwrap();
    // Decoding re-encodes and compares: the page's bytes are zero-auth's canonical bytes.
    assert_eq!(inv.encode().unwrap(), inv.as_bytes());
    inv.verify_signature().unwrap();
    assert_eq!(inv.issuer(), w.acme.owner.did());
    assert_eq!(inv.subject(), w.admin.did());
    assert_eq!(inv.audience().unwrap().to_string(), node_did);
    assert_eq!(inv.command().as_str(), "/app/list");
    assert_eq!(inv.proofs(), &[*w.acme.chain[0].cid()]);
    assert_eq!(
        signed["proofs"][0].as_str().unwrap(),
        w.acme.chain[0].cid().to_string()
    );
    let args = inv.args();
    assert_eq!(args["tenant"], Ipld::String("acme".into()));
    assert_eq!(
        args["list"],
        Ipld::List(vec![
            Ipld::String("a".into()),
            Ipld::Integer(1),
            Ipld::Bool(true),
            Ipld::Null
        ])
    );
    let exp = inv.expiration().unwrap();
    let now = zero_client::now();
    assert!(exp > now && exp <= now + 130, "exp {exp}, now {now}");
    assert_eq!(inv.payload().nonce.len(), 12);

    // The node accepts it, once.
    let proofs = w.acme.chain[0].to_base64();
    let call = || {
        get_with_headers(
            &format!("{}/v1/tenants/acme/apps", w.api),
            &[
                ("authorization", &format!("Bearer {b64}")),
                ("ucan-proofs", &proofs),
            ],
        )
    };
    let first = call();
    assert_eq!(first.status, 200, "{}", first.body);
    let again = call();
    assert_eq!(again.status, 403, "{}", again.body);
    assert!(again.body.contains("Replay"), "{}", again.body);

    // The Admin's (no chain): its own DID is the subject; tenant listing is accepted. Another
    // tenant's app list with acme's chain is refused by the chain's policy.
    let admin_key = w.data.join("admin.key");
    let signed = console_sign(&admin_key, None, node_did, "/tenant/list", "{}");
    let inv = InvocationToken::from_base64(signed["invocation"].as_str().unwrap()).unwrap();
    assert_eq!(inv.subject(), w.admin.did());
    assert!(inv.proofs().is_empty());
    let r = get_with(
        &format!("{}/v1/tenants", w.api),
        "authorization",
        &format!("Bearer {}", signed["invocation"].as_str().unwrap()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"beta\""), "{}", r.body);
    let signed = console_sign(
        &key,
        Some(&chain),
        node_did,
        "/app/list",
        r#"{"tenant": "beta"}"#,
    );
    let r = get_with_headers(
        &format!("{}/v1/tenants/beta/apps", w.api),
        &[
            (
                "authorization",
                &format!("Bearer {}", signed["invocation"].as_str().unwrap()),
            ),
            ("ucan-proofs", &proofs),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.body);
}
