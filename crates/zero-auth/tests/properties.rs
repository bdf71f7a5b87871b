//! Property tests: attenuation never widens, and decoding never panics.

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use zero_auth::{
    ChainExpectations, Delegation, InvocationToken, Ipld, Keypair, Policy, Token,
    ValidationOptions, Validator,
};

use common::{NOW, cmd, key, l, s};

const COMMANDS: &[&str] = &["/", "/fs", "/fs/read", "/fs/write", "/db/read"];
const PATHS: &[&str] = &["/data/a", "/data/b/c", "/etc/passwd", "", "/data"];
const TABLES: &[&str] = &["users", "logs", "orders"];

struct Keys {
    admin: Keypair,
    alice: Keypair,
    bob: Keypair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        admin: key(11),
        alice: key(12),
        bob: key(13),
    })
}

/// Leaf statements over `.path`, `.table` and `.n`.
fn leaf_statement() -> impl Strategy<Value = Ipld> {
    prop_oneof![
        prop::sample::select(PATHS).prop_map(|p| l(vec![s("=="), s(".path"), s(p)])),
        prop::sample::select(PATHS).prop_map(|p| l(vec![s("!="), s(".path"), s(p)])),
        prop::sample::select(&["/data/*", "*", "/etc/*", "*c", "/data\\*"][..])
            .prop_map(|p| l(vec![s("like"), s(".path"), s(p)])),
        prop::sample::select(TABLES).prop_map(|t| l(vec![s("=="), s(".table"), s(t)])),
        (prop::sample::select(&[">", ">=", "<", "<="][..]), -3i64..12).prop_map(|(op, n)| l(vec![
            s(op),
            s(".n"),
            Ipld::Integer(n.into())
        ])),
        (-3i64..12).prop_map(|n| l(vec![s("=="), s(".n"), Ipld::Float(n as f64)])),
        Just(l(vec![s("=="), s(".table?"), Ipld::Null])),
    ]
}

/// Statements from a small grammar: leaves, `not`, `and`, `or`.
fn statement() -> impl Strategy<Value = Ipld> {
    leaf_statement().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s_| l(vec![s("not"), s_])),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| l(vec![s("and"), l(v)])),
            prop::collection::vec(inner, 0..3).prop_map(|v| l(vec![s("or"), l(v)])),
        ]
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop::collection::vec(statement(), 0..3).prop_map(|v| Policy::from_ipld(&l(v)).unwrap())
}

/// Random arguments: each field may be missing or of an unexpected type.
fn args() -> impl Strategy<Value = Ipld> {
    (
        prop::option::of(prop::sample::select(PATHS)),
        prop::option::of(prop::sample::select(TABLES)),
        prop::option::of(prop_oneof![
            (-4i64..14).prop_map(|n| Ipld::Integer(n.into())),
            (-4i64..14).prop_map(|n| Ipld::Float(n as f64 + 0.5)),
            Just(s("7")),
        ]),
    )
        .prop_map(|(path, table, n)| {
            let mut m = std::collections::BTreeMap::new();
            if let Some(p) = path {
                m.insert("path".to_string(), s(p));
            }
            if let Some(t) = table {
                m.insert("table".to_string(), s(t));
            }
            if let Some(n) = n {
                m.insert("n".to_string(), n);
            }
            Ipld::Map(m)
        })
}

/// A child derived from the parent: either a genuine attenuation (a narrower or equal
/// command, the parent's policy plus more) or an arbitrary, possibly wider, one.
fn child(
    parent_cmd: &'static str,
    parent_pol: Policy,
) -> impl Strategy<Value = (&'static str, Policy)> {
    let narrower: Vec<&'static str> = COMMANDS
        .iter()
        .copied()
        .filter(|c| cmd(parent_cmd).covers(&cmd(c)))
        .collect();
    let attenuated = (
        prop::sample::select(narrower),
        prop::collection::vec(statement(), 0..2),
    )
        .prop_map(move |(c, extra)| {
            let mut all = parent_pol.to_ipld();
            if let Ipld::List(items) = &mut all {
                items.extend(extra);
            }
            (c, Policy::from_ipld(&all).unwrap())
        });
    let arbitrary = (prop::sample::select(COMMANDS), policy());
    prop_oneof![attenuated, arbitrary]
}

