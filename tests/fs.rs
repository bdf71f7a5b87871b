//! End-to-end tests of `wasi:filesystem` over zerofs on a real node: components signed with
//! `/fs/*` grants at file and directory granularity, each right paired with its refusal,
//! traversal attempts, filtered listings, tenant isolation and the static-site example.
//!
//! Files are seeded by the tenants' owners through the management API (`zero fs put`).

mod support;

use std::io::Read;

use support::*;
use zero_client::{Client, Grant};

/// Room for 20 MiB through a debug build of the node.
const LIMITS: &str = r#"
[limits]
cpu_time_ms = 10000
wall_time_ms = 30000
memory = "64 MiB"

[http]
max_response_body = "64 MiB"
"#;

/// A node with tenants `acme` and `beta` (each granted its static site's host, `acme.test` and
/// `beta.test`), whose owners then upload the files `seed` names through the management API
/// (`zero fs put`).
fn fs_world(name: &str, seed: impl FnOnce(&mut Seed)) -> World {
    let w = World::spec(name)
        .with(LIMITS)
        .hosts("acme", &["acme.test"])
        .hosts("beta", &["beta.test"])
        .start();
    seed(&mut Seed {
        acme: &mut w.owner(&w.acme),
        beta: &mut w.owner(&w.beta),
    });
    w
}

/// Uploads files as each tenant's owner.
struct Seed<'a> {
    acme: &'a mut Client,
    beta: &'a mut Client,
}

impl Seed<'_> {
    fn owner(&mut self, tenant: &str) -> &mut Client {
        match tenant {
            "acme" => self.acme,
            "beta" => self.beta,
            other => panic!("no tenant {other} in this world"),
        }
    }

    fn put(&mut self, tenant: &str, path: &str, content: &[u8]) {
        self.owner(tenant)
            .fs_put(tenant, path, content, true)
            .unwrap();
    }

    fn mkdir(&mut self, tenant: &str, path: &str) {
        self.owner(tenant).fs_mkdir(tenant, path, true).unwrap();
    }
}

/// Signs `wasm` for acme with `cmd` scoped by `policy` and deploys it as `name` on `/name`.
fn deploy_acme(w: &World, wasm: &str, name: &str, cmd: &str, policy: &str) {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    let grant = Grant {
        command: cmd.into(),
        policy: zero_client::parse_policy(policy).unwrap(),
        expires_in: None,
    };
    let signed = zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, &grant).unwrap();
    w.owner(&w.acme)
        .deploy("acme", name, &[format!("/{name}")], &[], &signed)
        .unwrap();
}

/// Runs one fsprobe operation: `Ok(data)` or `Err(io error kind)`.
fn probe(w: &World, app: &str, op: &str, path: &str, extra: &str) -> Result<String, String> {
    let r = get(&w.node.url(&format!("/{app}?op={op}&path={path}{extra}")));
    assert_eq!(r.status, 200, "{app} {op} {path}: {}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    if v["ok"] == true {
        Ok(v["data"].as_str().unwrap().to_string())
    } else {
        Err(v["error"].as_str().unwrap().to_string())
    }
}

const DENIED: &str = "PermissionDenied";

