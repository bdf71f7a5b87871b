//! `zero.toml`, an app's manifest: what the app is called, where it is served, what it runs on
//! a schedule, which hosts it may call, which files to seed, and the capabilities it needs,
//! written in plain terms (`[capabilities.files] read = ["/site"]`) and turned here into the
//! exact UCAN commands and policies (`/fs/read`, `[["==", ".path", "/site"]]`) that `zero build`
//! signs into the component.
//!
//! ```toml
//! [app]
//! name = "notes"                     # default: the cargo package name
//! routes = ["/notes"]                # "/path" or "host/path"
//! outbound = ["api.example.com"]     # hosts for outgoing HTTP (as `zero deploy --allow-outbound`)
//!
//! [build]                            # all optional for a cargo project
//! command = "make wasm"              # a custom build; then `output` names the component it writes
//! output = "out/notes.wasm"
//! watch = ["src", "Cargo.toml"]      # what `zero up` watches (default: the whole project)
//!
//! [[schedule]]
//! name = "tick"
//! cron = "*/5 * * * * *"             # or: every = "30s"
//! tz = "Europe/Paris"                # optional, as are catch_up = "last" and retries = 2
//!
//! [capabilities.files]
//! read = ["/site"]                   # /fs/read on /site and everything under it
//! write = ["/uploads"]               # /fs (read, write, create, delete)
//!
//! [capabilities.databases.notes]     # database `notes`
//! write = ["notes", "tags"]          # /db on these tables ("*": every table)
//! read = ["archive"]                 # /db/read
//!
//! [capabilities.cache]
//! write = ["note:"]                  # /cache on keys starting with these prefixes ("": every key)
//! read = ["config:"]                 # /cache/read
//!
//! [[seed]]
//! from = "site"                      # a file or directory, relative to zero.toml
//! to = "/site"                       # where in the tenant's files
//! ```
//!
//! Every problem is reported as `FILE:LINE: KEY: what is wrong and how to fix it`. Routes,
//! outbound hosts and schedules are checked with the same parsers the node applies to
//! `zero deploy`, so a manifest that loads deploys. Reading the file is the only I/O here.

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;
use zero_auth::Policy;
use zero_client::Grant;

/// The manifest's file name.
pub const FILE_NAME: &str = "zero.toml";

/// A problem in a manifest: the file, the line (when known), the key and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: Option<usize>,
    /// The key, as written in TOML (`[capabilities.files] read`), or empty.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

// ---------------------------------------------------------------------------------------------
// The file as written (also the source of the JSON schema).

/// `zero.toml`: the manifest of one zerocore app.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "zero.toml", description = "The manifest of a zerocore app")]
pub struct RawManifest {
    /// The app: name, routes, outgoing hosts.
    #[serde(default)]
    pub app: RawApp,
    /// How the component is built (all optional for a cargo project).
    #[serde(default)]
    pub build: RawBuild,
    /// Schedules that run the component's `zero:chrono/tick-handler`.
    #[serde(default)]
    pub schedule: Vec<RawSchedule>,
    /// What the app may touch, in plain terms; each entry becomes one signed capability.
    #[serde(default)]
    pub capabilities: RawCapabilities,
    /// Local files copied into the tenant's files by `zero up` (and `zero deploy --seed`).
    #[serde(default)]
    pub seed: Vec<RawSeed>,
}

/// `[app]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// The app's name within its tenant (a-z, 0-9, `-`, `_`; default: the cargo package name).
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Routes: `/path` or `host/path`; a prefix serves everything under it.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub routes: Vec<Spanned<String>>,
    /// Hosts the app may reach with outgoing HTTP: `host`, `host:port`, `*.domain` or `*`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub outbound: Vec<Spanned<String>>,
}

/// `[build]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    /// A shell command that builds the component, run in the manifest's directory (default:
    /// `cargo build --release --target wasm32-wasip2` of the package). Needs `output`.
    #[schemars(with = "Option<String>")]
    pub command: Option<Spanned<String>>,
    /// The component `command` writes, relative to the manifest.
    #[schemars(with = "Option<String>")]
    pub output: Option<Spanned<String>>,
    /// Files and directories (relative to the manifest) whose changes make `zero up` rebuild
    /// (default: everything in the project except build output).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub watch: Vec<Spanned<String>>,
}

