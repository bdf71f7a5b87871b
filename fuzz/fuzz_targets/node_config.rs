//! `zerocore.toml`: arbitrary text, and documents assembled from the real sections and keys
//! with arbitrary values (or a seed file as it is), parsed as the node does at startup. Parsing never panics; a refusal
//! always says something (it is shown to the operator as the reason the node did not start).
#![no_main]

use std::path::Path;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zero_node::config::NodeConfig;

/// Every section with its keys, as in `examples/zerocore.toml`.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "node",
        &[
            "data_dir",
            "max_invocation_lifetime_secs",
            "replay_entries_per_principal",
            "max_revocations_per_principal",
        ],
    ),
    ("log", &["format", "level"]),
    (
        "http",
        &[
            "listen",
            "max_request_body",
            "max_response_body",
            "max_concurrent_requests",
            "max_concurrent_requests_per_app",
            "max_concurrent_requests_per_tenant",
        ],
    ),
    (
        "admin",
        &[
            "listen",
            "max_upload",
            "max_proofs",
            "max_token_bytes",
            "header_read_timeout_ms",
            "request_timeout_ms",
            "max_connections",
            "max_apps_per_tenant",
        ],
    ),
    (
        "limits",
        &[
            "cpu_time_ms",
            "wall_time_ms",
            "memory",
            "table_elements",
            "max_stack",
        ],
    ),
    (
        "fs",
        &[
            "quota_bytes",
            "quota_files",
            "max_open_per_instance",
            "max_open_files",
            "max_open_files_per_tenant",
            "transfer_idle_timeout_ms",
            "transfer_timeout_ms",
        ],
    ),
    (
        "db",
        &[
            "max_statement",
            "max_rows",
            "statement_time_ms",
            "max_database_size",
            "max_value_size",
            "max_result_size",
            "max_batch_statements",
            "max_databases_per_tenant",
            "tenant_quota",
            "max_open_databases",
            "max_open_databases_per_tenant",
            "max_sqlite_memory",
        ],
    ),
    (
        "cache",
        &[
            "memory",
            "max_key_size",
            "max_value_size",
            "max_batch_keys",
            "max_batch_bytes",
            "tenant_quota",
        ],
    ),
    (
        "chrono",
        &[
            "max_schedules_per_tenant",
            "max_runs_per_minute_per_tenant",
            "max_retries",
            "retry_backoff_ms",
            "max_retry_backoff_ms",
        ],
    ),
    (
        "outbound",
        &[
            "allowed_hosts_ceiling",
            "allow_private",
            "connect_timeout_ms",
            "first_byte_timeout_ms",
            "between_bytes_timeout_ms",
            "max_requests_per_invocation",
        ],
    ),
    ("engine", &["cache_dir"]),
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "18446744073709551615",
    "9223372036854775808",
    "1.5",
    "true",
    "\"\"",
    "\"64 MiB\"",
    "\"1.5 GiB\"",
    "\"0 B\"",
    "\"-1 KiB\"",
    "\"99999999999 GiB\"",
    "\"1 XB\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:8080\"",
    "\"0.0.0.0:80\"",
    "\"not an address\"",
    "\"json\"",
    "\"text\"",
    "\"debug\"",
    "[]",
    "[\"*\"]",
    "[\"10.0.0.0/8\"]",
    "[\"x\", 1]",
    "{}",
    "\"../data\"",
    "\"/\"",
];

fn value(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 6)? {
        Ok(format!("{:?}", String::arbitrary(u)?))
    } else if u.ratio(1, 6)? {
        Ok(u64::arbitrary(u)?.to_string())
    } else {
        Ok((*u.choose(VALUES)?).to_owned())
    }
}

fn document(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 5)? {
        return String::arbitrary(u);
    }
    let mut doc = String::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let (section, keys) = u.choose(SECTIONS)?;
        doc.push_str(&format!("[{section}]\n"));
        for _ in 0..u.int_in_range(0..=4)? {
            let key = if u.ratio(1, 10)? {
                "no_such_key"
            } else {
                u.choose(keys)?
            };
            doc.push_str(&format!("{key} = {}\n", value(u)?));
        }
    }
    if u.ratio(1, 4)? {
        doc.push_str(&format!(
            "[[app]]\ntenant = {}\nname = {}\ncomponent = \"x.wasm\"\nroutes = [{}]\n",
            value(u)?,
            value(u)?,
            value(u)?
        ));
    }
    Ok(doc)
}

fuzz_target!(|data: &[u8]| {
    // A seed that is a configuration file (`seeds/node_config`) is read as it is.
    let doc = match std::str::from_utf8(data) {
        Ok(text) if text.starts_with('[') => text.to_owned(),
        _ => match document(&mut Unstructured::new(data)) {
            Ok(doc) => doc,
            Err(_) => return,
        },
    };
    if let Err(why) = NodeConfig::parse(&doc, Path::new("/nonexistent-fuzz-base")) {
        assert!(!why.trim().is_empty(), "a refused configuration says why");
    }
});