fn path_policy(path: &str) -> String {
    format!(r#"[["==", ".path", "{path}"]]"#)
}

#[test]
fn each_right_works_at_file_and_directory_granularity_and_is_refused_without_its_grant() {
    let w = fs_world("fs-rights", |fs| {
        fs.put("acme", "/data/f.txt", b"file f");
        fs.put("acme", "/data/g.txt", b"file g");
        fs.put("acme", "/d/x.txt", b"x");
        fs.put("acme", "/d/keep.txt", b"keep");
        fs.put("acme", "/e/1.txt", b"one");
        fs.mkdir("acme", "/e/sub");
        fs.put("acme", "/secret/key.txt", b"s3cret");
    });
    // File granularity.
    deploy_acme(&w, "fsprobe", "rf", "/fs/read", &path_policy("/data/f.txt"));
    deploy_acme(
        &w,
        "fsprobe",
        "wf",
        "/fs/write",
        &path_policy("/data/f.txt"),
    );
    deploy_acme(
        &w,
        "fsprobe",
        "cf",
        "/fs/create",
        &path_policy("/data/new.txt"),
    );
    deploy_acme(
        &w,
        "fsprobe",
        "df",
        "/fs/delete",
        &path_policy("/data/g.txt"),
    );
    // Directory granularity.
    deploy_acme(&w, "fsprobe", "rd", "/fs/read", &path_policy("/d"));
    deploy_acme(&w, "fsprobe", "wd", "/fs/write", &path_policy("/d"));
    deploy_acme(&w, "fsprobe", "cd", "/fs/create", &path_policy("/d"));
    deploy_acme(&w, "fsprobe", "dd", "/fs/delete", &path_policy("/e"));
    deploy_acme(&w, "fsprobe", "all", "/fs", &path_policy("/d"));
    // Unsigned.
    let unsigned = std::fs::read(guest_wasm("fsprobe")).unwrap();
    w.owner(&w.acme)
        .deploy("acme", "none", &["/none".into()], &[], &unsigned)
        .unwrap();

    // read, file granularity: the file, not its sibling; the listing shows only the file.
    assert_eq!(
        probe(&w, "rf", "read", "/data/f.txt", ""),
        Ok("file f".into())
    );
    assert_eq!(
        probe(&w, "rf", "read", "/data/g.txt", ""),
        Err(DENIED.into())
    );
    assert_eq!(probe(&w, "rf", "readdir", "/data", ""), Ok("f.txt".into()));
    assert_eq!(
        probe(&w, "rf", "stat", "/data/f.txt", ""),
        Ok("file:6".into())
    );
    assert_eq!(
        probe(&w, "rf", "stat", "/data/g.txt", ""),
        Err(DENIED.into())
    );
    // An invisible path is refused the same way whether it exists or not.
    assert_eq!(
        probe(&w, "rf", "stat", "/data/nothing", ""),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "rf", "read", "/data/nothing", ""),
        Err(DENIED.into())
    );

    // read, directory granularity, and its refusal (wd has write but not read on /d).
    assert_eq!(probe(&w, "rd", "read", "/d/x.txt", ""), Ok("x".into()));
    assert_eq!(
        probe(&w, "rd", "readdir", "/d", ""),
        Ok("keep.txt,x.txt".into())
    );
    assert_eq!(probe(&w, "wd", "read", "/d/x.txt", ""), Err(DENIED.into()));

    // write, file granularity.
    assert_eq!(
        probe(&w, "wf", "write", "/data/f.txt", "&data=new-f"),
        Ok("".into())
    );
    assert_eq!(
        probe(&w, "rf", "read", "/data/f.txt", ""),
        Ok("new-f".into())
    );
    assert_eq!(
        probe(&w, "wf", "append", "/data/f.txt", "&data=+more"),
        Ok("".into())
    );
    assert_eq!(
        probe(&w, "rf", "read", "/data/f.txt", ""),
        Ok("new-f more".into())
    );
    assert_eq!(
        probe(&w, "wf", "write", "/data/g.txt", "&data=evil"),
        Err(DENIED.into())
    );
    // write, directory granularity, and its refusal (rd reads /d but may not write it).
    assert_eq!(
        probe(&w, "wd", "write", "/d/x.txt", "&data=xx"),
        Ok("".into())
    );
    assert_eq!(probe(&w, "rd", "read", "/d/x.txt", ""), Ok("xx".into()));
    assert_eq!(
        probe(&w, "wd", "truncate", "/d/keep.txt", ""),
        Ok("".into())
    );
    assert_eq!(
        probe(&w, "rd", "stat", "/d/keep.txt", ""),
        Ok("file:0".into())
    );
    assert_eq!(
        probe(&w, "rd", "write", "/d/x.txt", "&data=no"),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "rd", "append", "/d/x.txt", "&data=no"),
        Err(DENIED.into())
    );
    assert_eq!(probe(&w, "rd", "read", "/d/x.txt", ""), Ok("xx".into()));

    // create, file granularity: exactly the granted name, with its first content; the
    // content of an existing file is out of reach.
    assert_eq!(
        probe(&w, "cf", "create", "/data/new.txt", "&data=n"),
        Ok("".into())
    );
    assert_eq!(
        probe(&w, "cf", "create", "/data/new.txt", "&data=n"),
        Err("AlreadyExists".into())
    );
    assert_eq!(
        probe(&w, "cf", "write", "/data/new.txt", "&data=again"),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "cf", "create", "/data/other.txt", "&data="),
        Err(DENIED.into())
    );
    // create, directory granularity, and the refusals.
    assert_eq!(probe(&w, "cd", "mkdir", "/d/sub", ""), Ok("".into()));
    assert_eq!(
        probe(&w, "cd", "create", "/d/sub/c.txt", "&data=c"),
        Ok("".into())
    );
    assert_eq!(probe(&w, "rd", "read", "/d/sub/c.txt", ""), Ok("c".into()));
    assert_eq!(probe(&w, "rd", "mkdir", "/d/sub2", ""), Err(DENIED.into()));
    assert_eq!(
        probe(&w, "wd", "create", "/d/w.txt", "&data=w"),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "rd", "readdir", "/d", ""),
        Ok("keep.txt,sub,x.txt".into())
    );

    // delete, file granularity.
    assert_eq!(
        probe(&w, "df", "unlink", "/data/f.txt", ""),
        Err(DENIED.into())
    );
    assert_eq!(probe(&w, "df", "unlink", "/data/g.txt", ""), Ok("".into()));
    assert_eq!(probe(&w, "rf", "readdir", "/data", ""), Ok("f.txt".into()));
    // delete, directory granularity, and the refusals.
    assert_eq!(probe(&w, "dd", "unlink", "/e/1.txt", ""), Ok("".into()));
    assert_eq!(probe(&w, "dd", "rmdir", "/e/sub", ""), Ok("".into()));
    assert_eq!(
        probe(&w, "rd", "unlink", "/d/x.txt", ""),
        Err(DENIED.into())
    );
    assert_eq!(probe(&w, "wd", "rmdir", "/d/sub", ""), Err(DENIED.into()));
    assert_eq!(probe(&w, "rd", "read", "/d/x.txt", ""), Ok("xx".into()));

    // rename = delete on the source + create on the destination.
    assert_eq!(
        probe(&w, "all", "rename", "/d/x.txt", "&to=/d/y.txt"),
        Ok("".into())
    );
    assert_eq!(
        probe(&w, "rd", "readdir", "/d", ""),
        Ok("keep.txt,sub,y.txt".into())
    );
    assert_eq!(
        probe(&w, "rd", "rename", "/d/y.txt", "&to=/d/z.txt"),
        Err(DENIED.into())
    );

    // Traversal and escapes: `..`, absolute paths outside the grant, symlinks.
    assert_eq!(
        probe(&w, "rd", "read", "/d/../secret/key.txt", ""),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "rd", "read", "/d/sub/../../secret/key.txt", ""),
        Err(DENIED.into())
    );
    assert!(probe(&w, "rd", "read", "/secret/key.txt", "").is_err());
    assert!(probe(&w, "rd", "read", "../secret/key.txt", "").is_err());
    assert!(probe(&w, "rd", "readdir", "/", "").is_err());
    assert_eq!(
        probe(&w, "all", "symlink", "/secret/key.txt", "&to=/d/link"),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "all", "symlink", "../secret", "&to=/d/link"),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "rd", "readdir", "/d", ""),
        Ok("keep.txt,sub,y.txt".into())
    );

    // An unsigned component sees no files at all.
    assert!(probe(&w, "none", "readdir", "/", "").is_err());
    assert!(probe(&w, "none", "read", "/d/keep.txt", "").is_err());
    assert!(probe(&w, "none", "create", "/d/n.txt", "&data=n").is_err());
    w.node.stop();
}

