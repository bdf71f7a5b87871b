//! `zerocore.toml`: the node's configuration file.
//!
//! Each section deserializes straight into the settings type of the crate it configures
//! (`[http]` into [`zeroproxy::ProxyConfig`], `[limits]` into [`zerocore::Limits`], `[fs]` into
//! [`zerofs::FsSettings`], `[db]` into [`zerodb::Limits`], `[outbound]` into
//! [`zeroproxy::OutboundConfig`]), whose `Default` holds its defaults; the sections of the node
//! itself are defined here. Unknown fields are refused (a typo must not silently fall back to a
//! default), sizes accept units (`"64 MiB"`, see [`zero_provider::settings`]), and relative
//! paths are resolved against the directory of the file. See `examples/zerocore.toml` for an
//! annotated example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A size in bytes, written as an integer or a string with a unit (`"64 MiB"`; see
/// [`zero_provider::settings::parse_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        zero_provider::settings::size(d).map(ByteSize)
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
#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[log]`
    pub log: LogSection,
    /// `[http]`: the HTTP provider (zeroproxy).
    pub http: zeroproxy::ProxyConfig,
    /// `[limits]`: what each request may use (zerocore).
    pub limits: zerocore::Limits,
    /// `[engine]`
    pub engine: EngineSection,
    /// `[pool]`: how the pooling allocator recycles instance memory between requests (zerocore).
    pub pool: zerocore::PoolSettings,
    /// `[admin]`: the management API.
    pub admin: AdminSection,
    /// `[fs]`: the tenant file store (zerofs).
    pub fs: zerofs::FsSettings,
    /// `[db]`: limits of the tenants' SQL databases (zerodb).
    pub db: zerodb::Limits,
    /// `[outbound]`: outgoing HTTP from components (zeroproxy).
    pub outbound: zeroproxy::OutboundConfig,
    /// `[cache]`: the tenants' in-memory cache (zerocache).
    pub cache: zerocache::CacheSettings,
    /// `[chrono]`: bounds of the apps' schedules (zerochrono).
    pub chrono: zerochrono::ChronoSettings,
    /// `[telemetry]`: traces exported to an OpenTelemetry collector (off by default).
    pub telemetry: crate::telemetry::TelemetrySection,
    /// `[[app]]` entries.
    #[serde(rename = "app")]
    pub apps: Vec<AppSection>,
    /// Directory of the config file (relative paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Where the node keeps its state (artifacts, keys, data).
    pub data_dir: PathBuf,
    /// The Admin DID (root of authority). When unset the node runs in development mode with a
    /// generated admin key in the data directory.
    pub admin: Option<String>,
    /// Seconds of clock difference tolerated on tokens' `nbf` and `exp`.
    pub clock_skew_secs: u64,
    /// Longest lifetime of a management invocation: its `exp` may be at most this many seconds
    /// ahead (plus the clock skew).
    pub max_invocation_lifetime_secs: u64,
    /// Unexpired invocations remembered against replay per principal (the principal the Admin
    /// delegated to, or the Admin); beyond, that principal is refused until some expire.
    pub replay_entries_per_principal: usize,
    /// Revocations of unexpired delegations kept per principal (the Admin's are not bounded).
    pub max_revocations_per_principal: usize,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: PathBuf::from(".zero-data"),
            admin: None,
            clock_skew_secs: 60,
            max_invocation_lifetime_secs: zero_auth::DEFAULT_MAX_INVOCATION_LIFETIME,
            replay_entries_per_principal: 10_000,
            max_revocations_per_principal: 1_000,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,zeroproxy=debug`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Use the pooling allocator when the host allows it.
    pub pooling: bool,
    /// Where compiled artifacts are kept (default: `DATA_DIR/aot`). Several nodes on one
    /// machine may share it: artifacts are written atomically and checked before use.
    pub artifact_dir: Option<PathBuf>,
    /// The secret key file that authenticates compiled artifacts (default:
    /// `DATA_DIR/artifact.key`, created on first start, mode 0600). Nodes that share an
    /// `artifact_dir` reuse each other's artifacts only when they also share this key; an
    /// artifact written without it is never loaded.
    pub artifact_key: Option<PathBuf>,
    /// Tiered compilation (`tiered_compilation`, default on): a component never compiled
    /// before serves at once from Winch's baseline code while Cranelift optimizes it in the
    /// background; off, it is compiled with Cranelift before its first request.
    pub tiered_compilation: bool,
    /// CPU time after which a request's guest is heavy (default 10 ms): when turns are
    /// scarce its tenant's light requests pass it.
    pub heavy_after_ms: u64,
    /// Guests running at once (default 0: one per core). Turns go first to the guests of the
    /// tenants that used the least CPU lately, so that a tenant keeping the node busy waits
    /// behind the others.
    pub guest_slots: usize,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            pooling: true,
            artifact_dir: None,
            artifact_key: None,
            tiered_compilation: true,
            heavy_after_ms: 10,
            guest_slots: 0,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address of the management API (keep it on loopback or a private network).
    pub listen: SocketAddr,
    /// Largest component upload.
    pub max_upload: ByteSize,
    /// Most apps one tenant may have deployed at once (default 100): each holds compiled code
    /// in the node's memory.
    pub max_apps_per_tenant: usize,
    /// Most certificates one tenant may install for its hosts (`zero tls put`; default 100):
    /// each is held in the node's memory and considered at every handshake's lookup.
    pub max_certs_per_tenant: usize,
    /// Most delegations in the `ucan-proofs` header (and in an invocation's `prf`).
    pub max_proofs: usize,
    /// Largest total size of the `authorization` and `ucan-proofs` headers.
    pub max_token_bytes: ByteSize,
    /// Time allowed to receive a request's headers, the first one's counted from the accept
    /// (also bounds idle connections, HTTP/2 ones included).
    pub header_read_timeout_ms: u64,
    /// Time allowed from a request's headers to its response's headers (the request body is
    /// read within it; a download's body streams after it).
    pub request_timeout_ms: u64,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Connections one client (an IPv4 address or an IPv6 /64) may hold open at once, so that
    /// one client cannot take every connection; further ones are answered `503` with
    /// `connection: close` and `retry-after` and closed. Unset, `min(8, max_connections)` (see
    /// [`AdminSection::connections_per_client`]); behind a reverse proxy raise it to
    /// `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// Of `max_connections`, how many are kept for known clients: those that made an
    /// authenticated call (a verified invocation) from their address in the last 10 minutes.
    /// A flood of connections from many addresses that never authenticate then leaves the
    /// Admin and tenant owners these. Unset, a quarter of `max_connections`; 0 keeps none.
    pub reserved_connections: Option<usize>,
    /// Of `reserved_connections`, how many are kept for clients that made an authenticated
    /// call *as the Admin* (an invocation issued by the Admin's own key) in the last 10
    /// minutes: tenant owners are known clients too, and must not be able to take every kept
    /// place and lock out the one who can revoke them. Unset, a quarter of
    /// `reserved_connections`, at least 1 when any are kept; 0 keeps none for the Admin.
    pub admin_reserved_connections: Option<usize>,
    /// Slowest a request body may arrive (bytes a second, averaged from the end of the request
    /// head, after a grace of `header_read_timeout_ms`): at `t` seconds after the head at least
    /// `min_body_rate × (t − grace)` bytes must have arrived, else the body is cut (`408
    /// SlowBody`). Default 16 KiB/s. A body that does not fit is one the client trickles, with
    /// or without a token: an upload of `n` bytes has `grace + n / min_body_rate` seconds, and
    /// always `request_timeout_ms` at most.
    pub min_body_rate: ByteSize,
    /// Deploys of one tenant in flight at once (default 1): a further deploy of that tenant is
    /// refused with `429 TooManyDeploys` and `retry-after` before its upload is read.
    pub max_deploys_per_tenant: usize,
    /// Components compiled at once on this node (default 1): a deploy whose component must be
    /// compiled waits its turn (first come, first served, within `request_timeout_ms`), so that
    /// deploys cannot take every core from the requests being served.
    pub max_compiles: usize,
    /// PEM certificate chain the management API serves over TLS (with `tls_key`), reloaded
    /// when the file changes. Required when `listen` is not a loopback address: the API
    /// carries tokens and code, and must not cross a network in cleartext.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_upload: ByteSize(64 << 20),
            max_apps_per_tenant: 100,
            max_certs_per_tenant: 100,
            max_proofs: 16,
            max_token_bytes: ByteSize(32 << 10),
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 300_000,
            max_connections: 64,
            max_connections_per_client: None,
            reserved_connections: None,
            admin_reserved_connections: None,
            min_body_rate: ByteSize(16 << 10),
            max_deploys_per_tenant: 1,
            max_compiles: 1,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl AdminSection {
    /// Unset, one client may hold this many management connections (or `max_connections`, if
    /// lower).
    pub const DEFAULT_CONNECTIONS_PER_CLIENT: usize = 8;

    /// Connections one client may hold open: `max_connections_per_client` if set, else
    /// `min(8, max_connections)`.
    pub fn connections_per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or(Self::DEFAULT_CONNECTIONS_PER_CLIENT.min(self.max_connections))
    }

    /// Connections kept for known clients: `reserved_connections` if set, else a quarter of
    /// `max_connections`.
    pub fn reserved(&self) -> usize {
        self.reserved_connections
            .unwrap_or(self.max_connections / 4)
    }

    /// Of [`AdminSection::reserved`], the connections kept for the Admin's clients:
    /// `admin_reserved_connections` if set, else a quarter of them (at least 1 when any are
    /// kept).
    pub fn admin_reserved(&self) -> usize {
        let reserved = self.reserved();
        self.admin_reserved_connections.unwrap_or(if reserved == 0 {
            0
        } else {
            (reserved / 4).max(1)
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
    /// Routes: `/path` or `host/path` (none for an app that only runs on schedules).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Hosts reachable with outgoing HTTP.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Schedules that run the component's `zero:chrono/tick-handler` (zerochrono), e.g.
    /// `schedules = [{ name = "tick", schedule = "*/5 * * * * *" }]`.
    #[serde(default)]
    pub schedules: Vec<zerochrono::ScheduleDecl>,
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

/// Settings that were renamed, and what they are called now: a config written for an older
/// node is told the new name instead of only that the old one is unknown.
const RENAMED: &[(&str, &str)] = &[(
    "heavy_slots",
    "[engine] heavy_slots was replaced by [engine] guest_slots (guests running at once, 0 = one \
     per core; every guest now runs in those turns, heavy or not): rename the setting",
)];

/// Adds the new name to a parse error about a renamed setting.
fn renamed(error: String) -> String {
    for (old, hint) in RENAMED {
        if error.contains(&format!("unknown field `{old}`")) {
            return format!("{error}\n{hint}");
        }
    }
    error
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
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| renamed(e.to_string()))?;
        cfg.base_dir = base_dir.to_path_buf();
        // The certificate files are named relative to the file, like every other path.
        for p in [
            &mut cfg.http.tls_cert,
            &mut cfg.http.tls_key,
            &mut cfg.admin.tls_cert,
            &mut cfg.admin.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.telemetry.validate()?;
        let l = &self.limits;
        if l.cpu_time.is_zero() || l.wall_time.is_zero() {
            return Err("[limits] cpu_time_ms and wall_time_ms must be greater than 0".into());
        }
        if l.memory_bytes < (1 << 20) {
            return Err("[limits] memory must be at least 1 MiB".into());
        }
        if l.max_stack_bytes < (64 << 10) {
            return Err("[limits] max_stack must be at least 64 KiB".into());
        }
        if l.max_concurrent_per_instance == 0 || l.max_reuse == 0 {
            return Err(
                "[limits] max_concurrent_per_instance and max_reuse must be at least 1 (1 and 1 \
                 give every request a fresh instance)"
                    .into(),
            );
        }
        let h = &self.http;
        if h.max_concurrent == 0
            || h.max_concurrent_per_app == 0
            || h.max_concurrent_per_tenant == 0
        {
            return Err("[http] max_concurrent_requests, max_concurrent_requests_per_app and max_concurrent_requests_per_tenant must be at least 1".into());
        }
        if h.max_connections == 0
            || h.max_connections_per_client == Some(0)
            || h.max_concurrent_streams == 0
        {
            return Err("[http] max_connections, max_connections_per_client and max_concurrent_streams must be at least 1".into());
        }
        // Unset, the per-client limits follow the node-wide ones down (`min(128,
        // max_concurrent_requests)`, `min(256, max_connections)`); only a value written above
        // the node-wide limit is refused.
        let per_client = h.concurrent_per_client();
        if per_client == 0 || per_client > h.max_concurrent {
            return Err(format!(
                "[http] max_concurrent_requests_per_client ({per_client}) must be at least 1 and at most max_concurrent_requests ({}); lower it, raise max_concurrent_requests, or leave it unset for min(128, max_concurrent_requests)",
                h.max_concurrent
            ));
        }
        let per_client = h.connections_per_client();
        if per_client > h.max_connections {
            return Err(format!(
                "[http] max_connections_per_client ({per_client}) must not exceed max_connections ({}); lower it, raise max_connections, or leave it unset for min(256, max_connections)",
                h.max_connections
            ));
        }
        if h.header_read_timeout.is_zero() || h.idle_timeout.is_zero() {
            return Err(
                "[http] header_read_timeout_ms and idle_timeout_ms must be greater than 0".into(),
            );
        }
        if h.tls_cert.is_some() != h.tls_key.is_some() {
            return Err("[http] tls_cert and tls_key go together: set both (PEM files) to serve HTTPS, or neither".into());
        }
        if h.redirect_listen.is_some() && h.tls_cert.is_none() {
            return Err("[http] redirect_listen redirects to HTTPS, but [http] has no tls_cert and tls_key: set them, or remove redirect_listen".into());
        }
        let a = &self.admin;
        if a.tls_cert.is_some() != a.tls_key.is_some() {
            return Err("[admin] tls_cert and tls_key go together: set both (PEM files) to serve the management API over TLS, or neither".into());
        }
        if !a.listen.ip().is_loopback() && a.tls_cert.is_none() {
            return Err(format!(
                "[admin] listen is {}, which is not a loopback address, and [admin] has no tls_cert and tls_key: the management API carries tokens and code and is never served in cleartext beyond this machine; set [admin] tls_cert and tls_key (PEM files), or listen on 127.0.0.1",
                a.listen
            ));
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
        if fs.transfer_idle_timeout.is_zero() || fs.transfer_timeout.is_zero() {
            return Err(
                "[fs] transfer_idle_timeout_ms and transfer_timeout_ms must be greater than 0"
                    .into(),
            );
        }
        let db = &self.db;
        if db.max_statement_bytes == 0 || db.max_rows == 0 || db.max_statement_time.is_zero() {
            return Err(
                "[db] max_statement, max_rows and statement_time_ms must be greater than 0".into(),
            );
        }
        if db.max_database_bytes < (64 << 10) {
            return Err("[db] max_database_size must be at least 64 KiB".into());
        }
        if db.max_value_bytes < 1024 || db.max_value_bytes > (1 << 30) {
            return Err("[db] max_value_size must be between 1 KiB and 1 GiB".into());
        }
        if db.max_result_bytes < 1024 {
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
        if db.max_tenant_bytes < db.max_database_bytes {
            return Err("[db] tenant_quota must be at least max_database_size".into());
        }
        if db.max_sqlite_heap_bytes != 0 && db.max_sqlite_heap_bytes < (16 << 20) {
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
        if a.max_connections_per_client == Some(0) {
            return Err("[admin] max_connections_per_client must be at least 1 (or leave it unset for min(8, max_connections))".into());
        }
        if a.connections_per_client() > a.max_connections {
            return Err(format!(
                "[admin] max_connections_per_client ({}) must not exceed max_connections ({}); lower it, raise max_connections, or leave it unset for min(8, max_connections)",
                a.connections_per_client(),
                a.max_connections
            ));
        }
        if a.reserved() >= a.max_connections {
            return Err(format!(
                "[admin] reserved_connections ({}) must be less than max_connections ({}): \
                 clients that have not authenticated lately need at least one connection to \
                 authenticate on; lower it, or leave it unset for a quarter of max_connections",
                a.reserved(),
                a.max_connections
            ));
        }
        if a.admin_reserved() > a.reserved() {
            return Err(format!(
                "[admin] admin_reserved_connections ({}) must not exceed reserved_connections \
                 ({}): the places kept for the Admin are a share of those kept for known \
                 clients; lower it, raise reserved_connections, or leave it unset for a quarter \
                 of reserved_connections",
                a.admin_reserved(),
                a.reserved()
            ));
        }
        if a.min_body_rate.0 == 0 {
            return Err("[admin] min_body_rate must be at least 1 byte a second (e.g. \"16 KiB\"): it bounds how long a client may trickle a request body".into());
        }
        if a.max_deploys_per_tenant == 0 || a.max_compiles == 0 {
            return Err(
                "[admin] max_deploys_per_tenant and max_compiles must be at least 1".into(),
            );
        }
        if a.max_token_bytes.0 < 1024 {
            return Err("[admin] max_token_bytes must be at least 1 KiB".into());
        }
        if let Some(admin) = &self.node.admin {
            zero_auth::Did::parse(admin)
                .map_err(|e| format!("[node] admin must be a did:key (see `zero key did`): {e}"))?;
        }
        let outbound = &self.outbound;
        if outbound.connect_timeout.is_zero()
            || outbound.first_byte_timeout.is_zero()
            || outbound.between_bytes_timeout.is_zero()
        {
            return Err("[outbound] connect_timeout_ms, first_byte_timeout_ms and between_bytes_timeout_ms must be greater than 0".into());
        }
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
            if app.routes.is_empty() && app.schedules.is_empty() {
                return Err(format!(
                    "{at}: give the app at least one route, e.g. routes = [\"/\"], or a schedule"
                ));
            }
            for r in &app.routes {
                zeroproxy::Route::parse(r).map_err(|e| format!("{at}: {e}"))?;
            }
            outbound
                .check_hosts(&app.allowed_outbound_hosts)
                .map_err(|e| format!("{at}: {e}"))?;
            for schedule in &app.schedules {
                zerochrono::Schedule::parse(schedule).map_err(|e| format!("{at}: {e}"))?;
            }
        }
        self.cache.validate()?;
        self.chrono.validate()?;
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_parse_with_units_in_every_section_and_refuse_nonsense() {
        let c = NodeConfig::parse(
            "[limits]\nmemory = \"64 MiB\"\nmax_stack = \"512KiB\"\nguest_log_bytes = 1000\n\
             [http]\nmax_request_body = \"1 MiB\"\n[admin]\nmax_upload = \"10 MB\"\n\
             [fs]\nquota_bytes = \"2 GiB\"\n[db]\nmax_database_size = \"256 KiB\"\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.memory_bytes,
                c.limits.max_stack_bytes,
                c.limits.log_bytes_per_request
            ),
            (64 << 20, 512 << 10, 1000)
        );
        assert_eq!(c.http.max_request_body, 1 << 20);
        assert_eq!(c.admin.max_upload, ByteSize(10_000_000));
        assert_eq!(c.fs.quota_bytes, 2 << 30);
        assert_eq!(c.db.max_database_bytes, 256 << 10);
        for (bad, says) in [
            ("memory = \"ten\"", "not a size"),
            ("memory = \"5 parsecs\"", "unknown size unit `parsecs`"),
            ("memory = -5", "cannot be negative"),
            ("memory = true", "a size"),
            ("cpu_time_ms = \"1 s\"", "milliseconds"),
        ] {
            let e = NodeConfig::parse(&format!("[limits]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_are_safe() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.limits.cpu_time, Duration::from_millis(1000));
        assert_eq!(c.limits, zerocore::Limits::default());
        assert_eq!(c.http, zeroproxy::ProxyConfig::default());
        assert_eq!(c.fs, zerofs::FsSettings::default());
        assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1");
        assert!(c.apps.is_empty());
    }

    #[test]
    fn p3_instance_reuse_defaults_to_a_fresh_instance_and_refuses_zero() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(
            (c.limits.max_concurrent_per_instance, c.limits.max_reuse),
            (1, 1)
        );
        let c = NodeConfig::parse(
            "[limits]\nmax_concurrent_per_instance = 8\nmax_reuse = 100\ninstance_idle_timeout_ms = 500\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.max_concurrent_per_instance,
                c.limits.max_reuse,
                c.limits.instance_idle_timeout
            ),
            (8, 100, Duration::from_millis(500))
        );
        for bad in ["max_concurrent_per_instance = 0", "max_reuse = 0"] {
            let e = NodeConfig::parse(&format!("[limits]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains("must be at least 1"), "{bad}: {e}");
        }
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.limits.max_reuse, 1);
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
        let e = NodeConfig::parse("[engine]\nheavy_slots = 2\n", Path::new(".")).unwrap_err();
        assert!(
            e.contains("unknown field") && e.contains("replaced by [engine] guest_slots"),
            "{e}"
        );
    }

    #[test]
    fn db_section_is_optional_checked_and_maps_to_engine_limits() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.db, zerodb::Limits::default());
        let c = NodeConfig::parse(
            "[db]\nmax_statement = \"4 KiB\"\nmax_rows = 7\nstatement_time_ms = 50\nmax_database_size = \"1 MiB\"\n",
            Path::new("."),
        )
        .unwrap();
        let l = &c.db;
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
        let l = &c.db;
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
        assert_eq!(c.db, zerodb::Limits::default());
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
        assert_eq!(c.admin.connections_per_client(), 2);
        assert_eq!(AdminSection::default().connections_per_client(), 8);
        assert_eq!(
            (c.admin.reserved(), AdminSection::default().reserved()),
            (0, 16)
        );
        let e = NodeConfig::parse(
            "[admin]\nmax_connections = 4\nreserved_connections = 4\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.contains("reserved_connections (4) must be less than"),
            "{e}"
        );
        assert_eq!(AdminSection::default().admin_reserved(), 4);
        assert_eq!(c.admin.admin_reserved(), 0);
        let small = NodeConfig::parse(
            "[admin]\nmax_connections = 8\nreserved_connections = 2\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(small.admin.admin_reserved(), 1);
        let e = NodeConfig::parse(
            "[admin]\nmax_connections = 8\nreserved_connections = 2\nadmin_reserved_connections = 3\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.contains("admin_reserved_connections (3) must not exceed reserved_connections (2)"),
            "{e}"
        );
        for (toml, want) in [
            (
                "max_connections_per_client = 0",
                "max_connections_per_client must be at least 1",
            ),
            (
                "max_connections = 4\nmax_connections_per_client = 5",
                "max_connections_per_client (5) must not exceed max_connections (4)",
            ),
            (
                "min_body_rate = 0",
                "min_body_rate must be at least 1 byte a second",
            ),
        ] {
            let e = NodeConfig::parse(&format!("[admin]\n{toml}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains(want), "{toml}: {e}");
        }
        let c = NodeConfig::parse(
            "[admin]\nmax_connections_per_client = 3\nmin_body_rate = \"4 KiB\"\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (c.admin.connections_per_client(), c.admin.min_body_rate.0),
            (3, 4096)
        );
        let e = NodeConfig::parse("[node]\nreplay_entries_per_principal = 0\n", Path::new("."))
            .unwrap_err();
        assert!(e.contains("replay_entries_per_principal"), "{e}");
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.admin.max_proofs, 16);
    }

    #[test]
    fn http_connection_bounds_have_defaults_and_refuse_nonsense() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(
            (
                c.http.max_connections,
                c.http.max_connections_per_client,
                c.http.idle_timeout,
                c.http.max_concurrent_streams,
                c.http.max_concurrent_per_client
            ),
            (1024, None, Duration::from_secs(60), 100, None)
        );
        assert_eq!(
            (
                c.http.connections_per_client(),
                c.http.concurrent_per_client()
            ),
            (256, 128)
        );
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.http, zeroproxy::ProxyConfig::default());
        let c = NodeConfig::parse(
            "[http]\nmax_connections = 10\nmax_connections_per_client = 2\nidle_timeout_ms = 500\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.http.max_connections,
                c.http.max_connections_per_client,
                c.http.idle_timeout
            ),
            (10, Some(2), Duration::from_millis(500))
        );
        // Unset, the per-client limits follow lowered node-wide limits down…
        let c = NodeConfig::parse(
            "[http]\nmax_concurrent_requests = 64\nmax_connections = 100\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.http.concurrent_per_client(),
                c.http.connections_per_client()
            ),
            (64, 100)
        );
        // …and stay at their defaults below raised ones; a value written wins.
        let c = NodeConfig::parse(
            "[http]\nmax_concurrent_requests = 1000\nmax_connections = 5000\nmax_concurrent_requests_per_client = 300\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.http.concurrent_per_client(),
                c.http.connections_per_client()
            ),
            (300, 256)
        );
        for (bad, says) in [
            ("max_connections = 0", "max_connections"),
            (
                "max_connections_per_client = 0",
                "max_connections_per_client",
            ),
            ("max_concurrent_streams = 0", "max_concurrent_streams"),
            (
                "max_connections = 4\nmax_connections_per_client = 5",
                "max_connections_per_client (5) must not exceed max_connections (4)",
            ),
            ("idle_timeout_ms = 0", "idle_timeout_ms"),
            (
                "max_concurrent_requests_per_client = 0",
                "max_concurrent_requests_per_client (0) must be at least 1",
            ),
            (
                "max_concurrent_requests = 8\nmax_concurrent_requests_per_client = 9",
                "max_concurrent_requests_per_client (9) must be at least 1 and at most max_concurrent_requests (8)",
            ),
            (
                "max_concurrent_requests = 64\nmax_concurrent_requests_per_client = 128",
                "max_concurrent_requests_per_client (128) must be at least 1 and at most max_concurrent_requests (64)",
            ),
            (
                "max_connections = 100\nmax_connections_per_client = 256",
                "max_connections_per_client (256) must not exceed max_connections (100)",
            ),
            ("header_read_timeout_ms = 0", "header_read_timeout_ms"),
        ] {
            let e = NodeConfig::parse(&format!("[http]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(e.contains("[http]") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cache_section_has_its_crates_defaults_and_refuses_bad_values() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.cache, zerocache::CacheSettings::default());
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.cache, zerocache::CacheSettings::default());
        let c = NodeConfig::parse("[cache]\nmemory = \"8 MiB\"\n", Path::new(".")).unwrap();
        assert_eq!(c.cache.memory, 8 << 20);
        let e = NodeConfig::parse("[cache]\nmemroy = 1\n", Path::new(".")).unwrap_err();
        assert!(e.contains("memroy"), "{e}");
        let e = NodeConfig::parse("[cache]\nmemory = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("[cache] memory"), "{e}");
    }

    #[test]
    fn pool_section_has_the_cores_defaults_and_reads_sizes() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.pool, zerocore::PoolSettings::default());
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.pool, zerocore::PoolSettings::default());
        let c = NodeConfig::parse(
            "[pool]\nmemory_keep_resident = \"1 MiB\"\ntable_keep_resident = 0\nwarm_slots = 8\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                c.pool.memory_keep_resident,
                c.pool.table_keep_resident,
                c.pool.warm_slots
            ),
            (1 << 20, 0, 8)
        );
        let e = NodeConfig::parse("[pool]\nkeep_resident = 1\n", Path::new(".")).unwrap_err();
        assert!(e.contains("keep_resident"), "{e}");
    }

    #[test]
    fn chrono_section_and_app_schedules_are_read_and_checked() {
        let c = NodeConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(c.chrono, zerochrono::ChronoSettings::default());
        let example = include_str!("../../../examples/zerocore.toml");
        let c = NodeConfig::parse(example, Path::new(".")).unwrap();
        assert_eq!(c.chrono, zerochrono::ChronoSettings::default());
        let e = NodeConfig::parse("[chrono]\nmax_schedule = 1\n", Path::new(".")).unwrap_err();
        assert!(e.contains("max_schedule"), "{e}");
        let e = NodeConfig::parse("[chrono]\nretry_backoff_ms = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("[chrono] retry_backoff_ms"), "{e}");
        let app = "[[app]]\ntenant = \"t\"\nname = \"a\"\ncomponent = \"a.wasm\"\n";
        let ok =
            format!("{app}schedules = [{{ name = \"tick\", schedule = \"*/5 * * * * *\" }}]\n");
        let c = NodeConfig::parse(&ok, Path::new(".")).unwrap();
        assert_eq!(c.apps[0].schedules[0].name, "tick");
        assert!(c.apps[0].routes.is_empty());
        let bad = format!("{app}schedules = [{{ name = \"tick\", schedule = \"* * * * *\" }}]\n");
        let e = NodeConfig::parse(&bad, Path::new(".")).unwrap_err();
        assert!(e.contains("t/a") && e.contains("seconds first"), "{e}");
        let e = NodeConfig::parse(app, Path::new(".")).unwrap_err();
        assert!(e.contains("at least one route"), "{e}");
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
        assert_eq!(c.fs.transfer_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.fs.transfer_timeout, Duration::from_secs(900));
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
        let o = &c.outbound;
        assert!(o.check_hosts(&["*".into()]).is_ok());
        assert!(o.allow_private.is_empty());
        assert_eq!(o.max_requests_per_invocation, 16);
        let c = NodeConfig::parse(
            "[outbound]\nallowed_hosts_ceiling = [\"api.example.com\"]\nallow_private = [\"127.0.0.1:9000\", \"10.0.0.0/8\"]\nconnect_timeout_ms = 100\n",
            Path::new("."),
        )
        .unwrap();
        let o = &c.outbound;
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
        assert!(c.outbound.allow_private.is_empty());
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
