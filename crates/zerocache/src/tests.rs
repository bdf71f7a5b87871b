//! Unit tests of the store, the settings and the grants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zero_auth::{Command, Delegation, Ipld, Keypair, Policy, Validator};

use crate::*;

fn settings(memory: u64) -> CacheSettings {
    CacheSettings {
        memory,
        ..CacheSettings::default()
    }
}

fn cache_with(s: CacheSettings) -> (Cache, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (Cache::with_clock(s, clock.clone()), clock)
}

fn value(c: &Cache, t: &str, k: &str) -> Option<Vec<u8>> {
    c.get(t, k).unwrap().map(|v| v.to_vec())
}

fn limit_kind(e: Error) -> LimitKind {
    match e {
        Error::LimitExceeded { kind, .. } => kind,
        other => panic!("expected a limit, got {other:?}"),
    }
}

#[test]
fn set_get_delete_round_trip() {
    let (c, _) = cache_with(CacheSettings::default());
    assert_eq!(value(&c, "a", "k"), None);
    c.set("a", "k", b"v1", None).unwrap();
    assert_eq!(value(&c, "a", "k").as_deref(), Some(&b"v1"[..]));
    c.set("a", "k", b"v2", None).unwrap();
    assert_eq!(value(&c, "a", "k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(c.tenant_len("a"), 1);
    assert_eq!(c.used(), entry_charge("k", 2));
    c.delete("a", "k").unwrap();
    assert_eq!(value(&c, "a", "k"), None);
    assert_eq!(c.used(), 0);
    // Deleting an absent key is not an error.
    c.delete("a", "k").unwrap();
}

#[test]
fn tenants_are_separate_namespaces() {
    let (c, _) = cache_with(CacheSettings::default());
    c.set("a", "shared", b"from a", None).unwrap();
    c.set("b", "shared", b"from b", None).unwrap();
    assert_eq!(value(&c, "a", "shared").as_deref(), Some(&b"from a"[..]));
    assert_eq!(value(&c, "b", "shared").as_deref(), Some(&b"from b"[..]));
    c.delete("a", "shared").unwrap();
    assert_eq!(value(&c, "a", "shared"), None);
    assert_eq!(value(&c, "b", "shared").as_deref(), Some(&b"from b"[..]));
    assert_eq!(value(&c, "c", "shared"), None);
}

#[test]
fn get_many_answers_in_order_within_its_bounds() {
    let (c, _) = cache_with(CacheSettings {
        max_batch_keys: 3,
        max_batch_bytes: 10,
        ..CacheSettings::default()
    });
    c.set("a", "x", b"1", None).unwrap();
    c.set("a", "z", b"333", None).unwrap();
    c.set("b", "y", b"other tenant", None).unwrap();
    let keys = ["x", "y", "z"].map(String::from);
    let got: Vec<Option<Vec<u8>>> = c
        .get_many("a", &keys)
        .unwrap()
        .into_iter()
        .map(|v| v.map(|v| v.to_vec()))
        .collect();
    assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"333".to_vec())]);
    let four = ["x", "y", "z", "w"].map(String::from);
    let e = c.get_many("a", &four).unwrap_err();
    assert!(e.to_string().contains("max_batch_keys"), "{e}");
    assert_eq!(limit_kind(e), LimitKind::BatchKeys);
    c.set("a", "big", b"0123456789", None).unwrap();
    let e = c.get_many("a", &["x".into(), "big".into()]).unwrap_err();
    assert!(e.to_string().contains("max_batch_bytes"), "{e}");
    assert_eq!(limit_kind(e), LimitKind::BatchSize);
}

#[test]
fn a_refused_batch_leaves_the_lru_order_alone() {
    let charge = entry_charge("k0", 8);
    let (c, _) = cache_with(CacheSettings {
        memory: charge * 2,
        max_batch_bytes: 8,
        ..CacheSettings::default()
    });
    c.set("a", "k0", &[0; 8], None).unwrap();
    c.set("a", "k1", &[0; 8], None).unwrap();
    // Refused (16 bytes > 8): k0 stays the least recently used.
    assert!(c.get_many("a", &["k1".into(), "k0".into()]).is_err());
    c.set("a", "k2", &[0; 8], None).unwrap();
    assert_eq!(value(&c, "a", "k0"), None);
    assert!(value(&c, "a", "k1").is_some());
}