#[test]
fn static_site_serves_its_site_per_tenant_streams_large_files_and_nothing_outside() {
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let big_for_seed = big.clone();
    let w = fs_world("fs-site", move |fs| {
        fs.put("acme", "/site/index.html", b"<h1>acme</h1>");
        fs.put("acme", "/site/style.css", b"body{}");
        fs.put("acme", "/site/docs/index.html", b"docs");
        fs.put("acme", "/site/big.bin", &big_for_seed);
        fs.put("acme", "/secret.txt", b"s3cret");
        fs.put("beta", "/site/index.html", b"<h1>beta</h1>");
    });
    let bytes = std::fs::read(guest_wasm("static_site")).unwrap();
    let grant = Grant {
        command: "/fs/read".into(),
        policy: zero_client::parse_policy(&path_policy("/site")).unwrap(),
        expires_in: None,
    };
    let acme = zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, &grant).unwrap();
    let beta = zero_client::sign_component(&bytes, &w.beta.owner, &w.beta.chain, &grant).unwrap();
    w.owner(&w.acme)
        .deploy("acme", "site", &["acme.test/".into()], &[], &acme)
        .unwrap();
    w.owner(&w.beta)
        .deploy("beta", "site", &["beta.test/".into()], &[], &beta)
        .unwrap();

    let host = |h: &str, path: &str| get_with(&w.node.url(path), "host", h);
    let r = host("acme.test", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "<h1>acme</h1>"));
    let r = host("beta.test", "/");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "<h1>beta</h1>"),
        "each tenant sees its own /site"
    );
    assert_eq!(host("acme.test", "/docs").body, "docs");
    assert_eq!(host("acme.test", "/style.css").body, "body{}");
    assert_eq!(host("beta.test", "/style.css").status, 404);
    assert_eq!(host("acme.test", "/missing.html").status, 404);
    // Nothing outside /site, however the path is spelled.
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/../../secret.txt",
    ] {
        let r = host("acme.test", path);
        assert_ne!(r.status, 200, "{path}");
        assert!(!r.body.contains("s3cret"), "{path}");
    }
    // Mounted under a path prefix, it serves paths within the app (the node passes them in
    // `zero-path-info`, replacing whatever a client sent in that header).
    w.owner(&w.acme)
        .deploy("acme", "docs", &["/www".into()], &[], &acme)
        .unwrap();
    assert_eq!(get(&w.node.url("/www/")).body, "<h1>acme</h1>");
    assert_eq!(get(&w.node.url("/www/docs/")).body, "docs");
    assert_eq!(get(&w.node.url("/www")).body, "<h1>acme</h1>");
    let spoofed = get_with(
        &w.node.url("/www/style.css"),
        "zero-path-info",
        "/docs/index.html",
    );
    assert_eq!(
        spoofed.body, "body{}",
        "a client cannot choose the path info"
    );
    let post = agent()
        .post(&w.node.url("/"))
        .set("host", "acme.test")
        .send_string("x");
    match post {
        Err(ureq::Error::Status(405, _)) => {}
        other => panic!("POST must answer 405, got {other:?}"),
    }

    // 20 MiB through the component, byte for byte.
    let resp = agent()
        .get(&w.node.url("/big.bin"))
        .set("host", "acme.test")
        .call()
        .unwrap();
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    let mut got = Vec::new();
    if let Err(e) = resp.into_reader().read_to_end(&mut got) {
        panic!(
            "reading the large file failed after {} bytes: {e}; node log:\n{}",
            got.len(),
            w.node.logs.lock().unwrap().join("\n")
        );
    }
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the streamed bytes differ from the stored file");
    w.node.stop();
}

