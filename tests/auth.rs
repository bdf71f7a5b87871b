//! End-to-end tests of identity, capabilities and tenancy on a real node: tenants created by the
//! Admin, components signed by owners and deployed over the UCAN-authenticated management API,
//! and every kind of bad token refused with the name of the failed check.

mod support;

use std::collections::BTreeMap;

use support::tenants::*;
use support::*;
use zero_auth::{Delegation, Ipld, Keypair};
use zero_client::Client;

#[test]
fn admin_creates_a_tenant_owner_signs_and_deploys_with_the_cli_and_curl_reaches_it() {
    let dir = test_dir("cli-deploy");
    let data = dir.join("data");
    let node = NodeProc::start(&dir, &node_config(&data));
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
    let node = NodeProc::start(&dir, &node_config(&data));
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
    let mut owner = Client::new(&w.api, copy_key(&w.acme_owner), w.acme_chain.clone());
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
    let early = Delegation::builder(w.acme_owner.did().clone(), zero_auth::Command::top(), None)
        .subject(w.admin.did().clone())
        .policy(zero_auth::Policy::new(vec![
            zero_auth::component::binding_statement(&hash),
        ]))
        .not_before(zero_client::now() + 3600)
        .sign(&w.acme_owner)
        .unwrap();
    let mut chain = w.acme_chain.clone();
    chain.push(early);
    bytes = zero_component::append_custom_section(
        &bytes,
        "ucan",
        &zero_auth::component::encode_section(&chain),
    );
    let e = refused(owner.deploy("acme", "app4", &["/app4".into()], &[], &bytes));
    assert_eq!(e.error, "TooEarly", "{}", e.message);

    // Not rooted at the Admin: a self-made "admin".
    let fake_admin = Keypair::generate().unwrap();
    let fake_chain =
        vec![zero_client::owner_delegation(&fake_admin, "acme", w.acme_owner.did(), None).unwrap()];
    let bytes = std::fs::read(guest_wasm("hello")).unwrap();
    let forged =
        zero_client::sign_component(&bytes, &w.acme_owner, &fake_chain, &grant("/", "[]", None))
            .unwrap();
    let e = refused(owner.deploy("acme", "app5", &["/app5".into()], &[], &forged));
    assert_eq!(e.error, "UntrustedRoot", "{}", e.message);

    // The previous version still serves after all those refusals.
    assert_eq!(get(&w.node.url("/app")).body, "Hello, World!\n");

    // Revocation: the Admin revokes the owner's delegation; the app it signed stops, and the
    // owner's invocations are refused.
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    admin.revoke(&w.acme_chain[0].cid().to_string()).unwrap();
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
    let mut owner = Client::new(&w.api, copy_key(&w.acme_owner), w.acme_chain.clone());
    owner.node_info().unwrap();
    let hello = std::fs::read(guest_wasm("hello")).unwrap();

    // A deployer who may only list cannot deploy (escalated command): InvalidClaim.
    let deployer = Keypair::generate().unwrap();
    let list_only = zero_client::extend_chain(
        &w.acme_owner,
        &w.acme_chain,
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
        &w.acme_owner,
        &w.acme_chain,
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
    let inv = zero_auth::Invocation::builder(
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
    let mut acme = Client::new(&w.api, copy_key(&w.acme_owner), w.acme_chain.clone());
    let mut beta = Client::new(&w.api, copy_key(&w.beta_owner), w.beta_chain.clone());
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
    let inv = zero_auth::Invocation::builder(
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
    let other = zero_auth::Invocation::builder(
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
