//! `zerocache`: zerocore's per-tenant in-memory key-value cache, and the `zero:cache` provider
//! (`wit/zero-cache`) that components use.
//!
//! - [`Cache`]: one namespace per tenant; get, set with a time to live, delete, atomic
//!   increment, compare-and-swap and batch get; a node-wide memory bound with LRU eviction and a
//!   fair share per tenant (the rule is on [`Cache`]); per-entry size limits; expiry on a
//!   [`Clock`] ([`ManualClock`] in tests).
//! - [`CacheSettings`]: the `[cache]` section of `zerocore.toml`, with its defaults.
//! - [`CacheGrants`]: the capability check of one caller: `/cache/read` (get, batch get) and
//!   `/cache/write` (set, delete) on the arguments `{tenant, component, key}`; increment and
//!   compare-and-swap need both, because their answers reveal the stored value. Scope keys
//!   with the policy language, e.g. `[["like", ".key", "session:*"]]`.
//! - [`provider::CacheProvider`]: the WIT glue (the only part that depends on wasmtime).
//!
//! The management API (`zero cache get|set|del`) uses [`Cache`] directly, after checking the
//! owner's invocation with the same commands and arguments.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod clock;
mod error;
mod grants;
pub mod provider;
mod settings;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, LimitKind, Result};
pub use grants::{CacheGrants, Op};
pub use provider::CacheProvider;
pub use settings::CacheSettings;
pub use store::{Cache, ENTRY_OVERHEAD, entry_charge};

#[cfg(test)]
mod tests;
