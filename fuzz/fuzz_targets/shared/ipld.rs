//! Builds IPLD values from fuzz input, biased towards the shapes UCAN policies and their
//! arguments take (operator names, selectors, the argument names zerocore uses, short paths),
//! so that the fuzzer reaches policy evaluation instead of failing on the first string.

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use zero_auth::Ipld;

/// Words a policy or its arguments are made of.
const WORDS: &[&str] = &[
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "like",
    "not",
    "and",
    "or",
    "all",
    "any",
    ".",
    ".path",
    ".db",
    ".table",
    ".key",
    ".tenant",
    ".component",
    ".a",
    ".a.b",
    ".a[0]",
    ".a[-1]",
    ".a[]",
    ".a?",
    ".[\"a\"]",
    ".[1:2]",
    "path",
    "db",
    "table",
    "key",
    "tenant",
    "component",
    "a",
    "b",
    "/",
    "/site",
    "/site/a",
    "/sites",
    "/site/../x",
    "acme",
    "beta",
    "note:*",
    "*",
    "\\*",
    "",
];

/// Deepest nesting generated (the policy parser bounds depth itself, at 32).
const MAX_DEPTH: usize = 40;

/// One IPLD value from `u`, nested at most `MAX_DEPTH - depth` deep.
pub fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<Ipld> {
    let leaf_only = depth >= MAX_DEPTH;
    let choice = u.int_in_range(0..=if leaf_only { 5 } else { 8 })?;
    Ok(match choice {
        0 | 1 => Ipld::String((*u.choose(WORDS)?).to_owned()),
        2 => Ipld::String(String::arbitrary(u)?),
        3 => Ipld::Integer(i64::arbitrary(u)?.into()),
        4 => Ipld::Bool(bool::arbitrary(u)?),
        5 => match u.int_in_range(0..=2)? {
            0 => Ipld::Null,
            1 => Ipld::Float(f64::arbitrary(u)?),
            _ => Ipld::Bytes(Vec::<u8>::arbitrary(u)?),
        },
        6 | 7 => {
            let n = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(u, depth + 1)?);
            }
            Ipld::List(items)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = std::collections::BTreeMap::new();
            for _ in 0..n {
                let key = if bool::arbitrary(u)? {
                    u.choose(WORDS)?.trim_start_matches('.').to_owned()
                } else {
                    String::arbitrary(u)?
                };
                map.insert(key, value(u, depth + 1)?);
            }
            Ipld::Map(map)
        }
    })
}