/// `[[schedule]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// The schedule's name within the app (a-z, 0-9, `-`, `_`).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    #[schemars(with = "Option<String>")]
    pub cron: Option<Spanned<String>>,
    /// An interval instead of `cron`: `30s`, `5m`, `1h`, `500ms`.
    #[schemars(with = "Option<String>")]
    pub every: Option<Spanned<String>>,
    /// The IANA time zone `cron` is read in (default UTC).
    #[schemars(with = "Option<String>")]
    pub tz: Option<Spanned<String>>,
    /// `last`: the latest tick missed while the node was down runs at start (default `none`).
    #[schemars(with = "Option<String>")]
    pub catch_up: Option<Spanned<String>>,
    /// How many times a run that traps or times out is tried again (default 0).
    #[schemars(with = "Option<u32>")]
    pub retries: Option<Spanned<u32>>,
}

/// `[capabilities]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCapabilities {
    /// The tenant's files.
    #[serde(default)]
    pub files: RawAccess,
    /// Databases by name: `[capabilities.databases.NAME]` with tables to read or write.
    #[serde(default)]
    pub databases: BTreeMap<String, RawAccess>,
    /// The tenant's cache, by key prefix.
    #[serde(default)]
    pub cache: RawAccess,
}

/// Read and write lists (paths, tables or key prefixes).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// Read only.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub read: Vec<Spanned<String>>,
    /// Read and write (files: also create and delete).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub write: Vec<Spanned<String>>,
}

/// `[[seed]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSeed {
    /// A local file or directory, relative to the manifest.
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    /// Where it goes in the tenant's files (an absolute path such as `/site`).
    #[schemars(with = "String")]
    pub to: Spanned<String>,
}

/// The JSON schema of `zero.toml`, for editors (committed as `schema/zero.schema.json`).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawManifest)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The validated manifest.

/// A capability in plain terms, as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Read files at or under a path (`/fs/read`).
    FilesRead(String),
    /// Read, write, create and delete files at or under a path (`/fs`).
    FilesWrite(String),
    /// Read a table of a database (`/db/read`); `None`: every table.
    DbRead {
        /// The database.
        db: String,
        /// The table, or every table.
        table: Option<String>,
    },
    /// Read and write a table of a database (`/db`); `None`: every table.
    DbWrite {
        /// The database.
        db: String,
        /// The table, or every table.
        table: Option<String>,
    },
    /// Read cache keys starting with a prefix (`/cache/read`).
    CacheRead(String),
    /// Read and write cache keys starting with a prefix (`/cache`).
    CacheWrite(String),
}

/// Escapes a literal for a UCAN `like` pattern (`*` and `\` are special).
pub fn escape_like(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if c == '*' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Capability {
    /// The UCAN command.
    pub fn command(&self) -> &'static str {
        match self {
            Capability::FilesRead(_) => "/fs/read",
            Capability::FilesWrite(_) => "/fs",
            Capability::DbRead { .. } => "/db/read",
            Capability::DbWrite { .. } => "/db",
            Capability::CacheRead(_) => "/cache/read",
            Capability::CacheWrite(_) => "/cache",
        }
    }

    /// The policy on the command's arguments, as JSON.
    pub fn policy_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Capability::FilesRead(p) | Capability::FilesWrite(p) => json!([["==", ".path", p]]),
            Capability::DbRead { db, table } | Capability::DbWrite { db, table } => match table {
                Some(t) => json!([["==", ".db", db], ["==", ".table", t]]),
                None => json!([["==", ".db", db]]),
            },
            Capability::CacheRead(prefix) | Capability::CacheWrite(prefix) => {
                if prefix.is_empty() {
                    json!([])
                } else {
                    json!([["like", ".key", format!("{}*", escape_like(prefix))]])
                }
            }
        }
    }

    /// The grant `zero build` signs (no expiry: the chain it extends bounds it).
    pub fn grant(&self) -> Result<Grant, String> {
        let policy = Policy::from_ipld(&zero_client::json_to_ipld(&self.policy_json()))
            .map_err(|e| format!("cannot build the policy of {self}: {e}"))?;
        Ok(Grant {
            command: self.command().to_string(),
            policy,
            expires_in: None,
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = |t: &Option<String>| t.clone().unwrap_or_else(|| "every table".into());
        match self {
            Capability::FilesRead(p) => write!(f, "read files under {p}"),
            Capability::FilesWrite(p) => write!(f, "read and write files under {p}"),
            Capability::DbRead { db, table: t } => {
                write!(f, "read database {db}: {}", table(t))
            }
            Capability::DbWrite { db, table: t } => {
                write!(f, "read and write database {db}: {}", table(t))
            }
            Capability::CacheRead(p) if p.is_empty() => write!(f, "read every cache key"),
            Capability::CacheRead(p) => write!(f, "read cache keys {p}*"),
            Capability::CacheWrite(p) if p.is_empty() => {
                write!(f, "read and write every cache key")
            }
            Capability::CacheWrite(p) => write!(f, "read and write cache keys {p}*"),
        }
    }
}

/// A custom build: a shell command and the component it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomBuild {
    /// Run with `sh -c` in the manifest's directory.
    pub command: String,
    /// The component it writes (absolute).
    pub output: PathBuf,
}

