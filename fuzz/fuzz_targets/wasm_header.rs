//! Reads arbitrary bytes as a WebAssembly binary the way a deploy does: header detection,
//! inspection (imports, exports, custom sections), the content hash, and stripping and
//! appending the `ucan` custom section. Nothing may panic, and the section operations must
//! agree with each other: a binary that parses keeps its hash when a `ucan` section is appended
//! (the hash is computed without it), and stripping what was appended gives the original
//! hash's input back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kind = zero_component::detect(data);
    let inspected = zero_component::inspect(data, "the input");
    if let (Ok(i), Ok(k)) = (&inspected, &kind) {
        assert_eq!(i.kind, *k, "inspect and detect must agree on the kind");
        assert_eq!(i.size, data.len());
    }
    let _ = zero_component::expect_component(data, "the input");
    let sections = zero_component::custom_sections(data);
    let Ok(hash) = zero_component::content_hash(data) else {
        return;
    };
    if let Ok(i) = &inspected {
        assert_eq!(i.hash, hash, "inspect reports the content hash");
    }
    assert!(
        sections.is_ok(),
        "a binary whose hash is computed lists its custom sections"
    );

    let signed = zero_component::append_custom_section(data, zero_component::UCAN_SECTION, b"x");
    let again = zero_component::content_hash(&signed).expect("appending keeps the binary readable");
    assert_eq!(
        again, hash,
        "the `ucan` section is not part of the content hash"
    );
    let stripped = zero_component::strip_custom_section(&signed, zero_component::UCAN_SECTION)
        .expect("a binary with an appended section strips");
    assert_eq!(
        zero_component::content_hash(&stripped).expect("a stripped binary hashes"),
        hash
    );
});
