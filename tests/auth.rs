//! End-to-end tests of identity, capabilities and tenancy on a real node: tenants created by the
//! Admin, components signed by owners and deployed over the UCAN-authenticated management API,
//! and every kind of bad token refused with the name of the failed check.

mod support;

use std::collections::BTreeMap;

use support::*;
use zero_auth::{Delegation, Ipld, Keypair};
use zero_client::Client;

#[test]
fn admin_creates_a_tenant_owner_signs_and_deploys_with_the_cli_and_curl_reaches_it() {
    let dir = test_dir("cli-deploy");
    let data = dir.join("data");
    let node = World::config(&data).start(&dir);
    let api = format!("http://{}", node.admin);
    let admin_key = data.join("admin.key");
    let owner_key = dir.join("owner.key");
    let (code, owner_did, err) = zero(&["key", "new", "-o", owner_key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let owner_did = owner_did.trim().to_string();
    assert!(owner_did.starts_with("did:key:z6Mk"), "{owner_did}");
    let (code, did_again, _) = zero(&["key", "did", owner_key.to_str().unwrap()]);
    assert_eq!((code, did_again.trim()), (0, owner_did.as_str()));

    let chain = dir.join("acme.ucan");
    let (code, out, err) = zero(&[
        "tenant",
        "create",
        "acme",
        "--owner",
        &owner_did,
        "--key",
        admin_key.to_str().unwrap(),
        "-o",
        chain.to_str().unwrap(),
        "--api",
        &api,
    ]);
    assert_eq!(code, 0, "{out}{err}");

    let signed = dir.join("hello.zero.wasm");
    let (code, out, err) = zero(&[
        "sign",
        guest_wasm("hello").to_str().unwrap(),
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "-o",
        signed.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "signing must name the capability: {out}{err}");
    assert!(err.contains("--cmd"), "{err}");
    let (code, out, err) = zero(&[
        "sign",
        guest_wasm("hello").to_str().unwrap(),
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--cmd",
        "/fs/read",
        "--policy",
        r#"[["==", ".path", "/public"]]"#,
        "-o",
        signed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = zero(&["inspect", signed.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("capabilities (ucan chain, root first)"),
        "{out}"
    );
    assert!(out.contains(".component"), "{out}");
    assert!(out.contains(&owner_did), "{out}");

    let (code, out, err) = zero(&[
        "deploy",
        signed.to_str().unwrap(),
        "--tenant",
        "acme",
        "--route",
        "/acme",
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--api",
        &api,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"app\": \"hello\""), "{out}");
    let r = get(&node.url("/acme"));
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!\n"));

    // Listing through the CLI.
    let (code, out, err) = zero(&[
        "apps",
        "list",
        "--tenant",
        "acme",
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--api",
        &api,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/acme"), "{out}");

    // Deployments survive a restart.
    node.stop();
    let node = World::config(&data).start(&dir);
    let r = get(&node.url("/acme"));
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!\n"));

    // A deploy into another tenant with this owner's chain: 403 with the reason.
    let other_key = dir.join("other.key");
    let (_, other_did, _) = zero(&["key", "new", "-o", other_key.to_str().unwrap()]);
    let other_chain = dir.join("other.ucan");
    let api = format!("http://{}", node.admin);
    let (code, _, err) = zero(&[
        "tenant",
        "create",
        "other",
        "--owner",
        other_did.trim(),
        "--key",
        admin_key.to_str().unwrap(),
        "-o",
        other_chain.to_str().unwrap(),
        "--api",
        &api,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = zero(&[
        "deploy",
        signed.to_str().unwrap(),
        "--tenant",
        "other",
        "--route",
        "/x",
        "--key",
        owner_key.to_str().unwrap(),
        "--proof",
        chain.to_str().unwrap(),
        "--api",
        &api,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("MatchError"), "{err}");
}

#[test]
fn tampered_expired_revoked_and_misbound_tokens_are_refused_with_the_failed_check() {
    let w = world("tokens");
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let routes = ["/app".to_string()];

    // Baseline: a correctly signed component deploys.
    let good = signed(&w, "hello", &grant("/", "[]", None));
    owner.deploy("acme", "app", &routes, &[], &good).unwrap();
    assert_eq!(get(&w.node.url("/app")).status, 200);

    // The component's code changed after signing (a section added): HashMismatch.
    let mut changed = zero_component::strip_custom_section(&good, "ucan").unwrap();
    changed = zero_component::append_custom_section(&changed, "extra", b"changed after signing");
    let ucan = zero_component::custom_sections(&good)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "ucan")
        .unwrap();
    changed = zero_component::append_custom_section(&changed, "ucan", &good[ucan.data.clone()]);
    let e = refused(owner.deploy("acme", "app", &routes, &[], &changed));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "HashMismatch"),
        "{}",
        e.message
    );

    // The token copied into another binary: HashMismatch.
    let echo = std::fs::read(guest_wasm("echo")).unwrap();
    let copied = zero_component::append_custom_section(&echo, "ucan", &good[ucan.data.clone()]);
    let e = refused(owner.deploy("acme", "echo", &["/echo".into()], &[], &copied));
    assert_eq!(e.error, "HashMismatch", "{}", e.message);

    // One byte flipped in the embedded token's signature: InvalidSignature.
    let mut flipped = good.clone();
    let sig_pos = ucan.data.start + 8;
    flipped[sig_pos] ^= 0x01;
    let e = refused(owner.deploy("acme", "app2", &["/app2".into()], &[], &flipped));
    assert!(
        ["InvalidSignature", "Decode", "Malformed"].contains(&e.error.as_str()),
        "{}: {}",
        e.error,
        e.message
    );

    // Expired token (clock skew is 0 on this node).
    let short = signed(&w, "hello", &grant("/", "[]", Some(1)));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let e = refused(owner.deploy("acme", "app3", &["/app3".into()], &[], &short));
    assert_eq!(e.error, "Expired", "{}", e.message);

    // Not yet valid.
    let mut bytes = std::fs::read(guest_wasm("hello")).unwrap();
    let hash = zero_component::content_hash(&bytes).unwrap().to_string();
    let early = Delegation::builder(w.acme.owner.did().clone(), zero_auth::Command::top(), None)
        .subject(w.admin.did().clone())
        .policy(zero_auth::Policy::new(vec![
            zero_auth::component::binding_statement(&hash),
        ]))
        .not_before(zero_client::now() + 3600)
        .sign(&w.acme.owner)
        .unwrap();
    let mut chain = w.acme.chain.clone();
    chain.push(early);
    bytes = zero_component::append_custom_section(
        &bytes,
        "ucan",
        &zero_auth::component::encode_section(&chain).unwrap(),
    );
    let e = refused(owner.deploy("acme", "app4", &["/app4".into()], &[], &bytes));
    assert_eq!(e.error, "TooEarly", "{}", e.message);

    // Not rooted at the Admin: a self-made "admin".
    let fake_admin = Keypair::generate().unwrap();
    let fake_chain =
        vec![zero_client::owner_delegation(&fake_admin, "acme", w.acme.owner.did(), None).unwrap()];
    let bytes = std::fs::read(guest_wasm("hello")).unwrap();
    let forged =
        zero_client::sign_component(&bytes, &w.acme.owner, &fake_chain, &grant("/", "[]", None))
            .unwrap();
    let e = refused(owner.deploy("acme", "app5", &["/app5".into()], &[], &forged));
    assert_eq!(e.error, "UntrustedRoot", "{}", e.message);

    // The previous version still serves after all those refusals.
    assert_eq!(get(&w.node.url("/app")).body, "Hello, World!\n");

    // Revocation: the Admin revokes the owner's delegation; the app it signed stops, and the
    // owner's invocations are refused.
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    admin.revoke(&w.acme.chain[0].cid().to_string()).unwrap();
    assert_eq!(get(&w.node.url("/app")).status, 404);
    let e = refused(owner.list_apps("acme"));
    assert_eq!(e.error, "Revoked", "{}", e.message);
    w.node.wait_log("stop log", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("was revoked"))
    });
}

#[test]
fn invocations_are_checked_like_any_capability() {
    let w = world("invocations");
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    owner.node_info().unwrap();
    let hello = std::fs::read(guest_wasm("hello")).unwrap();

    // A deployer who may only list cannot deploy (escalated command): InvalidClaim.
    let deployer = Keypair::generate().unwrap();
    let list_only = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        deployer.did(),
        &grant("/app/list", "[]", Some(600)),
    )
    .unwrap();
    let mut d = Client::new(&w.api, copy_key(&deployer), list_only.clone());
    d.list_apps("acme").unwrap();
    let e = refused(d.deploy("acme", "x", &["/x".into()], &[], &hello));
    assert_eq!(e.error, "InvalidClaim", "{}", e.message);

    // A widened policy does not widen: the owner's chain is scoped to acme, so a sub-delegation
    // with an empty policy still cannot deploy into beta.
    let wide = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        deployer.did(),
        &grant("/", "[]", Some(600)),
    )
    .unwrap();
    let mut d = Client::new(&w.api, copy_key(&deployer), wide);
    let e = refused(d.deploy("beta", "x", &["/x".into()], &[], &hello));
    assert_eq!(e.error, "MatchError", "{}", e.message);
    assert!(
        !e.message.contains("acme") || e.message.contains(".tenant"),
        "{}",
        e.message
    );

    // Broken chain: the proof is not sent.
    let mut d = Client::new(&w.api, copy_key(&deployer), list_only.clone());
    let inv = d
        .invocation(
            "/app/list",
            BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]),
        )
        .unwrap();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &[],
    );
    assert_eq!(r.0, 403);
    assert!(r.1.contains("UnavailableProof"), "{}", r.1);

    // Broken chain: someone else's key using the deployer's chain (principal misalignment).
    let thief = Keypair::generate().unwrap();
    let mut t = Client::new(&w.api, thief, list_only.clone());
    let e = refused(t.list_apps("acme"));
    assert_eq!(e.error, "InvalidAudience", "{}", e.message);

    // Replay: the same invocation twice.
    let inv = d
        .invocation(
            "/app/list",
            BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]),
        )
        .unwrap();
    let proofs: Vec<String> = list_only.iter().map(|p| p.to_base64()).collect();
    assert_eq!(
        raw_call(
            &w.api,
            "GET",
            "/v1/tenants/acme/apps",
            &inv.to_base64(),
            &proofs
        )
        .0,
        200
    );
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 403);
    assert!(r.1.contains("Replayed"), "{}", r.1);

    // Wrong audience: an invocation addressed to another node.
    let other_node = Keypair::generate().unwrap();
    let inv = zero_auth::InvocationToken::builder(
        w.admin.did().clone(),
        zero_auth::Command::parse("/app/list").unwrap(),
        Some(zero_client::now() + 60),
    )
    .audience(other_node.did().clone())
    .arg("tenant", Ipld::String("acme".into()))
    .proofs(list_only.iter().map(|p| *p.cid()).collect())
    .sign(&deployer)
    .unwrap();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 403);
    assert!(r.1.contains("InvalidAudience"), "{}", r.1);

    // Tampered invocation: one byte flipped in its payload.
    let inv = d
        .invocation(
            "/app/list",
            BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]),
        )
        .unwrap();
    let mut bytes = inv.as_bytes().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let r = raw_call(&w.api, "GET", "/v1/tenants/acme/apps", &b64, &proofs);
    assert!(r.0 == 401 || r.0 == 403, "{r:?}");
    assert!(
        r.1.contains("InvalidSignature") || r.1.contains("Decode") || r.1.contains("Malformed"),
        "{}",
        r.1
    );

    // No invocation at all.
    let r = raw_call(&w.api, "GET", "/v1/tenants/acme/apps", "", &[]);
    assert_eq!(r.0, 401);
}

