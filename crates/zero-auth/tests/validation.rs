//! Validation of invocations and chains, and tampering: each refusal has its exact variant.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use zero_auth::{
    Chain, ChainExpectations, Delegation, Error, InvocationToken, Ipld, Keypair, Policy,
    ReplayCache, ReplayEntry, ReplayJournal, ValidationOptions, Validator,
    verify_invocation_offline,
};

use common::{NOW, cmd, delegate, invoke, key, l, policy, s};

struct World {
    admin: Keypair,
    alice: Keypair,
    bob: Keypair,
    mallory: Keypair,
}

fn world() -> World {
    World {
        admin: key(1),
        alice: key(2),
        bob: key(3),
        mallory: key(4),
    }
}

fn data_only() -> Policy {
    policy(vec![l(vec![s("like"), s(".path"), s("/data/*")])])
}

/// admin → alice (/fs, .path like /data/*) → bob (/fs/read, no further policy).
fn chain(w: &World) -> (Delegation, Delegation) {
    let root = delegate(
        &w.admin,
        &w.alice,
        Some(&w.admin),
        "/fs",
        data_only(),
        Some(NOW + 3600),
    );
    let leaf = delegate(
        &w.alice,
        &w.bob,
        Some(&w.admin),
        "/fs/read",
        Policy::empty(),
        Some(NOW + 3600),
    );
    (root, leaf)
}

fn read(w: &World, path: &str, proofs: &[&Delegation]) -> InvocationToken {
    invoke(
        &w.bob,
        &w.admin,
        "/fs/read",
        &[("path", s(path))],
        proofs,
        Some(NOW + 60),
    )
}

fn options(w: &World) -> ValidationOptions {
    ValidationOptions {
        required_root: Some(w.admin.did().clone()),
        executor: Some(w.admin.did().clone()),
        ..Default::default()
    }
}

fn check(w: &World, inv: &InvocationToken, proofs: &[Delegation]) -> Result<(), Error> {
    let opts = options(w);
    Validator::new(&opts)
        .validate_invocation(inv, proofs, NOW)
        .map(|_| ())
}

fn name(r: Result<(), Error>) -> &'static str {
    match r {
        Ok(()) => "Ok",
        Err(e) => e.name(),
    }
}

#[test]
fn a_valid_chain_is_accepted() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/data/report.csv", &[&root, &leaf]);
    let opts = options(&w);
    let revoked: HashSet<zero_auth::Cid> = HashSet::new();
    let cache = ReplayCache::new(16);
    let verified = Validator::new(&opts)
        .with_revocations(&revoked)
        .with_replay_cache(&cache)
        .validate_invocation(&inv, &[leaf.clone(), root.clone()], NOW)
        .unwrap();
    assert_eq!(verified.cid, *inv.cid());
    assert_eq!(&verified.issuer, w.bob.did());
    assert_eq!(&verified.subject, w.admin.did());
    assert_eq!(&verified.root_issuer, w.admin.did());
    assert_eq!(verified.proofs, vec![*root.cid(), *leaf.cid()]);
    assert_eq!(verified.capabilities.len(), 2);
    assert_eq!(verified.capabilities[0].command.as_str(), "/fs");
    assert_eq!(cache.len(), 1);
}

#[test]
fn flipped_signature_byte_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w);
    // In the proof: the CID changes with the bytes, so validate the chain itself.
    let mut bytes = leaf.as_bytes().to_vec();
    bytes[10] ^= 0x01; // inside the 64-byte signature (bytes 3..67)
    let tampered = Delegation::decode(&bytes).unwrap();
    let opts = options(&w);
    let err = Validator::new(&opts)
        .validate_chain(
            &[root.clone(), tampered],
            &ChainExpectations::default(),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSignature { ref token, .. } if **token == zero_auth::cid_of(&bytes)),
        "{err}"
    );

    // In the invocation.
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let mut bytes = inv.as_bytes().to_vec();
    bytes[40] ^= 0x80;
    let tampered = InvocationToken::decode(&bytes).unwrap();
    let err = check(&w, &tampered, &[root, leaf]).unwrap_err();
    assert!(matches!(err, Error::InvalidSignature { .. }), "{err}");
}

