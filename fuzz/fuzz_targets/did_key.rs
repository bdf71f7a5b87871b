//! Parses arbitrary text as a `did:key`. Parsing must never panic, and one key has exactly one
//! spelling: whatever parses is the canonical text of its public key, so that two different
//! strings can never name the same principal (revocations, replay state and tenants are keyed
//! by the DID's text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zero_auth::Did;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<Did>();
    let Ok(did) = Did::parse(text) else {
        return;
    };
    assert_eq!(did.as_str(), text, "a DID keeps its text");
    let canonical = Did::from_public_key(did.public_key());
    assert_eq!(
        canonical.as_str(),
        text,
        "only the canonical spelling of a key parses"
    );
    let _ = did.verify(data, &[0u8; 64]);
});