#[test]
fn guest_writes_are_held_to_the_tenant_quota_before_they_are_staged() {
    let w = support::world_with("fs-quota", "[fs]\nquota_bytes = \"256 KiB\"\n");
    let bytes = std::fs::read(guest_wasm("fsprobe")).unwrap();
    let grant = Grant {
        command: "/fs".into(),
        policy: zero_client::parse_policy(&path_policy("/")).unwrap(),
        expires_in: None,
    };
    let signed = zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, &grant).unwrap();
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    owner
        .deploy("acme", "probe", &["/probe".into()], &[], &signed)
        .unwrap();
    let fill = |path: &str, size: usize| {
        let r = get(&w
            .node
            .url(&format!("/probe?op=fill&path={path}&data={size}")));
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    // The deployed code counts against the quota too; what is left still takes a small file.
    let v = fill("/small.bin", 16 << 10);
    assert_eq!(v["ok"], true, "{v}");
    // A write past the quota fails at the write that crosses it, not after staging it all: a
    // 1 GiB fill could not even be staged within the request's CPU budget (it would end in a
    // 5xx), so an answer at all shows that the refusal came early.
    let v = fill("/big.bin", 1 << 30);
    assert_eq!(v["ok"], false, "{v}");
    // `insufficient-space` reaches std as ENOSPC (51) from `descriptor.write`, or as EIO (29)
    // when wasi-libc writes through an output stream, whose errors it does not translate.
    assert!(
        v["errno"] == 51 || v["errno"] == 29,
        "the guest sees the write refused: {v}"
    );
    // Like a POSIX file after ENOSPC, what the guest wrote before the refusal is published
    // when it closes the file; the tenant never goes over its quota.
    let listing = owner.fs_list("acme", "/").unwrap();
    let entries = listing["entries"].as_array().unwrap();
    let size = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["size"].as_u64().unwrap())
    };
    assert_eq!(size("small.bin"), Some(16 << 10), "{listing}");
    assert!(size("big.bin").unwrap_or(0) < 256 << 10, "{listing}");
}