#[test]
fn tenants_are_isolated() {
    let w = world("tenancy");
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    let hello = std::fs::read(guest_wasm("hello")).unwrap();
    acme.deploy("acme", "site", &["/site".into()], &[], &hello)
        .unwrap();

    // beta cannot see, list, remove or replace acme's apps.
    let e = refused(beta.list_apps("acme"));
    assert_eq!((e.status, e.error.as_str()), (403, "MatchError"));
    let e = refused(beta.remove_app("acme", "site"));
    assert_eq!(e.status, 403);
    let e = refused(beta.deploy("acme", "site", &["/site".into()], &[], &hello));
    assert_eq!(e.status, 403);

    // A route already used by another tenant is refused without naming it.
    let e = refused(beta.deploy("beta", "site", &["/site".into()], &[], &hello));
    assert_eq!((e.status, e.error.as_str()), (409, "RouteConflict"));
    assert!(!e.message.contains("acme"), "{}", e.message);

    // beta deploys elsewhere; each tenant lists only its own apps.
    beta.deploy("beta", "site", &["/beta".into()], &[], &hello)
        .unwrap();
    let list = acme.list_apps("acme").unwrap().to_string();
    assert!(list.contains("/site") && !list.contains("/beta"), "{list}");
    let list = beta.list_apps("beta").unwrap().to_string();
    assert!(list.contains("/beta") && !list.contains("/site"), "{list}");

    // Unknown tenants and apps: errors that do not depend on someone else's data.
    let e = refused(beta.remove_app("beta", "nope"));
    assert_eq!(e.status, 404);

    // A refused redeploy (a core module) leaves the previous version serving.
    let core = std::fs::read(guest_p1("p1-command")).unwrap();
    let e = refused(acme.deploy("acme", "site", &["/site".into()], &[], &core));
    assert_eq!(e.status, 422);
    assert!(e.message.contains("core module"), "{}", e.message);
    assert_eq!(get(&w.node.url("/site")).body, "Hello, World!\n");

    // Removal.
    acme.remove_app("acme", "site").unwrap();
    assert_eq!(get(&w.node.url("/site")).status, 404);
}

