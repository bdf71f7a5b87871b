//! A zerocore node: reads `zerocore.toml`, builds the runtime with its providers, loads the
//! declared apps and serves them.
//!
//! This is the one place where concrete providers are named and registered ([`providers`]);
//! everything else talks to them through the traits in `zero-provider`. The `zero` CLI's `serve`
//! command is a thin wrapper around [`Node::start`].

#![deny(missing_docs)]

pub mod config;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zero_provider::{AppSettings, EventProvider, ResourceProvider};
use zerocore::{CoreConfig, Runtime, WasiBase};
use zeroproxy::{HttpApp, HttpResources, ProxyConfig, Route, ZeroProxy};

pub use config::{LogFormat, NodeConfig};

/// The resource providers of this node, in registration order. The single place where providers
/// are named.
pub fn providers() -> Vec<Arc<dyn ResourceProvider>> {
    vec![Arc::new(WasiBase), Arc::new(HttpResources)]
}

/// Sets up logging to stderr: human-readable or JSON, filtered by `RUST_LOG` if set, else by
/// `level`.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("logging is already initialized: {e}"))
}

/// A running node.
pub struct Node {
    runtime: Arc<Runtime>,
    proxy: Arc<ZeroProxy>,
    shutdown: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Builds the runtime, binds the HTTP listener, loads every app and starts serving.
    ///
    /// An app that fails to load does not stop the node: it is logged with the reason and its
    /// routes answer 503, while the other apps serve.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let data_dir = config.resolve(&config.node.data_dir);
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e} (set [node] data_dir to a writable place)",
                data_dir.display()
            )
        })?;
        let core = CoreConfig {
            data_dir: data_dir.clone(),
            limits: config.core_limits(),
            pooling: config.engine.pooling,
            pool_instances: (config.http.max_concurrent_requests as u32).saturating_add(16),
        };
        let runtime = Arc::new(Runtime::new(&core, providers())?);
        let proxy_config = ProxyConfig {
            listen: config.http.listen,
            max_request_body: config.http.max_request_body.0,
            max_response_body: config.http.max_response_body.0,
            max_concurrent: config.http.max_concurrent_requests,
            max_concurrent_per_app: config.http.max_concurrent_requests_per_app,
            header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
        };
        let proxy = Arc::new(ZeroProxy::bind(runtime.clone(), proxy_config).await?);

        let mut apps = Vec::new();
        for app in &config.apps {
            let path = config.resolve(&app.component);
            let loaded = load_app(&runtime, &path, &app.tenant, &app.name).await;
            if let Err(reason) = &loaded {
                tracing::error!(tenant = %app.tenant, app = %app.name, "refused app: {reason}");
            }
            let routes = app
                .routes
                .iter()
                .map(|r| Route::parse(r).map_err(|e| anyhow::anyhow!("app {}: {e}", app.name)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            apps.push(Arc::new(HttpApp::new(
                &app.tenant,
                &app.name,
                routes,
                AppSettings {
                    allowed_outbound_hosts: app.allowed_outbound_hosts.clone(),
                },
                loaded,
                proxy.max_concurrent_per_app(),
            )));
        }
        for app in &apps {
            if let zeroproxy::AppState::Failed(reason) = &app.state {
                if reason.contains("does not export") {
                    tracing::error!(tenant = %app.tenant, app = %app.name, "refused app: {reason}");
                }
            } else {
                let routes: Vec<String> = app.routes.iter().map(|r| r.to_string()).collect();
                tracing::info!(tenant = %app.tenant, app = %app.name, routes = ?routes, "app ready");
            }
        }
        proxy.set_apps(apps)?;

        let (shutdown, rx) = watch::channel(false);
        let serving = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.serve(rx).await })
        };
        tracing::info!(addr = %proxy.local_addr(), "zeroproxy listening on http://{}", proxy.local_addr());
        Ok(Node {
            runtime,
            proxy,
            shutdown,
            serving,
        })
    }

    /// The HTTP address actually bound.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.proxy.local_addr()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stops accepting, lets requests in flight finish (bounded by the wall-clock limit), and
    /// returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.serving
            .await
            .map_err(|e| anyhow::anyhow!("the HTTP server task failed: {e}"))?
    }

    /// Serves until the process receives Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
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

async fn load_app(
    runtime: &Arc<Runtime>,
    path: &Path,
    tenant: &str,
    name: &str,
) -> Result<Arc<zerocore::LoadedComponent>, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        format!(
            "cannot read the component file {}: {e} (build it first, or fix `component` in zerocore.toml)",
            path.display()
        )
    })?;
    let runtime = runtime.clone();
    let what = format!("{tenant}/{name} ({})", path.display());
    tokio::task::spawn_blocking(move || runtime.load(&bytes, &what).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("loading the component failed: {e}"))?
}