#[test]
fn increment_counts_from_zero_and_refuses_non_integers() {
    let (c, clock) = cache_with(CacheSettings::default());
    assert_eq!(c.increment("a", "n", 5, Some(1000)).unwrap(), 5);
    assert_eq!(c.increment("a", "n", -7, None).unwrap(), -2);
    assert_eq!(value(&c, "a", "n").as_deref(), Some(&b"-2"[..]));
    // The counter keeps the expiry it was created with.
    clock.advance(Duration::from_millis(1000));
    assert_eq!(value(&c, "a", "n"), None);
    assert_eq!(c.increment("a", "n", 1, None).unwrap(), 1);

    c.set("a", "word", b"hello", None).unwrap();
    let e = c.increment("a", "word", 1, None).unwrap_err();
    assert!(matches!(e, Error::NotAnInteger { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("`word`")
            && msg.contains("\"hello\"")
            && msg.contains("not a decimal integer"),
        "{msg}"
    );
    assert_eq!(value(&c, "a", "word").as_deref(), Some(&b"hello"[..]));

    c.set("a", "max", i64::MAX.to_string().as_bytes(), None)
        .unwrap();
    let e = c.increment("a", "max", 1, None).unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e:?}");
    assert!(e.to_string().contains("64-bit"), "{e}");
}

#[test]
fn compare_and_swap_replaces_only_the_expected_value() {
    let (c, _) = cache_with(CacheSettings::default());
    // Absent: only `None` matches.
    assert!(
        !c.compare_and_swap("a", "k", Some(b"x"), b"1", None)
            .unwrap()
    );
    assert_eq!(value(&c, "a", "k"), None);
    assert!(c.compare_and_swap("a", "k", None, b"1", None).unwrap());
    assert!(!c.compare_and_swap("a", "k", None, b"2", None).unwrap());
    assert!(
        !c.compare_and_swap("a", "k", Some(b"0"), b"2", None)
            .unwrap()
    );
    assert_eq!(value(&c, "a", "k").as_deref(), Some(&b"1"[..]));
    assert!(
        c.compare_and_swap("a", "k", Some(b"1"), b"2", None)
            .unwrap()
    );
    assert_eq!(value(&c, "a", "k").as_deref(), Some(&b"2"[..]));
    // Another tenant's value is never compared.
    assert!(c.compare_and_swap("b", "k", None, b"b", None).unwrap());
    assert_eq!(value(&c, "a", "k").as_deref(), Some(&b"2"[..]));
}

#[test]
fn entries_expire_on_the_clock() {
    let (c, clock) = cache_with(CacheSettings::default());
    c.set("a", "short", b"v", Some(100)).unwrap();
    c.set("a", "long", b"v", Some(10_000)).unwrap();
    c.set("a", "forever", b"v", None).unwrap();
    clock.advance(Duration::from_millis(99));
    assert!(value(&c, "a", "short").is_some());
    clock.advance(Duration::from_millis(1));
    assert_eq!(value(&c, "a", "short"), None);
    assert!(value(&c, "a", "long").is_some());
    // An expired entry is absent for compare-and-swap too.
    clock.advance(Duration::from_millis(10_000));
    assert!(c.compare_and_swap("a", "long", None, b"new", None).unwrap());
    assert!(value(&c, "a", "forever").is_some());
    // A write reclaims the memory of every expired entry.
    c.set("a", "t1", b"v", Some(5)).unwrap();
    c.set("a", "t2", b"v", Some(5)).unwrap();
    clock.advance(Duration::from_millis(5));
    c.set("a", "other", b"v", None).unwrap();
    assert_eq!(c.tenant_len("a"), 3, "forever, long (swapped), other");
    // A zero time to live is refused, not taken as "expired at once" or "forever".
    let e = c.set("a", "k", b"v", Some(0)).unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("time to live"),
        "{e}"
    );
}

#[test]
fn sizes_are_bounded_with_clear_errors() {
    let (c, _) = cache_with(CacheSettings {
        max_key_size: 8,
        max_value_size: 16,
        ..CacheSettings::default()
    });
    c.set("a", "12345678", &[0; 16], None).unwrap();
    let e = c.set("a", "123456789", b"v", None).unwrap_err();
    assert!(
        e.to_string().contains("max_key_size") && e.to_string().contains("9 bytes"),
        "{e}"
    );
    assert_eq!(limit_kind(e), LimitKind::KeySize);
    let e = c.set("a", "k", &[0; 17], None).unwrap_err();
    assert!(
        e.to_string().contains("max_value_size") && e.to_string().contains("17 bytes"),
        "{e}"
    );
    assert_eq!(limit_kind(e), LimitKind::ValueSize);
    let e = c
        .compare_and_swap("a", "k", None, &[0; 17], None)
        .unwrap_err();
    assert_eq!(limit_kind(e), LimitKind::ValueSize);
    let e = c.get("a", "").unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("empty"),
        "{e}"
    );
    assert_eq!(value(&c, "a", "k"), None);
}