fn raw_call(api: &str, method: &str, path: &str, inv: &str, proofs: &[String]) -> (u16, String) {
    let mut req = agent().request(method, &format!("{api}{path}"));
    if !inv.is_empty() {
        req = req.set("authorization", &format!("Bearer {inv}"));
    }
    if !proofs.is_empty() {
        req = req.set("ucan-proofs", &proofs.join(","));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn offline_invocation_check_prints_ok_or_the_failed_check() {
    let admin = Keypair::generate().unwrap();
    let owner = Keypair::generate().unwrap();
    let d = zero_client::owner_delegation(&admin, "acme", owner.did(), Some(3600)).unwrap();
    let inv = zero_auth::InvocationToken::builder(
        admin.did().clone(),
        zero_auth::Command::parse("/app/list").unwrap(),
        Some(zero_client::now() + 600),
    )
    .arg("tenant", Ipld::String("acme".into()))
    .proofs(vec![*d.cid()])
    .sign(&owner)
    .unwrap();
    let (code, out, _) = zero(&[
        "ucan",
        "verify-invocation",
        "--invocation",
        &inv.to_base64(),
        "--proof",
        &d.to_base64(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last(), Some("ok"));
    // Later than the expiry.
    let later = (zero_client::now() + 7200).to_string();
    let (code, out, _) = zero(&[
        "ucan",
        "verify-invocation",
        "--invocation",
        &inv.to_base64(),
        "--proof",
        &d.to_base64(),
        "--at",
        &later,
    ]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().last(), Some("Expired"));
    // The proof is missing.
    let (code, out, _) = zero(&[
        "ucan",
        "verify-invocation",
        "--invocation",
        &inv.to_base64(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().last(), Some("UnavailableProof"));
    // Another tenant in the arguments.
    let other = zero_auth::InvocationToken::builder(
        admin.did().clone(),
        zero_auth::Command::parse("/app/list").unwrap(),
        Some(zero_client::now() + 600),
    )
    .arg("tenant", Ipld::String("beta".into()))
    .proofs(vec![*d.cid()])
    .sign(&owner)
    .unwrap();
    let (code, out, _) = zero(&[
        "ucan",
        "verify-invocation",
        "--invocation",
        &other.to_base64(),
        "--proof",
        &d.to_base64(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().last(), Some("MatchError"));
}

/// Sends `head` (request line and headers, blank line included) then `body_len` zero bytes on
/// a fresh connection, and reads the answer until the node closes the connection.
fn raw_exchange(addr: std::net::SocketAddr, head: &str, body_len: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
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
fn revocation_is_for_issuers_in_the_revoked_tokens_chain_and_the_admin() {
    let w = world_with(
        "revoke-authority",
        "[node]\nmax_revocations_per_principal = 2\n",
    );
    let dir = w.node.dir.clone();
    // beta deploys an app signed with beta's own chain.
    let hello = std::fs::read(guest_wasm("hello")).unwrap();
    let beta_signed = zero_client::sign_component(
        &hello,
        &w.beta.owner,
        &w.beta.chain,
        &grant("/", "[]", None),
    )
    .unwrap();
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    beta.deploy("beta", "site", &["/beta".into()], &[], &beta_signed)
        .unwrap();
    assert_eq!(get(&w.node.url("/beta")).status, 200);

    // The attack: acme's owner revokes beta's root delegation, presenting beta's chain...
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let e = refused(acme.revoke_in_chain(None, &w.beta.chain));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "InvalidClaim"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("may not revoke") && e.message.contains("only its issuer"),
        "{}",
        e.message
    );
    // ...or by CID alone...
    let e = refused(acme.revoke(&w.beta.chain[0].cid().to_string()));
    assert_eq!(e.error, "InvalidClaim", "{}", e.message);
    assert!(e.message.contains("args.path"), "{}", e.message);
    // ...or in the old form: `/ucan/revoke` with `{cid, tenant: "acme"}` under acme's chain.
    let old = acme
        .invocation(
            "/ucan/revoke",
            BTreeMap::from([
                (
                    "cid".to_string(),
                    Ipld::String(w.beta.chain[0].cid().to_string()),
                ),
                ("tenant".to_string(), Ipld::String("acme".into())),
            ]),
        )
        .unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let r = raw_call(&w.api, "POST", "/v1/revocations", &old.to_base64(), &proofs);
    assert_eq!(r.0, 403, "{r:?}");
    assert!(
        r.1.contains("InvalidClaim") && r.1.contains("no `prf`"),
        "{}",
        r.1
    );
    // ...or with a forged path that puts acme upstream of beta's delegations: acme delegates
    // back to the Admin (a cycle) or to beta's owner, then appends beta's real delegations.
    let via_admin = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        w.admin.did(),
        &grant("/", "[]", None),
    )
    .unwrap();
    let mut forged = via_admin.clone();
    forged.extend(w.beta.chain.iter().cloned());
    let root = w.beta.chain[0].cid().to_string();
    let e = refused(acme.revoke_in_chain(Some(&root), &forged));
    assert_eq!(e.error, "InvalidClaim", "{}", e.message);
    assert!(e.message.contains("only its issuer"), "{}", e.message);
    let section = zero_component::custom_sections(&beta_signed)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "ucan")
        .unwrap();
    let signing = zero_auth::component::decode_section(&beta_signed[section.data]).unwrap();
    let via_owner = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        w.beta.owner.did(),
        &grant("/", "[]", None),
    )
    .unwrap();
    let mut forged = via_owner.clone();
    forged.push(signing.last().unwrap().clone());
    let e = refused(acme.revoke_in_chain(None, &forged));
    assert_eq!(e.error, "InvalidClaim", "{}", e.message);
    // beta's app is untouched.
    assert_eq!(get(&w.node.url("/beta")).status, 200);
    beta.list_apps("beta").unwrap();

    // The legitimate use, with the CLI: acme's owner revokes the delegation it gave to CI.
    let ci = Keypair::generate().unwrap();
    let ci_chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        ci.did(),
        &grant("/app", "[]", Some(3600)),
    )
    .unwrap();
    let ci_file = dir.join("ci.ucan");
    zero_client::write_chain(&ci_file, &ci_chain).unwrap();
    let owner_key = dir.join("owner.key");
    w.acme.owner.save(&owner_key).unwrap();
    let mut ci_client = Client::new(&w.api, copy_key(&ci), ci_chain.clone());
    ci_client.list_apps("acme").unwrap();
    let (code, out, err) = zero(&[
        "revoke",
        "--chain",
        ci_file.to_str().unwrap(),
        "--key",
        owner_key.to_str().unwrap(),
        "--api",
        &w.api,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&ci_chain[1].cid().to_string()), "{out}");
    let e = refused(ci_client.list_apps("acme"));
    assert_eq!(e.error, "Revoked", "{}", e.message);
    acme.list_apps("acme").unwrap();
    // Revoking again is idempotent.
    let again = acme.revoke_in_chain(None, &ci_chain).unwrap();
    assert_eq!(again["already_revoked"], true, "{again}");

    // The revocation set is bounded per principal: acme may hold 2, then is refused, while
    // beta and the Admin are not affected.
    let second = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        ci.did(),
        &grant("/app/list", "[]", Some(3600)),
    )
    .unwrap();
    acme.revoke_in_chain(None, &second).unwrap();
    let third = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        ci.did(),
        &grant("/app/list", "[]", Some(3600)),
    )
    .unwrap();
    let e = refused(acme.revoke_in_chain(None, &third));
    assert_eq!(
        (e.status, e.error.as_str()),
        (429, "TooManyRevocations"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("max_revocations_per_principal"),
        "{}",
        e.message
    );
    let beta_ci = zero_client::extend_chain(
        &w.beta.owner,
        &w.beta.chain,
        ci.did(),
        &grant("/app/list", "[]", Some(3600)),
    )
    .unwrap();
    beta.revoke_in_chain(None, &beta_ci).unwrap();
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    admin.revoke(&third[1].cid().to_string()).unwrap();

    // One record per revocation on disk, and they hold after a restart.
    let records = std::fs::read_dir(dir.join("data/state/revocations"))
        .unwrap()
        .count();
    assert_eq!(records, 4);
    let w = w.restart();
    let mut ci_client = Client::new(&w.api, copy_key(&ci), ci_chain);
    let e = refused(ci_client.list_apps("acme"));
    assert_eq!(e.error, "Revoked", "{}", e.message);
    // The Admin still revokes anyone's delegation; beta's app stops.
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    let answer = admin.revoke_in_chain(None, &w.beta.chain).unwrap();
    assert_eq!(answer["stopped_apps"], 1, "{answer}");
    assert_eq!(get(&w.node.url("/beta")).status, 404);
}

#[test]
fn invocations_are_short_lived_addressed_to_this_node_and_single_use_per_principal() {
    let w = world_with("replay", "[node]\nreplay_entries_per_principal = 6\n");
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let node_did = owner.node_info().unwrap()["did"]
        .as_str()
        .unwrap()
        .to_string();
    let node_did = zero_auth::Did::parse(&node_did).unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let list = |exp: Option<u64>, aud: Option<&zero_auth::Did>| {
        let mut b = zero_auth::InvocationToken::builder(
            w.admin.did().clone(),
            zero_auth::Command::parse("/app/list").unwrap(),
            exp,
        )
        .arg("tenant", Ipld::String("acme".into()))
        .proofs(w.acme.chain.iter().map(|p| *p.cid()).collect());
        if let Some(aud) = aud {
            b = b.audience(aud.clone());
        }
        b.sign(&w.acme.owner).unwrap()
    };
    let call = |inv: &zero_auth::InvocationToken| {
        raw_call(
            &w.api,
            "GET",
            "/v1/tenants/acme/apps",
            &inv.to_base64(),
            &proofs,
        )
    };

    // An invocation valid for ten days (the flood that used to fill the shared cache).
    let r = call(&list(Some(zero_client::now() + 864_000), Some(&node_did)));
    assert_eq!(r.0, 403, "{r:?}");
    assert!(
        r.1.contains("LifetimeTooLong") && r.1.contains("within 900 s"),
        "{}",
        r.1
    );
    // No `exp` at all.
    let r = call(&list(None, Some(&node_did)));
    assert!(
        r.1.contains("LifetimeTooLong") && r.1.contains("no expiration"),
        "{}",
        r.1
    );
    // No `aud`: refused, naming this node.
    let r = call(&list(Some(zero_client::now() + 60), None));
    assert_eq!(r.0, 403, "{r:?}");
    assert!(
        r.1.contains("InvalidAudience") && r.1.contains("has no `aud`"),
        "{}",
        r.1
    );
    assert!(r.1.contains(node_did.as_str()), "{}", r.1);

    // acme's principal fills its bucket (6 live invocations, one above)...
    let kept = list(Some(zero_client::now() + 600), Some(&node_did));
    assert_eq!(call(&kept).0, 200);
    for _ in 0..5 {
        owner.list_apps("acme").unwrap();
    }
    // ...and is then refused, with when to retry, whoever in acme's chain signs...
    let e = refused(owner.list_apps("acme"));
    assert_eq!(
        (e.status, e.error.as_str()),
        (429, "TooManyInvocations"),
        "{}",
        e.message
    );
    assert!(e.message.contains("retry after"), "{}", e.message);
    let ci = Keypair::generate().unwrap();
    let ci_chain = zero_client::extend_chain(
        &w.acme.owner,
        &w.acme.chain,
        ci.did(),
        &grant("/app/list", "[]", Some(600)),
    )
    .unwrap();
    let e = refused(Client::new(&w.api, ci, ci_chain).list_apps("acme"));
    assert_eq!(e.error, "TooManyInvocations", "{}", e.message);
    // ...while beta and the Admin are not locked out.
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    beta.list_apps("beta").unwrap();
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    admin.list_apps("acme").unwrap();

    // Single use across restarts: replayed after a restart, the invocation is refused.
    let w = w.restart();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &kept.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 403, "{r:?}");
    assert!(r.1.contains("Replayed"), "{}", r.1);
    // (The bucket, restored too, still holds acme's live invocations.)
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    assert_eq!(refused(owner.list_apps("acme")).error, "TooManyInvocations");
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    beta.list_apps("beta").unwrap();
}

#[test]
fn the_management_api_checks_tokens_before_reading_bodies() {
    let w = world("admin-bodies");
    let pid = w.node.child.id();
    let before = peak_rss_kib(pid);

    // A 48 MiB deploy without any invocation: refused from the headers; the body is read
    // and dropped, never buffered, and the connection is closed after the answer.
    let resp = raw_exchange(
        w.node.admin,
        &format!(
            "PUT /v1/tenants/acme/apps/x HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            48 << 20
        ),
        48 << 20,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("MissingInvocation"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    // The same for a database query.
    let resp = raw_exchange(
        w.node.admin,
        &format!(
            "POST /v1/tenants/acme/db/main/query HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            2 << 20
        ),
        2 << 20,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let grown = peak_rss_kib(pid).saturating_sub(before);
    println!("peak RSS growth over a refused 48 MiB deploy and 2 MiB query: {grown} KiB");
    assert!(
        grown < 24 << 10,
        "the node buffered a refused upload: +{grown} KiB"
    );
    // A client that waits for `100 Continue` gets the refusal without sending its body.
    let resp = raw_exchange(
        w.node.admin,
        "PUT /v1/tenants/acme/apps/x HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n",
        0,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");

    // The CLI's client sends its whole upload before reading: it still gets the JSON refusal
    // of a 20 MiB deploy into another tenant...
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let hello = std::fs::read(guest_wasm("hello")).unwrap();
    let big = zero_component::append_custom_section(&hello, "padding", &vec![0u8; 20 << 20]);
    let e = refused(acme.deploy("beta", "x", &["/x".into()], &[], &big));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "MatchError"),
        "{}",
        e.message
    );
    // ...and the legitimate deploy works as before.
    let hello = signed(&w, "hello", &grant("/", "[]", None));
    acme.deploy("acme", "hello", &["/hello".into()], &[], &hello)
        .unwrap();
    assert_eq!(get(&w.node.url("/hello")).status, 200);

    // Proofs are capped in number and size before any is decoded or verified.
    let one = w.acme.chain[0].to_base64();
    let inv = acme
        .invocation(
            "/app/list",
            BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]),
        )
        .unwrap();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &vec![one.clone(); 17],
    );
    assert_eq!(r.0, 400, "{r:?}");
    assert!(
        r.1.contains("TooManyProofs") && r.1.contains("max_proofs"),
        "{}",
        r.1
    );
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &["A".repeat(40 << 10)],
    );
    assert_eq!(r.0, 431, "{r:?}");
    assert!(
        r.1.contains("TooLarge") && r.1.contains("max_token_bytes"),
        "{}",
        r.1
    );

    // Paths are parsed by segment: a non-ASCII segment after repeated slashes, raw or
    // percent-encoded, is answered (it used to panic the task on a byte offset).
    for path in [
        "/////v1/tenants/\u{e9}/fs",
        "/////v1/tenants/%C3%A9/fs/a",
        "/v1/%FF/x",
    ] {
        let resp = raw_exchange(
            w.node.admin,
            &format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"),
            0,
        );
        assert!(resp.starts_with("HTTP/1.1 4"), "{path}: {resp}");
        assert!(resp.contains("\"error\""), "{path}: {resp}");
    }
    let r = agent().get(&format!("{}/v1/node", w.api)).call().unwrap();
    assert_eq!(r.status(), 200);
    acme.list_apps("acme").unwrap();
}