/// Replaces the first occurrence of `from` by `to` (same length) in `bytes`.
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn flipped_payload_byte_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w);
    // The invocation's argument changed from /data/x to /data/y: still decodes, bad signature.
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let tampered = InvocationToken::decode(&patch(inv.as_bytes(), b"/data/x", b"/data/y")).unwrap();
    assert_eq!(tampered.args()["path"], s("/data/y"));
    assert_eq!(
        name(check(&w, &tampered, &[root.clone(), leaf.clone()])),
        "InvalidSignature"
    );

    // The root's policy widened in place (/data/* → /*ata/*): bad signature.
    let widened = Delegation::decode(&patch(root.as_bytes(), b"/data/*", b"/*ata/*")).unwrap();
    let opts = options(&w);
    let err = Validator::new(&opts)
        .validate_chain(
            &[widened.clone(), leaf.clone()],
            &ChainExpectations::default(),
            NOW,
        )
        .unwrap_err();
    assert_eq!(err.name(), "InvalidSignature", "{err}");
    // Presented in place of the original proof, it is a different token (another CID).
    let err = check(&w, &inv, &[widened, leaf]).unwrap_err();
    assert_eq!(err.name(), "UnavailableProof", "{err}");
}

#[test]
fn every_single_bit_flip_of_an_invocation_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let proofs = [root, leaf];
    assert!(check(&w, &inv, &proofs).is_ok());
    let mut decoded = 0;
    for i in 0..inv.as_bytes().len() {
        let mut bytes = inv.as_bytes().to_vec();
        bytes[i] ^= 0x04;
        if let Ok(tampered) = InvocationToken::decode(&bytes) {
            decoded += 1;
            assert_eq!(tampered.as_bytes(), &bytes[..]);
            assert!(
                check(&w, &tampered, &proofs).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }
    assert!(
        decoded > 50,
        "most flips inside strings and bytes still decode ({decoded})"
    );
}

#[test]
fn expiry_and_not_before_respect_the_clock_skew() {
    let w = world();
    let opts = options(&w);
    let v = Validator::new(&opts);
    let run = |exp: Option<u64>, nbf: Option<u64>, inv_exp: Option<u64>| {
        let mut b = Delegation::builder(w.bob.did().clone(), cmd("/fs"), exp);
        if let Some(nbf) = nbf {
            b = b.not_before(nbf);
        }
        let root = b.sign(&w.admin).unwrap();
        let inv = invoke(
            &w.bob,
            &w.admin,
            "/fs/read",
            &[("path", s("/a"))],
            &[&root],
            inv_exp,
        );
        v.validate_invocation(&inv, &[root], NOW).map(|_| ())
    };
    assert_eq!(name(run(Some(NOW + 10), None, Some(NOW + 10))), "Ok");
    assert_eq!(
        name(run(Some(NOW - 30), None, Some(NOW + 10))),
        "Ok",
        "within the 60 s skew"
    );
    assert_eq!(name(run(Some(NOW - 61), None, Some(NOW + 10))), "Expired");
    assert_eq!(
        name(run(None, None, Some(NOW - 61))),
        "Expired",
        "the invocation itself"
    );
    assert_eq!(
        name(run(None, Some(NOW + 30), Some(NOW + 60))),
        "Ok",
        "within the skew"
    );
    assert_eq!(
        name(run(None, Some(NOW + 3600), Some(NOW + 60))),
        "TooEarly"
    );

    let root = Delegation::builder(w.bob.did().clone(), cmd("/fs"), Some(NOW - 3600))
        .sign(&w.admin)
        .unwrap();
    let inv = invoke(&w.bob, &w.admin, "/fs/read", &[], &[&root], Some(NOW + 60));
    let err = v
        .validate_invocation(&inv, std::slice::from_ref(&root), NOW)
        .unwrap_err();
    match &err {
        Error::Expired { token, exp, now } => {
            assert_eq!(**token, *root.cid());
            assert_eq!((*exp, *now), (NOW - 3600, NOW));
        }
        other => panic!("expected Expired, got {other}"),
    }
    assert!(err.to_string().contains(&root.cid().to_string()));
    // A zero skew is strict.
    let strict = ValidationOptions {
        clock_skew: 0,
        ..options(&w)
    };
    let root = Delegation::builder(w.bob.did().clone(), cmd("/fs"), Some(NOW - 1))
        .sign(&w.admin)
        .unwrap();
    let inv = invoke(&w.bob, &w.admin, "/fs/read", &[], &[&root], Some(NOW + 60));
    assert_eq!(
        Validator::new(&strict)
            .validate_invocation(&inv, &[root], NOW)
            .unwrap_err()
            .name(),
        "Expired"
    );
}

#[test]
fn wrong_audience_is_refused() {
    let w = world();
    let (root, _) = chain(&w);
    // alice delegates to mallory, but bob invokes.
    let to_mallory = delegate(
        &w.alice,
        &w.mallory,
        Some(&w.admin),
        "/fs/read",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = read(&w, "/data/x", &[&root, &to_mallory]);
    let err = check(&w, &inv, &[root.clone(), to_mallory]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidAudience { ref token, .. } if **token == *inv.cid()),
        "{err}"
    );

    // Addressed to another executor.
    let (root, leaf) = chain(&w);
    let inv = InvocationToken::builder(w.admin.did().clone(), cmd("/fs/read"), Some(NOW + 60))
        .arg("path", s("/data/x"))
        .audience(w.mallory.did().clone())
        .proof(&root)
        .proof(&leaf)
        .sign(&w.bob)
        .unwrap();
    assert_eq!(name(check(&w, &inv, &[root, leaf])), "InvalidAudience");
}

#[test]
fn broken_chains_are_refused() {
    let w = world();
    let (root, leaf) = chain(&w);

    // The second link is issued by mallory, not by alice (the root's audience).
    let forged = delegate(
        &w.mallory,
        &w.bob,
        Some(&w.admin),
        "/fs/read",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = read(&w, "/data/x", &[&root, &forged]);
    let err = check(&w, &inv, &[root.clone(), forged.clone()]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidAudience { ref token, .. } if **token == *forged.cid()),
        "{err}"
    );

    // Proofs listed leaf first.
    let inv = read(&w, "/data/x", &[&leaf, &root]);
    assert_eq!(
        name(check(&w, &inv, &[root.clone(), leaf.clone()])),
        "InvalidSubject"
    );

    // A proof that was not supplied.
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let err = check(&w, &inv, std::slice::from_ref(&root)).unwrap_err();
    assert!(
        matches!(err, Error::UnavailableProof { ref proof, .. } if *proof == *leaf.cid()),
        "{err}"
    );

    // A link about another subject.
    let other_subject = delegate(
        &w.alice,
        &w.bob,
        Some(&w.mallory),
        "/fs/read",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = read(&w, "/data/x", &[&root, &other_subject]);
    assert_eq!(
        name(check(&w, &inv, &[root.clone(), other_subject])),
        "InvalidSubject"
    );

    // The invocation names another subject than the chain.
    let inv = invoke(
        &w.bob,
        &w.mallory,
        "/fs/read",
        &[("path", s("/data/x"))],
        &[&root, &leaf],
        Some(NOW + 60),
    );
    let no_executor = ValidationOptions {
        required_root: Some(w.admin.did().clone()),
        ..Default::default()
    };
    let err = Validator::new(&no_executor)
        .validate_invocation(&inv, &[root.clone(), leaf.clone()], NOW)
        .unwrap_err();
    assert_eq!(err.name(), "InvalidSubject", "{err}");

    // A root not issued by its subject.
    let not_own = delegate(
        &w.alice,
        &w.bob,
        Some(&w.admin),
        "/fs",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = read(&w, "/data/x", &[&not_own]);
    assert_eq!(name(check(&w, &inv, &[not_own])), "InvalidSubject");

    // A powerline cannot be the root.
    let powerline_root = delegate(&w.admin, &w.bob, None, "/", Policy::empty(), Some(NOW + 60));
    let inv = read(&w, "/data/x", &[&powerline_root]);
    assert_eq!(name(check(&w, &inv, &[powerline_root])), "InvalidClaim");

    // No proofs, and the invoker is not the subject.
    let inv = read(&w, "/data/x", &[]);
    assert_eq!(name(check(&w, &inv, &[])), "InvalidClaim");

    // A chain rooted elsewhere than at the required Admin.
    let rogue_root = delegate(
        &w.mallory,
        &w.bob,
        Some(&w.mallory),
        "/fs",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = invoke(
        &w.bob,
        &w.mallory,
        "/fs/read",
        &[],
        &[&rogue_root],
        Some(NOW + 60),
    );
    let opts = ValidationOptions {
        required_root: Some(w.admin.did().clone()),
        ..Default::default()
    };
    let err = Validator::new(&opts)
        .validate_invocation(&inv, &[rogue_root], NOW)
        .unwrap_err();
    assert!(
        matches!(err, Error::UntrustedRoot { ref root, .. } if root == w.mallory.did()),
        "{err}"
    );
}

#[test]
fn powerlines_and_self_invocation_are_accepted() {
    let w = world();
    let root = delegate(
        &w.admin,
        &w.alice,
        Some(&w.admin),
        "/fs",
        data_only(),
        Some(NOW + 3600),
    );
    let powerline = delegate(
        &w.alice,
        &w.bob,
        None,
        "/",
        Policy::empty(),
        Some(NOW + 3600),
    );
    let inv = read(&w, "/data/x", &[&root, &powerline]);
    assert_eq!(
        name(check(&w, &inv, &[root.clone(), powerline.clone()])),
        "Ok"
    );
    // The powerline does not lift the root's limits.
    let inv = read(&w, "/etc/passwd", &[&root, &powerline]);
    assert_eq!(name(check(&w, &inv, &[root, powerline])), "MatchError");

    // The Admin invoking on itself needs no proof.
    let inv = invoke(
        &w.admin,
        &w.admin,
        "/tenant/create",
        &[("name", s("acme"))],
        &[],
        Some(NOW + 60),
    );
    assert_eq!(name(check(&w, &inv, &[])), "Ok");
}

#[test]
fn escalated_command_is_refused() {
    let w = world();
    let root = delegate(
        &w.admin,
        &w.alice,
        Some(&w.admin),
        "/fs/read",
        Policy::empty(),
        Some(NOW + 60),
    );
    // alice re-delegates more than she holds.
    let leaf = delegate(
        &w.alice,
        &w.bob,
        Some(&w.admin),
        "/fs",
        Policy::empty(),
        Some(NOW + 60),
    );
    let inv = invoke(
        &w.bob,
        &w.admin,
        "/fs/write",
        &[("path", s("/data/x"))],
        &[&root, &leaf],
        Some(NOW + 60),
    );
    let err = check(&w, &inv, &[root.clone(), leaf.clone()]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidClaim { ref token, .. } if **token == *root.cid()),
        "{err}"
    );
    // Prefixes are by segment: /fs does not cover /fsx.
    let inv = invoke(
        &w.bob,
        &w.admin,
        "/fsx",
        &[],
        &[&root, &leaf],
        Some(NOW + 60),
    );
    assert_eq!(
        name(check(&w, &inv, &[root.clone(), leaf.clone()])),
        "InvalidClaim"
    );
    // What alice does hold still works.
    let inv = invoke(
        &w.bob,
        &w.admin,
        "/fs/read/meta",
        &[("path", s("/x"))],
        &[&root, &leaf],
        Some(NOW + 60),
    );
    assert_eq!(name(check(&w, &inv, &[root, leaf])), "Ok");
}

#[test]
fn widened_policy_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w); // the leaf has an empty (wider) policy
    let inv = read(&w, "/etc/passwd", &[&root, &leaf]);
    let err = check(&w, &inv, &[root.clone(), leaf.clone()]).unwrap_err();
    match &err {
        Error::MatchError {
            token, statement, ..
        } => {
            assert_eq!(**token, *root.cid());
            assert_eq!(statement, r#"["like", ".path", "/data/*"]"#);
        }
        other => panic!("expected MatchError, got {other}"),
    }
    // Missing argument: the selected null does not match the pattern either.
    let inv = invoke(
        &w.bob,
        &w.admin,
        "/fs/read",
        &[],
        &[&root, &leaf],
        Some(NOW + 60),
    );
    assert_eq!(name(check(&w, &inv, &[root, leaf])), "MatchError");
}

#[test]
fn revoked_delegation_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let revoked: HashSet<zero_auth::Cid> = [*leaf.cid()].into();
    let opts = options(&w);
    let err = Validator::new(&opts)
        .with_revocations(&revoked)
        .validate_invocation(&inv, &[root, leaf.clone()], NOW)
        .unwrap_err();
    assert!(
        matches!(err, Error::Revoked { ref token } if **token == *leaf.cid()),
        "{err}"
    );
}

#[test]
fn replayed_invocation_is_refused() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let opts = options(&w);
    let cache = ReplayCache::new(8);
    let v = Validator::new(&opts).with_replay_cache(&cache);
    let proofs = [root.clone(), leaf.clone()];
    v.validate_invocation(&inv, &proofs, NOW).unwrap();
    let err = v.validate_invocation(&inv, &proofs, NOW + 1).unwrap_err();
    assert!(
        matches!(err, Error::Replayed { ref token, .. } if **token == *inv.cid()),
        "{err}"
    );
    // A fresh invocation (new nonce) with the same content is fine.
    let again = read(&w, "/data/x", &[&root, &leaf]);
    assert_ne!(again.cid(), inv.cid());
    v.validate_invocation(&again, &proofs, NOW + 1).unwrap();
    // A refused invocation is not recorded.
    let bad = read(&w, "/etc/passwd", &[&root, &leaf]);
    assert!(v.validate_invocation(&bad, &proofs, NOW).is_err());
    assert_eq!(cache.len(), 2);
    // An invocation without expiry cannot be protected against replay (it is refused by the
    // lifetime cap before it reaches the cache).
    let forever = read_forever(&w, &root, &leaf);
    assert_eq!(
        v.validate_invocation(&forever, &proofs, NOW)
            .unwrap_err()
            .name(),
        "LifetimeTooLong"
    );
}