#[test]
fn a_negative_grant_excludes_the_directory_and_everything_under_it_for_components() {
    let w = fs_world("fs-negative", |fs| {
        fs.put("acme", "/secret/x", b"the secret");
        fs.put("acme", "/secret/deep/y", b"deeper");
        fs.put("acme", "/public/x", b"public");
        fs.put("acme", "/site/index.html", b"index");
        fs.put("acme", "/site/private/key", b"key");
    });
    deploy_acme(
        &w,
        "fsprobe",
        "ne",
        "/fs/read",
        r#"[["!=", ".path", "/secret"]]"#,
    );
    deploy_acme(
        &w,
        "fsprobe",
        "notlike",
        "/fs/read",
        r#"[["==", ".path", "/site"], ["not", ["like", ".path", "/site/priv*"]]]"#,
    );
    // The legitimate use: everything outside the excluded directory.
    assert_eq!(
        probe(&w, "ne", "read", "/public/x", ""),
        Ok("public".into())
    );
    assert_eq!(
        probe(&w, "ne", "readdir", "/", ""),
        Ok("public,site".into()),
        "the excluded directory is not even listed"
    );
    // The attack: the exclusion held at `/` and at `/secret/deep`, which used to grant
    // everything under /secret.
    for attack in ["/secret/x", "/secret/deep/y"] {
        assert_eq!(
            probe(&w, "ne", "read", attack, ""),
            Err(DENIED.into()),
            "{attack}"
        );
    }
    assert_eq!(probe(&w, "ne", "stat", "/secret", ""), Err(DENIED.into()));
    assert_eq!(
        probe(&w, "ne", "readdir", "/secret/deep", ""),
        Err(DENIED.into())
    );
    // A positive grant with a `not like` exclusion: the site, without its private part.
    assert_eq!(
        probe(&w, "notlike", "read", "/site/index.html", ""),
        Ok("index".into())
    );
    assert_eq!(
        probe(&w, "notlike", "read", "/site/private/key", ""),
        Err(DENIED.into())
    );
    assert_eq!(
        probe(&w, "notlike", "readdir", "/site", ""),
        Ok("index.html".into())
    );
    w.node.stop();
}