#[test]
fn the_management_listener_bounds_header_time_request_time_and_connections() {
    let w = world_with(
        "admin-listener",
        // A body rate of 1 B/s: the stalled body below meets the request timeout before it
        // falls behind the rate (that rule has its own test in the abuse suite).
        "[admin]\nheader_read_timeout_ms = 800\nrequest_timeout_ms = 1500\nmax_connections = 3\nmin_body_rate = \"1 B\"\n",
    );
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let addr = w.node.admin;

    // Headers sent too slowly: the connection is closed after the header timeout.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /v1/node HTTP/1.1\r\nhost: t\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("200 OK"),
        "an incomplete request was answered"
    );
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // Connections are limited: with 3 silent connections open, a 4th request waits until the
    // silent ones are dropped (header timeout), then is served.
    let idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let resp = raw_exchange(
        addr,
        "GET /v1/node HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        0,
    );
    let waited = started.elapsed();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        waited >= Duration::from_millis(400),
        "the 4th connection was served at once ({waited:?}) despite max_connections = 3"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(idle);

    // A body sent too slowly: the request is answered with a timeout after request_timeout_ms.
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let inv = owner
        .invocation(
            "/db/query",
            BTreeMap::from([
                ("tenant".into(), Ipld::String("acme".into())),
                ("db".into(), Ipld::String("main".into())),
                ("sql".into(), Ipld::String("SELECT 1".into())),
            ]),
        )
        .unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/tenants/acme/db/main/query HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {}\r\nucan-proofs: {}\r\ncontent-length: 1000\r\n\r\n{{\"sql\"",
        inv.to_base64(),
        proofs.join(",")
    )
    .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        resp.contains("Timeout") && resp.contains("request_timeout_ms"),
        "{resp}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // The legitimate calls work.
    owner.list_apps("acme").unwrap();
    let v = owner
        .db_query("acme", "main", "SELECT 1 AS one", &[])
        .unwrap();
    assert_eq!(v["rows"][0][0], 1, "{v}");
}