#[test]
fn the_memory_bound_holds_and_evicts_least_recently_used_first() {
    let charge = entry_charge("k0", 100);
    let (c, _) = cache_with(settings(charge * 3));
    for k in ["k0", "k1", "k2"] {
        c.set("a", k, &[1; 100], None).unwrap();
    }
    assert_eq!(c.used(), charge * 3);
    // Reading k0 makes k1 the least recently used.
    assert!(value(&c, "a", "k0").is_some());
    c.set("a", "k3", &[1; 100], None).unwrap();
    assert_eq!(c.used(), charge * 3);
    assert_eq!(value(&c, "a", "k1"), None);
    for k in ["k0", "k2", "k3"] {
        assert!(value(&c, "a", k).is_some(), "{k}");
    }
    // Now k0 is the oldest: it goes next.
    c.set("a", "k4", &[1; 100], None).unwrap();
    assert_eq!(value(&c, "a", "k0"), None);
    assert!(c.used() <= charge * 3);
}

#[test]
fn the_tenant_quota_evicts_the_tenants_own_entries_and_refuses_what_never_fits() {
    let charge = entry_charge("k0", 100);
    let (c, _) = cache_with(CacheSettings {
        memory: charge * 10,
        tenant_quota: Some(charge * 2),
        ..CacheSettings::default()
    });
    c.set("b", "b0", &[1; 100], None).unwrap();
    for k in ["k0", "k1", "k2"] {
        c.set("a", k, &[1; 100], None).unwrap();
    }
    assert_eq!(c.tenant_used("a"), charge * 2);
    assert_eq!(value(&c, "a", "k0"), None);
    assert!(value(&c, "b", "b0").is_some());
    let e = c.set("a", "k", &[1; 1000], None).unwrap_err();
    assert!(e.to_string().contains("tenant_quota"), "{e}");
    assert_eq!(limit_kind(e), LimitKind::Quota);
    assert_eq!(c.tenant_len("a"), 2, "a refused entry evicts nothing");
}

#[test]
fn a_tenant_filling_the_cache_cannot_evict_another_below_its_share() {
    let charge = entry_charge("k000", 100);
    let memory = charge * 20;
    let (c, _) = cache_with(settings(memory));
    // B holds 5 entries: a quarter of the bound, within its half share.
    for i in 0..5 {
        c.set("b", &format!("k{i:03}"), &[2; 100], None).unwrap();
    }
    // A writes far more than the whole bound.
    for i in 0..200 {
        c.set("a", &format!("k{i:03}"), &[1; 100], None).unwrap();
        assert!(c.used() <= memory);
    }
    for i in 0..5 {
        assert!(
            value(&c, "b", &format!("k{i:03}")).is_some(),
            "b's k{i:03} was evicted"
        );
    }
    assert_eq!(c.tenant_used("b"), charge * 5);
    assert_eq!(c.tenant_used("a"), memory - charge * 5);
    // A keeps its most recent entries.
    assert!(value(&c, "a", "k199").is_some());
    assert_eq!(value(&c, "a", "k000"), None);
}

#[test]
fn a_tenant_over_its_share_is_evicted_first_but_not_below_it() {
    let charge = entry_charge("k000", 100);
    let memory = charge * 20;
    let (c, _) = cache_with(settings(memory));
    // A alone fills the cache (its share is the whole bound while it is alone).
    for i in 0..20 {
        c.set("a", &format!("k{i:03}"), &[1; 100], None).unwrap();
    }
    // B arrives: the share becomes 10 entries each; B's writes evict A's oldest entries.
    for i in 0..10 {
        c.set("b", &format!("k{i:03}"), &[2; 100], None).unwrap();
    }
    assert_eq!(c.tenant_used("a"), charge * 10);
    assert_eq!(c.tenant_used("b"), charge * 10);
    assert_eq!(value(&c, "a", "k009"), None);
    assert!(value(&c, "a", "k010").is_some());
    // B writing more now evicts its own entries, never A's (at its share).
    for i in 10..30 {
        c.set("b", &format!("k{i:03}"), &[2; 100], None).unwrap();
    }
    assert_eq!(c.tenant_used("a"), charge * 10);
    for i in 10..20 {
        assert!(value(&c, "a", &format!("k{i:03}")).is_some());
    }
}

