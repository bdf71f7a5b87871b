//! `zero.toml`, as `zero build`, `zero up` and `zero deploy` read it from a project someone
//! else may have written: arbitrary text, or documents assembled from the real sections and
//! keys with hostile values. Parsing never panics; a refusal names a line that exists and says
//! what is wrong; and every capability the manifest grants is exactly what it says: a cache
//! prefix grant matches the keys starting with the prefix and no other, a files grant covers
//! the path and what is under it and not a sibling sharing its first letters.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zero_auth::Ipld;
use zero_manifest::{Capability, Manifest};

const SECTIONS: &[(&str, &[&str])] = &[
    ("app", &["name", "routes", "outbound"]),
    ("build", &["command", "output", "watch"]),
    (
        "[schedule]",
        &["name", "cron", "every", "tz", "catch_up", "retries"],
    ),
    ("capabilities.files", &["read", "write"]),
    ("capabilities.databases.notes", &["read", "write"]),
    ("capabilities.cache", &["read", "write"]),
    ("[seed]", &["from", "to"]),
];

const VALUES: &[&str] = &[
    "\"notes\"",
    "\"\"",
    "[]",
    "[\"/\"]",
    "[\"/site\"]",
    "[\"site\"]",
    "[\"/a/../..\"]",
    "[\"/.zero\"]",
    "[\"note:\"]",
    "[\"a*\"]",
    "[\"a\\\\*b\"]",
    "[\"*\"]",
    "[\"\"]",
    "[\"example.com\", \"*\"]",
    "[\"/x\", 1]",
    "\"*/5 * * * * *\"",
    "\"every 30s\"",
    "\"Europe/Paris\"",
    "\"last\"",
    "3",
    "-1",
    "true",
    "{}",
    "\"../..\"",
    "\"/etc/passwd\"",
];

fn value(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 6)? {
        Ok(format!("{:?}", String::arbitrary(u)?))
    } else if u.ratio(1, 6)? {
        Ok(format!("[{:?}]", String::arbitrary(u)?))
    } else {
        Ok((*u.choose(VALUES)?).to_owned())
    }
}

fn document(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 6)? {
        return String::arbitrary(u);
    }
    let mut doc = String::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let (section, keys) = u.choose(SECTIONS)?;
        doc.push_str(&format!("[{section}]\n"));
        for _ in 0..u.int_in_range(0..=3)? {
            let key = if u.ratio(1, 12)? {
                "no_such_key"
            } else {
                u.choose(keys)?
            };
            doc.push_str(&format!("{key} = {}\n", value(u)?));
        }
    }
    Ok(doc)
}

fn args(field: &str, value: &str) -> Ipld {
    Ipld::Map(BTreeMap::from([(
        field.to_owned(),
        Ipld::String(value.to_owned()),
    )]))
}

fn check_exact(capability: &Capability, suffix: &str) {
    let grant = capability
        .grant()
        .expect("a validated capability has a grant");
    match capability {
        Capability::CacheRead(prefix) | Capability::CacheWrite(prefix) => {
            let inside = format!("{prefix}{suffix}");
            assert!(
                grant.policy.matches(&args("key", &inside)),
                "{capability:?}: {inside:?}"
            );
            if !suffix.starts_with(prefix.as_str()) {
                assert!(
                    !grant.policy.matches(&args("key", suffix)),
                    "{capability:?} also grants {suffix:?}"
                );
            }
        }
        Capability::FilesRead(path) | Capability::FilesWrite(path) if path != "/" => {
            let under = format!("{path}/x");
            assert!(
                grant
                    .policy
                    .check_hierarchical(&args("path", &under), "path")
                    .is_ok()
            );
            let sibling = format!("{path}x");
            assert!(
                grant
                    .policy
                    .check_hierarchical(&args("path", &sibling), "path")
                    .is_err(),
                "{capability:?} also grants {sibling}"
            );
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(doc) = document(&mut u) else {
        return;
    };
    let suffix = String::arbitrary(&mut u).unwrap_or_default();
    match Manifest::parse(&doc, Path::new("/nonexistent-fuzz-project/zero.toml")) {
        Err(e) => {
            assert!(!e.message.trim().is_empty(), "a refusal says why");
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= doc.lines().count() + 1,
                    "line {line} of {doc:?}"
                );
            }
        }
        Ok(manifest) => {
            for capability in &manifest.capabilities {
                check_exact(capability, &suffix);
            }
        }
    }
});