#[test]
fn signatures_of_the_wrong_form_are_refused_as_invalid_signature() {
    let w = world("signature-form");
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let inv = owner
        .invocation(
            "/app/list",
            BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]),
        )
        .unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    // The invocation with its signature cut to 63 bytes, canonically encoded otherwise: an
    // envelope starts with a 2-element list (0x82) and the signature's bytes header (0x58
    // 0x40: 64 bytes), followed by the signature.
    let short_sig = |bytes: &[u8]| {
        assert_eq!(&bytes[..3], &[0x82, 0x58, 0x40]);
        let mut out = vec![0x82, 0x58, 0x3f];
        out.extend_from_slice(&bytes[3..66]);
        out.extend_from_slice(&bytes[67..]);
        out
    };
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &b64(&short_sig(inv.as_bytes())),
        &proofs,
    );
    assert!(r.1.contains("\"InvalidSignature\""), "{r:?}");
    assert!(r.1.contains("63 bytes"), "{}", r.1);
    // The same for a delegation in the chain.
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &[b64(&short_sig(w.acme.chain[0].as_bytes()))],
    );
    assert!(r.1.contains("\"InvalidSignature\""), "{r:?}");
    // A non-canonical envelope (its array length in a longer form than needed).
    let mut long = vec![0x98, 0x02];
    long.extend_from_slice(&inv.as_bytes()[1..]);
    let r = raw_call(&w.api, "GET", "/v1/tenants/acme/apps", &b64(&long), &proofs);
    assert!(r.1.contains("\"InvalidSignature\""), "{r:?}");
    assert!(r.1.contains("canonical"), "{}", r.1);
    // The untouched invocation is accepted.
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 200, "{r:?}");
}

