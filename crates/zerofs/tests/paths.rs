//! Property: path resolution never escapes the tenant root. Random path text (segments such as
//! `..`, `.`, empty ones, the reserved `.zero`, NUL bytes) parses exactly when the reference
//! normalizer (`reference/mod.rs`) accepts it, to the same normal form; a parsed path parses
//! to itself, has no special segments, and its ancestors end at `/`; joining a segment yields
//! a child of it or a refusal.

mod reference;

use proptest::prelude::*;
use zerofs::TenantPath;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            (
                prop::sample::select(
                    &[
                        "/", "a", "b", ".", "..", "", ".zero", "...", "é", "\0", "a/b"
                    ][..]
                ),
                any::<bool>()
            ),
            0..10,
        )
        .prop_map(|parts| parts
            .iter()
            .map(|(p, slash)| format!("{p}{}", if *slash { "/" } else { "" }))
            .collect()),
        "\\PC{0,40}",
        "/[a.]{250,260}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_agrees_with_the_reference_and_stays_under_the_root(s in text(), name in text()) {
        let parsed = TenantPath::parse(&s);
        prop_assert_eq!(parsed.as_ref().ok().map(|p| p.as_str().to_owned()), reference::normalize(&s), "{:?}", s);
        let Ok(path) = parsed else { return Ok(()) };
        prop_assert_eq!(TenantPath::parse(path.as_str()).ok(), Some(path.clone()));
        prop_assert_eq!(path.ancestors().last(), Some(TenantPath::root()));
        for seg in path.segments() {
            prop_assert!(!seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/'));
        }
        if let Ok(child) = path.join(&name) {
            prop_assert_eq!(child.parent(), Some(path.clone()));
            prop_assert_eq!(child.file_name(), Some(name.as_str()));
        }
    }
}
