//! Property: policy evaluation agrees with a small reference evaluator written from the UCAN
//! 1.0 policy spec (https://github.com/ucan-wg/delegation, "Policy"), on random policies and
//! random arguments. The reference is deliberately naive: it walks the raw IPLD of the policy
//! and never shares code with `zero_auth::policy`.
//!
//! The semantics it encodes: a policy holds when every statement is true; statements are
//! three-valued (true, false, undetermined when a selector does not resolve), combined with
//! Kleene logic (`and` of nothing is true, `or` of nothing is true, `not` keeps undetermined);
//! `==`/`!=` are deep equality with integers and floats equal by value; `<`, `<=`, `>`, `>=`
//! hold only between numbers; `like` only on strings (`*` any run, `\*` a star, `\\` a
//! backslash); `all`/`any` quantify over a list's elements or a map's values (anything else:
//! false); a missing map key selects null, and a selector ending in `?` gives null where its
//! last segment would not resolve (a field of a non-map, an index out of range).

use std::collections::BTreeMap;

use proptest::prelude::*;
use zero_auth::{Ipld, Policy};

/// A truth value: `None` is undetermined.
type Truth = Option<bool>;

const SELECTORS: &[&str] = &[
    ".", ".a", ".b", ".c", ".a.b", ".a[0]", ".a[-1]", ".a[5]", ".c?", ".a[5]?", ".a.b?", ".z.b?",
];

fn s(v: &str) -> Ipld {
    Ipld::String(v.to_owned())
}

fn leaf() -> impl Strategy<Value = Ipld> {
    prop_oneof![
        Just(Ipld::Null),
        any::<bool>().prop_map(Ipld::Bool),
        (-3i128..=3).prop_map(Ipld::Integer),
        prop::sample::select(vec![-1.5, 0.0, 1.0, 2.0, 2.5]).prop_map(Ipld::Float),
        prop::sample::select(vec!["", "x", "ab", "a*b", "a\\*", "*"]).prop_map(s),
    ]
}

fn value() -> impl Strategy<Value = Ipld> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Ipld::List),
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..3)
                .prop_map(|m| Ipld::Map(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn args() -> impl Strategy<Value = Ipld> {
    prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), value(), 0..4)
        .prop_map(|m| Ipld::Map(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn selector() -> impl Strategy<Value = Ipld> {
    prop::sample::select(SELECTORS.to_vec()).prop_map(s)
}

fn number() -> impl Strategy<Value = Ipld> {
    prop_oneof![
        (-3i128..=3).prop_map(Ipld::Integer),
        prop::sample::select(vec![-1.5, 0.0, 1.0, 2.0, 2.5]).prop_map(Ipld::Float),
    ]
}

fn statement() -> impl Strategy<Value = Ipld> {
    let base = prop_oneof![
        (prop::sample::select(vec!["==", "!="]), selector(), value())
            .prop_map(|(op, sel, v)| Ipld::List(vec![s(op), sel, v])),
        (
            prop::sample::select(vec!["<", "<=", ">", ">="]),
            selector(),
            number()
        )
            .prop_map(|(op, sel, n)| Ipld::List(vec![s(op), sel, n])),
        (
            selector(),
            prop::sample::select(vec!["*", "a*", "*b", "a\\*", "x", ""])
        )
            .prop_map(|(sel, p)| Ipld::List(vec![s("like"), sel, s(p)])),
    ];
    base.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|st| Ipld::List(vec![s("not"), st])),
            (
                prop::sample::select(vec!["and", "or"]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(op, items)| Ipld::List(vec![s(op), Ipld::List(items)])),
            (prop::sample::select(vec!["all", "any"]), selector(), inner)
                .prop_map(|(op, sel, body)| Ipld::List(vec![s(op), sel, body])),
        ]
    })
}

