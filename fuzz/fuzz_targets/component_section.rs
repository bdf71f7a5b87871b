//! Decodes arbitrary bytes as the payload of a component's `ucan` custom section. Decoding
//! must never panic; whatever decodes must re-encode to a section that decodes to the same
//! delegations (same CIDs, in order). The same bytes are also read as a WebAssembly binary:
//! listing its custom sections and computing its content hash must never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero_auth::component::{decode_section, encode_section};

fuzz_target!(|data: &[u8]| {
    let _ = zero_component::custom_sections(data);
    let _ = zero_component::content_hash(data);

    let Ok(chain) = decode_section(data) else {
        return;
    };
    let reencoded = encode_section(&chain).expect("a decoded chain encodes");
    assert_eq!(reencoded, data, "the section decoder accepts only canonical input");
    let again = decode_section(&reencoded).expect("a re-encoded section decodes");
    let cids = |c: &[zero_auth::Delegation]| c.iter().map(|d| *d.cid()).collect::<Vec<_>>();
    assert_eq!(cids(&again), cids(&chain), "round trip must keep the chain");
});
