//! Decodes arbitrary bytes as a UCAN envelope (delegation or invocation). Decoding must never
//! panic; whatever decodes must re-encode to exactly the same bytes (the decoder accepts only
//! canonical DAG-CBOR), and verifying its signature and policy must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero_auth::{Ipld, Token};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = Token::decode(data) else {
        return;
    };
    let reencoded = token.encode().expect("a decoded token re-encodes");
    assert_eq!(
        reencoded, data,
        "decode then encode must give back the input"
    );
    assert_eq!(*token.cid(), zero_auth::cid_of(data));
    let _ = token.verify_signature();
    match &token {
        Token::Delegation(d) => {
            // Evaluate the decoded policy on a few argument shapes.
            let _ = d.policy().check(&Ipld::Null);
            let _ = d.policy().check(&Ipld::Map(Default::default()));
            if let Some(meta) = &d.payload().meta {
                let _ = d.policy().check(&Ipld::Map(meta.clone()));
            }
        }
        Token::Invocation(i) => {
            let _ = zero_auth::Validator::new(&Default::default()).validate_invocation(i, &[], 0);
        }
    }
});
