//! Parses arbitrary text as a UCAN policy selector (`.a.b[0]`, `.a?`, `.["key"]`, `.[1:2]`,
//! `.a[]`, …). Parsing must never panic; a parsed selector keeps its text and that text parses
//! back to a selector that selects the same thing from any value; selecting never panics.
#![no_main]

#[path = "shared/ipld.rs"]
mod ipld;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use zero_auth::policy::Selector;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(text) = String::arbitrary(&mut u) else {
        return;
    };
    let Ok(selector) = Selector::parse(&text) else {
        return;
    };
    assert_eq!(selector.as_str(), text);
    let again = Selector::parse(selector.as_str()).expect("a selector's text parses");
    let Ok(value) = ipld::value(&mut u, 0) else {
        return;
    };
    let a = selector.select(&value).map(|v| v.into_owned());
    let b = again.select(&value).map(|v| v.into_owned());
    assert_eq!(a.is_ok(), b.is_ok());
    if let (Ok(a), Ok(b)) = (a, b) {
        assert_eq!(a, b);
    }
    let _ = selector.may_reach_field("path");
    let _ = selector.is_field("path");
});
