//! Decodes arbitrary bytes as the payload of a component's `ucan` custom section (one chain or
//! several). Decoding must never panic; whatever decodes must re-encode to the same bytes, which
//! decode to the same delegations (same CIDs, in order). The same bytes are also read as a WebAssembly binary:
//! listing its custom sections and computing its content hash must never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero_auth::component::{decode_chains, encode_chains};

fuzz_target!(|data: &[u8]| {
    let _ = zero_component::custom_sections(data);
    let _ = zero_component::content_hash(data);

    let Ok(chains) = decode_chains(data) else {
        return;
    };
    let reencoded = encode_chains(&chains).expect("decoded chains encode");
    assert_eq!(
        reencoded, data,
        "the section decoder accepts only canonical input"
    );
    let again = decode_chains(&reencoded).expect("a re-encoded section decodes");
    let cids = |cs: &[Vec<zero_auth::Delegation>]| {
        cs.iter()
            .map(|c| c.iter().map(|d| *d.cid()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cids(&again),
        cids(&chains),
        "round trip must keep the chains"
    );
});