/// Resolves a selector from `SELECTORS`: `None` when it does not resolve.
fn select(selector: &str, value: &Ipld) -> Option<Ipld> {
    let (path, optional) = match selector.strip_suffix('?') {
        Some(p) => (p, true),
        None => (selector, false),
    };
    let mut current = value.clone();
    let mut rest = path.strip_prefix('.').unwrap_or(path);
    while !rest.is_empty() {
        let next = if let Some(r) = rest.strip_prefix('[') {
            let (index, after) = r.split_once(']')?;
            let index: i64 = index.parse().ok()?;
            rest = after.strip_prefix('.').unwrap_or(after);
            match &current {
                Ipld::List(items) => {
                    let len = items.len() as i64;
                    let at = if index < 0 { len + index } else { index };
                    (0..len).contains(&at).then(|| items[at as usize].clone())
                }
                _ => None,
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let field = &rest[..end];
            rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
            match &current {
                // The spec: a missing key selects null.
                Ipld::Map(m) => Some(m.get(field).cloned().unwrap_or(Ipld::Null)),
                _ => None,
            }
        };
        match next {
            Some(v) => current = v,
            // `?` covers the segment it follows, here always the last one.
            None if optional && rest.is_empty() => return Some(Ipld::Null),
            None => return None,
        }
    }
    Some(current)
}

fn number_of(v: &Ipld) -> Option<f64> {
    match v {
        Ipld::Integer(i) => Some(*i as f64),
        Ipld::Float(f) => Some(*f),
        _ => None,
    }
}

fn equal(a: &Ipld, b: &Ipld) -> bool {
    match (a, b) {
        (Ipld::List(x), Ipld::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Ipld::Map(x), Ipld::Map(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => match (number_of(a), number_of(b)) {
            (Some(p), Some(q)) => p == q,
            _ => a == b,
        },
    }
}

fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('\\') if matches!(p.get(1), Some('*' | '\\')) => {
                t.first() == p.get(1) && go(&p[2..], &t[1..])
            }
            Some('*') => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn kleene_all(items: impl Iterator<Item = Truth>) -> Truth {
    let mut result = Some(true);
    for t in items {
        match t {
            Some(false) => return Some(false),
            None => result = None,
            Some(true) => {}
        }
    }
    result
}

fn kleene_any(items: impl Iterator<Item = Truth>) -> Truth {
    let mut result = Some(false);
    for t in items {
        match t {
            Some(true) => return Some(true),
            None => result = None,
            Some(false) => {}
        }
    }
    result
}

fn text(v: &Ipld) -> &str {
    match v {
        Ipld::String(s) => s,
        _ => "",
    }
}

fn eval(statement: &Ipld, args: &Ipld) -> Truth {
    let Ipld::List(parts) = statement else {
        unreachable!("generated statements are lists")
    };
    let op = text(&parts[0]);
    match op {
        "not" => eval(&parts[1], args).map(|b| !b),
        "and" | "or" => {
            let Ipld::List(items) = &parts[1] else {
                unreachable!()
            };
            let results = items.iter().map(|i| eval(i, args));
            if op == "and" || items.is_empty() {
                if op == "or" {
                    Some(true)
                } else {
                    kleene_all(results)
                }
            } else {
                kleene_any(results)
            }
        }
        "all" | "any" => {
            let selected = select(text(&parts[1]), args)?;
            let elements: Vec<Ipld> = match selected {
                Ipld::List(l) => l,
                Ipld::Map(m) => m.into_values().collect(),
                _ => return Some(false),
            };
            let results = elements.iter().map(|e| eval(&parts[2], e));
            if op == "all" {
                kleene_all(results)
            } else {
                kleene_any(results)
            }
        }
        _ => {
            let v = select(text(&parts[1]), args)?;
            let lit = &parts[2];
            Some(match op {
                "==" => equal(&v, lit),
                "!=" => !equal(&v, lit),
                "like" => matches!(&v, Ipld::String(t) if like(text(lit), t)),
                _ => match (number_of(&v), number_of(lit)) {
                    (Some(a), Some(b)) => match op {
                        "<" => a < b,
                        "<=" => a <= b,
                        ">" => a > b,
                        _ => a >= b,
                    },
                    _ => false,
                },
            })
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_agrees_with_the_reference(
        statements in prop::collection::vec(statement(), 0..4),
        args in args(),
    ) {
        let raw = Ipld::List(statements.clone());
        let policy = Policy::from_ipld(&raw).expect("generated policies are well formed");
        let want = statements.iter().all(|st| eval(st, &args) == Some(true));
        prop_assert_eq!(policy.matches(&args), want, "policy {:?} on {:?}", raw, args);
    }
}

#[test]
fn the_reference_agrees_with_the_spec_fixtures_it_can_read() {
    let args = Ipld::Map(BTreeMap::from([
        (
            "a".to_owned(),
            Ipld::List(vec![Ipld::Integer(1), Ipld::Integer(2)]),
        ),
        ("b".to_owned(), Ipld::Integer(1)),
    ]));
    let st = |v: Vec<Ipld>| Ipld::List(v);
    assert_eq!(
        eval(&st(vec![s("=="), s(".b"), Ipld::Float(1.0)]), &args),
        Some(true)
    );
    assert_eq!(
        eval(&st(vec![s("!="), s(".b"), Ipld::Null]), &args),
        Some(true)
    );
    assert_eq!(
        eval(&st(vec![s("or"), Ipld::List(vec![])]), &args),
        Some(true)
    );
    assert_eq!(
        eval(&st(vec![s("=="), s(".c"), Ipld::Null]), &args),
        Some(true)
    );
    assert_eq!(eval(&st(vec![s("=="), s(".b.x"), Ipld::Null]), &args), None);
    assert_eq!(
        eval(&st(vec![s("=="), s(".a[5]"), Ipld::Null]), &args),
        None
    );
    assert_eq!(
        eval(&st(vec![s("=="), s(".c?"), Ipld::Null]), &args),
        Some(true)
    );
    assert_eq!(
        eval(&st(vec![s("=="), s(".a[-1]"), Ipld::Integer(2)]), &args),
        Some(true)
    );
    assert!(like(
        "Alice\\*, Bob*, Carol.",
        "Alice*, Bob, Dan, Erin, Carol."
    ));
    assert!(!like("Alice\\*, Bob*, Carol.", "Alice Cooper, Bob, Carol."));
}
