//! `zerocore.toml`: the node's configuration file.
//!
//! Every field has a safe default, unknown fields are refused (a typo must not silently fall back
//! to a default), sizes accept units (`"64 MiB"`), and relative paths are resolved against the
//! directory of the file. See `examples/zerocore.toml` for an annotated example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A size in bytes, written as an integer or a string with a unit (`B`, `KiB`, `MiB`, `GiB`,
/// `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64 MiB"`, `"512KiB"`, `"1000"`.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!(
                "`{s}` is not a size: write a whole number with an optional unit, like \"64 MiB\""
            )
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "`{s}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`
    #[serde(default)]
    pub node: NodeSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[http]`
    #[serde(default)]
    pub http: HttpSection,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[engine]`
    #[serde(default)]
    pub engine: EngineSection,
    /// `[admin]`: the management API.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[fs]`: the tenant file store (zerofs).
    #[serde(default)]
    pub fs: FsSection,
    /// `[db]`: limits of the tenants' SQL databases (zerodb).
    #[serde(default)]
    pub db: DbSection,
    /// `[outbound]`: outgoing HTTP from components.
    #[serde(default)]
    pub outbound: OutboundSection,
    /// `[cache]`: the tenants' in-memory cache (zerocache), deserialized straight into its
    /// settings type, which holds the defaults.
    #[serde(default)]
    pub cache: zerocache::CacheSettings,
    /// `[[app]]` entries.
    #[serde(default, rename = "app")]
    pub apps: Vec<AppSection>,
    /// Directory of the config file (relative paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Where the node keeps its state (artifacts, keys, data).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The Admin DID (root of authority). When unset the node runs in development mode with a
    /// generated admin key in the data directory.
    #[serde(default)]
    pub admin: Option<String>,
    /// Seconds of clock difference tolerated on tokens' `nbf` and `exp`.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Longest lifetime of a management invocation: its `exp` may be at most this many seconds
    /// ahead (plus the clock skew).
    #[serde(default = "default_invocation_lifetime")]
    pub max_invocation_lifetime_secs: u64,
    /// Unexpired invocations remembered against replay per principal (the principal the Admin
    /// delegated to, or the Admin); beyond, that principal is refused until some expire.
    #[serde(default = "default_replay_per_principal")]
    pub replay_entries_per_principal: usize,
    /// Revocations of unexpired delegations kept per principal (the Admin's are not bounded).
    #[serde(default = "default_revocations_per_principal")]
    pub max_revocations_per_principal: usize,
}

fn default_invocation_lifetime() -> u64 {
    zero_auth::DEFAULT_MAX_INVOCATION_LIFETIME
}
fn default_replay_per_principal() -> usize {
    10_000
}
fn default_revocations_per_principal() -> usize {
    1_000
}