/// Local files to copy into the tenant's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The local file or directory (absolute).
    pub from: PathBuf,
    /// The tenant path.
    pub to: String,
    /// The line of `from` in the manifest (for errors found while seeding).
    pub line: usize,
}

/// A validated `zero.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// Its directory (relative paths in it resolve against this).
    pub dir: PathBuf,
    /// `[app] name`, when given.
    pub name: Option<String>,
    /// Routes, as written (each accepted by the node's route parser).
    pub routes: Vec<String>,
    /// Outgoing hosts, as written.
    pub outbound: Vec<String>,
    /// Schedules in the deploy argument form (`name=EXPRESSION;tz=…`).
    pub schedules: Vec<zerochrono::ScheduleDecl>,
    /// The capabilities, in the order written.
    pub capabilities: Vec<Capability>,
    /// A custom build, when `[build] command` is given.
    pub custom_build: Option<CustomBuild>,
    /// Paths to watch (absolute; empty: the whole project).
    pub watch: Vec<PathBuf>,
    /// Files to seed.
    pub seeds: Vec<Seed>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            path: self.path.to_path_buf(),
            line: Some(self.line(span)),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Whether `s` is a valid app, schedule or database name (a-z, 0-9, `-`, `_`; 1 to 63).
pub fn valid_name(s: &str) -> bool {
    zero_node::config::valid_name(s)
}

/// Turns a cargo package name into an app name (`my_app` → `my-app`), or says why it cannot.
pub fn app_name_from_package(package: &str) -> Result<String, String> {
    let name = package.to_ascii_lowercase().replace('_', "-");
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(format!(
            "the package name `{package}` is not a valid app name (1 to 63 characters of a-z, 0-9, `-` and `_`); set [app] name in zero.toml"
        ))
    }
}

/// A tenant path: absolute, no `.` or `..`, no trailing `/` (except `/` itself).
fn tenant_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not an absolute path; write it from the tenant's root, like \"/site\""
        ));
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("`{p}` contains `.` or `..`; write the plain path"));
    }
    if p.contains('\0') {
        return Err(format!("`{p}` contains a NUL byte"));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    })
}

fn table_name(t: &str) -> Result<Option<String>, String> {
    if t == "*" {
        return Ok(None);
    }
    if t.is_empty() || t.len() > 128 || !t.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!(
            "`{t}` is not a table name (letters, digits and `_`), nor \"*\" for every table"
        ));
    }
    Ok(Some(t.to_string()))
}

