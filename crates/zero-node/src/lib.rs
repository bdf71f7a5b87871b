//! A zerocore node: reads `zerocore.toml`, builds the runtime with its providers, loads the
//! declared apps and serves them.
//!
//! This is the one place where concrete providers are named and registered ([`Providers`], one
//! line each in `zerocore::providers!`, built by [`providers`]); everything else talks to them
//! through the traits in `zero-provider` and the core's generic [`Runtime`]. The `zero` CLI's `serve`
//! command is a thin wrapper around [`Node::start`].

#![deny(missing_docs)]

pub mod api;
pub mod apps;
mod bodyrate;
mod cacheapi;
mod chronoapi;
pub mod code;
pub mod config;
pub mod console;
mod dbapi;
mod deploy;
pub mod events;
pub mod fsapi;
pub mod hostcerts;
pub mod identity;
pub mod metrics;
pub mod mgmt;
mod obsapi;
mod outbound;
/// Node-to-node channels (mutual TLS bound to node DIDs); they live in `zeroraft`, which the
/// cluster's replication runs on.
pub use zeroraft::peer;
pub mod revocation;
pub mod state;
pub mod telemetry;
mod tlsapi;
mod ucan;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use zero_provider::EventProvider;
use zerocore::{App, CoreConfig};
use zeroproxy::{HttpApp, HttpResources, Route, ZeroProxy};

pub use config::{LogFormat, NodeConfig};

zerocore::providers! {
    /// The resource providers of this node, in registration order: the single place where
    /// providers are named, one line each (the WASI base is the core's own).
    pub struct Providers, data ProviderData, apps ProviderApps {
        http: zeroproxy::HttpResources,
        fs: zerofs::wasi::FsProvider,
        db: zerodb::DbProvider,
        cache: zerocache::CacheProvider,
        chrono: zerochrono::ChronoProvider,
    }
}

/// The node's runtime: the core over this node's [`Providers`].
pub type Runtime = zerocore::Runtime<Providers>;

/// Builds the node's providers from their settings. `fs` is the tenants' file store, served to
/// components as `wasi:filesystem`, and `databases` are the tenants' SQL databases, served as
/// `zero:db` (both opened once by [`Node::start`]). `outbound` is the operator's rule for
/// components' outgoing HTTP. `cache` is the tenants' in-memory cache, served as `zero:cache`.
/// `chrono` is the apps' schedules, which an app reads as `zero:chrono/schedules`.
pub fn providers(
    fs: Arc<zerofs::ZeroFs>,
    fs_limits: zerofs::wasi::FsLimits,
    databases: Arc<zerodb::Databases>,
    outbound: Arc<zeroproxy::OutboundConfig>,
    cache: Arc<zerocache::Cache>,
    chrono: zerochrono::Chrono,
) -> Providers {
    Providers {
        http: HttpResources::new(outbound),
        fs: zerofs::wasi::FsProvider::new(fs).with_limits(fs_limits),
        db: zerodb::DbProvider::new(databases),
        cache: zerocache::CacheProvider::new(cache),
        chrono: zerochrono::ChronoProvider::new(chrono),
    }
}

/// Log lines held for stderr while it is slower than the node (about 300 bytes each in JSON):
/// seconds of the heaviest logging the node does (a line for every refused request).
const LOG_BUFFER_LINES: usize = 32_768;