/// The tenants' world with `extra` merged into its configuration and fsprobe deployed as
/// `probe` with every right on the whole tenant; returns it with the owner's client.
fn probe_world(name: &str, extra: &str) -> (World, Client) {
    let w = world_with(name, extra);
    let bytes = std::fs::read(guest_wasm("fsprobe")).unwrap();
    let grant = Grant {
        command: "/fs".into(),
        policy: zero_client::parse_policy(&path_policy("/")).unwrap(),
        expires_in: None,
    };
    let signed = zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, &grant).unwrap();
    let mut owner = w.owner(&w.acme);
    owner
        .deploy("acme", "probe", &["/probe".into()], &[], &signed)
        .unwrap();
    (w, owner)
}

fn probe_json(w: &World, query: &str) -> serde_json::Value {
    let r = get(&w.node.url(&format!("/probe?{query}")));
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn a_guest_opening_files_in_a_loop_hits_the_open_file_limit_and_the_node_keeps_serving() {
    let (w, mut owner) = probe_world("fs-open-limit", "[fs]\nmax_open_per_instance = 32\n");
    owner
        .fs_put("acme", "/f.txt", &b"content"[..], false)
        .unwrap();
    // The legitimate use: a handful of open files.
    let v = probe_json(&w, "op=hold&path=/f.txt&data=16");
    assert_eq!(v["data"], "16", "{v}");
    // The attack: open the same file until something gives. The preopened directory holds one
    // of the 32 places; the 32nd open fails with ENOMEM (48), WASI's closest errno to EMFILE.
    let v = probe_json(&w, "op=hold&path=/f.txt&data=100000");
    assert_eq!(v["data"], "31:OutOfMemory:48", "{v}");
    w.node.wait_log("the open-file refusal", |v| {
        v["message"].as_str().is_some_and(|m| {
            m.contains("too many open files") && m.contains("max_open_per_instance = 32")
        })
    });
    // The places are per instance: the next request opens files again.
    let v = probe_json(&w, "op=read&path=/f.txt");
    assert_eq!(v["data"], "content", "{v}");
    let v = probe_json(&w, "op=hold&path=/f.txt&data=31");
    assert_eq!(v["data"], "31", "{v}");
    w.node.stop();
}

/// One tenant's instances together cannot take more than its share of the node's open-file
/// budget, and the node's budget holds for all tenants: another tenant keeps opening files
/// while the first is at its cap.
#[test]
fn a_tenant_holding_files_open_in_many_requests_stops_at_its_share_of_the_node() {
    // A longer wall-clock limit than the other tests', so that the holder below surely holds
    // its files while the rest of the test runs, however loaded the machine.
    let (w, mut owner) = probe_world(
        "fs-open-budget",
        "[limits]\nwall_time_ms = 8000\n[fs]\nmax_open_per_instance = 64\nmax_open_files = 80\nmax_open_files_per_tenant = 48\n",
    );
    owner
        .fs_put("acme", "/f.txt", &b"content"[..], false)
        .unwrap();
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    beta.fs_put("beta", "/f.txt", &b"beta's"[..], false)
        .unwrap();
    let grant = Grant {
        command: "/fs".into(),
        policy: zero_client::parse_policy(&path_policy("/")).unwrap(),
        expires_in: None,
    };
    let bytes = std::fs::read(guest_wasm("fsprobe")).unwrap();
    let signed = zero_client::sign_component(&bytes, &w.beta.owner, &w.beta.chain, &grant).unwrap();
    beta.deploy("beta", "probe", &["/bprobe".into()], &[], &signed)
        .unwrap();
    // The attack: acme holds 40 files (and its preopen) in one request, until the wall-clock
    // limit (8 s here) ends it...
    let url = w.node.url("/probe?op=hold&path=/f.txt&data=40&to=60000");
    let holder = std::thread::spawn(move || get(&url).status);
    w.node.wait_log("the holder holds its files", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("fsprobe holding 40 files"))
    });
    // ...and opens more in another: it stops at its share (48 in all: 41 held, its own preopen,
    // 6 more), far below 64 per instance.
    let v = probe_json(&w, "op=hold&path=/f.txt&data=100000");
    let answer = v["data"].as_str().unwrap().to_string();
    let (opened, error) = answer.split_once(':').unwrap_or((&answer, ""));
    let opened = opened.parse::<usize>().unwrap();
    assert!(
        opened <= 6 && error == "OutOfMemory:48",
        "acme's second request stops at the tenant's share: {opened}:{error}"
    );
    w.node.wait_log("the tenant's refusal", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_open_files_per_tenant = 48"))
    });
    // beta is not affected by acme's share...
    let r = get(&w.node.url("/bprobe?op=hold&path=/f.txt&data=30"));
    assert!(r.body.contains("\"30\""), "{}", r.body);
    // ...and the node's budget (80) holds for everyone: with acme's 41 held, beta gets the rest.
    let r = get(&w.node.url("/bprobe?op=hold&path=/f.txt&data=100000"));
    assert!(r.body.contains(":OutOfMemory:48"), "{}", r.body);
    w.node.wait_log("the node's refusal", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_open_files = 80"))
    });
    assert_eq!(
        holder.join().unwrap(),
        504,
        "the holder ends at the wall-clock limit"
    );
    // Everything is released with its requests: both tenants open files again.
    let v = probe_json(&w, "op=hold&path=/f.txt&data=47");
    assert_eq!(v["data"], "47", "{v}");
    let r = get(&w.node.url("/bprobe?op=read&path=/f.txt"));
    assert!(r.body.contains("beta's"), "{}", r.body);
    w.node.stop();
}