fn read_forever(w: &World, root: &Delegation, leaf: &Delegation) -> InvocationToken {
    invoke(
        &w.bob,
        &w.admin,
        "/fs/read",
        &[("path", s("/data/x"))],
        &[root, leaf],
        None,
    )
}

#[test]
fn replay_cache_is_bounded_per_principal_and_never_accepts_a_replay() {
    let cache = ReplayCache::new(2);
    let cid = |n: u8| zero_auth::cid_of(&[n]);
    let (a, b) = (key(10).did().clone(), key(11).did().clone());
    cache
        .check_and_record(&a, &cid(1), Some(100), 0, 0)
        .unwrap();
    cache
        .check_and_record(&a, &cid(2), Some(200), 0, 0)
        .unwrap();
    // a's bucket is full: a's next invocation is refused (nothing is evicted, so nothing can
    // be replayed), and the error says when to retry.
    let e = cache
        .check_and_record(&a, &cid(3), Some(300), 0, 0)
        .unwrap_err();
    assert!(
        matches!(e, Error::TooManyInvocations { limit: 2, retry_at: 100, ref principal, .. } if *principal == a),
        "{e}"
    );
    assert!(e.to_string().contains("retry after 100"), "{e}");
    // Another principal is not affected by a's full bucket.
    cache
        .check_and_record(&b, &cid(4), Some(300), 0, 0)
        .unwrap();
    // Replays are refused.
    assert_eq!(
        cache
            .check_and_record(&a, &cid(1), Some(100), 0, 0)
            .unwrap_err()
            .name(),
        "Replayed"
    );
    // Once past their deadline, entries are dropped (the validator refuses them as expired)
    // and the principal may invoke again.
    cache
        .check_and_record(&a, &cid(5), Some(400), 150, 0)
        .unwrap();
    assert_eq!((cache.len_of(&a), cache.len_of(&b), cache.len()), (2, 1, 3));
    // The skew extends how long an entry is kept.
    let skewed = ReplayCache::new(4);
    skewed
        .check_and_record(&a, &cid(7), Some(100), 0, 60)
        .unwrap();
    assert_eq!(
        skewed
            .check_and_record(&a, &cid(7), Some(100), 150, 60)
            .unwrap_err()
            .name(),
        "Replayed"
    );
    skewed
        .check_and_record(&a, &cid(8), Some(500), 170, 60)
        .unwrap();
    assert_eq!(skewed.len(), 1, "cid(7) dropped after 100 + 60");
}