/// How often the node says how many log lines it dropped because stderr could not keep up.
const LOG_DROPS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The node's log writer: lines are written to stderr by a thread of their own, so a slow
/// reader of stderr (a full pipe, a paused terminal) never holds up a thread that serves
/// requests. Dropping it writes what is still buffered.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Sets up logging to stderr: human-readable or JSON, filtered by `RUST_LOG` if set, else by
/// `level`. Keep the guard for as long as the node logs.
///
/// The lines go through a buffer of [`LOG_BUFFER_LINES`] to a writer thread. When stderr is
/// slower than the node for longer than the buffer holds, new lines are dropped rather than
/// the node being slowed (a tenant's flood of refused requests would otherwise stall every
/// tenant behind the log), and every [`LOG_DROPS_EVERY`] a warning says how many were.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<LogGuard> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| anyhow::anyhow!("RUST_LOG=`{v}` is not a valid log filter: {e}"))?,
        _ => EnvFilter::try_new(level).map_err(|e| {
            anyhow::anyhow!(
                "log level `{level}` is not a valid log filter (try `info` or `debug`): {e}"
            )
        })?,
    };
    // Records of the `log` crate (wasmtime logs a few at trace level on every request) are
    // bridged into tracing, and each one that passes `log`'s own level check costs a dispatch
    // through every layer: 16% of a hello request's instructions (callgrind) with the level
    // left at trace. The node's tap takes tracing events only (targets `guest` and `access`),
    // so the log level is that of the node's own filter.
    let log_level = match filter.max_level_hint() {
        Some(l) if l == tracing::level_filters::LevelFilter::OFF => log::LevelFilter::Off,
        Some(l) if l == tracing::level_filters::LevelFilter::ERROR => log::LevelFilter::Error,
        Some(l) if l == tracing::level_filters::LevelFilter::WARN => log::LevelFilter::Warn,
        Some(l) if l == tracing::level_filters::LevelFilter::INFO => log::LevelFilter::Info,
        Some(l) if l == tracing::level_filters::LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(true)
        .thread_name("zero-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    // Guest and access lines also go to the tenants' streams (`zero logs`), whatever the
    // level of the node's own log.
    tracing_subscriber::registry()
        .with(fmt)
        .with(events::TapLayer::new(events::hub()).with_filter(events::tap_filter()))
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging is already initialized: {e}"))?;
    log::set_max_level(log_level);
    std::thread::Builder::new()
        .name("zero-log-drops".into())
        .spawn(move || {
            let mut reported = 0;
            loop {
                std::thread::sleep(LOG_DROPS_EVERY);
                let now = dropped.dropped_lines();
                if now > reported {
                    tracing::warn!(
                        dropped = now - reported,
                        "log lines were dropped: stderr did not keep up with the node (read the node's stderr faster, or log less: [log] level = \"warn\")"
                    );
                    reported = now;
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the log watcher thread: {e}"))?;
    Ok(LogGuard { _writer: guard })
}

/// A running node.
pub struct Node {
    proxy: Arc<ZeroProxy>,
    shutdown: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    ticking: tokio::task::JoinHandle<anyhow::Result<()>>,
    admin: tokio::task::JoinHandle<()>,
    admin_addr: std::net::SocketAddr,
    node_did: String,
    api: Arc<api::Api>,
    /// The trace exporter, when `[telemetry]` turned traces on.
    telemetry: Option<telemetry::Telemetry>,
}

impl Node {
    /// Builds the runtime, binds the HTTP listener, loads every app and starts serving.
    ///
    /// An app that fails to load does not stop the node: it is logged with the reason and its
    /// routes answer 503, while the other apps serve.
    pub async fn start(mut config: NodeConfig) -> anyhow::Result<Node> {
        let data_dir = config.resolve(&config.node.data_dir);
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e} (set [node] data_dir to a writable place)",
                data_dir.display()
            )
        })?;
        let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
        check_fd_limit(config.fs.max_open_files);
        let telemetry = telemetry::start(&config.telemetry)?;
        let core = CoreConfig {
            artifact_dir: match &config.engine.artifact_dir {
                Some(dir) => config.resolve(dir),
                None => data_dir.join("aot"),
            },
            artifact_key: match &config.engine.artifact_key {
                Some(key) => config.resolve(key),
                None => data_dir.join("artifact.key"),
            },
            limits: config.limits.clone(),
            pooling: config.engine.pooling,
            tiered_compilation: config.engine.tiered_compilation,
            pool_instances: (config.http.max_concurrent as u32).saturating_add(16),
            pool: config.pool.clone(),
            heavy_after: std::time::Duration::from_millis(config.engine.heavy_after_ms),
            guest_slots: config.engine.guest_slots,
        };
        let fs_root = data_dir.join("fs");
        let fs = {
            let quota = config.fs.quota();
            let root = fs_root.clone();
            tokio::task::spawn_blocking(move || zerofs::ZeroFs::open(root, quota))
                .await
                .map_err(|e| anyhow::anyhow!("opening the file store failed: {e}"))?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the file store at {}: {e} (is another node using this data directory?)",
                        fs_root.display()
                    )
                })?
        };
        let fs = Arc::new(fs);
        let db_root = data_dir.join("db");
        let databases = Arc::new(
            zerodb::Databases::open(&db_root, config.db.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the database directory {}: {e} (set [node] data_dir to a writable place)",
                    db_root.display()
                )
            })?,
        );
        let outbound = Arc::new(std::mem::take(&mut config.outbound));
        let cache = Arc::new(zerocache::Cache::new(config.cache.clone()));
        // Every event provider takes its runs' slots here, so that the instance pool (sized
        // from max_concurrent_requests) has an instance for every admitted run.
        let admission = zero_provider::admission::Admission::new(
            config.http.max_concurrent,
            config.http.max_concurrent_per_tenant,
        );
        let chrono = zerochrono::Chrono::new(
            config.chrono.clone(),
            Arc::new(zerochrono::SystemClock),
            Some(data_dir.join("chrono")),
            config.limits.wall_time,
            admission.clone(),
        );
        let runtime = Arc::new(Runtime::new(
            &core,
            providers(
                fs.clone(),
                config.fs.wasi_limits(Some(config.limits.wall_time)),
                databases.clone(),
                outbound.clone(),
                cache.clone(),
                chrono.clone(),
            ),
        )?);
        let proxy = Arc::new(
            ZeroProxy::bind(config.http.clone(), runtime.limits().wall_time, admission).await?,
        );

        let identity = identity::Identity::load(&data_dir, config.node.admin.as_deref())?;
        if let Some(path) = &identity.dev_admin_key {
            tracing::warn!(
                admin = %identity.admin,
                key = %path.display(),
                "DEVELOPMENT MODE: no [node] admin is set in zerocore.toml, so this node created an admin key at {} and trusts it as the Admin. Set [node] admin to your own DID (`zero key new`) for production.",
                path.display()
            );
        }
        tracing::info!(node = %identity.node.did(), admin = %identity.admin, "node identity");
        let state = state::StateStore::open(&data_dir)?;
        let started = apps::now();
        let (journal, live) = revocation::ReplayStore::open(state.dir(), started)?;
        let authority = Arc::new(apps::Authority {
            options: zero_auth::ValidationOptions {
                required_root: Some(identity.admin.clone()),
                clock_skew: config.node.clock_skew_secs,
                max_invocation_lifetime: Some(config.node.max_invocation_lifetime_secs),
                ..Default::default()
            },
            node_did: identity.node.did().clone(),
            revocations: revocation::Revocations::load(
                &state,
                config.node.max_revocations_per_principal,
                started,
            )?,
            replay: zero_auth::ReplayCache::with_journal(
                config.node.replay_entries_per_principal,
                Box::new(journal),
                live,
                started,
            ),
        });

        let mut apps = Vec::new();
        for app in &config.apps {
            let routes = app
                .routes
                .iter()
                .map(|r| Route::parse(r).map_err(|e| anyhow::anyhow!("app {}: {e}", app.name)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let path = config.resolve(&app.component);
            let schedules = chrono
                .check(&app.tenant, &app.name, &app.schedules)
                .map_err(|e| anyhow::anyhow!("app {}: {e}", app.name))?;
            let spec = apps::AppSpec {
                tenant: app.tenant.clone(),
                name: app.name.clone(),
                routes: routes.clone(),
                allowed_outbound_hosts: app.allowed_outbound_hosts.clone(),
                owner_credential: None,
                schedules,
            };
            let built = match read_component(&path).await {
                Ok(bytes) => match apps::Component::new(bytes) {
                    Ok(component) => apps::build_app(
                        &runtime,
                        &authority,
                        spec,
                        component,
                        proxy.max_concurrent_per_app(),
                    )
                    .await
                    .map_err(|r| r.message),
                    Err(r) => Err(r.message),
                },
                Err(e) => Err(e),
            };
            let app = match built {
                Ok(ready) => {
                    chrono
                        .install(
                            &app.tenant,
                            &app.name,
                            ready.http.app.clone(),
                            ready.schedules,
                        )
                        .map_err(|e| anyhow::anyhow!("app {}: {e}", app.name))?;
                    tracing::info!(tenant = %app.tenant, app = %app.name, routes = ?app.routes, schedules = app.schedules.len(), "app ready");
                    ready.http
                }
                Err(reason) => {
                    tracing::error!(tenant = %app.tenant, app = %app.name, "refused app: {reason}");
                    Arc::new(HttpApp::new(
                        Arc::new(App::failed(&app.tenant, &app.name, reason)),
                        routes,
                        proxy.max_concurrent_per_app(),
                    ))
                }
            };
            apps.push(app);
        }
        let metrics = Arc::new(metrics::NodeMetrics::new(
            &runtime,
            &proxy,
            &chrono,
            &databases,
            &cache,
            telemetry.as_ref().map(|t| &t.counters),
        ));
        let app_set = Arc::new(apps::AppSet::new(
            proxy.clone(),
            chrono.clone(),
            apps,
            config.admin.max_apps_per_tenant,
        ));
        app_set.publish()?;
        let certs = Arc::new(hostcerts::HostCerts::open(
            state.dir(),
            proxy.certificates().cloned(),
            config.admin.max_certs_per_tenant,
        )?);
        certs.publish(&state.tenants()?);
        let api = Arc::new(api::Api {
            certs: certs.clone(),
            runtime: runtime.clone(),
            apps: app_set,
            authority,
            state,
            fs: fs.clone(),
            max_upload: config.admin.max_upload.0 as usize,
            fs_transfer: fsapi::TransferLimits {
                idle: config.fs.transfer_idle_timeout,
                total: config.fs.transfer_timeout,
            },
            max_concurrent_per_app: proxy.max_concurrent_per_app(),
            databases,
            cache,
            limits: api::AdminLimits::from_config(&config),
            outbound: outbound.clone(),
            deploys: deploy::DeployGate::new(
                config.admin.max_deploys_per_tenant,
                config.admin.max_compiles,
            ),
            metrics,
            closing: watch::channel(false).0,
        });
        // Deployed apps come back through the one deploy procedure (`Api::install`).
        for record in api.state.apps()? {
            match api.restore(&record).await {
                Ok(()) => {
                    tracing::info!(tenant = %record.tenant, app = %record.name, routes = ?record.routes, "deployed app restored")
                }
                Err(r) => {
                    tracing::error!(tenant = %record.tenant, app = %record.name, error = %r.error, "refused app: {}", r.message)
                }
            }
        }

        let admin_tls = match (&config.admin.tls_cert, &config.admin.tls_key) {
            (Some(cert), Some(key)) => Some(
                zeroproxy::tls::CertFiles::load("[admin]", cert, key)
                    .map_err(anyhow::Error::msg)?,
            ),
            _ => None,
        };
        let admin_listener = api::bind(config.admin.listen).await?;
        let admin_addr = admin_listener.local_addr()?;
        outbound.protect(admin_addr);
        let (shutdown, rx) = watch::channel(false);
        let (admin_acceptor, admin_scheme) = match admin_tls {
            Some(files) => {
                tokio::spawn(files.clone().watch(rx.clone()));
                (
                    Some(zeroproxy::tls::acceptor(files).map_err(anyhow::Error::msg)?),
                    "https",
                )
            }
            None => (None, "http"),
        };
        let admin = tokio::spawn(api::serve(
            api.clone(),
            admin_listener,
            admin_acceptor,
            rx.clone(),
        ));
        tracing::info!(addr = %admin_addr, "management API listening on {admin_scheme}://{}", admin_addr);

        tokio::spawn(certs.watch(rx.clone()));
        let ticking = {
            let rx = rx.clone();
            tokio::spawn(async move { chrono.serve(rx).await })
        };
        let serving = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.serve(rx).await })
        };
        if let Some(redirect) = proxy.redirect_addr() {
            tracing::info!(addr = %redirect, "zeroproxy redirecting http://{redirect} to HTTPS");
        }
        tracing::info!(addr = %proxy.local_addr(), "zeroproxy listening on {}://{}", proxy.scheme(), proxy.local_addr());
        Ok(Node {
            proxy,
            shutdown,
            serving,
            ticking,
            admin,
            admin_addr,
            node_did: identity.node.did().to_string(),
            api,
            telemetry,
        })
    }

    /// The management API's address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin_addr
    }

    /// The management API's shared state, the same the listener serves: with [`api::router`]
    /// and [`api::answer`] a caller in the same process (the `mgmt_api` fuzz target) answers
    /// requests exactly as the listener would, without a socket, and reads the node's state.
    pub fn api(&self) -> &Arc<api::Api> {
        &self.api
    }

    /// The node's DID.
    pub fn did(&self) -> &str {
        &self.node_did
    }

    /// The HTTP address actually bound.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.proxy.local_addr()
    }

    /// Stops accepting, lets requests and management calls in flight finish (bounded by the
    /// wall-clock limit and `[admin] request_timeout_ms`), and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self
            .serving
            .await
            .map_err(|e| anyhow::anyhow!("the HTTP server task failed: {e}"))?;
        self.admin
            .await
            .map_err(|e| anyhow::anyhow!("the management API task failed: {e}"))?;
        self.ticking
            .await
            .map_err(|e| anyhow::anyhow!("the schedules task failed: {e}"))??;
        if let Some(t) = self.telemetry {
            // Off the async workers: the export thread needs them to send what is queued.
            let _ =
                tokio::task::spawn_blocking(move || t.shutdown(std::time::Duration::from_secs(5)))
                    .await;
        }
        served
    }

    /// Serves until the process receives Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Descriptors the node keeps for itself beside what guests hold: listeners, connections,
/// SQLite and redb files, artifacts.
const FD_RESERVE: u64 = 1024;

/// Raises the process's soft limit on open files to its hard limit (as Go's runtime does), and
/// warns when `[fs] max_open_files` would not fit beside the node's own descriptors.
fn check_fd_limit(guest_files: usize) {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim = raised;
            }
        }
        let needed = (guest_files as u64).saturating_add(FD_RESERVE);
        if lim.rlim_cur < needed {
            tracing::warn!(
                limit = lim.rlim_cur,
                needed,
                "the process may open {} files, but [fs] max_open_files = {guest_files} plus {FD_RESERVE} for the node itself need {needed}: raise `ulimit -n` or lower [fs] max_open_files, or guests may exhaust the node's file descriptors",
                lim.rlim_cur
            );
        } else {
            tracing::info!(limit = lim.rlim_cur, "open file limit");
        }
    }
    #[cfg(not(unix))]
    let _ = guest_files;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    tokio::fs::read(path).await.map_err(|e| {
        format!(
            "cannot read the component file {}: {e} (build it first, or fix `component` in zerocore.toml)",
            path.display()
        )
    })
}