fn default_skew() -> u64 {
    60
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".zero-data")
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: default_data_dir(),
            admin: None,
            clock_skew_secs: default_skew(),
            max_invocation_lifetime_secs: default_invocation_lifetime(),
            replay_entries_per_principal: default_replay_per_principal(),
            max_revocations_per_principal: default_revocations_per_principal(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,zeroproxy=debug`.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body.
    #[serde(default = "default_req_body")]
    pub max_request_body: ByteSize,
    /// Largest response body.
    #[serde(default = "default_resp_body")]
    pub max_response_body: ByteSize,
    /// Requests in flight on the node.
    #[serde(default = "default_concurrent")]
    pub max_concurrent_requests: usize,
    /// Requests in flight per app.
    #[serde(default = "default_concurrent_per_app")]
    pub max_concurrent_requests_per_app: usize,
    /// Requests in flight for all apps of one tenant.
    #[serde(default = "default_concurrent_per_tenant")]
    pub max_concurrent_requests_per_tenant: usize,
    /// Time allowed to receive request headers.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_req_body() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_resp_body() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_concurrent() -> usize {
    256
}
fn default_concurrent_per_app() -> usize {
    128
}
fn default_concurrent_per_tenant() -> usize {
    192
}
fn default_header_timeout() -> u64 {
    10_000
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_listen(),
            max_request_body: default_req_body(),
            max_response_body: default_resp_body(),
            max_concurrent_requests: default_concurrent(),
            max_concurrent_requests_per_app: default_concurrent_per_app(),
            max_concurrent_requests_per_tenant: default_concurrent_per_tenant(),
            header_read_timeout_ms: default_header_timeout(),
        }
    }
}

/// `[limits]`: what each request may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// CPU time per request.
    #[serde(default = "default_cpu")]
    pub cpu_time_ms: u64,
    /// Wall-clock time per request.
    #[serde(default = "default_wall")]
    pub wall_time_ms: u64,
    /// Linear memory cap.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Table elements cap.
    #[serde(default = "default_tables")]
    pub table_elements: usize,
    /// Wasm stack cap.
    #[serde(default = "default_stack")]
    pub max_stack: ByteSize,
    /// Guest stdout/stderr bytes logged per request and stream.
    #[serde(default = "default_guest_log")]
    pub guest_log_bytes: ByteSize,
}

fn default_cpu() -> u64 {
    1_000
}
fn default_wall() -> u64 {
    30_000
}
fn default_memory() -> ByteSize {
    ByteSize(128 << 20)
}
fn default_tables() -> usize {
    20_000
}
fn default_stack() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_guest_log() -> ByteSize {
    ByteSize(256 << 10)
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            cpu_time_ms: default_cpu(),
            wall_time_ms: default_wall(),
            memory: default_memory(),
            table_elements: default_tables(),
            max_stack: default_stack(),
            guest_log_bytes: default_guest_log(),
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Use the pooling allocator when the host allows it.
    #[serde(default = "default_true")]
    pub pooling: bool,
    /// Where compiled artifacts are kept (default: `DATA_DIR/aot`). Several nodes on one
    /// machine may share it: artifacts are written atomically and checked before use.
    #[serde(default)]
    pub artifact_dir: Option<PathBuf>,
    /// The secret key file that authenticates compiled artifacts (default:
    /// `DATA_DIR/artifact.key`, created on first start, mode 0600). Nodes that share an
    /// `artifact_dir` reuse each other's artifacts only when they also share this key; an
    /// artifact written without it is never loaded.
    #[serde(default)]
    pub artifact_key: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            pooling: true,
            artifact_dir: None,
            artifact_key: None,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address of the management API (keep it on loopback or a private network).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Largest component upload.
    #[serde(default = "default_max_upload")]
    pub max_upload: ByteSize,
    /// Most apps one tenant may have deployed at once (default 100): each holds compiled code
    /// in the node's memory.
    #[serde(default = "default_max_apps_per_tenant")]
    pub max_apps_per_tenant: usize,
    /// Most delegations in the `ucan-proofs` header (and in an invocation's `prf`).
    #[serde(default = "default_max_proofs")]
    pub max_proofs: usize,
    /// Largest total size of the `authorization` and `ucan-proofs` headers.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    /// Time allowed to receive a request's headers (also bounds idle connections).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// Time allowed from a request's headers to its response's headers (the request body is
    /// read within it; a download's body streams after it).
    #[serde(default = "default_admin_request_timeout")]
    pub request_timeout_ms: u64,
    /// Connections served at once; further ones wait to be accepted.
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
}

fn default_max_apps_per_tenant() -> usize {
    100
}

fn default_max_proofs() -> usize {
    16
}
fn default_max_token_bytes() -> ByteSize {
    ByteSize(32 << 10)
}
fn default_admin_request_timeout() -> u64 {
    300_000
}
fn default_admin_connections() -> usize {
    64
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_max_upload() -> ByteSize {
    ByteSize(64 << 20)
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
            max_upload: default_max_upload(),
            max_apps_per_tenant: default_max_apps_per_tenant(),
            max_proofs: default_max_proofs(),
            max_token_bytes: default_max_token_bytes(),
            header_read_timeout_ms: default_header_timeout(),
            request_timeout_ms: default_admin_request_timeout(),
            max_connections: default_admin_connections(),
        }
    }
}

/// `[fs]`: the tenant file store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSection {
    /// Default quota per tenant: total size of the tenant's files (deployed code included).
    #[serde(default = "default_fs_quota_bytes")]
    pub quota_bytes: ByteSize,
    /// Default quota per tenant: number of files and directories.
    #[serde(default = "default_fs_quota_files")]
    pub quota_files: u64,
    /// Most descriptors, directory listings and file streams one instance may hold open.
    #[serde(default = "default_fs_max_open")]
    pub max_open_per_instance: usize,
    /// Most descriptors, listings and streams all instances of the node hold at once (each
    /// may hold an OS file descriptor; keep it well under the process's `ulimit -n`).
    #[serde(default = "default_fs_max_open_files")]
    pub max_open_files: usize,
    /// Most of them all instances of one tenant hold at once.
    #[serde(default = "default_fs_max_open_files_per_tenant")]
    pub max_open_files_per_tenant: usize,
    /// Longest wait for the client during a management upload or download (no byte sent or
    /// accepted), in milliseconds.
    #[serde(default = "default_fs_transfer_idle")]
    pub transfer_idle_timeout_ms: u64,
    /// Longest management upload or download, in milliseconds.
    #[serde(default = "default_fs_transfer_total")]
    pub transfer_timeout_ms: u64,
}

fn default_fs_quota_bytes() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_fs_quota_files() -> u64 {
    100_000
}
fn default_fs_max_open() -> usize {
    zerofs::wasi::DEFAULT_MAX_OPEN_PER_INSTANCE
}
fn default_fs_max_open_files() -> usize {
    zerofs::wasi::DEFAULT_MAX_OPEN_FILES
}
fn default_fs_max_open_files_per_tenant() -> usize {
    zerofs::wasi::DEFAULT_MAX_OPEN_FILES_PER_TENANT
}
fn default_fs_transfer_idle() -> u64 {
    30_000
}
fn default_fs_transfer_total() -> u64 {
    900_000
}

impl Default for FsSection {
    fn default() -> Self {
        FsSection {
            quota_bytes: default_fs_quota_bytes(),
            quota_files: default_fs_quota_files(),
            max_open_per_instance: default_fs_max_open(),
            max_open_files: default_fs_max_open_files(),
            max_open_files_per_tenant: default_fs_max_open_files_per_tenant(),
            transfer_idle_timeout_ms: default_fs_transfer_idle(),
            transfer_timeout_ms: default_fs_transfer_total(),
        }
    }
}

/// `[db]`: limits applied to every tenant database (zerodb).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSection {
    /// Longest SQL statement accepted (use parameters for large values).
    #[serde(default = "default_db_statement")]
    pub max_statement: ByteSize,
    /// Most rows one query may return.
    #[serde(default = "default_db_rows")]
    pub max_rows: usize,
    /// Longest time one statement may run, in milliseconds.
    #[serde(default = "default_db_time")]
    pub statement_time_ms: u64,
    /// Largest size of one database file.
    #[serde(default = "default_db_size")]
    pub max_database_size: ByteSize,
    /// Largest string or blob SQLite may build or store (`SQLITE_LIMIT_LENGTH`).
    #[serde(default = "default_db_value")]
    pub max_value_size: ByteSize,
    /// Largest result of one query (each value's bytes plus 32 per value).
    #[serde(default = "default_db_result")]
    pub max_result_size: ByteSize,
    /// Most statements in one batch.
    #[serde(default = "default_db_batch")]
    pub max_batch_statements: usize,
    /// Most databases per tenant.
    #[serde(default = "default_db_count")]
    pub max_databases_per_tenant: usize,
    /// Most bytes all of a tenant's databases may take together.
    #[serde(default = "default_db_quota")]
    pub tenant_quota: ByteSize,
    /// Most database connections open at once on the node.
    #[serde(default = "default_db_open")]
    pub max_open_databases: usize,
    /// Most database connections open at once per tenant.
    #[serde(default = "default_db_open_tenant")]
    pub max_open_databases_per_tenant: usize,
    /// Most memory SQLite may allocate in the node process (0: no limit).
    #[serde(default = "default_db_heap")]
    pub max_sqlite_memory: ByteSize,
}

fn default_db_value() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_value_bytes as u64)
}
fn default_db_result() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_result_bytes as u64)
}
fn default_db_batch() -> usize {
    zerodb::Limits::default().max_batch_statements
}
fn default_db_count() -> usize {
    zerodb::Limits::default().max_databases_per_tenant
}
fn default_db_quota() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_tenant_bytes)
}
fn default_db_open() -> usize {
    zerodb::Limits::default().max_open_databases
}
fn default_db_open_tenant() -> usize {
    zerodb::Limits::default().max_open_databases_per_tenant
}
fn default_db_heap() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_sqlite_heap_bytes)
}

fn default_db_statement() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_statement_bytes as u64)
}
fn default_db_rows() -> usize {
    zerodb::Limits::default().max_rows
}
fn default_db_time() -> u64 {
    zerodb::Limits::default().max_statement_time.as_millis() as u64
}
fn default_db_size() -> ByteSize {
    ByteSize(zerodb::Limits::default().max_database_bytes)
}

impl Default for DbSection {
    fn default() -> Self {
        DbSection {
            max_statement: default_db_statement(),
            max_rows: default_db_rows(),
            statement_time_ms: default_db_time(),
            max_database_size: default_db_size(),
            max_value_size: default_db_value(),
            max_result_size: default_db_result(),
            max_batch_statements: default_db_batch(),
            max_databases_per_tenant: default_db_count(),
            tenant_quota: default_db_quota(),
            max_open_databases: default_db_open(),
            max_open_databases_per_tenant: default_db_open_tenant(),
            max_sqlite_memory: default_db_heap(),
        }
    }
}

impl DbSection {
    /// The engine's limits.
    pub fn limits(&self) -> zerodb::Limits {
        zerodb::Limits {
            max_statement_bytes: usize::try_from(self.max_statement.0).unwrap_or(usize::MAX),
            max_rows: self.max_rows,
            max_statement_time: Duration::from_millis(self.statement_time_ms),
            max_database_bytes: self.max_database_size.0,
            max_value_bytes: usize::try_from(self.max_value_size.0).unwrap_or(usize::MAX),
            max_result_bytes: usize::try_from(self.max_result_size.0).unwrap_or(usize::MAX),
            max_batch_statements: self.max_batch_statements,
            max_databases_per_tenant: self.max_databases_per_tenant,
            max_tenant_bytes: self.tenant_quota.0,
            max_open_databases: self.max_open_databases,
            max_open_databases_per_tenant: self.max_open_databases_per_tenant,
            max_sqlite_heap_bytes: self.max_sqlite_memory.0,
        }
    }
}

/// `[outbound]`: what components may reach with outgoing HTTP, and for how long.
///
/// A request goes out only if its host is in the app's `allowed_outbound_hosts` (set by whoever
/// deploys it) and within [`allowed_hosts_ceiling`](OutboundSection::allowed_hosts_ceiling)
/// (set here), and every address the host resolves to is public or listed in
/// [`allow_private`](OutboundSection::allow_private). The ceiling applies to every app, those
/// declared in this file included.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSection {
    /// The most that any app's `allowed_outbound_hosts` may name (`*`, `host`, `host:port`,
    /// `*.domain`); a deploy asking for more is refused. Default `["*"]`: any host name, but
    /// still only public addresses.
    #[serde(default = "default_ceiling")]
    pub allowed_hosts_ceiling: Vec<String>,
    /// Non-public destinations (loopback, private, link-local, …) components may reach:
    /// networks (`"10.0.0.0/8"`, `"127.0.0.1"`) or one address and port (`"127.0.0.1:9000"`).
    /// Default empty. The node's management API stays unreachable whatever this says.
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// Longest time to connect (DNS, TCP, TLS, HTTP handshake), in milliseconds.
    #[serde(default = "default_out_connect")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the response head after sending, in milliseconds.
    #[serde(default = "default_out_first_byte")]
    pub first_byte_timeout_ms: u64,
    /// Longest gap between two pieces of a response body, in milliseconds.
    #[serde(default = "default_out_between")]
    pub between_bytes_timeout_ms: u64,
    /// Outgoing requests one incoming request (or event) may make.
    #[serde(default = "default_out_requests")]
    pub max_requests_per_invocation: usize,
}

fn default_ceiling() -> Vec<String> {
    vec!["*".into()]
}
fn default_out_connect() -> u64 {
    5_000
}
fn default_out_first_byte() -> u64 {
    10_000
}
fn default_out_between() -> u64 {
    10_000
}
fn default_out_requests() -> usize {
    16
}

impl Default for OutboundSection {
    fn default() -> Self {
        OutboundSection {
            allowed_hosts_ceiling: default_ceiling(),
            allow_private: Vec::new(),
            connect_timeout_ms: default_out_connect(),
            first_byte_timeout_ms: default_out_first_byte(),
            between_bytes_timeout_ms: default_out_between(),
            max_requests_per_invocation: default_out_requests(),
        }
    }
}

impl OutboundSection {
    /// The provider's configuration, or what is wrong with the section.
    pub fn build(&self) -> Result<zeroproxy::OutboundConfig, String> {
        let host_ceiling = self
            .allowed_hosts_ceiling
            .iter()
            .map(|h| {
                zero_provider::HostPattern::parse(h)
                    .map_err(|e| format!("[outbound] allowed_hosts_ceiling: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow_private = self
            .allow_private
            .iter()
            .map(|n| {
                zeroproxy::AllowedNet::parse(n)
                    .map_err(|e| format!("[outbound] allow_private: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.connect_timeout_ms == 0
            || self.first_byte_timeout_ms == 0
            || self.between_bytes_timeout_ms == 0
        {
            return Err("[outbound] connect_timeout_ms, first_byte_timeout_ms and between_bytes_timeout_ms must be greater than 0".into());
        }
        Ok(zeroproxy::OutboundConfig {
            host_ceiling,
            allow_private,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            between_bytes_timeout: Duration::from_millis(self.between_bytes_timeout_ms),
            max_requests_per_invocation: self.max_requests_per_invocation,
            ..Default::default()
        })
    }
}

/// One `[[app]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Owning tenant.
    pub tenant: String,
    /// App name, unique within the tenant.
    pub name: String,
    /// Path of the component file.
    pub component: PathBuf,
    /// Routes: `/path` or `host/path`.
    pub routes: Vec<String>,
    /// Hosts reachable with outgoing HTTP.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
}

/// A configuration problem, with the file it came from.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Whether `s` is a valid tenant or app name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !s.starts_with('-')
}