#[test]
fn open_staged_files_share_the_tenant_quota_instead_of_each_reaching_it() {
    let (w, mut owner) = probe_world("fs-staged-sum", "[fs]\nquota_bytes = \"2 MiB\"\n");
    let usage = |owner: &mut Client| -> u64 {
        let listing = owner.fs_list("acme", "/").unwrap();
        listing["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["size"].as_u64().unwrap_or(0))
            .sum()
    };
    // The legitimate use: two 700 KiB files written side by side fit.
    let v = probe_json(&w, &format!("op=spread&path=/ok&data=2:{}", 700 << 10));
    assert_eq!(v["data"], "2", "{v}");
    owner.fs_remove("acme", "/ok0", false).unwrap();
    owner.fs_remove("acme", "/ok1", false).unwrap();
    // The attack: four files open at once, each within what the quota leaves (about 1.8 MiB
    // next to the deployed code), together far beyond it. The third file's write that crosses
    // what is left fails: staged content is held to the quota as a sum.
    let v = probe_json(&w, &format!("op=spread&path=/s&data=4:{}", 700 << 10));
    let answer = v["data"].as_str().unwrap();
    assert!(
        answer == "2:StorageFull:51"
            || answer == "2:Other:29"
            || answer.starts_with("2:Uncategorized:29"),
        "the third file is refused while it is staged: {v}"
    );
    let listed = usage(&mut owner);
    assert!(
        listed <= 2 << 20,
        "the tenant stays within its quota: {listed}"
    );
    w.node.stop();
}

#[test]
fn a_write_the_guest_never_closes_is_discarded_with_its_request_not_published_after() {
    let (w, mut owner) = probe_world("fs-leak", "");
    owner.fs_put("acme", "/f.txt", &b"old"[..], false).unwrap();
    let read = |owner: &mut Client| {
        let mut out = Vec::new();
        owner.fs_get("acme", "/f.txt", &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    // The attack: stage a write, keep the file open and return (or spin until the node stops
    // the request). Nothing may be hashed, fsynced or published after the request ended.
    let v = probe_json(&w, "op=leak&path=/f.txt&data=leaked");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(read(&mut owner), "old");
    w.node.wait_log("the discarded write", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("a write staged by a guest was discarded"))
            && v["path"] == "/f.txt"
    });
    let r = get(&w.node.url("/probe?op=leak&path=/f.txt&data=leaked&to=spin"));
    assert_eq!(r.status, 500, "the spinning request is stopped: {}", r.body);
    assert_eq!(read(&mut owner), "old");
    // The legitimate use: a write the guest closes is published within its request.
    let v = probe_json(&w, "op=write&path=/f.txt&data=new");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(read(&mut owner), "new");
    w.node.stop();
}
