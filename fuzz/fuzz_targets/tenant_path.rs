//! zerofs paths: every path a component or the management API names is parsed into a
//! `TenantPath` first. Parsing arbitrary text never panics; whatever parses is normalized
//! (absolute, no empty, `.` or `..` segments, within the length bounds), agrees with a
//! reference normalizer, parses to itself again, and never climbs above the tenant root: its
//! ancestors end at `/`, and joining a segment gives a child of it.
#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zerofs::TenantPath;

#[path = "../../crates/zerofs/tests/reference/mod.rs"]
mod reference;

const PIECES: &[&str] = &[
    "/", "a", "b", ".", "..", "", ".zero", "...", "é", "\0", "a/b",
];

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 4)? {
        return String::arbitrary(u);
    }
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        s.push_str(u.choose(PIECES)?);
        if bool::arbitrary(u)? {
            s.push('/');
        }
    }
    Ok(s)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let s = text(u)?;
    let parsed = TenantPath::parse(&s);
    assert_eq!(
        parsed.as_ref().ok().map(|p| p.as_str().to_owned()),
        reference::normalize(&s),
        "{s:?}"
    );
    let Ok(path) = parsed else {
        return Ok(());
    };
    assert_eq!(
        TenantPath::parse(path.as_str()).ok().as_ref(),
        Some(&path),
        "idempotent"
    );
    assert_eq!(path.ancestors().last(), Some(TenantPath::root()));
    for seg in path.segments() {
        assert!(!seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/'));
    }
    let name = text(u)?;
    if let Ok(child) = path.join(&name) {
        assert_eq!(
            child.parent().as_ref(),
            Some(&path),
            "join {name:?} gives a child"
        );
        assert_eq!(child.file_name(), Some(name.as_str()));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
