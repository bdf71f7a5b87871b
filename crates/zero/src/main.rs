//! `zero`, the zerocore command line: runs a node (`zero serve`) and the component tools
//! (`zero convert`, `zero inspect`, `zero run`). It only parses arguments and calls the
//! libraries; all behavior lives in the crates it calls.

mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zero_component::{AdapterKind, WasmKind};
use zero_node::{LogFormat, Node, NodeConfig};

#[derive(Parser)]
#[command(
    name = "zero",
    version,
    about = "zerocore: run WebAssembly components next to their owners' data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node that serves the apps declared in its configuration file.
    Serve {
        /// The node's configuration file.
        #[arg(long, short, default_value = "zerocore.toml")]
        config: PathBuf,
        /// Listen address for HTTP, overriding `[http] listen` (use port 0 for any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory, overriding `[node] data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format, overriding `[log] format`.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Turn a core module (e.g. built for wasm32-wasip1) into a component.
    Convert {
        /// The core module.
        input: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
        /// WASI adapter: command, reactor or proxy (default: inferred from the exports).
        #[arg(long)]
        adapter: Option<AdapterKind>,
    },
    /// Show what a wasm file is, what it imports and exports, its size and content hash.
    Inspect {
        /// The file.
        file: PathBuf,
    },
    /// Create or show keys (did:key, Ed25519).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Tenants (Admin).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Delegate a capability: extend a chain you hold to another DID.
    Grant {
        /// Your key (the holder of --proof).
        #[arg(long)]
        key: PathBuf,
        /// The chain file you hold (root first).
        #[arg(long)]
        proof: PathBuf,
        /// Who receives the capability.
        #[arg(long)]
        audience: String,
        /// The command granted (`/` for all, e.g. `/app/deploy`, `/fs/read`).
        #[arg(long, default_value = "/")]
        cmd: String,
        /// Policy on the arguments, as JSON, e.g. '[["==", ".path", "/site"]]'.
        #[arg(long, default_value = "[]")]
        policy: String,
        /// Seconds until the delegation expires (default: never).
        #[arg(long)]
        expires_in: Option<u64>,
        /// Where to write the extended chain.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Embed a capability token bound to the component's content hash.
    Sign {
        /// The component.
        input: PathBuf,
        /// Your key (the holder of --proof).
        #[arg(long)]
        key: PathBuf,
        /// The chain you hold (e.g. the owner chain from `zero tenant create`).
        #[arg(long)]
        proof: PathBuf,
        /// The capability the component gets, e.g. `/fs/read` or `/db` (with --policy to scope
        /// it). Required (or --cap): name what the component needs; `/` grants everything your
        /// chain allows (every file and database of the tenant).
        #[arg(long, required_unless_present = "caps", conflicts_with = "caps")]
        cmd: Option<String>,
        /// Policy on the arguments of --cmd, as JSON.
        #[arg(long, default_value = "[]", conflicts_with = "caps")]
        policy: String,
        /// One capability the component gets, as a command and an optional JSON policy
        /// (repeatable; instead of --cmd/--policy): e.g. `--cap '/fs/read [["==", ".path",
        /// "/site"]]' --cap '/db [["==", ".table", "notes"]]'`. A host call is allowed when
        /// one of them allows it.
        #[arg(long = "cap", value_name = "CAPABILITY")]
        caps: Vec<String>,
        /// Seconds until the token expires (default: never).
        #[arg(long)]
        expires_in: Option<u64>,
        /// Where to write the signed component (conventionally NAME.zero.wasm).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Deploy a component into a tenant over the management API; without a file, build the
    /// project here (its zero.toml: routes, schedules, outgoing hosts, capabilities), sign it
    /// with --key and --proof, and deploy every app.
    Deploy {
        /// The component (signed or not); omit it to build and deploy the project in --path.
        file: Option<PathBuf>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The app's name (default: the file name without extensions).
        #[arg(long, requires = "file")]
        app: Option<String>,
        /// A route: /path or host/path (repeatable; with a file, at least one route or one
        /// schedule).
        #[arg(long = "route", requires = "file")]
        routes: Vec<String>,
        /// A schedule that runs the component's `zero:chrono/tick-handler` (repeatable):
        /// `name=EXPRESSION[;tz=ZONE][;catch_up=last][;retries=N]`, with a cron expression
        /// with seconds (`tick=*/5 * * * * *`) or an interval (`sync=every 30s`). Needs
        /// `/chrono/schedule` in the chain.
        #[arg(long = "schedule", requires = "file")]
        schedules: Vec<String>,
        /// A host the app may reach with outgoing HTTP (repeatable): `host`, `host:port`,
        /// `*.domain` or `*`, within the node's `[outbound] allowed_hosts_ceiling`; only public
        /// addresses unless the node's operator allows others.
        #[arg(long = "allow-outbound", requires = "file")]
        outbound: Vec<String>,
        /// Without a file: the project directory.
        #[arg(long, default_value = ".", conflicts_with = "file")]
        path: PathBuf,
        /// Without a file: also upload the manifests' [[seed]] files (replacing those files).
        #[arg(long, conflicts_with = "file")]
        seed: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Create a project: Cargo.toml, src/lib.rs, zero.toml and the SDK (then `zero up`).
    New {
        /// The project's (and app's) name: a-z, 0-9, `-`, `_`, starting with a letter.
        name: String,
        /// What it starts as: http (Hello, World!), todo (a JSON API over zerodb) or cron (a
        /// schedule and a page).
        #[arg(long, default_value = "http")]
        template: zero_dev::new::Template,
    },
    /// Build the project's apps for wasm32-wasip2 and sign each as NAME.zero.wasm with exactly
    /// the capabilities its zero.toml names (with your local development key unless --key
    /// and --proof are given).
    Build {
        /// The project directory (an app, or a cargo workspace of apps).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Sign with this key instead of the local development key (with --proof).
        #[arg(long, requires = "proof")]
        key: Option<PathBuf>,
        /// The chain --key holds (e.g. from `zero tenant create` on the node you deploy to).
        #[arg(long, requires = "key")]
        proof: Option<PathBuf>,
    },
    /// Run the project on a local node: build, deploy, serve, rebuild and redeploy on every
    /// change, stream the apps' logs. Ctrl-C stops.
    Up {
        /// The project directory (an app, or a cargo workspace of apps).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// The local node's HTTP address (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
    },
    /// The app manifest, zero.toml.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// List or remove deployed apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Revoke a delegation; components and invocations relying on it are refused. Allowed to
    /// the delegation's own issuer and to the Admin.
    Revoke {
        /// The CID of the delegation (default: the last one of --chain).
        cid: Option<String>,
        /// The revoked delegation's chain, root first: a chain file (such as one `zero grant`
        /// wrote) or a signed component. Omit only when the Admin revokes by CID.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Management API of the node.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        api: String,
        /// The revoker's key: an issuer in the chain, or the Admin.
        #[arg(long)]
        key: PathBuf,
        /// Trust only the certificates in this PEM file for an https:// --api (see `zero tls`).
        #[arg(long, env = "ZERO_CA", value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// A tenant's files in zerofs: put, get, ls, rm, mkdir (streamed, as UCAN invocations).
    #[command(subcommand)]
    Fs(FsCommand),
    /// Tenant databases (zerodb) over the management API.
    #[command(subcommand)]
    Db(DbCommand),
    /// A tenant's cache (zerocache) over the management API: get, set, del.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// A tenant's schedules (zerochrono) over the management API: list, run.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Print the node's metrics in the Prometheus text format (needs `/node/metrics`: the
    /// Admin's key, or a key the Admin delegated it to).
    Metrics {
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Print a tenant's log lines (guest output, access lines, faults), or with --node the
    /// node's events (deploys, removals, revocations, tenants, faults): the recent lines, then
    /// with --follow every new one until Ctrl-C.
    Logs {
        /// The tenant (needs `/log/read` on it: its owner's chain has it).
        #[arg(long, required_unless_present = "node", conflicts_with = "node")]
        tenant: Option<String>,
        /// Only this app's lines.
        #[arg(long, requires = "tenant")]
        app: Option<String>,
        /// The node's events instead (needs `/node/events`: the Admin's key).
        #[arg(long)]
        node: bool,
        /// Keep printing new lines as they are written.
        #[arg(long, short)]
        follow: bool,
        /// Print each line as the node sends it, one JSON object a line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Certificates for a tenant's hosts, served by SNI on the node's HTTPS listener: put,
    /// list, remove (the host must be granted to the tenant by the Admin).
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Offline UCAN checks.
    #[command(subcommand)]
    Ucan(UcanCommand),
    /// Run a command component (wasi:cli/run) with this terminal's stdio; its exit code becomes ours.
    Run {
        /// The component.
        file: PathBuf,
        /// Preopen a host directory: HOST or HOST::GUEST (repeatable).
        #[arg(long = "dir", value_name = "HOST[::GUEST]")]
        dirs: Vec<String>,
        /// Set an environment variable: KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        envs: Vec<String>,
        /// Arguments passed to the component.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print the JSON schema of zero.toml (for editors).
    Schema,
    /// Check a zero.toml and print the capabilities it grants, as signed.
    Check {
        /// The manifest.
        #[arg(default_value = "zero.toml")]
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ApiAuth {
    /// Management API of the node (`https://…` when the node serves it over TLS).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Trust only the certificates in this PEM file for an https:// --api: the node's own
    /// (self-signed) certificate or the authority that issued it; without it the public
    /// certificate authorities are trusted.
    #[arg(long, env = "ZERO_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The key that signs the invocation.
    #[arg(long)]
    key: PathBuf,
    /// The chain that authorizes it (omit when --key is the Admin's).
    #[arg(long)]
    proof: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key file (mode 0600) and print its DID.
    New {
        /// Where to write the key.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Print the DID of a key file.
    Did {
        /// The key file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and delegate it to its owner; writes the owner's chain file.
    Create {
        /// Tenant name.
        name: String,
        /// The owner's DID.
        #[arg(long)]
        owner: String,
        /// A host the tenant's apps may claim routes on (`acme.example`, or `*.acme.example`
        /// for its subdomains); repeatable. Running the command again replaces the grants.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// The Admin's key.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the owner's chain (give it to the owner).
        #[arg(long, short)]
        output: PathBuf,
        /// Seconds until the owner's delegation expires (default: never).
        #[arg(long)]
        expires_in: Option<u64>,
        /// Management API of the node.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        api: String,
        /// Trust only the certificates in this PEM file for an https:// --api.
        #[arg(long, env = "ZERO_CA", value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// List the node's tenants with their owners, hosts and number of apps (the Admin, or a
    /// key the Admin delegated `/tenant/list` to).
    List {
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Install a certificate chain and its private key for HOST (`acme.example`, or
    /// `*.acme.example`), replacing an earlier one: the node checks that the Admin granted the
    /// host to the tenant, that the certificate names it, is within its dates and that the
    /// key is its own, then serves it to clients asking for HOST (SNI).
    Put {
        /// The host: `acme.example`, or `*.acme.example` for a wildcard certificate.
        host: String,
        /// The tenant the host is granted to.
        #[arg(long)]
        tenant: String,
        /// The PEM certificate chain (the host's certificate first, then intermediates).
        #[arg(long)]
        cert: PathBuf,
        /// The certificate's PEM private key (sent to the node, which stores it mode 0600 and
        /// never returns it). `--key` is the key that signs the invocation, as everywhere.
        #[arg(long = "cert-key", value_name = "FILE")]
        cert_key: PathBuf,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// List certificates: host, tenant, expiry, days left, SHA-256 fingerprint, whether it is
    /// served. With --tenant that tenant's (its owner's chain); without, every tenant's (the
    /// Admin's key).
    List {
        /// The tenant (omit for every tenant's, with the Admin's key).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the node's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Remove the certificate of HOST; the node's default certificate is served for it from
    /// the next connection.
    Remove {
        /// The host, as given to `zero tls put`.
        host: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum SchedulesCommand {
    /// List a tenant's schedules: when each is next due, when it last ran, whether it runs.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Run a schedule now and wait for the end of the run (not retried).
    Run {
        /// The schedule's name.
        name: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The app that declares it.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum AppsCommand {
    /// List a tenant's deployed apps.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Remove an app.
    Remove {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum FsCommand {
    /// Upload a local file (or `-` for stdin) to TENANT:/path.
    Put {
        /// The local file, or `-` for standard input.
        local: PathBuf,
        /// Where: TENANT:/path.
        remote: String,
        /// Create missing parent directories.
        #[arg(long, short)]
        parents: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Download TENANT:/path to a local file (or standard output when omitted or `-`).
    Get {
        /// What: TENANT:/path.
        remote: String,
        /// The local file to write (written whole or not at all).
        local: Option<PathBuf>,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// List a directory (or describe a file).
    Ls {
        /// What: TENANT:/path.
        remote: String,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Remove a file or an empty directory.
    Rm {
        /// What: TENANT:/path.
        remote: String,
        /// Remove a directory and everything under it.
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Create a directory.
    Mkdir {
        /// Where: TENANT:/path.
        remote: String,
        /// Create missing parents too; an existing directory is not an error.
        #[arg(long, short)]
        parents: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Run one SQL statement (a query, a write or a migration such as CREATE TABLE).
    Query {
        /// TENANT/DB, e.g. acme/todo.
        target: String,
        /// The SQL statement.
        sql: String,
        /// A parameter as JSON: 42, 1.5, "text", null, {"hex": "00ff"} (repeatable, in order).
        #[arg(long = "param", value_name = "JSON")]
        params: Vec<String>,
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// List the names of a tenant's databases (`/db/list`).
    List {
        /// The tenant.
        tenant: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print the value of KEY (its raw bytes); exits with 1 when the key is absent.
    Get {
        /// The tenant.
        tenant: String,
        /// The key.
        #[arg(id = "cache_key", value_name = "KEY")]
        key: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Store VALUE under KEY (`/cache/write`).
    Set {
        /// The tenant.
        tenant: String,
        /// The key.
        #[arg(id = "cache_key", value_name = "KEY")]
        key: String,
        /// The value (stored as its UTF-8 bytes).
        value: String,
        /// Expire the entry after this many milliseconds (default: never).
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[command(flatten)]
        auth: ApiAuth,
    },
    /// Remove KEY (`/cache/write`; nothing happens when it is absent).
    Del {
        /// The tenant.
        tenant: String,
        /// The key.
        #[arg(id = "cache_key", value_name = "KEY")]
        key: String,
        #[command(flatten)]
        auth: ApiAuth,
    },
}

#[derive(Subcommand)]
enum UcanCommand {
    /// Verify an invocation and its proofs offline; prints `ok` or the failed check's name last.
    VerifyInvocation {
        /// Standard base64 of the invocation's DAG-CBOR envelope.
        #[arg(long)]
        invocation: String,
        /// Standard base64 of a delegation it cites (repeatable, any order).
        #[arg(long)]
        proof: Vec<String>,
        /// Check at this Unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
}

fn client(auth: &ApiAuth) -> anyhow::Result<zero_client::Client> {
    let key = zero_client::load_key(&auth.key)?;
    let proofs = match &auth.proof {
        Some(p) => zero_client::read_chain(p)?,
        None => vec![],
    };
    zero_client::Client::new(&auth.api, key, proofs).with_ca(auth.ca.as_deref())
}

/// Reads a PEM file given to `zero tls put`.
fn read_pem(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a PEM {what} (not text); convert it, e.g. `openssl x509 -in FILE -out {}.pem`",
            path.display(),
            path.display()
        )
    })
}

fn tls_command(cmd: TlsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TlsCommand::Put {
            host,
            tenant,
            cert,
            cert_key,
            auth,
        } => {
            let cert = read_pem(&cert, "certificate")?;
            let key = read_pem(&cert_key, "private key")?;
            print_json(&client(&auth)?.tls_put(&tenant, &host, &cert, &key)?);
        }
        TlsCommand::List { tenant, json, auth } => {
            let v = client(&auth)?.tls_list(tenant.as_deref())?;
            if json {
                print_json(&v);
            } else {
                for line in render::format_certificates(&v) {
                    println!("{line}");
                }
            }
        }
        TlsCommand::Remove { host, tenant, auth } => {
            print_json(&client(&auth)?.tls_remove(&tenant, &host)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fs_command(cmd: FsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FsCommand::Put {
            local,
            remote,
            parents,
            auth,
        } => {
            let (tenant, path) = zero_client::parse_remote(&remote)?;
            let mut client = client(&auth)?;
            let answer = if local.as_os_str() == "-" {
                client.fs_put(tenant, path, std::io::stdin().lock(), parents)?
            } else {
                let file = std::fs::File::open(&local)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", local.display()))?;
                client.fs_put(tenant, path, std::io::BufReader::new(file), parents)?
            };
            print_json(&answer);
        }
        FsCommand::Get {
            remote,
            local,
            auth,
        } => {
            let (tenant, path) = zero_client::parse_remote(&remote)?;
            let mut client = client(&auth)?;
            match local.filter(|l| l.as_os_str() != "-") {
                None => {
                    client.fs_get(tenant, path, &mut std::io::stdout().lock())?;
                }
                Some(local) => zero_client::write_file_atomically(&local, |out| {
                    client.fs_get(tenant, path, out).map(|_| ())
                })?,
            }
        }
        FsCommand::Ls { remote, json, auth } => {
            let (tenant, path) = zero_client::parse_remote(&remote)?;
            let answer = client(&auth)?.fs_list(tenant, path)?;
            if json {
                print_json(&answer);
            } else {
                for line in render::format_listing(&answer) {
                    println!("{line}");
                }
            }
        }
        FsCommand::Rm {
            remote,
            recursive,
            auth,
        } => {
            let (tenant, path) = zero_client::parse_remote(&remote)?;
            print_json(&client(&auth)?.fs_remove(tenant, path, recursive)?);
        }
        FsCommand::Mkdir {
            remote,
            parents,
            auth,
        } => {
            let (tenant, path) = zero_client::parse_remote(&remote)?;
            print_json(&client(&auth)?.fs_mkdir(tenant, path, parents)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Up { .. } | Command::Run { .. }
    ) {
        stop_quietly_on_closed_stdout();
    } else {
        no_error_backtraces();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes a command that only prints (`zero inspect FILE | head`) end as `cat` does when the
/// reader of its output goes away, instead of panicking in `println!` on the broken pipe.
/// Rust ignores SIGPIPE by default; this restores the default action for this process. Not
/// for the node (`serve`, `up`), whose log writes must never kill it, nor `run`, whose guest's
/// output errors are the guest's to handle.
fn stop_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default takes no pointers; it happens
    // before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps error values from capturing backtraces in the node (`serve`, `up`, `run`) unless
/// `RUST_LIB_BACKTRACE` asks for them: with `RUST_BACKTRACE=1` in the environment every error
/// value carried one (a cost on every request), and a guest asking for an error's text
/// (`wasi:io/error.to-debug-string`) made the node symbolize it, hundreds of milliseconds of
/// CPU in a debug build. Panics still print backtraces as `RUST_BACKTRACE` says.
fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before the runtime or any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            log_format,
        } => {
            let mut cfg = NodeConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.node.data_dir = std::env::current_dir()?.join(d);
            }
            if let Some(f) = log_format {
                cfg.log.format = if f == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                };
            }
            let _log = zero_node::init_logging(cfg.log.format, &cfg.log.level)?;
            let scheme = |tls: bool| if tls { "https" } else { "http" };
            let http_scheme = scheme(cfg.http.tls_cert.is_some());
            let admin_scheme = scheme(cfg.admin.tls_cert.is_some());
            let node = Node::start(cfg).await?;
            println!(
                "zero node ready: curl {http_scheme}://{}/",
                node.http_addr()
            );
            println!(
                "management API: {admin_scheme}://{} (node {})",
                node.admin_addr(),
                node.did()
            );
            node.run_until_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert {
            input,
            output,
            adapter,
        } => {
            let bytes = read(&input)?;
            let name = input.display().to_string();
            let (component, used) = zero_component::convert(&bytes, &name, adapter)?;
            std::fs::write(&output, &component)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!(
                "wrote {} ({} bytes, {used} adapter)",
                output.display(),
                component.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file } => {
            let bytes = read(&file)?;
            let name = file.display().to_string();
            let info = zero_component::inspect(&bytes, &name)?;
            println!("file:    {name}");
            println!("kind:    {}", info.kind);
            println!("size:    {} bytes", info.size);
            println!("hash:    {}", info.hash);
            if let Some(world) = &info.world {
                println!("world:   {} (WASI {})", world.name, world.wasi);
            }
            if !info.wasi_imports.is_empty() {
                println!("wasi:    imports WASI {}", info.wasi_imports.join(" and "));
            }
            println!("imports: ({})", info.imports.len());
            for i in &info.imports {
                println!("  {i}");
            }
            println!("exports: ({})", info.exports.len());
            for e in &info.exports {
                println!("  {e}");
            }
            if !info.custom_sections.is_empty() {
                println!("custom sections: {}", info.custom_sections.join(", "));
            }
            if let Ok(sections) = zero_component::custom_sections(&bytes) {
                for sec in sections
                    .iter()
                    .filter(|s| s.name == zero_component::UCAN_SECTION)
                {
                    match zero_auth::component::decode_chains(&bytes[sec.data.clone()]) {
                        Ok(chains) => {
                            for line in render::describe_chains(&chains) {
                                println!("{line}");
                            }
                        }
                        Err(e) => println!("capabilities: the ucan section is invalid: {e}"),
                    }
                }
            }
            if info.kind == WasmKind::CoreModule {
                println!(
                    "note: this is a core module; make it a component with `zero convert {name} -o app.wasm`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::New { output }) => {
            if output.exists() {
                anyhow::bail!(
                    "{} already exists; choose another path (keys are never overwritten)",
                    output.display()
                );
            }
            let key = zero_auth::Keypair::generate()?;
            key.save(&output)?;
            println!("{}", key.did());
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::Did { file }) => {
            println!("{}", zero_client::load_key(&file)?.did());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(TenantCommand::Create {
            name,
            owner,
            hosts,
            key,
            output,
            expires_in,
            api,
            ca,
        }) => {
            let admin = zero_client::load_key(&key)?;
            let owner = zero_auth::Did::parse(&owner)?;
            let delegation = zero_client::owner_delegation(&admin, &name, &owner, expires_in)?;
            let mut c = zero_client::Client::new(&api, admin, vec![]).with_ca(ca.as_deref())?;
            let v = c.create_tenant_with_hosts(&name, &owner, &hosts)?;
            zero_client::write_chain(&output, std::slice::from_ref(&delegation))?;
            print_json(&v);
            eprintln!("owner chain written to {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(TenantCommand::List { auth }) => {
            print_json(&client(&auth)?.list_tenants()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Grant {
            key,
            proof,
            audience,
            cmd,
            policy,
            expires_in,
            output,
        } => {
            let key = zero_client::load_key(&key)?;
            let chain = zero_client::read_chain(&proof)?;
            let audience = zero_auth::Did::parse(&audience)?;
            let grant = zero_client::Grant {
                command: cmd,
                policy: zero_client::parse_policy(&policy)?,
                expires_in,
            };
            let chain = zero_client::extend_chain(&key, &chain, &audience, &grant)?;
            zero_client::write_chain(&output, &chain)?;
            for line in render::describe_chain(&chain) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign {
            input,
            key,
            proof,
            cmd,
            policy,
            caps,
            expires_in,
            output,
        } => {
            let bytes = read(&input)?;
            let key = zero_client::load_key(&key)?;
            let chain = zero_client::read_chain(&proof)?;
            let grants = match cmd {
                Some(command) => vec![zero_client::Grant {
                    command,
                    policy: zero_client::parse_policy(&policy)?,
                    expires_in,
                }],
                None => caps
                    .iter()
                    .map(|c| zero_client::parse_capability(c, expires_in))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            };
            let signed = zero_client::sign_component_grants(&bytes, &key, &chain, &grants)?;
            std::fs::write(&output, &signed)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!(
                "wrote {} (content hash {})",
                output.display(),
                zero_component::content_hash(&signed)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            file,
            tenant,
            app,
            routes,
            outbound,
            schedules,
            path,
            seed,
            auth,
        } => {
            let Some(file) = file else {
                let signer = zero_dev::build::Signer {
                    key: zero_client::load_key(&auth.key)?,
                    chain: match &auth.proof {
                        Some(p) => zero_client::read_chain(p)?,
                        None => vec![],
                    },
                };
                let mut client = client(&auth)?;
                for v in zero_dev::deploy_project(&path, &signer, &mut client, &tenant, seed)? {
                    print_json(&v);
                }
                return Ok(ExitCode::SUCCESS);
            };
            if routes.is_empty() && schedules.is_empty() {
                anyhow::bail!(
                    "give the app at least one --route (/path or host/path) or one --schedule"
                );
            }
            let bytes = read(&file)?;
            let app = match app {
                Some(a) => a,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .map(|n| n.replace('_', "-"))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "cannot derive an app name from {}; pass --app",
                            file.display()
                        )
                    })?,
            };
            let v = client(&auth)?
                .deploy_with_schedules(&tenant, &app, &routes, &outbound, &schedules, &bytes)?;
            print_json(&v);
            Ok(ExitCode::SUCCESS)
        }
        Command::Apps(AppsCommand::List { tenant, auth }) => {
            print_json(&client(&auth)?.list_apps(&tenant)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Apps(AppsCommand::Remove { tenant, app, auth }) => {
            print_json(&client(&auth)?.remove_app(&tenant, &app)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::List { tenant, auth }) => {
            print_json(&client(&auth)?.list_databases(&tenant)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Query {
            target,
            sql,
            params,
            json,
            auth,
        }) => {
            let (tenant, db) = target.split_once('/').ok_or_else(|| {
                anyhow::anyhow!("`{target}` is not TENANT/DB; write it like acme/todo")
            })?;
            let params = params
                .iter()
                .map(|p| {
                    serde_json::from_str(p).map_err(|e| {
                        anyhow::anyhow!(
                            "--param {p}: not JSON ({e}); write 42, 1.5, '\"text\"', null or '{{\"hex\": \"00ff\"}}'"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
            let v = client(&auth)?.db_query(tenant, db, &sql, &params)?;
            if json {
                print_json(&v);
            } else {
                println!("{}", render::format_query_result(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke {
            cid,
            chain,
            api,
            key,
            ca,
        } => {
            let chain = match &chain {
                Some(p) => {
                    pick_chain(p, zero_client::read_chains_or_component(p)?, cid.as_deref())?
                }
                None => vec![],
            };
            let mut client = zero_client::Client::new(&api, zero_client::load_key(&key)?, vec![])
                .with_ca(ca.as_deref())?;
            print_json(&client.revoke_in_chain(cid.as_deref(), &chain)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, template } => {
            let cwd = std::env::current_dir()?;
            zero_dev::new::new_project(&cwd, &name, template)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { path, key, proof } => {
            let signer = match (key, proof) {
                (Some(k), Some(p)) => zero_dev::build::Signer {
                    key: zero_client::load_key(&k)?,
                    chain: zero_client::read_chain(&p)?,
                },
                _ => {
                    let id = zero_dev::home::DevIdentity::load_or_create()?;
                    zero_dev::ui::step(
                        "key",
                        &format!(
                            "signing with your local development key ({}): for a remote node pass the --key and --proof it gave you",
                            id.dir.display()
                        ),
                    );
                    zero_dev::build::Signer {
                        key: id.developer,
                        chain: id.chain,
                    }
                }
            };
            let project = zero_dev::project::discover(&path)?;
            for b in zero_dev::build::build(&project, &signer)? {
                println!("{}", b.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { path, listen } => {
            let opts = zero_dev::up::UpOptions {
                dir: path,
                listen,
                zero_bin: std::env::current_exe()?,
            };
            tokio::task::spawn_blocking(move || zero_dev::up::up(opts)).await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest(ManifestCommand::Schema) => {
            print_json(&zero_manifest::schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest(ManifestCommand::Check { file }) => {
            let m = zero_manifest::Manifest::load(&file)?;
            println!("{}: ok", file.display());
            for c in &m.capabilities {
                println!("  {c}: {} {}", c.command(), c.policy_json());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fs(cmd) => fs_command(cmd),
        Command::Tls(cmd) => tls_command(cmd),
        Command::Cache(cmd) => cache_command(cmd),
        Command::Schedules(cmd) => schedules_command(cmd),
        Command::Metrics { auth } => {
            let text = tokio::task::spawn_blocking(move || client(&auth)?.metrics()).await??;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            tenant,
            app,
            node: _,
            follow,
            json,
            auth,
        } => {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                client(&auth)?.stream_logs(tenant.as_deref(), app.as_deref(), follow, |v| {
                    let text = if json {
                        v.to_string()
                    } else {
                        render::format_log_line(&v)
                    };
                    // A closed stdout (`| head`) ends the stream.
                    writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
                })
            })
            .await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ucan(UcanCommand::VerifyInvocation {
            invocation,
            proof,
            at,
        }) => match zero_auth::verify_invocation_offline(&invocation, &proof, at) {
            Ok(v) => {
                println!(
                    "invocation {} by {}: {} on {}",
                    v.cid, v.issuer, v.command, v.subject
                );
                println!("ok");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                println!("{}", e.name());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run {
            file,
            dirs,
            envs,
            args,
        } => {
            let bytes = read(&file)?;
            let mut opts = zerocore::command::CommandOptions {
                program_name: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "main.wasm".into()),
                args,
                ..Default::default()
            };
            for d in dirs {
                let (host, guest) = match d.split_once("::") {
                    Some((h, g)) => (h.to_string(), g.to_string()),
                    None => (d.clone(), d.clone()),
                };
                if host.is_empty() || guest.is_empty() {
                    anyhow::bail!("--dir `{d}`: write HOST or HOST::GUEST");
                }
                opts.dirs.push((PathBuf::from(host), guest));
            }
            for e in envs {
                let Some((k, v)) = e.split_once('=') else {
                    anyhow::bail!("--env `{e}`: write KEY=VALUE");
                };
                if k.is_empty() {
                    anyhow::bail!("--env `{e}`: the variable name is empty");
                }
                opts.env.push((k.to_string(), v.to_string()));
            }
            let code =
                zerocore::command::run_command(&bytes, &file.display().to_string(), opts).await?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

fn schedules_command(cmd: SchedulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchedulesCommand::List { tenant, auth } => {
            print_json(&client(&auth)?.list_schedules(&tenant)?);
            Ok(ExitCode::SUCCESS)
        }
        SchedulesCommand::Run {
            name,
            tenant,
            app,
            auth,
        } => {
            let v = client(&auth)?.run_schedule(&tenant, &app, &name)?;
            print_json(&v);
            // The call succeeded; the exit code says whether the run did.
            Ok(if v["ok"] == serde_json::Value::Bool(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn cache_command(cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CacheCommand::Get { tenant, key, auth } => match client(&auth)?.cache_get(&tenant, &key)? {
            Some(value) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!(
                    "key `{key}` is not in the cache of tenant `{tenant}` (never set, deleted, expired or evicted)"
                );
                Ok(ExitCode::FAILURE)
            }
        },
        CacheCommand::Set {
            tenant,
            key,
            value,
            ttl_ms,
            auth,
        } => {
            if ttl_ms == Some(0) {
                anyhow::bail!(
                    "--ttl-ms 0: give a positive number of milliseconds, or omit it for no expiry"
                );
            }
            print_json(&client(&auth)?.cache_set(&tenant, &key, value.as_bytes(), ttl_ms)?);
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Del { tenant, key, auth } => {
            print_json(&client(&auth)?.cache_delete(&tenant, &key)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The chain of `chains` (read from `path`) that holds the delegation `cid` to revoke, or the
/// only one when no CID is given.
fn pick_chain(
    path: &std::path::Path,
    mut chains: Vec<Vec<zero_auth::Delegation>>,
    cid: Option<&str>,
) -> anyhow::Result<Vec<zero_auth::Delegation>> {
    if let Some(cid) = cid
        && let Some(i) = chains
            .iter()
            .position(|c| c.iter().any(|d| d.cid().to_string() == cid))
    {
        return Ok(chains.swap_remove(i));
    }
    if chains.len() == 1 {
        return Ok(chains.swap_remove(0));
    }
    match cid {
        Some(cid) => anyhow::bail!(
            "{cid} is in none of the {} capability chains of {}; see them with `zero inspect`",
            chains.len(),
            path.display()
        ),
        None => anyhow::bail!(
            "{} carries {} capability chains; name the CID of the delegation to revoke (see `zero inspect {}`)",
            path.display(),
            chains.len(),
            path.display()
        ),
    }
}
