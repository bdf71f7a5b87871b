//! `[cache]` in `zerocore.toml`: the cache's bounds, with their defaults in one place
//! ([`CacheSettings::default`]).

use serde::{Deserialize, Deserializer};
use zero_provider::settings::size;

/// The cache's settings, deserialized straight from the `[cache]` section of `zerocore.toml`.
/// Every field has a default; unknown fields are refused. Sizes are bytes, written as an
/// integer or with a unit (`"64 MiB"`), read like every section's sizes
/// ([`zero_provider::settings::parse_size`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Node-wide bound on the bytes all entries of all tenants are charged (see
    /// [`crate::entry_charge`]). Beyond it, entries are evicted (see [`crate::Cache`] for the
    /// rule). Default 64 MiB.
    #[serde(deserialize_with = "size")]
    pub memory: u64,
    /// Most bytes one tenant's entries may be charged together; beyond it the tenant's own
    /// least recently used entries are evicted. Unset (the default): the whole `memory`.
    #[serde(deserialize_with = "optional_size")]
    pub tenant_quota: Option<u64>,
    /// Longest key, in bytes of UTF-8. Default 1 KiB.
    #[serde(deserialize_with = "size")]
    pub max_key_size: u64,
    /// Largest value, in bytes. Default 1 MiB.
    #[serde(deserialize_with = "size")]
    pub max_value_size: u64,
    /// Most keys one batch get may name. Default 256.
    pub max_batch_keys: usize,
    /// Most bytes of values one batch get may return. Default 8 MiB.
    #[serde(deserialize_with = "size")]
    pub max_batch_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory: 64 << 20,
            tenant_quota: None,
            max_key_size: 1 << 10,
            max_value_size: 1 << 20,
            max_batch_keys: 256,
            max_batch_bytes: 8 << 20,
        }
    }
}

/// `deserialize_with` for an optional size: present means a size as in [`size`].
fn optional_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

impl CacheSettings {
    /// The tenant quota in force: `tenant_quota`, or `memory` when it is unset.
    pub fn effective_tenant_quota(&self) -> u64 {
        self.tenant_quota.unwrap_or(self.memory)
    }

    /// Checks that the settings make sense together; the error names the `[cache]` key and
    /// says how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory == 0 {
            return Err(
                "[cache] memory must be greater than 0 (the node-wide bound of the cache, e.g. \"64 MiB\")"
                    .into(),
            );
        }
        if self.max_key_size == 0 || self.max_value_size == 0 {
            return Err("[cache] max_key_size and max_value_size must be greater than 0".into());
        }
        if self.max_batch_keys == 0 || self.max_batch_bytes == 0 {
            return Err("[cache] max_batch_keys and max_batch_bytes must be greater than 0".into());
        }
        if let Some(q) = self.tenant_quota
            && (q == 0 || q > self.memory)
        {
            return Err(format!(
                "[cache] tenant_quota ({} bytes) must be greater than 0 and at most memory ({} bytes); \
                 leave it unset to let one tenant use the whole bound",
                q, self.memory
            ));
        }
        Ok(())
    }
}