fn relative(dir: &Path, p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if p.is_empty() {
        return Err("the path is empty".into());
    }
    if path.is_absolute() {
        return Err(format!(
            "`{p}` is absolute; write it relative to zero.toml's directory"
        ));
    }
    // `..` is allowed: an app in a mono-repo may seed from a directory shared with others.
    Ok(dir.join(path))
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            path: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses and validates manifest text read from `path` (relative paths in it resolve
    /// against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let cx = Ctx { path, text };
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError {
            path: path.to_path_buf(),
            line: e.span().map(|s| cx.line(s)),
            key: String::new(),
            message: toml_message(&e, text),
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));

        let name = match &raw.app.name {
            Some(n) if !valid_name(n.get_ref()) => {
                return Err(cx.err(
                    n.span(),
                    "[app] name",
                    format!(
                        "`{}` is not a valid app name: 1 to 63 characters of a-z, 0-9, `-` and `_`",
                        n.get_ref()
                    ),
                ));
            }
            n => n.as_ref().map(|n| n.get_ref().clone()),
        };
        let mut routes = Vec::new();
        for r in &raw.app.routes {
            zeroproxy::Route::parse(r.get_ref()).map_err(|e| {
                cx.err(
                    r.span(),
                    "[app] routes",
                    format!("{e} (write \"/path\" or \"host/path\")"),
                )
            })?;
            routes.push(r.get_ref().clone());
        }
        let mut outbound = Vec::new();
        for h in &raw.app.outbound {
            zero_provider::HostPattern::parse(h.get_ref())
                .map_err(|e| cx.err(h.span(), "[app] outbound", e))?;
            outbound.push(h.get_ref().clone());
        }

        let mut schedules = Vec::new();
        for s in &raw.schedule {
            schedules.push(schedule(&cx, s)?);
        }
        if routes.is_empty() && schedules.is_empty() {
            return Err(ManifestError {
                path: path.to_path_buf(),
                line: None,
                key: "[app] routes".into(),
                message: "the app has no route and no schedule, so nothing would ever run it; add routes = [\"/NAME\"] under [app] or a [[schedule]]".into(),
            });
        }

        let caps = &raw.capabilities;
        let mut capabilities = Vec::new();
        for p in &caps.files.read {
            let tp = tenant_path(p.get_ref())
                .map_err(|e| cx.err(p.span(), "[capabilities.files] read", e))?;
            capabilities.push(Capability::FilesRead(tp));
        }
        for p in &caps.files.write {
            let tp = tenant_path(p.get_ref())
                .map_err(|e| cx.err(p.span(), "[capabilities.files] write", e))?;
            capabilities.push(Capability::FilesWrite(tp));
        }
        for (db, access) in &caps.databases {
            let key = |what: &str| format!("[capabilities.databases.{db}] {what}");
            let first = access.read.first().or(access.write.first());
            if !valid_name(db) {
                let span = first.map(|s| s.span()).unwrap_or(0..0);
                return Err(cx.err(
                    span,
                    &format!("[capabilities.databases.{db}]"),
                    format!("`{db}` is not a valid database name: 1 to 63 characters of a-z, 0-9, `-` and `_`"),
                ));
            }
            for t in &access.read {
                let table =
                    table_name(t.get_ref()).map_err(|e| cx.err(t.span(), &key("read"), e))?;
                capabilities.push(Capability::DbRead {
                    db: db.clone(),
                    table,
                });
            }
            for t in &access.write {
                let table =
                    table_name(t.get_ref()).map_err(|e| cx.err(t.span(), &key("write"), e))?;
                capabilities.push(Capability::DbWrite {
                    db: db.clone(),
                    table,
                });
            }
        }
        for p in &caps.cache.read {
            capabilities.push(Capability::CacheRead(p.get_ref().clone()));
        }
        for p in &caps.cache.write {
            capabilities.push(Capability::CacheWrite(p.get_ref().clone()));
        }

        let custom_build = match (&raw.build.command, &raw.build.output) {
            (Some(c), Some(o)) => {
                if c.get_ref().trim().is_empty() {
                    return Err(cx.err(c.span(), "[build] command", "the command is empty"));
                }
                let output = relative(&dir, o.get_ref())
                    .map_err(|e| cx.err(o.span(), "[build] output", e))?;
                Some(CustomBuild {
                    command: c.get_ref().clone(),
                    output,
                })
            }
            (Some(c), None) => {
                return Err(cx.err(
                    c.span(),
                    "[build] command",
                    "a custom build command needs `output = \"PATH\"` naming the component it writes",
                ));
            }
            (None, Some(o)) => {
                return Err(cx.err(
                    o.span(),
                    "[build] output",
                    "`output` goes with a custom `command`; remove it to build with cargo",
                ));
            }
            (None, None) => None,
        };
        let mut watch = Vec::new();
        for w in &raw.build.watch {
            watch.push(
                relative(&dir, w.get_ref()).map_err(|e| cx.err(w.span(), "[build] watch", e))?,
            );
        }
        let mut seeds = Vec::new();
        for s in &raw.seed {
            let from = relative(&dir, s.from.get_ref())
                .map_err(|e| cx.err(s.from.span(), "[[seed]] from", e))?;
            let to =
                tenant_path(s.to.get_ref()).map_err(|e| cx.err(s.to.span(), "[[seed]] to", e))?;
            if to == "/" || to.starts_with("/.zero") {
                return Err(cx.err(
                    s.to.span(),
                    "[[seed]] to",
                    format!("`{to}` cannot be seeded: name a directory such as \"/site\" (/.zero holds deployed code)"),
                ));
            }
            seeds.push(Seed {
                from,
                to,
                line: cx.line(s.from.span()),
            });
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            dir,
            name,
            routes,
            outbound,
            schedules,
            capabilities,
            custom_build,
            watch,
            seeds,
        })
    }

    /// The app's name: `[app] name`, else the cargo package's name.
    pub fn app_name(&self, package: Option<&str>) -> Result<String, ManifestError> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let err = |message: String| ManifestError {
            path: self.path.clone(),
            line: None,
            key: "[app] name".into(),
            message,
        };
        match package {
            Some(p) => app_name_from_package(p).map_err(err),
            None => Err(err(
                "the app has no name: set [app] name (it is not a cargo package)".into(),
            )),
        }
    }

    /// The grants to sign, one per capability.
    pub fn grants(&self) -> Result<Vec<Grant>, ManifestError> {
        self.capabilities
            .iter()
            .map(|c| {
                c.grant().map_err(|message| ManifestError {
                    path: self.path.clone(),
                    line: None,
                    key: "[capabilities]".into(),
                    message,
                })
            })
            .collect()
    }

    /// The schedules in the form `zero deploy --schedule` takes.
    pub fn schedule_args(&self) -> Vec<String> {
        self.schedules.iter().map(|s| s.to_arg()).collect()
    }
}