fn sign(issuer: &Keypair, audience: &Keypair, command: &str, pol: Policy) -> Delegation {
    Delegation::builder(audience.did().clone(), cmd(command), Some(NOW + 600))
        .subject(keys().admin.did().clone())
        .policy(pol)
        .nonce(vec![0; 4])
        .sign(issuer)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Whatever the child delegation says, an action the chain parent→child authorizes is
    /// authorized by the parent alone: attenuation never widens.
    #[test]
    fn attenuation_never_widens(
        (parent_cmd, parent_pol, (child_cmd, child_pol)) in
            (prop::sample::select(COMMANDS), policy()).prop_flat_map(|(c, p)| {
                (Just(c), Just(p.clone()), child(c, p))
            }),
        invocations in prop::collection::vec((prop::sample::select(COMMANDS), args()), 1..8),
    ) {
        let k = keys();
        let parent = sign(&k.admin, &k.alice, parent_cmd, parent_pol);
        let child = sign(&k.alice, &k.bob, child_cmd, child_pol);
        let options = ValidationOptions { required_root: Some(k.admin.did().clone()), ..Default::default() };
        let v = Validator::new(&options);
        let expect = ChainExpectations::default();
        let both = v.validate_chain(&[parent.clone(), child.clone()], &expect, NOW).unwrap();
        let alone = v.validate_chain(std::slice::from_ref(&parent), &expect, NOW).unwrap();
        for (c, a) in &invocations {
            if both.allows(&cmd(c), a).is_ok() {
                prop_assert!(alone.allows(&cmd(c), a).is_ok(), "chain allows {c} {a:?} but parent alone does not");
            }
        }
        // The same through signed invocations, checked end to end.
        let (c, a) = &invocations[0];
        let Ipld::Map(a) = a else { unreachable!() };
        let by_bob = InvocationToken::builder(k.admin.did().clone(), cmd(c), Some(NOW + 60))
            .args(a.clone()).proof(&parent).proof(&child).sign(&k.bob).unwrap();
        if v.validate_invocation(&by_bob, &[parent.clone(), child], NOW).is_ok() {
            let by_alice = InvocationToken::builder(k.admin.did().clone(), cmd(c), Some(NOW + 60))
                .args(a.clone()).proof(&parent).sign(&k.alice).unwrap();
            prop_assert!(v.validate_invocation(&by_alice, &[parent], NOW).is_ok());
        }
    }

    /// Decoding arbitrary bytes never panics.
    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Token::decode(&bytes);
        let _ = Delegation::decode(&bytes);
        let _ = InvocationToken::decode(&bytes);
    }

    /// Mutations of a valid token never panic; whatever still decodes re-encodes to the same
    /// bytes and can be verified.
    #[test]
    fn decoding_mutated_tokens_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let k = keys();
        let pol = Policy::from_ipld(&l(vec![l(vec![s("all"), s(".items[]?"), l(vec![s(">"), s(".n"), Ipld::Integer(1)])])])).unwrap();
        let base = sign(&k.admin, &k.alice, "/fs/read", pol);
        let mut bytes = base.as_bytes().to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(t) = truncate {
            bytes.truncate(t.index(bytes.len() + 1));
        }
        if let Ok(token) = Token::decode(&bytes) {
            prop_assert_eq!(token.encode().unwrap(), bytes.clone());
            let _ = token.verify_signature();
        }
    }

    /// Any selector text parses or is refused, without panicking, and evaluation of what
    /// parses never panics.
    #[test]
    fn selectors_never_panic(text in "[.\\[\\]\"a-c0-9:?\\-\\\\]{0,16}", a in args()) {
        if let Ok(sel) = zero_auth::policy::Selector::parse(&text) {
            let _ = sel.select(&a);
        }
    }
}