impl NodeConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read the configuration file: {e} (pass an existing file with --config)"
            ))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &base).map_err(err)
    }

    /// Parses and validates configuration text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<NodeConfig, String> {
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.cpu_time_ms == 0 || l.wall_time_ms == 0 {
            return Err("[limits] cpu_time_ms and wall_time_ms must be greater than 0".into());
        }
        if l.memory.0 < (1 << 20) {
            return Err("[limits] memory must be at least 1 MiB".into());
        }
        if l.max_stack.0 < (64 << 10) {
            return Err("[limits] max_stack must be at least 64 KiB".into());
        }
        if self.http.max_concurrent_requests == 0 || self.http.max_concurrent_requests_per_app == 0
        {
            return Err("[http] max_concurrent_requests, max_concurrent_requests_per_app and max_concurrent_requests_per_tenant must be at least 1".into());
        }
        let fs = &self.fs;
        if fs.max_open_per_instance == 0 {
            return Err(
                "[fs] max_open_per_instance must be at least 1 (a component needs its \
                        preopened directories)"
                    .into(),
            );
        }
        if fs.max_open_files_per_tenant == 0 || fs.max_open_files < fs.max_open_files_per_tenant {
            return Err(format!(
                "[fs] max_open_files_per_tenant ({}) must be at least 1 and at most max_open_files ({})",
                fs.max_open_files_per_tenant, fs.max_open_files
            ));
        }
        if fs.transfer_idle_timeout_ms == 0 || fs.transfer_timeout_ms == 0 {
            return Err(
                "[fs] transfer_idle_timeout_ms and transfer_timeout_ms must be greater than 0"
                    .into(),
            );
        }
        let db = &self.db;
        if db.max_statement.0 == 0 || db.max_rows == 0 || db.statement_time_ms == 0 {
            return Err(
                "[db] max_statement, max_rows and statement_time_ms must be greater than 0".into(),
            );
        }
        if db.max_database_size.0 < (64 << 10) {
            return Err("[db] max_database_size must be at least 64 KiB".into());
        }
        if db.max_value_size.0 < 1024 || db.max_value_size.0 > (1 << 30) {
            return Err("[db] max_value_size must be between 1 KiB and 1 GiB".into());
        }
        if db.max_result_size.0 < 1024 {
            return Err("[db] max_result_size must be at least 1 KiB".into());
        }
        if db.max_batch_statements == 0
            || db.max_databases_per_tenant == 0
            || db.max_open_databases == 0
            || db.max_open_databases_per_tenant == 0
        {
            return Err("[db] max_batch_statements, max_databases_per_tenant, max_open_databases and max_open_databases_per_tenant must be at least 1".into());
        }
        if db.max_open_databases_per_tenant > db.max_open_databases {
            return Err("[db] max_open_databases_per_tenant must not exceed max_open_databases (one tenant could then hold every connection)".into());
        }
        if db.tenant_quota.0 < db.max_database_size.0 {
            return Err("[db] tenant_quota must be at least max_database_size".into());
        }
        if db.max_sqlite_memory.0 != 0 && db.max_sqlite_memory.0 < (16 << 20) {
            return Err("[db] max_sqlite_memory must be 0 (no limit) or at least 16 MiB".into());
        }
        let n = &self.node;
        if n.max_invocation_lifetime_secs == 0
            || n.replay_entries_per_principal == 0
            || n.max_revocations_per_principal == 0
        {
            return Err("[node] max_invocation_lifetime_secs, replay_entries_per_principal and max_revocations_per_principal must be greater than 0".into());
        }
        let a = &self.admin;
        if a.max_proofs == 0
            || a.header_read_timeout_ms == 0
            || a.request_timeout_ms == 0
            || a.max_connections == 0
        {
            return Err("[admin] max_proofs, header_read_timeout_ms, request_timeout_ms and max_connections must be greater than 0".into());
        }
        if a.max_token_bytes.0 < 1024 {
            return Err("[admin] max_token_bytes must be at least 1 KiB".into());
        }
        if let Some(admin) = &self.node.admin {
            zero_auth::Did::parse(admin)
                .map_err(|e| format!("[node] admin must be a did:key (see `zero key did`): {e}"))?;
        }
        let outbound = self.outbound.build()?;
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = format!("[[app]] #{} ({}/{})", i + 1, app.tenant, app.name);
            if !valid_name(&app.tenant) || !valid_name(&app.name) {
                return Err(format!(
                    "{at}: tenant and app names use lowercase letters, digits, `-` and `_` (1 to 63 characters)"
                ));
            }
            if !seen.insert((app.tenant.clone(), app.name.clone())) {
                return Err(format!(
                    "{at}: an app with this tenant and name is declared twice"
                ));
            }
            if app.routes.is_empty() {
                return Err(format!(
                    "{at}: give the app at least one route, e.g. routes = [\"/\"]"
                ));
            }
            for r in &app.routes {
                zeroproxy::Route::parse(r).map_err(|e| format!("{at}: {e}"))?;
            }
            outbound
                .check_hosts(&app.allowed_outbound_hosts)
                .map_err(|e| format!("{at}: {e}"))?;
        }
        self.cache.validate()?;
        Ok(())
    }

    /// Resolves a path from the file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The core's limits.
    pub fn core_limits(&self) -> zerocore::Limits {
        let l = &self.limits;
        zerocore::Limits {
            cpu_time: Duration::from_millis(l.cpu_time_ms),
            wall_time: Duration::from_millis(l.wall_time_ms),
            memory_bytes: l.memory.0 as usize,
            table_elements: l.table_elements,
            max_stack_bytes: l.max_stack.0 as usize,
            log_bytes_per_request: l.guest_log_bytes.0 as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(ByteSize::parse("64 MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("10"), Ok(ByteSize(10)));
        assert!(ByteSize::parse("ten").unwrap_err().contains("not a size"));
        assert!(
            ByteSize::parse("5 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }

    #[test]
    fn defaults_are_safe() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.limits.cpu_time_ms, 1000);
        assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1");
        assert!(c.apps.is_empty());
    }

    #[test]
    fn typos_and_bad_values_are_refused_clearly() {
        let e = NodeConfig::parse("[limits]\ncpu_tme_ms = 5\n", Path::new(".")).unwrap_err();
        assert!(
            e.contains("unknown field") && e.contains("cpu_tme_ms"),
            "{e}"
        );
        let e = NodeConfig::parse("[limits]\nmemory = \"lots\"\n", Path::new(".")).unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        let app =
            "[[app]]\ntenant = \"t\"\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"api\"]\n";
        let e = NodeConfig::parse(app, Path::new(".")).unwrap_err();
        assert!(e.contains("no path"), "{e}");
        let app =
            "[[app]]\ntenant = \"T!\"\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/\"]\n";
        let e = NodeConfig::parse(app, Path::new(".")).unwrap_err();
        assert!(e.contains("lowercase"), "{e}");
        let e = NodeConfig::parse("[http]\nlisten = \"nowhere\"\n", Path::new(".")).unwrap_err();
        assert!(e.contains("listen") || e.contains("address"), "{e}");
    }

    #[test]
    fn db_section_is_optional_checked_and_maps_to_engine_limits() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.db.limits(), zerodb::Limits::default());
        let c = NodeConfig::parse(
            "[db]\nmax_statement = \"4 KiB\"\nmax_rows = 7\nstatement_time_ms = 50\nmax_database_size = \"1 MiB\"\n",
            Path::new("."),
        )
        .unwrap();
        let l = c.db.limits();
        assert_eq!(
            (
                l.max_statement_bytes,
                l.max_rows,
                l.max_statement_time.as_millis(),
                l.max_database_bytes
            ),
            (4096, 7, 50, 1 << 20)
        );
        let e = NodeConfig::parse("[db]\nmax_row = 7\n", Path::new(".")).unwrap_err();
        assert!(e.contains("unknown field") && e.contains("max_row"), "{e}");
        let e = NodeConfig::parse("[db]\nmax_rows = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("[db]"), "{e}");
        let e = NodeConfig::parse("[db]\nmax_database_size = 100\n", Path::new(".")).unwrap_err();
        assert!(e.contains("max_database_size"), "{e}");
        let c = NodeConfig::parse(
            "[db]\nmax_value_size = \"1 MiB\"\nmax_result_size = \"2 MiB\"\nmax_batch_statements = 3\nmax_databases_per_tenant = 4\ntenant_quota = \"1 GiB\"\nmax_open_databases = 6\nmax_open_databases_per_tenant = 2\nmax_sqlite_memory = 0\n",
            Path::new("."),
        )
        .unwrap();
        let l = c.db.limits();
        assert_eq!(
            (
                l.max_value_bytes,
                l.max_result_bytes,
                l.max_batch_statements,
                l.max_databases_per_tenant,
                l.max_tenant_bytes,
                l.max_open_databases,
                l.max_open_databases_per_tenant,
                l.max_sqlite_heap_bytes
            ),
            (1 << 20, 2 << 20, 3, 4, 1 << 30, 6, 2, 0)
        );
        for (bad, needle) in [
            (
                "max_open_databases = 2\nmax_open_databases_per_tenant = 3",
                "must not exceed",
            ),
            ("tenant_quota = \"1 MiB\"", "tenant_quota"),
            ("max_value_size = 10", "max_value_size"),
            ("max_batch_statements = 0", "max_batch_statements"),
            ("max_sqlite_memory = \"1 MiB\"", "max_sqlite_memory"),
        ] {
            let e = NodeConfig::parse(&format!("[db]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.db.limits(), zerodb::Limits::default());
    }

    #[test]
    fn admin_and_replay_bounds_have_defaults_are_set_and_refuse_zero() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(
            (
                c.node.max_invocation_lifetime_secs,
                c.node.replay_entries_per_principal,
                c.node.max_revocations_per_principal
            ),
            (900, 10_000, 1_000)
        );
        assert_eq!(
            (
                c.admin.max_proofs,
                c.admin.max_token_bytes.0,
                c.admin.header_read_timeout_ms,
                c.admin.request_timeout_ms,
                c.admin.max_connections
            ),
            (16, 32 << 10, 10_000, 300_000, 64)
        );
        let c = NodeConfig::parse(
            "[node]\nmax_invocation_lifetime_secs = 60\n[admin]\nmax_proofs = 4\nmax_token_bytes = \"8 KiB\"\nmax_connections = 2\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.node.max_invocation_lifetime_secs, 60);
        assert_eq!(
            (
                c.admin.max_proofs,
                c.admin.max_token_bytes.0,
                c.admin.max_connections
            ),
            (4, 8192, 2)
        );
        let e = NodeConfig::parse("[admin]\nmax_connections = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("max_connections"), "{e}");
        let e = NodeConfig::parse("[node]\nreplay_entries_per_principal = 0\n", Path::new("."))
            .unwrap_err();
        assert!(e.contains("replay_entries_per_principal"), "{e}");
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.admin.max_proofs, 16);
    }

    #[test]
    fn cache_section_has_its_crates_defaults_and_refuses_bad_values() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.cache, zerocache::CacheSettings::default());
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.cache, zerocache::CacheSettings::default());
        let c = NodeConfig::parse("[cache]\nmemory = \"8 MiB\"\n", Path::new(".")).unwrap();
        assert_eq!(c.cache.memory.0, 8 << 20);
        let e = NodeConfig::parse("[cache]\nmemroy = 1\n", Path::new(".")).unwrap_err();
        assert!(e.contains("memroy"), "{e}");
        let e = NodeConfig::parse("[cache]\nmemory = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("[cache] memory"), "{e}");
    }

    #[test]
    fn fs_limits_have_defaults_and_refuse_zero() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.fs.max_open_per_instance, 256);
        assert_eq!(
            (c.fs.max_open_files, c.fs.max_open_files_per_tenant),
            (4096, 1024)
        );
        let e = NodeConfig::parse(
            "[fs]\nmax_open_files = 10\nmax_open_files_per_tenant = 20\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("max_open_files_per_tenant (20)"), "{e}");
        assert_eq!(c.fs.transfer_idle_timeout_ms, 30_000);
        assert_eq!(c.fs.transfer_timeout_ms, 900_000);
        let e = NodeConfig::parse("[fs]\nmax_open_per_instance = 0\n", Path::new(".")).unwrap_err();
        assert!(
            e.contains("max_open_per_instance must be at least 1"),
            "{e}"
        );
        let e =
            NodeConfig::parse("[fs]\ntransfer_idle_timeout_ms = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("transfer_idle_timeout_ms"), "{e}");
    }

    #[test]
    fn outbound_section_defaults_parses_and_holds_apps_to_the_ceiling() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        let o = c.outbound.build().unwrap();
        assert!(o.check_hosts(&["*".into()]).is_ok());
        assert!(o.allow_private.is_empty());
        assert_eq!(o.max_requests_per_invocation, 16);
        let c = NodeConfig::parse(
            "[outbound]\nallowed_hosts_ceiling = [\"api.example.com\"]\nallow_private = [\"127.0.0.1:9000\", \"10.0.0.0/8\"]\nconnect_timeout_ms = 100\n",
            Path::new("."),
        )
        .unwrap();
        let o = c.outbound.build().unwrap();
        assert_eq!(o.connect_timeout, Duration::from_millis(100));
        assert_eq!(o.allow_private.len(), 2);
        let e = o.check_hosts(&["*".into()]).unwrap_err().to_string();
        assert!(
            e.contains("`*`") && e.contains("[outbound] allowed_hosts_ceiling"),
            "{e}"
        );
        assert!(o.check_hosts(&["api.example.com:443".into()]).is_ok());
        let app = "[outbound]\nallowed_hosts_ceiling = [\"api.example.com\"]\n[[app]]\ntenant = \"t\"\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/\"]\nallowed_outbound_hosts = [\"evil.example.com\"]\n";
        let e = NodeConfig::parse(app, Path::new(".")).unwrap_err();
        assert!(
            e.contains("evil.example.com") && e.contains("allowed_hosts_ceiling"),
            "{e}"
        );
        for (bad, says) in [
            ("allow_private = [\"localhost\"]", "allow_private"),
            (
                "allowed_hosts_ceiling = [\"http://x\"]",
                "allowed_hosts_ceiling",
            ),
            ("first_byte_timeout_ms = 0", "greater than 0"),
            ("max_request = 3", "unknown field"),
        ] {
            let e = NodeConfig::parse(&format!("[outbound]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert!(c.outbound.build().unwrap().allow_private.is_empty());
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = NodeConfig::parse("", Path::new("/etc/zero")).unwrap();
        assert_eq!(
            c.resolve(Path::new("a.wasm")),
            PathBuf::from("/etc/zero/a.wasm")
        );
        assert_eq!(
            c.resolve(Path::new("/x/a.wasm")),
            PathBuf::from("/x/a.wasm")
        );
    }
}
