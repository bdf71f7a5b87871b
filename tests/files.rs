//! End-to-end tests of a tenant's files on a real node: `zero fs put/get/ls/rm/mkdir` as UCAN
//! invocations over the management API (streamed both ways), file capabilities at file and
//! directory granularity, tenant isolation, deployed code stored in zerofs and read back with
//! the owner's credential, and crash safety under `kill -9`.

mod support;

use std::io::Read;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;
use zero_auth::Keypair;
use zero_client::Client;

fn owner_client(w: &World) -> Client {
    Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone())
}

/// A key holding the acme owner's chain extended with `cmd`/`policy`.
fn delegate(w: &World, cmd: &str, policy: &str, expires_in: Option<u64>) -> Client {
    let key = Keypair::generate().unwrap();
    let chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        key.did(),
        &grant(cmd, policy, expires_in),
    )
    .unwrap();
    Client::new(&w.api, key, chain)
}

fn get_bytes(c: &mut Client, tenant: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    c.fs_get(tenant, path, &mut out)?;
    Ok(out)
}

fn refusal(e: anyhow::Error) -> zero_client::ApiError {
    match e.downcast::<zero_client::ApiError>() {
        Ok(api) => api,
        Err(other) => panic!("expected a refusal from the node, got: {other:#}"),
    }
}

