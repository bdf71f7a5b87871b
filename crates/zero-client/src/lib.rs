//! The client side of zerocore management, used by the `zero` CLI: key files, delegation chain
//! files, granting (attenuating) capabilities, signing components, and calling a node's
//! management API with UCAN invocations.
//!
//! A **chain file** (`*.ucan`) holds a delegation chain as one standard-base64 DAG-CBOR envelope
//! per line, root first; lines starting with `#` are comments. The Admin gives an owner a chain
//! of one delegation (`zero tenant create`); the owner extends it (`zero grant`), embeds it in a
//! component (`zero sign`) or cites it in invocations (`zero deploy`).

#![deny(missing_docs)]

mod cache;
mod observe;
mod schedules;

use std::time::{SystemTime, UNIX_EPOCH};

mod api;
mod files;
mod grant;
mod tls;

pub use api::{ApiError, Client};
pub use files::{
    load_key, parse_remote, read_chain, read_chain_or_component, read_chains_or_component,
    write_chain, write_file_atomically,
};
pub use grant::{
    Grant, extend_chain, json_to_ipld, owner_delegation, parse_capability, parse_policy,
    sign_component, sign_component_grants,
};
pub use tls::TlsProblem;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
