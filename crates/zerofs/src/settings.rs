//! `[fs]` in `zerocore.toml`: the file store's settings, with their defaults.

use std::time::Duration;

use crate::Quota;
use crate::wasi::{
    DEFAULT_MAX_OPEN_FILES, DEFAULT_MAX_OPEN_FILES_PER_TENANT, DEFAULT_MAX_OPEN_PER_INSTANCE,
    FsLimits,
};

/// The file store's settings: `[fs]` in `zerocore.toml` (keys in brackets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsSettings {
    /// Default quota per tenant: total size of the tenant's files, deployed code included
    /// (`quota_bytes`, default 1 GiB).
    #[serde(deserialize_with = "zero_provider::settings::size")]
    pub quota_bytes: u64,
    /// Default quota per tenant: number of files and directories (`quota_files`, default
    /// 100000).
    pub quota_files: u64,
    /// Most descriptors, directory listings and file streams one instance may hold open
    /// (`max_open_per_instance`).
    pub max_open_per_instance: usize,
    /// Most descriptors, listings and streams all instances of the node hold at once (each may
    /// hold an OS file descriptor; keep it well under the process's `ulimit -n`;
    /// `max_open_files`).
    pub max_open_files: usize,
    /// Most of them all instances of one tenant hold at once (`max_open_files_per_tenant`).
    pub max_open_files_per_tenant: usize,
    /// Longest wait for the client during a management upload or download: no byte sent or
    /// accepted (`transfer_idle_timeout_ms`, default 30 s).
    #[serde(
        rename = "transfer_idle_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub transfer_idle_timeout: Duration,
    /// Longest management upload or download (`transfer_timeout_ms`, default 15 min).
    #[serde(
        rename = "transfer_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub transfer_timeout: Duration,
}

impl Default for FsSettings {
    fn default() -> Self {
        FsSettings {
            quota_bytes: 1 << 30,
            quota_files: 100_000,
            max_open_per_instance: DEFAULT_MAX_OPEN_PER_INSTANCE,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_open_files_per_tenant: DEFAULT_MAX_OPEN_FILES_PER_TENANT,
            transfer_idle_timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(900),
        }
    }
}

impl FsSettings {
    /// The default quota of each tenant.
    pub fn quota(&self) -> Quota {
        Quota {
            max_bytes: self.quota_bytes,
            max_files: self.quota_files,
        }
    }

    /// The `wasi:filesystem` provider's limits, for requests that may run `request_time`.
    pub fn wasi_limits(&self, request_time: Option<Duration>) -> FsLimits {
        FsLimits {
            max_open_per_instance: self.max_open_per_instance,
            request_time,
            max_open_files: self.max_open_files,
            max_open_files_per_tenant: self.max_open_files_per_tenant,
        }
    }
}