/// Deterministic content of a given size.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn the_owner_manages_files_with_the_cli() {
    let w = world("files-cli");
    let dir = test_dir("files-cli-local");
    let key = dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let chain = dir.join("owner.ucan");
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();
    let local = dir.join("index.html");
    std::fs::write(&local, b"<h1>hello</h1>").unwrap();
    let auth = [
        "--api",
        &w.api,
        "--key",
        key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
    ];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&auth);
        zero(&all)
    };

    let (code, _, err) = run(&[
        "fs",
        "put",
        local.to_str().unwrap(),
        "acme:/site/index.html",
    ]);
    assert_eq!(code, 1, "a missing parent is refused without -p");
    assert!(err.contains("NotFound") && err.contains("/site"), "{err}");
    let (code, out, err) = run(&[
        "fs",
        "put",
        "-p",
        local.to_str().unwrap(),
        "acme:/site/index.html",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"size\": 14"), "{out}");
    let (code, _, err) = run(&["fs", "mkdir", "acme:/site/img"]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run(&["fs", "ls", "acme:/site"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("img/") && out.contains("index.html"), "{out}");
    assert!(out.contains("14  index.html"), "{out}");

    let got = dir.join("got.html");
    let (code, _, err) = run(&["fs", "get", "acme:/site/index.html", got.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&got).unwrap(), b"<h1>hello</h1>");
    let (code, out, _) = run(&["fs", "get", "acme:/site/index.html"]);
    assert_eq!((code, out.as_str()), (0, "<h1>hello</h1>"));

    let (code, _, err) = run(&["fs", "rm", "acme:/site"]);
    assert_eq!(code, 1);
    assert!(err.contains("DirectoryNotEmpty"), "{err}");
    let (code, _, err) = run(&["fs", "rm", "-r", "acme:/site"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["fs", "get", "acme:/site/index.html", got.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("NotFound"), "{err}");
    // A failed download leaves the previous local file alone, and no partial file.
    assert_eq!(std::fs::read(&got).unwrap(), b"<h1>hello</h1>");

    let (code, _, err) = run(&["fs", "get", "site/index.html"]);
    assert_eq!(code, 1);
    assert!(err.contains("TENANT:/path"), "{err}");
}

#[test]
fn large_files_stream_both_ways() {
    let w = world("files-large");
    let mut owner = owner_client(&w);
    let len = 96 << 20;
    let data = content(7, len);
    let expected = Sha256::digest(&data);
    let hwm_before = peak_rss_kib(w.node.child.id());
    let answer = owner
        .fs_put("acme", "/big.bin", std::io::Cursor::new(data), false)
        .unwrap();
    assert_eq!(answer["size"], len as u64);
    assert_eq!(
        answer["hash"].as_str().unwrap(),
        format!("sha256:{}", hex::encode(expected))
    );
    let mut hasher = Sha256::new();
    let mut sink = HashWriter(&mut hasher, 0);
    owner.fs_get("acme", "/big.bin", &mut sink).unwrap();
    assert_eq!(sink.1, len as u64);
    assert_eq!(hasher.finalize(), expected);
    let grown = peak_rss_kib(w.node.child.id()).saturating_sub(hwm_before);
    assert!(
        grown < 48 * 1024,
        "the node's peak memory grew by {grown} KiB while moving a {} MiB file: it must stream",
        len >> 20
    );
}

struct HashWriter<'a>(&'a mut Sha256, u64);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

#[test]
fn each_file_right_works_and_is_refused_without_its_grant() {
    let w = world("files-rights");
    let mut owner = owner_client(&w);
    owner.fs_mkdir("acme", "/pub/docs", true).unwrap();
    owner.fs_mkdir("acme", "/private", false).unwrap();
    for p in [
        "/pub/a.txt",
        "/pub/b.txt",
        "/pub/docs/c.txt",
        "/private/s.txt",
    ] {
        owner.fs_put("acme", p, &b"v1"[..], false).unwrap();
    }

    // Read, directory granularity: everything under /pub, nothing else.
    let mut reader = delegate(&w, "/fs/read", r#"[["==", ".path", "/pub"]]"#, None);
    assert_eq!(
        get_bytes(&mut reader, "acme", "/pub/docs/c.txt").unwrap(),
        b"v1"
    );
    assert!(reader.fs_list("acme", "/pub").is_ok());
    let e = refusal(get_bytes(&mut reader, "acme", "/private/s.txt").unwrap_err());
    assert_eq!((e.status, e.error.as_str()), (403, "MatchError"), "{e}");
    let e = refusal(get_bytes(&mut reader, "acme", "/pub/../private/s.txt").unwrap_err());
    assert_eq!(
        e.status, 403,
        "a traversal is normalized, then refused: {e}"
    );
    let e = refusal(reader.fs_list("acme", "/").unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    // Read does not imply write.
    let e = refusal(
        reader
            .fs_put("acme", "/pub/a.txt", &b"x"[..], false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "InvalidClaim", "{e}");

    // Read, file granularity.
    let mut one = delegate(&w, "/fs/read", r#"[["==", ".path", "/pub/a.txt"]]"#, None);
    assert_eq!(get_bytes(&mut one, "acme", "/pub/a.txt").unwrap(), b"v1");
    let e = refusal(get_bytes(&mut one, "acme", "/pub/b.txt").unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");

    // Write: replaces an existing file, but creating a new one needs /fs/create.
    let mut writer = delegate(&w, "/fs/write", r#"[["==", ".path", "/pub"]]"#, None);
    writer
        .fs_put("acme", "/pub/a.txt", &b"v2"[..], false)
        .unwrap();
    assert_eq!(get_bytes(&mut owner, "acme", "/pub/a.txt").unwrap(), b"v2");
    let e = refusal(
        writer
            .fs_put("acme", "/pub/new.txt", &b"x"[..], false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "InvalidClaim", "{e}");
    let e = refusal(
        writer
            .fs_put("acme", "/private/s.txt", &b"x"[..], false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "MatchError", "{e}");
    // File granularity for write.
    let mut write_b = delegate(&w, "/fs/write", r#"[["==", ".path", "/pub/b.txt"]]"#, None);
    write_b
        .fs_put("acme", "/pub/b.txt", &b"v2"[..], false)
        .unwrap();
    let e = refusal(
        write_b
            .fs_put("acme", "/pub/a.txt", &b"v3"[..], false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "MatchError", "{e}");

    // Create: a writer with /fs (write and create) under /pub can add files and directories.
    let mut creator = delegate(&w, "/fs", r#"[["==", ".path", "/pub"]]"#, None);
    creator
        .fs_put("acme", "/pub/new.txt", &b"n"[..], false)
        .unwrap();
    creator.fs_mkdir("acme", "/pub/more", false).unwrap();
    let e = refusal(
        creator
            .fs_mkdir("acme", "/private/more", false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "MatchError", "{e}");
    let mut create_only = delegate(&w, "/fs/create", r#"[["==", ".path", "/pub/docs"]]"#, None);
    create_only
        .fs_mkdir("acme", "/pub/docs/sub", false)
        .unwrap();
    let e = refusal(
        create_only
            .fs_mkdir("acme", "/pub/other", false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "MatchError", "{e}");

    // Delete, file and directory granularity.
    let mut del_file = delegate(
        &w,
        "/fs/delete",
        r#"[["==", ".path", "/pub/new.txt"]]"#,
        None,
    );
    del_file.fs_remove("acme", "/pub/new.txt", false).unwrap();
    let e = refusal(del_file.fs_remove("acme", "/pub/b.txt", false).unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    let mut del_dir = delegate(&w, "/fs/delete", r#"[["==", ".path", "/pub/docs"]]"#, None);
    del_dir.fs_remove("acme", "/pub/docs", true).unwrap();
    let e = refusal(
        del_dir
            .fs_remove("acme", "/private/s.txt", false)
            .unwrap_err(),
    );
    assert_eq!(e.error, "MatchError", "{e}");
    let e = refusal(reader.fs_remove("acme", "/pub/a.txt", false).unwrap_err());
    assert_eq!(e.error, "InvalidClaim", "{e}");
    assert_eq!(
        get_bytes(&mut owner, "acme", "/private/s.txt").unwrap(),
        b"v1"
    );
}

#[test]
fn tenants_cannot_reach_each_others_files() {
    let w = world("files-tenants");
    let mut acme = owner_client(&w);
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    acme.fs_put("acme", "/same.txt", &b"acme's"[..], false)
        .unwrap();
    beta.fs_put("beta", "/same.txt", &b"beta's"[..], false)
        .unwrap();
    assert_eq!(
        get_bytes(&mut acme, "acme", "/same.txt").unwrap(),
        b"acme's"
    );
    assert_eq!(
        get_bytes(&mut beta, "beta", "/same.txt").unwrap(),
        b"beta's"
    );
    let e = refusal(get_bytes(&mut beta, "acme", "/same.txt").unwrap_err());
    assert_eq!((e.status, e.error.as_str()), (403, "MatchError"), "{e}");
    assert!(!e.message.contains("acme's"), "{e}");
    let e = refusal(beta.fs_put("acme", "/x.txt", &b"x"[..], false).unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    let e = refusal(beta.fs_list("acme", "/").unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    // The same refusal whether the other tenant's file exists or not.
    let e2 = refusal(get_bytes(&mut beta, "acme", "/nothing-here").unwrap_err());
    assert_eq!((e2.status, e2.error), (e.status, e.error));
}

#[test]
fn deployed_code_lives_in_zerofs_and_survives_a_restart() {
    let w = world("files-code");
    let bytes = signed(&w, "hello", &grant("/", "[]", None));
    let mut owner = owner_client(&w);
    owner
        .deploy("acme", "hello", &["/hello".into()], &[], &bytes)
        .unwrap();
    assert_eq!(get(&w.node.url("/hello")).status, 200);
    let code_path = format!("/.zero/code/{}.wasm", hex::encode(Sha256::digest(&bytes)));
    assert_eq!(get_bytes(&mut owner, "acme", &code_path).unwrap(), bytes);
    // The node's code is read-only for the owner.
    let e = refusal(
        owner
            .fs_put("acme", &code_path, &b"evil"[..], false)
            .unwrap_err(),
    );
    assert_eq!((e.status, e.error.as_str()), (403, "Reserved"), "{e}");
    let e = refusal(owner.fs_remove("acme", "/.zero", true).unwrap_err());
    assert_eq!(e.error, "Reserved", "{e}");

    let dir = w.node.dir.clone();
    let config = std::fs::read_to_string(dir.join("zerocore.toml")).unwrap();
    w.node.stop();
    let node = NodeProc::start(&dir, &config);
    node.wait_log("restored app", |v| {
        v["message"] == "deployed app restored" && v["app"] == "hello"
    });
    assert_eq!(get(&node.url("/hello")).status, 200);

    // Removing the app deletes its code.
    let mut owner = Client::new(
        &format!("http://{}", node.admin),
        copy_key(&w.acme.owner),
        w.acme.chain.clone(),
    );
    owner.remove_app("acme", "hello").unwrap();
    let e = refusal(get_bytes(&mut owner, "acme", &code_path).unwrap_err());
    assert_eq!(e.error, "NotFound", "{e}");
}

#[test]
fn an_expired_owner_credential_stops_the_app_with_the_reason_in_the_log() {
    let w = world("files-expired");
    let bytes = signed(&w, "hello", &grant("/", "[]", None));
    // A deployer whose credential (from the owner) expires in 3 seconds.
    let mut deployer = delegate(&w, "/", "[]", Some(3));
    deployer
        .deploy("acme", "hello", &["/hello".into()], &[], &bytes)
        .unwrap();
    assert_eq!(get(&w.node.url("/hello")).status, 200);
    std::thread::sleep(Duration::from_millis(4200));
    let r = get(&w.node.url("/hello"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("authority expired"), "{}", r.body);
    let line = w.node.wait_log("expiry refusal", |v| {
        v["message"] == "request refused: the app's authority expired"
    });
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("owner's credential"),
        "{line}"
    );

    // After a restart the code is not even read: the credential no longer covers it.
    let dir = w.node.dir.clone();
    let config = std::fs::read_to_string(dir.join("zerocore.toml")).unwrap();
    w.node.stop();
    let node = NodeProc::start(&dir, &config);
    let line = node.wait_log("refused app", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused app"))
    });
    assert_eq!(line["error"], "Expired", "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("owner's credential no longer covers"),
        "{line}"
    );
    assert_eq!(get(&node.url("/hello")).status, 404);
}

#[test]
fn revoking_the_deployers_credential_stops_the_app() {
    let w = world("files-revoked");
    let bytes = signed(&w, "hello", &grant("/", "[]", None));
    let key = Keypair::generate().unwrap();
    let chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        key.did(),
        &grant("/", "[]", None),
    )
    .unwrap();
    let revoked = chain.last().unwrap().cid().to_string();
    let mut deployer = Client::new(&w.api, key, chain);
    deployer
        .deploy("acme", "hello", &["/hello".into()], &[], &bytes)
        .unwrap();
    assert_eq!(get(&w.node.url("/hello")).status, 200);
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    let answer = admin.revoke(&revoked).unwrap();
    assert_eq!(answer["stopped_apps"], 1, "{answer}");
    assert_eq!(get(&w.node.url("/hello")).status, 404);
    w.node.wait_log("stop reason", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("owner's credential") && m.contains("revoked"))
    });
}

#[test]
fn a_deployer_without_read_access_to_the_code_is_refused() {
    let w = world("files-deploy-read");
    let bytes = signed(&w, "hello", &grant("/", "[]", None));
    let mut deployer = delegate(&w, "/app/deploy", "[]", None);
    let e = refusal(
        deployer
            .deploy("acme", "hello", &["/hello".into()], &[], &bytes)
            .unwrap_err(),
    );
    assert_eq!((e.status, e.error.as_str()), (403, "InvalidClaim"), "{e}");
    assert!(e.message.contains("/fs/read"), "{e}");
}

#[test]
fn kill_9_while_uploading_loses_no_acknowledged_file_and_leaves_no_partial_one() {
    let w = world("files-crash");
    let dir = w.node.dir.clone();
    let config = std::fs::read_to_string(dir.join("zerocore.toml")).unwrap();
    let mut owner = owner_client(&w);
    owner.fs_mkdir("acme", "/crash", false).unwrap();
    let api = w.api.clone();
    let key = copy_key(&w.acme.owner);
    let chain = w.acme.chain.clone();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let writer = std::thread::spawn(move || {
        let mut c = Client::new(&api, key, chain);
        for i in 0u64.. {
            let len = 1000 + (i as usize % 7) * 300_000;
            if c.fs_put(
                "acme",
                &format!("/crash/f{i}"),
                std::io::Cursor::new(content(i, len)),
                false,
            )
            .is_err()
            {
                return;
            }
            if tx.send(i).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 25 {
        acked.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("uploads progress"),
        );
    }
    let mut node = w.node;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let _ = writer.join();
    acked.extend(rx.try_iter());
    drop(node);

    let node = NodeProc::start(&dir, &config);
    let mut owner = Client::new(
        &format!("http://{}", node.admin),
        copy_key(&w.acme.owner),
        w.acme.chain.clone(),
    );
    for i in &acked {
        let len = 1000 + (*i as usize % 7) * 300_000;
        let got = get_bytes(&mut owner, "acme", &format!("/crash/f{i}"))
            .unwrap_or_else(|e| panic!("acknowledged file f{i} is lost: {e:#}"));
        assert!(got == content(*i, len), "acknowledged file f{i} is damaged");
    }
    let listing = owner.fs_list("acme", "/crash").unwrap();
    for e in listing["entries"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let i: u64 = name[1..].parse().unwrap();
        let len = 1000 + (i as usize % 7) * 300_000;
        let got = get_bytes(&mut owner, "acme", &format!("/crash/{name}")).unwrap();
        assert!(got == content(i, len), "{name} is visible but partial");
    }
}

#[test]
fn a_refused_upload_is_read_and_answered_not_reset() {
    let w = world("files-refused-upload");
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    let mut body = std::io::repeat(7).take(8 << 20);
    let e = refusal(beta.fs_put("acme", "/x.bin", &mut body, false).unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
}

#[test]
fn quotas_refuse_uploads_and_deploys_and_change_nothing() {
    let w = world_with(
        "files-quota",
        "[fs]\nquota_bytes = \"1 MiB\"\nquota_files = 4\n",
    );
    let mut owner = owner_client(&w);
    owner
        .fs_put(
            "acme",
            "/a.bin",
            std::io::Cursor::new(content(1, 600 << 10)),
            false,
        )
        .unwrap();
    let e = refusal(
        owner
            .fs_put(
                "acme",
                "/b.bin",
                std::io::Cursor::new(content(2, 600 << 10)),
                false,
            )
            .unwrap_err(),
    );
    assert_eq!((e.status, e.error.as_str()), (507, "QuotaExceeded"), "{e}");
    assert!(e.message.contains("bytes"), "{e}");
    let e = refusal(get_bytes(&mut owner, "acme", "/b.bin").unwrap_err());
    assert_eq!(e.error, "NotFound", "the refused upload left nothing: {e}");
    // Replacing a file counts its old size as free.
    owner
        .fs_put(
            "acme",
            "/a.bin",
            std::io::Cursor::new(content(3, 900 << 10)),
            false,
        )
        .unwrap();

    for d in ["/d1", "/d2", "/d3"] {
        owner.fs_mkdir("acme", d, false).unwrap();
    }
    let e = refusal(owner.fs_mkdir("acme", "/d4", false).unwrap_err());
    assert_eq!(e.error, "QuotaExceeded", "{e}");
    assert!(e.message.contains("files"), "{e}");

    // Deployed code counts too: a component that does not fit is refused, and nothing serves.
    let bytes = signed(&w, "hello", &grant("/", "[]", None));
    let e = refusal(
        owner
            .deploy("acme", "hello", &["/hello".into()], &[], &bytes)
            .unwrap_err(),
    );
    assert_eq!((e.status, e.error.as_str()), (507, "QuotaExceeded"), "{e}");
    assert_eq!(get(&w.node.url("/hello")).status, 404);
    // Other tenants have their own quota.
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    beta.fs_put(
        "beta",
        "/b.bin",
        std::io::Cursor::new(content(4, 600 << 10)),
        false,
    )
    .unwrap();
}

#[test]
fn a_negative_file_delegation_excludes_the_directory_and_everything_under_it() {
    let w = world("files-negative");
    let mut owner = owner_client(&w);
    for (path, body) in [
        ("/secret/x", &b"the secret"[..]),
        ("/secret/deep/y", b"deeper"),
        ("/public/x", b"public"),
    ] {
        owner.fs_put("acme", path, body, true).unwrap();
    }
    // The owner hands out read access to everything but /secret, with the CLI.
    let dir = test_dir("files-negative-local");
    let owner_key = dir.join("owner.key");
    w.acme.owner.save(&owner_key).unwrap();
    let owner_chain = dir.join("owner.ucan");
    zero_client::write_chain(&owner_chain, &w.acme.chain).unwrap();
    let reader = Keypair::generate().unwrap();
    let reader_key = dir.join("reader.key");
    reader.save(&reader_key).unwrap();
    let reader_chain = dir.join("reader.ucan");
    let (code, _, err) = zero(&[
        "grant",
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        owner_chain.to_str().unwrap(),
        "--audience",
        reader.did().as_ref(),
        "--cmd",
        "/fs/read",
        "--policy",
        r#"[["!=", ".path", "/secret"]]"#,
        "-o",
        reader_chain.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let fs_get = |path: &str| {
        zero(&[
            "fs",
            "get",
            path,
            "--api",
            &w.api,
            "--key",
            reader_key.to_str().unwrap(),
            "--proof",
            reader_chain.to_str().unwrap(),
        ])
    };
    // The legitimate use: anything outside /secret.
    let (code, out, err) = fs_get("acme:/public/x");
    assert_eq!((code, out.as_str()), (0, "public"), "{err}");
    // The attack: the exclusion held at `/` and at `/secret/deep` (neither is `/secret`),
    // which used to grant everything under /secret.
    for attack in ["acme:/secret/x", "acme:/secret/deep/y", "acme:/secret"] {
        let (code, out, err) = fs_get(attack);
        assert_eq!(code, 1, "{attack} must be refused: {out}");
        assert!(err.contains("MatchError"), "{attack}: {err}");
        assert!(
            err.contains(r#"["!=", ".path", "/secret"]"#)
                && err.contains("excludes a directory and everything under it"),
            "the refusal names the statement and how paths are read: {err}"
        );
        assert!(!err.contains("the secret"), "{err}");
    }
    // Listing is scoped the same way: `/` is readable, `/secret` is not.
    let mut reader_client = Client::new(
        &w.api,
        copy_key(&reader),
        zero_client::read_chain(&reader_chain).unwrap(),
    );
    let listing = reader_client.fs_list("acme", "/public").unwrap();
    assert_eq!(listing["entries"][0]["name"], "x", "{listing}");
    let e = refusal(reader_client.fs_list("acme", "/secret").unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    // A delegation narrowed further down the chain covers the narrower subtree (each link's
    // policy is read hierarchically on the same path), and the exclusion still holds.
    owner
        .fs_put("acme", "/public/sub/z", &b"z"[..], true)
        .unwrap();
    let mut narrow = {
        let key = Keypair::generate().unwrap();
        let chain = zero_client::extend_chain(
            &reader,
            &zero_client::read_chain(&reader_chain).unwrap(),
            key.did(),
            &grant("/fs/read", r#"[["==", ".path", "/public/sub"]]"#, None),
        )
        .unwrap();
        Client::new(&w.api, key, chain)
    };
    assert_eq!(
        get_bytes(&mut narrow, "acme", "/public/sub/z").unwrap(),
        b"z"
    );
    let e = refusal(get_bytes(&mut narrow, "acme", "/public/x").unwrap_err());
    assert_eq!(e.error, "MatchError", "{e}");
    w.node.stop();
}

/// A raw HTTP/1.1 request to the management API with a fresh invocation of `client`'s, whose
/// body the caller then sends (or not) on the returned stream.
fn raw_request(
    w: &World,
    client: &mut Client,
    method: &str,
    command: &str,
    path: &str,
    content_length: Option<u64>,
) -> std::net::TcpStream {
    use std::io::Write;
    let args = std::collections::BTreeMap::from([
        ("tenant".to_string(), zero_auth::Ipld::String("acme".into())),
        ("path".to_string(), zero_auth::Ipld::String(path.into())),
    ]);
    let inv = client.invocation(command, args).unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let mut s = std::net::TcpStream::connect(w.node.admin).unwrap();
    let length = content_length.map_or(String::new(), |n| format!("content-length: {n}\r\n"));
    write!(
        s,
        "{method} /v1/tenants/acme/fs{path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nucan-proofs: {}\r\n{length}\r\n",
        w.node.admin,
        inv.to_base64(),
        proofs.join(",")
    )
    .unwrap();
    s.flush().unwrap();
    s
}

/// Open file descriptors of process `pid` that point into the node's blob store.
fn blob_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().contains("/fs/blobs/"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn stalled_uploads_and_downloads_time_out_and_release_what_they_hold() {
    let w = world_with(
        "files-stall",
        "[fs]\nquota_bytes = \"64 MiB\"\ntransfer_idle_timeout_ms = 2000\ntransfer_timeout_ms = 60000\n",
    );
    let mut owner = owner_client(&w);
    let pid = w.node.child.id();

    // The attack: an upload that announces 60 MiB, sends 40 MiB and then nothing. It must not
    // hold a thread, a temporary file or its 40 MiB of the tenant's quota: it is refused once
    // the client has been idle for transfer_idle_timeout_ms.
    let mut s = raw_request(
        &w,
        &mut owner,
        "PUT",
        "/fs/write",
        "/stalled.bin",
        Some(60 << 20),
    );
    std::io::Write::write_all(&mut s, &content(9, 40 << 20)).unwrap();
    let started = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("TransferTimeout")
            && answer.contains("sent nothing for 2000 ms")
            && answer.contains("transfer_idle_timeout_ms"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(s);
    let e = refusal(get_bytes(&mut owner, "acme", "/stalled.bin").unwrap_err());
    assert_eq!(e.error, "NotFound", "the stalled upload left nothing: {e}");
    // Its share of the quota was returned: 48 MiB of the 64 still fit. (The download below
    // is larger than what the loopback socket buffers absorb, so it does stall.)
    let big = content(10, 48 << 20);
    owner
        .fs_put("acme", "/big.bin", std::io::Cursor::new(big.clone()), false)
        .unwrap();
    assert_eq!(get_bytes(&mut owner, "acme", "/big.bin").unwrap(), big);

    // The attack: a download whose client stops reading. The node cuts it off after the idle
    // time and closes the blob file.
    let mut d = raw_request(&w, &mut owner, "GET", "/fs/read", "/big.bin", None);
    let mut head = [0u8; 512];
    let n = d.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while blob_fds(pid) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        blob_fds(pid),
        0,
        "the stalled download's blob file is closed"
    );
    w.node.wait_log("the cut-off download", |v| {
        v["message"].as_str().is_some_and(|m| {
            m.contains("download cut off") && m.contains("accepted nothing for 2000 ms")
        })
    });
    drop(d);
    // The legitimate use keeps working.
    assert_eq!(get_bytes(&mut owner, "acme", "/big.bin").unwrap(), big);
    w.node.stop();
}

#[test]
fn a_trickling_upload_is_refused_at_the_total_transfer_limit() {
    let w = world_with(
        "files-trickle",
        "[fs]\ntransfer_idle_timeout_ms = 1000\ntransfer_timeout_ms = 1500\n",
    );
    let mut owner = owner_client(&w);
    // The attack: never idle long enough for the idle limit, never done.
    let mut s = raw_request(
        &w,
        &mut owner,
        "PUT",
        "/fs/write",
        "/slow.bin",
        Some(1 << 20),
    );
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10)
        && !String::from_utf8_lossy(&answer).contains('}')
    {
        let _ = std::io::Write::write_all(&mut s, b"x");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("TransferTimeout")
            && answer.contains("did not finish within 1500 ms")
            && answer.contains("transfer_timeout_ms"),
        "{answer}"
    );
    drop(s);
    let e = refusal(get_bytes(&mut owner, "acme", "/slow.bin").unwrap_err());
    assert_eq!(e.error, "NotFound", "{e}");
    // The legitimate use: an upload that finishes in time.
    owner
        .fs_put("acme", "/fast.bin", &b"quick"[..], false)
        .unwrap();
    assert_eq!(
        get_bytes(&mut owner, "acme", "/fast.bin").unwrap(),
        b"quick"
    );
    w.node.stop();
}