fn schedule(cx: &Ctx<'_>, s: &RawSchedule) -> Result<zerochrono::ScheduleDecl, ManifestError> {
    let name = s.name.get_ref();
    if !valid_name(name) {
        return Err(cx.err(
            s.name.span(),
            "[[schedule]] name",
            format!(
                "`{name}` is not a valid schedule name: 1 to 63 characters of a-z, 0-9, `-` and `_`"
            ),
        ));
    }
    let (expr, span, key) = match (&s.cron, &s.every) {
        (Some(c), None) => (
            c.get_ref().trim().to_string(),
            c.span(),
            "[[schedule]] cron",
        ),
        (None, Some(e)) => (
            format!("every {}", e.get_ref().trim()),
            e.span(),
            "[[schedule]] every",
        ),
        (Some(c), Some(_)) => {
            return Err(cx.err(
                c.span(),
                "[[schedule]] cron",
                format!("schedule `{name}` has both `cron` and `every`; keep one"),
            ));
        }
        (None, None) => {
            return Err(cx.err(
                s.name.span(),
                "[[schedule]]",
                format!("schedule `{name}` needs `cron = \"*/5 * * * * *\"` or `every = \"30s\"`"),
            ));
        }
    };
    let catch_up = match &s.catch_up {
        None => zerochrono::CatchUp::None,
        Some(c) => match c.get_ref().as_str() {
            "last" => zerochrono::CatchUp::Last,
            "none" => zerochrono::CatchUp::None,
            other => {
                return Err(cx.err(
                    c.span(),
                    "[[schedule]] catch_up",
                    format!("`{other}` is not `last` or `none`"),
                ));
            }
        },
    };
    let decl = zerochrono::ScheduleDecl {
        name: name.clone(),
        schedule: expr,
        time_zone: s.tz.as_ref().map(|t| t.get_ref().clone()),
        catch_up,
        retries: s.retries.as_ref().map_or(0, |r| *r.get_ref()),
    };
    if let Err(e) = zerochrono::Schedule::parse(&decl) {
        let msg = e.to_string();
        let (span, key) = match &s.tz {
            Some(tz) if msg.contains(tz.get_ref().as_str()) => (tz.span(), "[[schedule]] tz"),
            _ => (span, key),
        };
        return Err(cx.err(span, key, msg));
    }
    Ok(decl)
}

/// What a TOML syntax error says, never empty (the `toml` crate gives some errors, a bare
/// carriage return for one, no message of their own), naming a bare carriage return where the
/// error points at one (an editor shows nothing there).
fn toml_message(e: &toml::de::Error, text: &str) -> String {
    const BARE_CR: &str = "a carriage return (\\r) that is not followed by a newline: TOML \
                           allows it only in CRLF line endings; save the file with LF or CRLF \
                           line endings";
    let message = e.message().trim();
    let at = e
        .span()
        .and_then(|s| text.get(s.start..))
        .and_then(|rest| rest.chars().next());
    match (message.is_empty(), at) {
        (false, Some('\r')) => format!("{message} (found {BARE_CR})"),
        (false, _) => message.to_string(),
        (true, Some('\r')) => BARE_CR.to_string(),
        (true, Some(c)) if c.is_control() => format!(
            "the control character U+{:04X} is not allowed here in TOML; remove it, or write it \
             as an escape inside a quoted string",
            c as u32
        ),
        (true, _) => "this is not valid TOML here; see https://toml.io for the syntax".to_string(),
    }
}

#[cfg(test)]
mod tests;
