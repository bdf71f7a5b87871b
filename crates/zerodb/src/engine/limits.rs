//! The engine's limits (`[db]` in `zerocore.toml`) and their defaults.

use std::time::Duration;

/// Per-statement, per-database, per-tenant and node-wide limits: `[db]` in `zerocore.toml`
/// (keys in brackets).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum statement length in bytes, checked before the statement is prepared
    /// (`max_statement`; use parameters for large values).
    #[serde(
        rename = "max_statement",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_statement_bytes: usize,
    /// Maximum rows a query may return (and an `execute` may step through; `max_rows`).
    pub max_rows: usize,
    /// Maximum wall-clock time per statement, enforced by SQLite's progress handler
    /// (`statement_time_ms`).
    #[serde(
        rename = "statement_time_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub max_statement_time: Duration,
    /// Maximum size of one database file in bytes (`PRAGMA max_page_count`;
    /// `max_database_size`).
    #[serde(
        rename = "max_database_size",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_database_bytes: u64,
    /// Largest string or blob SQLite may build or store (`SQLITE_LIMIT_LENGTH`): bounds
    /// `zeroblob`, `randomblob`, `printf`, `group_concat`, `||` and bound parameters
    /// (`max_value_size`).
    #[serde(
        rename = "max_value_size",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_value_bytes: usize,
    /// Largest result of one query: the sum over its cells of the value's bytes plus
    /// [`CELL_OVERHEAD`] each (`max_result_size`).
    #[serde(
        rename = "max_result_size",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_result_bytes: usize,
    /// Most statements in one batch (`max_batch_statements`).
    pub max_batch_statements: usize,
    /// Most databases one tenant may have (`max_databases_per_tenant`).
    pub max_databases_per_tenant: usize,
    /// Most bytes all databases of one tenant may take together (files and their WAL;
    /// `tenant_quota`).
    #[serde(
        rename = "tenant_quota",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_tenant_bytes: u64,
    /// Most database connections open at once on the node (each holds three file
    /// descriptors); the least recently used idle one is closed to make room
    /// (`max_open_databases`).
    pub max_open_databases: usize,
    /// Most database connections one tenant may have open at once
    /// (`max_open_databases_per_tenant`).
    pub max_open_databases_per_tenant: usize,
    /// Most bytes SQLite may allocate in the whole process (`sqlite3_hard_heap_limit64`),
    /// page caches included; 0 leaves it unset (`max_sqlite_memory`).
    #[serde(
        rename = "max_sqlite_memory",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_sqlite_heap_bytes: u64,
}

/// What one result cell costs against [`Limits::max_result_bytes`] on top of its bytes.
pub const CELL_OVERHEAD: usize = 32;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_statement_bytes: 100_000,
            max_rows: 10_000,
            max_statement_time: Duration::from_secs(1),
            max_database_bytes: 256 * 1024 * 1024,
            max_value_bytes: 4 << 20,
            max_result_bytes: 16 << 20,
            max_batch_statements: 100,
            max_databases_per_tenant: 32,
            max_tenant_bytes: 1 << 30,
            max_open_databases: 64,
            max_open_databases_per_tenant: 8,
            max_sqlite_heap_bytes: 256 << 20,
        }
    }
}