/// A journal in memory, shared with the test so that it can look inside and make it fail.
#[derive(Clone, Default)]
struct MemJournal {
    entries: Arc<Mutex<Vec<ReplayEntry>>>,
    fail: Arc<AtomicBool>,
}

impl ReplayJournal for MemJournal {
    fn record(&self, entry: &ReplayEntry, expired: &[zero_auth::Cid]) -> Result<(), String> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("disk full".into());
        }
        let mut entries = self.entries.lock().unwrap();
        entries.retain(|e| !expired.contains(&e.invocation));
        entries.push(entry.clone());
        Ok(())
    }
}

#[test]
fn replay_state_is_journaled_before_acceptance_and_survives_a_restart() {
    let w = world();
    let (root, leaf) = chain(&w);
    let proofs = [root.clone(), leaf.clone()];
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let opts = options(&w);
    let journal = MemJournal::default();
    let cache = ReplayCache::with_journal(8, Box::new(journal.clone()), vec![], NOW);
    let verified = Validator::new(&opts)
        .with_replay_cache(&cache)
        .validate_invocation(&inv, &proofs, NOW)
        .unwrap();
    // The invocation counts against alice, the principal the root delegated to.
    assert_eq!(&verified.principal, w.alice.did());
    assert_eq!(
        *journal.entries.lock().unwrap(),
        vec![ReplayEntry {
            principal: w.alice.did().clone(),
            invocation: *inv.cid(),
            deadline: NOW + 60 + opts.clock_skew,
        }]
    );

    // "Restart": a new cache from the journal still refuses the replay.
    let restored = journal.entries.lock().unwrap().clone();
    let cache = ReplayCache::with_journal(8, Box::new(journal.clone()), restored.clone(), NOW);
    let err = Validator::new(&opts)
        .with_replay_cache(&cache)
        .validate_invocation(&inv, &proofs, NOW + 1)
        .unwrap_err();
    assert_eq!(err.name(), "Replayed", "{err}");
    // Entries already expired when the node starts are not restored.
    let later = ReplayCache::with_journal(8, Box::new(journal.clone()), restored, NOW + 500);
    assert!(later.is_empty());

    // A journal that cannot record refuses the invocation, which is then not remembered.
    journal.fail.store(true, Ordering::SeqCst);
    let fresh = read(&w, "/data/y", &[&root, &leaf]);
    let err = Validator::new(&opts)
        .with_replay_cache(&cache)
        .validate_invocation(&fresh, &proofs, NOW)
        .unwrap_err();
    assert_eq!(err.name(), "Storage", "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    journal.fail.store(false, Ordering::SeqCst);
    Validator::new(&opts)
        .with_replay_cache(&cache)
        .validate_invocation(&fresh, &proofs, NOW)
        .unwrap();
}

#[test]
fn invocations_must_be_short_lived() {
    let w = world();
    let (root, leaf) = chain(&w);
    let proofs = [root.clone(), leaf.clone()];
    let at = |exp: Option<u64>| {
        invoke(
            &w.bob,
            &w.admin,
            "/fs/read",
            &[("path", s("/data/x"))],
            &[&root, &leaf],
            exp,
        )
    };
    let opts = options(&w);
    let max = zero_auth::DEFAULT_MAX_INVOCATION_LIFETIME;
    assert_eq!(opts.max_invocation_lifetime, Some(max));
    let v = Validator::new(&opts);
    // Within the cap (plus the clock skew): accepted.
    v.validate_invocation(&at(Some(NOW + max)), &proofs, NOW)
        .unwrap();
    v.validate_invocation(&at(Some(NOW + max + opts.clock_skew)), &proofs, NOW)
        .unwrap();
    // Ten days ahead: refused, saying by how much and what to do.
    let err = v
        .validate_invocation(&at(Some(NOW + 864_000)), &proofs, NOW)
        .unwrap_err();
    assert!(
        matches!(err, Error::LifetimeTooLong { expires_in: Some(864_000), max: m, .. } if m == max),
        "{err}"
    );
    assert!(err.to_string().contains("within 900 s"), "{err}");
    // No `exp` at all: refused too.
    let err = v.validate_invocation(&at(None), &proofs, NOW).unwrap_err();
    assert_eq!(err.name(), "LifetimeTooLong", "{err}");
    assert!(err.to_string().contains("no expiration"), "{err}");
    // Without a cap (a library user's choice), the long one passes.
    let uncapped = ValidationOptions {
        max_invocation_lifetime: None,
        ..options(&w)
    };
    Validator::new(&uncapped)
        .validate_invocation(&at(Some(NOW + 864_000)), &proofs, NOW)
        .unwrap();
}

/// A revocation of `target` by `by`, with `path` as args.path (omitted when empty).
fn revocation(
    w: &World,
    by: &Keypair,
    target: &Delegation,
    path: &[&Delegation],
) -> InvocationToken {
    let mut args = vec![("revoke", Ipld::Link(*target.cid()))];
    if !path.is_empty() {
        args.push((
            "path",
            l(path.iter().map(|d| Ipld::Link(*d.cid())).collect()),
        ));
    }
    invoke(by, &w.admin, "/ucan/revoke", &args, &[], Some(NOW + 60))
}

#[test]
fn only_an_issuer_in_the_revoked_chain_or_the_root_may_revoke() {
    let w = world();
    let (root, leaf) = chain(&w); // admin → alice → bob
    let mallory_root = delegate(
        &w.admin,
        &w.mallory,
        Some(&w.admin),
        "/",
        Policy::empty(),
        Some(NOW + 3600),
    );
    let all = [root.clone(), leaf.clone(), mallory_root.clone()];
    let opts = options(&w);
    let v = Validator::new(&opts);
    let check = |inv: &InvocationToken| v.validate_revocation(inv, &all, NOW);

    // Alice issued the leaf: she may revoke it, given its chain.
    let ok = check(&revocation(&w, &w.alice, &leaf, &[&root, &leaf])).unwrap();
    assert_eq!(ok.revoked, *leaf.cid());
    assert_eq!(&ok.principal, w.alice.did());
    assert_eq!(ok.revoked_expiration, Some(NOW + 3600));
    assert!(!ok.by_root);
    // The root of authority may revoke anything, with or without the chain.
    assert!(
        check(&revocation(&w, &w.admin, &root, &[]))
            .unwrap()
            .by_root
    );
    check(&revocation(&w, &w.admin, &leaf, &[&root, &leaf])).unwrap();

    // Forged paths: Mallory signs a delegation back to the root (a cycle through herself) or
    // to Alice, and so stands "upstream" of Alice's delegations in a path she made up. Neither
    // proves anything: only a delegation's own issuer (or the root) may revoke it.
    let to_root = delegate(
        &w.mallory,
        &w.admin,
        Some(&w.admin),
        "/",
        Policy::empty(),
        None,
    );
    let to_alice = delegate(
        &w.mallory,
        &w.alice,
        Some(&w.admin),
        "/",
        Policy::empty(),
        None,
    );
    let forged = [
        root.clone(),
        leaf.clone(),
        mallory_root.clone(),
        to_root.clone(),
        to_alice.clone(),
    ];
    for (target, path) in [
        (&root, vec![&mallory_root, &to_root, &root]),
        (&leaf, vec![&mallory_root, &to_alice, &leaf]),
    ] {
        let err = v
            .validate_revocation(&revocation(&w, &w.mallory, target, &path), &forged, NOW)
            .unwrap_err();
        assert_eq!(err.name(), "InvalidClaim", "{err}");
        assert!(err.to_string().contains("only its issuer"), "{err}");
    }
    // Bob only received the leaf; Mallory is in another chain; Alice did not issue the root;
    // the root's issuer (the Admin) is upstream of the leaf, but only as the root may it revoke.
    for (who, target, path) in [
        (&w.bob, &leaf, vec![&root, &leaf]),
        (&w.mallory, &leaf, vec![&root, &leaf]),
        (&w.alice, &root, vec![&root, &leaf]),
    ] {
        let err = check(&revocation(&w, who, target, &path)).unwrap_err();
        assert_eq!(err.name(), "InvalidClaim", "{err}");
        assert!(err.to_string().contains("may not revoke"), "{err}");
    }
    // Mallory's own chain as the "path" does not contain the target.
    let err = check(&revocation(&w, &w.mallory, &leaf, &[&mallory_root])).unwrap_err();
    assert!(err.to_string().contains("does not contain"), "{err}");
    // By CID alone: only the root.
    let err = check(&revocation(&w, &w.alice, &leaf, &[])).unwrap_err();
    assert!(err.to_string().contains("args.path"), "{err}");
    // A path delegation that was not supplied.
    let err = v
        .validate_revocation(
            &revocation(&w, &w.alice, &leaf, &[&root, &leaf]),
            std::slice::from_ref(&leaf),
            NOW,
        )
        .unwrap_err();
    assert_eq!(err.name(), "UnavailableProof", "{err}");
    // A chain rooted elsewhere (a self-made "admin") proves nothing.
    let fake = key(9);
    let fake_root = delegate(&fake, &w.alice, Some(&fake), "/", Policy::empty(), None);
    let fake_leaf = delegate(&w.alice, &w.bob, Some(&fake), "/", Policy::empty(), None);
    let anywhere = ValidationOptions {
        executor: None,
        ..options(&w)
    };
    let err = Validator::new(&anywhere)
        .validate_revocation(
            &invoke(
                &w.alice,
                &fake,
                "/ucan/revoke",
                &[
                    ("revoke", Ipld::Link(*fake_leaf.cid())),
                    (
                        "path",
                        l(vec![
                            Ipld::Link(*fake_root.cid()),
                            Ipld::Link(*fake_leaf.cid()),
                        ]),
                    ),
                ],
                &[],
                Some(NOW + 60),
            ),
            &[fake_root, fake_leaf],
            NOW,
        )
        .unwrap_err();
    assert_eq!(err.name(), "UntrustedRoot", "{err}");
    // A revocation carries no `prf` (the old form, authorized by a `/ucan/revoke` grant).
    let with_prf = invoke(
        &w.alice,
        &w.admin,
        "/ucan/revoke",
        &[("revoke", Ipld::Link(*leaf.cid()))],
        &[&root],
        Some(NOW + 60),
    );
    let err = check(&with_prf).unwrap_err();
    assert!(err.to_string().contains("no `prf`"), "{err}");
    // A revocation whose path runs through an already revoked link is refused.
    let revoked: HashSet<zero_auth::Cid> = [*root.cid()].into();
    let err = Validator::new(&opts)
        .with_revocations(&revoked)
        .validate_revocation(&revocation(&w, &w.alice, &leaf, &[&root, &leaf]), &all, NOW)
        .unwrap_err();
    assert_eq!(err.name(), "Revoked", "{err}");
}

#[test]
fn chain_alone_gives_effective_capabilities() {
    let w = world();
    let root = delegate(
        &w.admin,
        &w.alice,
        Some(&w.admin),
        "/db",
        policy(vec![l(vec![s("=="), s(".db"), s("sales")])]),
        Some(NOW + 3600),
    );
    let leaf = delegate(
        &w.alice,
        &w.bob,
        Some(&w.admin),
        "/db/read",
        policy(vec![l(vec![
            s("any"),
            s(".tables"),
            l(vec![s("=="), s("."), s("orders")]),
        ])]),
        Some(NOW + 600),
    );
    let opts = ValidationOptions {
        required_root: Some(w.admin.did().clone()),
        ..Default::default()
    };
    let expect = ChainExpectations {
        audience: Some(w.bob.did().clone()),
        subject: Some(w.admin.did().clone()),
    };
    let v = Validator::new(&opts);
    let chain: Chain = v
        .validate_chain(&[root.clone(), leaf.clone()], &expect, NOW)
        .unwrap();
    assert_eq!(chain.holder(), w.bob.did());
    assert_eq!(chain.root(), w.admin.did());
    assert_eq!(chain.expiration(), Some(NOW + 600));
    assert_eq!(chain.capabilities().len(), 2);

    let args = |db: &str, tables: &[&str]| {
        Ipld::Map(common::map(&[
            ("db", s(db)),
            ("tables", l(tables.iter().map(|t| s(t)).collect())),
        ]))
    };
    chain
        .allows(&cmd("/db/read"), &args("sales", &["orders", "x"]))
        .unwrap();
    chain
        .allows(&cmd("/db/read/rows"), &args("sales", &["orders"]))
        .unwrap();
    assert_eq!(
        chain
            .allows(&cmd("/db/write"), &args("sales", &["orders"]))
            .unwrap_err()
            .name(),
        "InvalidClaim"
    );
    assert_eq!(
        chain
            .allows(&cmd("/db/read"), &args("hr", &["orders"]))
            .unwrap_err()
            .name(),
        "MatchError"
    );
    assert_eq!(
        chain
            .allows(&cmd("/db/read"), &args("sales", &["users"]))
            .unwrap_err()
            .name(),
        "MatchError"
    );

    // Expectations are enforced.
    let wrong = ChainExpectations {
        audience: Some(w.alice.did().clone()),
        subject: None,
    };
    assert_eq!(
        v.validate_chain(&[root.clone(), leaf.clone()], &wrong, NOW)
            .unwrap_err()
            .name(),
        "InvalidAudience"
    );
    let wrong = ChainExpectations {
        audience: None,
        subject: Some(w.bob.did().clone()),
    };
    assert_eq!(
        v.validate_chain(&[root.clone(), leaf.clone()], &wrong, NOW)
            .unwrap_err()
            .name(),
        "InvalidSubject"
    );
    assert_eq!(
        v.validate_chain(&[], &expect, NOW).unwrap_err().name(),
        "Malformed"
    );
    assert_eq!(
        v.validate_chain(&[root.clone(), leaf.clone()], &expect, NOW + 700)
            .unwrap_err()
            .name(),
        "Expired"
    );
    let other_root = ValidationOptions {
        required_root: Some(w.bob.did().clone()),
        ..Default::default()
    };
    assert_eq!(
        Validator::new(&other_root)
            .validate_chain(&[root, leaf], &expect, NOW)
            .unwrap_err()
            .name(),
        "UntrustedRoot"
    );
}

#[test]
fn offline_verification_from_base64() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/data/x", &[&root, &leaf]);
    let proofs = vec![root.to_base64(), leaf.to_base64()];
    let verified = verify_invocation_offline(&inv.to_base64(), &proofs, Some(NOW)).unwrap();
    assert_eq!(verified.command.as_str(), "/fs/read");
    assert_eq!(verified.args["path"], s("/data/x"));
    // Without a time, the current clock is used: these tokens expired long ago.
    assert_eq!(
        verify_invocation_offline(&inv.to_base64(), &proofs, None)
            .unwrap_err()
            .name(),
        "Expired"
    );
    // Garbage is a decode error, a delegation is not an invocation.
    assert_eq!(
        verify_invocation_offline("%%%", &proofs, Some(NOW))
            .unwrap_err()
            .name(),
        "Decode"
    );
    assert_eq!(
        verify_invocation_offline("AAAA", &proofs, Some(NOW))
            .unwrap_err()
            .name(),
        "Decode"
    );
    assert_eq!(
        verify_invocation_offline(&root.to_base64(), &proofs, Some(NOW))
            .unwrap_err()
            .name(),
        "Malformed"
    );
}

#[test]
fn error_names_and_messages() {
    let w = world();
    let (root, leaf) = chain(&w);
    let inv = read(&w, "/etc/passwd", &[&root, &leaf]);
    let err = check(&w, &inv, &[root.clone(), leaf]).unwrap_err();
    assert_eq!(err.name(), "MatchError");
    assert_eq!(err.token(), Some(root.cid()));
    let text = err.to_string();
    assert!(text.starts_with("MatchError: "), "{text}");
    assert!(text.contains(&root.cid().to_string()), "{text}");
    assert!(text.contains("/data/*"), "{text}");
    let hm = Error::HashMismatch {
        expected: "sha256:aa".into(),
        found: "sha256:bb".into(),
    };
    assert_eq!(hm.name(), "HashMismatch");
    assert!(hm.to_string().contains("sign it again"));
}