#[test]
fn a_write_that_only_fits_by_evicting_a_tenant_within_its_share_is_refused() {
    let small = entry_charge("k0", 10);
    let memory = small * 4;
    let (c, _) = cache_with(settings(memory));
    c.set("b", "k0", &[2; 10], None).unwrap();
    c.set("b", "k1", &[2; 10], None).unwrap();
    // A needs more than what is free, B is exactly at its share (half): refused, B untouched.
    let big = vec![1u8; (small * 3 - entry_charge("kk", 0)) as usize];
    let e = c.set("a", "kk", &big, None).unwrap_err();
    assert!(
        e.to_string().contains("fair share") && e.to_string().contains("[cache] memory"),
        "{e}"
    );
    assert_eq!(limit_kind(e), LimitKind::Memory);
    assert_eq!(c.tenant_len("b"), 2);
    assert_eq!(c.tenant_len("a"), 0);
}

#[test]
fn settings_parse_from_toml_with_units_and_refuse_unknown_keys() {
    let s: CacheSettings = toml::from_str("memory = \"16 MiB\"\nmax_value_size = 4096\n").unwrap();
    assert_eq!(s.memory, 16 << 20);
    assert_eq!(s.max_value_size, 4096);
    assert_eq!(s.max_key_size, CacheSettings::default().max_key_size);
    s.validate().unwrap();
    let e = toml::from_str::<CacheSettings>("memroy = 1\n").unwrap_err();
    assert!(e.to_string().contains("memroy"), "{e}");
    let bad = CacheSettings {
        tenant_quota: Some(128 << 20),
        ..CacheSettings::default()
    };
    assert!(bad.validate().unwrap_err().contains("tenant_quota"));
    assert!(
        settings(0)
            .validate()
            .unwrap_err()
            .contains("[cache] memory")
    );
}

/// A chain Admin → owner granting `cmd` with `policy`, validated like a component's.
fn chain(cmd: &str, policy: &[(&str, &str, &str)]) -> Vec<zero_auth::Capability> {
    let admin = Keypair::generate().unwrap();
    let owner = Keypair::generate().unwrap();
    let d = Delegation::builder(owner.did().clone(), Command::parse(cmd).unwrap(), None)
        .subject(admin.did().clone())
        .policy(Policy::from_ipld(&policy_ipld(policy)).unwrap())
        .sign(&admin)
        .unwrap();
    let options = zero_auth::ValidationOptions::default();
    Validator::new(&options)
        .validate_chain(&[d], &Default::default(), 0)
        .unwrap()
        .capabilities()
        .to_vec()
}

/// A policy of `(operator, selector, operand)` statements.
fn policy_ipld(policy: &[(&str, &str, &str)]) -> Ipld {
    Ipld::List(
        policy
            .iter()
            .map(|(op, sel, v)| {
                Ipld::List(vec![
                    Ipld::String((*op).into()),
                    Ipld::String((*sel).into()),
                    Ipld::String((*v).into()),
                ])
            })
            .collect(),
    )
}

fn grants(caps: Option<Vec<zero_auth::Capability>>) -> CacheGrants {
    let base = BTreeMap::from([("tenant".to_owned(), Ipld::String("acme".into()))]);
    CacheGrants::new(Arc::new(zero_auth::ScopedChain::new(caps, base, None)))
}

#[test]
fn grants_scope_commands_and_key_prefixes() {
    let g = grants(Some(chain("/cache/read", &[("like", ".key", "session:*")])));
    g.check(Op::Read, "session:1").unwrap();
    let e = g.check(Op::Read, "user:1").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`/cache/read` on key `user:1`") && msg.contains("zero sign"),
        "{msg}"
    );
    let e = g.check(Op::Write, "session:1").unwrap_err();
    assert!(e.to_string().contains("/cache/write"), "{e}");

    let all = grants(Some(chain("/cache", &[])));
    all.check(Op::Read, "anything").unwrap();
    all.check(Op::Write, "anything").unwrap();

    let none = grants(None);
    let e = none.check(Op::Read, "k").unwrap_err();
    assert!(e.to_string().contains("no capability token"), "{e}");

    let expired = CacheGrants::new(Arc::new(zero_auth::ScopedChain::new(
        Some(vec![]),
        BTreeMap::new(),
        Some(1),
    )));
    assert!(
        expired
            .check(Op::Read, "k")
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
}
