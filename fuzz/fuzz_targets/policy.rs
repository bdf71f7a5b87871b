//! Builds arbitrary IPLD as a UCAN policy and as invocation arguments. Parsing must never panic
//! (however deep or malformed); a parsed policy renders to IPLD that parses back to the same
//! policy; evaluation never panics; `matches` agrees with `check`; and reading `.path` as a
//! place in a tree (`check_hierarchical`, how zerocore reads paths) never allows arguments
//! that have no `path` while the plain check refuses them.
#![no_main]

#[path = "shared/ipld.rs"]
mod ipld;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use zero_auth::{Ipld, Policy};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(raw), Ok(args)) = (ipld::value(&mut u, 0), ipld::value(&mut u, 0)) else {
        return;
    };
    let Ok(policy) = Policy::from_ipld(&raw) else {
        return;
    };
    let rendered = policy.to_ipld();
    let again = Policy::from_ipld(&rendered).expect("a parsed policy's rendering parses");
    assert_eq!(again.to_ipld(), rendered, "render and parse round trip");

    let plain = policy.check(&args);
    assert_eq!(policy.matches(&args), plain.is_ok());
    let tree = policy.check_hierarchical(&args, "path");
    let has_path = matches!(&args, Ipld::Map(m) if m.contains_key("path"));
    if !has_path {
        assert_eq!(
            tree.is_ok(),
            plain.is_ok(),
            "without a path argument the tree reading is the plain one"
        );
    }
});