#[test]
fn the_ucan_extractor_refuses_no_bad_or_misdirected_invocations_and_admits_the_right_one() {
    let w = world("ucan-extractor");
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let list_args = || BTreeMap::from([("tenant".into(), Ipld::String("acme".into()))]);

    // No Authorization header, on every kind of endpoint: 401 MissingInvocation.
    for (method, path) in [
        ("GET", "/v1/tenants/acme/apps"),
        ("DELETE", "/v1/tenants/acme/apps/site"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/tenants/acme/fs/site"),
        ("POST", "/v1/revocations"),
    ] {
        let r = raw_call(&w.api, method, path, "", &[]);
        assert_eq!(r.0, 401, "{method} {path}: {r:?}");
        assert!(
            r.1.contains("\"MissingInvocation\""),
            "{method} {path}: {r:?}"
        );
    }

    // A token that is not a UCAN invocation: refused as such, 401.
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        "bm90IGEgdG9rZW4=",
        &proofs,
    );
    assert_eq!(r.0, 401, "{r:?}");
    assert!(r.1.contains("\"error\""), "{r:?}");

    // A valid invocation of another command: 403 InvalidClaim naming the endpoint's command,
    // and it is not used up (the right endpoint still takes a fresh one).
    let inv = owner.invocation("/app/list", list_args()).unwrap();
    let r = raw_call(
        &w.api,
        "DELETE",
        "/v1/tenants/acme/apps/site",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 403, "{r:?}");
    assert!(
        r.1.contains("\"InvalidClaim\"") && r.1.contains("takes the command `/app/remove`"),
        "{r:?}"
    );

    // The right command for another tenant's URL: the arguments must name the request's.
    let inv = owner.invocation("/app/list", list_args()).unwrap();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/beta/apps",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 400, "{r:?}");
    assert!(
        r.1.contains("\"InvalidArgs\"") && r.1.contains("the request is for `beta`"),
        "{r:?}"
    );

    // The legitimate call is admitted.
    let inv = owner.invocation("/app/list", list_args()).unwrap();
    let r = raw_call(
        &w.api,
        "GET",
        "/v1/tenants/acme/apps",
        &inv.to_base64(),
        &proofs,
    );
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1.contains("\"apps\""), "{r:?}");

    // Unknown endpoints and methods are NotFound, as JSON.
    let r = raw_call(&w.api, "PATCH", "/v1/tenants/acme/apps", "", &[]);
    assert_eq!(r.0, 404, "{r:?}");
    assert!(r.1.contains("\"NotFound\""), "{r:?}");
}
