//! `zeroproxy`, the HTTP event provider of zerocore.
//!
//! It accepts HTTP/1.1 and HTTP/2 (cleartext) on a hyper server, routes each request by host and
//! path prefix to a deployed app, and runs the app's `wasi:http/incoming-handler` in a fresh
//! store from the core ([`zerocore::Runtime::new_store`]). Bodies stream in both directions. The
//! proxy enforces what the core cannot see: request and response body caps, the wall-clock
//! timeout, and the number of requests in flight (per node and per app, so that one app cannot
//! take every slot). Every response carries an `x-request-id`; every failure is logged with its
//! cause and answered with a 5xx that names the request id.
//!
//! The crate also holds [`HttpResources`], the resource provider for `wasi:http/types` and
//! `wasi:http/outgoing-handler`, which denies outgoing requests unless the app's settings and
//! the node's [`OutboundConfig`] allow the destination host and every address it resolves to.

#![deny(missing_docs)]

mod body;
mod outbound;
mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use zero_provider::{AppSettings, EventProvider, Invocation, Provider, Shutdown};
use zerocore::{Fault, LoadedComponent, Runtime};

pub use body::ProxyBody;
pub use outbound::{
    AddrPolicy, AddrRefusal, AllowedNet, HostsError, HttpResources, OutboundConfig, OutboundPolicy,
    classify,
};
pub use router::{Route, RouteConflict, Router};

/// Settings of the HTTP provider: `[http]` in `zerocore.toml` (keys in brackets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address to listen on (`listen`).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (`max_request_body`).
    #[serde(deserialize_with = "zero_provider::settings::size")]
    pub max_request_body: u64,
    /// Largest response body sent, in bytes (`max_response_body`).
    #[serde(deserialize_with = "zero_provider::settings::size")]
    pub max_response_body: u64,
    /// Requests in flight on the whole node (`max_concurrent_requests`).
    #[serde(rename = "max_concurrent_requests")]
    pub max_concurrent: usize,
    /// Requests in flight for one app (`max_concurrent_requests_per_app`).
    #[serde(rename = "max_concurrent_requests_per_app")]
    pub max_concurrent_per_app: usize,
    /// Requests in flight for all the apps of one tenant (`max_concurrent_requests_per_tenant`).
    #[serde(rename = "max_concurrent_requests_per_tenant")]
    pub max_concurrent_per_tenant: usize,
    /// How long a client may take to send its request headers (`header_read_timeout_ms`).
    #[serde(
        rename = "header_read_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub header_read_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_request_body: 64 << 20,
            max_response_body: 256 << 20,
            max_concurrent: 256,
            max_concurrent_per_app: 128,
            max_concurrent_per_tenant: 192,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// An app as the proxy sees it.
pub struct HttpApp {
    /// Owning tenant.
    pub tenant: Arc<str>,
    /// App name.
    pub name: Arc<str>,
    /// Where it is mounted.
    pub routes: Vec<Route>,
    /// The app's settings (outgoing hosts, …).
    pub settings: Arc<AppSettings>,
    /// The loaded component, or why it could not be loaded.
    pub state: AppState,
    permits: Arc<Semaphore>,
}

/// Whether an app can serve.
pub enum AppState {
    /// Loaded and linked.
    Ready {
        /// The component.
        component: Arc<LoadedComponent>,
        /// Its `wasi:http/proxy` pre-instance.
        pre: ProxyPre<zero_provider::HostState>,
    },
    /// Refused at load; requests get 503 and the reason is in the log.
    Failed(String),
}

impl HttpApp {
    /// Prepares an app from a loaded component (or a load error), checking that it exports
    /// `wasi:http/incoming-handler`.
    pub fn new(
        tenant: &str,
        name: &str,
        routes: Vec<Route>,
        settings: AppSettings,
        loaded: Result<Arc<LoadedComponent>, String>,
        max_concurrent: usize,
    ) -> HttpApp {
        let state = match loaded {
            Ok(component) => match ProxyPre::new(component.pre.clone()) {
                Ok(pre) => AppState::Ready { component, pre },
                Err(e) => AppState::Failed(format!(
                    "app `{name}` does not export `wasi:http/incoming-handler`, so it cannot serve HTTP \
                     (build it as an HTTP component, e.g. with `wasi::http::proxy::export!`): {e}"
                )),
            },
            Err(e) => AppState::Failed(e),
        };
        HttpApp {
            tenant: tenant.into(),
            name: name.into(),
            routes,
            settings: Arc::new(settings),
            state,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }
}

struct Inner {
    runtime: Arc<Runtime>,
    config: ProxyConfig,
    routing: RwLock<Routing>,
    permits: Arc<Semaphore>,
    /// Every tenant's concurrency semaphore, kept across routing-table swaps so that requests
    /// in flight keep counting against the same limit.
    tenant_permits: std::sync::Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// The routing table with each routed tenant's semaphore, resolved when the table is
/// installed so that a request needs no lock beyond the table's read lock.
#[derive(Default)]
struct Routing {
    router: Router,
    tenants: HashMap<Arc<str>, Arc<Semaphore>>,
}

impl Routing {
    fn lookup(&self, host: &str, path: &str) -> Option<(Arc<HttpApp>, usize, Arc<Semaphore>)> {
        let (app, prefix) = self.router.route(host, path)?;
        let tenant = self.tenants.get(&app.tenant)?.clone();
        Some((app, prefix, tenant))
    }
}

/// The HTTP event provider.
pub struct ZeroProxy {
    inner: Arc<Inner>,
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
}

impl ZeroProxy {
    /// Binds the listener (so that the address, including an ephemeral port, is known before
    /// serving starts).
    pub async fn bind(runtime: Arc<Runtime>, config: ProxyConfig) -> anyhow::Result<ZeroProxy> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (is another process using that port? change [http] listen in zerocore.toml)",
                config.listen
            )
        })?;
        let local_addr = listener.local_addr()?;
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Ok(ZeroProxy {
            inner: Arc::new(Inner {
                runtime,
                config,
                routing: RwLock::new(Routing::default()),
                permits,
                tenant_permits: std::sync::Mutex::new(HashMap::new()),
            }),
            listener: Mutex::new(Some(listener)),
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The per-app concurrency limit configured.
    pub fn max_concurrent_per_app(&self) -> usize {
        self.inner.config.max_concurrent_per_app
    }

    /// Replaces the routing table atomically. A conflict (two apps on the same host and path)
    /// refuses the whole table and leaves the previous one serving.
    pub fn set_apps(&self, apps: Vec<Arc<HttpApp>>) -> Result<(), RouteConflict> {
        let tenants = {
            let mut all = self
                .inner
                .tenant_permits
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let limit = self.inner.config.max_concurrent_per_tenant.max(1);
            apps.iter()
                .map(|app| {
                    let sem = all
                        .entry(app.tenant.clone())
                        .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                        .clone();
                    (app.tenant.clone(), sem)
                })
                .collect()
        };
        let router = Router::build(apps)?;
        *self
            .inner
            .routing
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Routing { router, tenants };
        Ok(())
    }
}

impl Provider for ZeroProxy {
    fn name(&self) -> &'static str {
        "zeroproxy"
    }
}

#[async_trait::async_trait]
impl EventProvider for ZeroProxy {
    async fn serve(&self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let listener = self
            .listener
            .lock()
            .await
            .take()
            .ok_or_else(|| anyhow::anyhow!("zeroproxy is already serving"))?;
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.inner.config.header_read_timeout)
            .keep_alive(true);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let inner = self.inner.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(inner.handle(req, remote).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        tracing::info!("zeroproxy stopped accepting; waiting for requests in flight");
        let grace = self.inner.runtime.limits().wall_time + Duration::from_secs(1);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still open after the grace period");
        }
        Ok(())
    }
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Facts about a request kept for the access log.
#[derive(Clone)]
pub(crate) struct AccessInfo {
    pub request_id: Arc<str>,
    pub tenant: Option<Arc<str>>,
    pub app: Option<Arc<str>>,
    pub method: http::Method,
    pub path: String,
    pub remote: SocketAddr,
    pub start: Instant,
}

/// Header giving the guest the request path within the app: the path after the matched route
/// prefix, always starting with `/` (`/api/users` routed at `/api` gives `/users`).
pub const PATH_INFO_HEADER: &str = "zero-path-info";

/// Header giving the guest the matched route's path prefix (`/api`, or `/`).
pub const ROUTE_HEADER: &str = "zero-matched-route";

/// Replaces any client-sent routing headers with the node's own: a guest can trust them.
fn set_route_headers(req: &mut Request<Incoming>, prefix_len: usize) {
    let path = req.uri().path();
    let (prefix, rest) = path.split_at(prefix_len.min(path.len()));
    let info = if rest.is_empty() { "/" } else { rest };
    let prefix = if prefix.is_empty() { "/" } else { prefix };
    let values = (
        HeaderValue::from_str(info).ok(),
        HeaderValue::from_str(prefix).ok(),
    );
    let headers = req.headers_mut();
    headers.remove(PATH_INFO_HEADER);
    headers.remove(ROUTE_HEADER);
    if let (Some(info), Some(prefix)) = values {
        headers.insert(PATH_INFO_HEADER, info);
        headers.insert(ROUTE_HEADER, prefix);
    }
}

impl Inner {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<ProxyBody> {
        let request_id: Arc<str> = new_request_id().into();
        let mut access = AccessInfo {
            request_id: request_id.clone(),
            tenant: None,
            app: None,
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            remote,
            start: Instant::now(),
        };
        let mut resp = match self.dispatch(req, &mut access).await {
            Ok(resp) => resp,
            Err((status, message)) => error_response(status, &message, &request_id),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        let status = resp.status();
        resp.map(|b| ProxyBody::tracked(b, access, status))
    }

    async fn dispatch(
        &self,
        mut req: Request<Incoming>,
        access: &mut AccessInfo,
    ) -> Result<Response<ProxyBody>, (StatusCode, String)> {
        let host = req.uri().host().map(str::to_string).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| zero_provider::split_host_port(h).0.to_string())
        });
        let Some(host) = host else {
            return Err((
                StatusCode::BAD_REQUEST,
                "the request has no Host header; send one (HTTP/1.1 requires it)".into(),
            ));
        };
        let app = {
            let routing = self.routing.read().unwrap_or_else(|p| p.into_inner());
            routing.lookup(&host, req.uri().path())
        };
        let Some((app, prefix_len, tenant_semaphore)) = app else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no app is routed at {}", req.uri().path()),
            ));
        };
        set_route_headers(&mut req, prefix_len);
        access.tenant = Some(app.tenant.clone());
        access.app = Some(app.name.clone());
        let pre = match &app.state {
            AppState::Ready { pre, .. } => pre.clone(),
            AppState::Failed(reason) => {
                tracing::error!(request_id = %access.request_id, tenant = %app.tenant, app = %app.name, reason = %reason, "request to an app that failed to load");
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this app is not available: it failed to load (the node log has the reason)"
                        .into(),
                ));
            }
        };

        // Most apps never expire; read the clock only for those that do.
        let expired = app.settings.not_after.and_then(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            app.settings.expired(now)
        });
        if let Some(reason) = expired {
            tracing::error!(request_id = %access.request_id, tenant = %app.tenant, app = %app.name, reason = %reason, "request refused: the app's authority expired");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this app is not available: its authority expired (the node log has the reason)"
                    .into(),
            ));
        }

        let max_body = self.config.max_request_body;
        if let Some(len) = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > max_body
        {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is {len} bytes; this node accepts at most {max_body}"),
            ));
        }

        let Ok(node_permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(request_id = %access.request_id, "node at its concurrent request limit");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is at its limit of concurrent requests; retry shortly".into(),
            ));
        };
        let Ok(app_permit) = app.permits.clone().try_acquire_owned() else {
            tracing::warn!(request_id = %access.request_id, tenant = %app.tenant, app = %app.name, "app at its concurrent request limit");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this app is at its limit of concurrent requests; retry shortly".into(),
            ));
        };

        let Ok(tenant_permit) = tenant_semaphore.try_acquire_owned() else {
            tracing::warn!(request_id = %access.request_id, tenant = %app.tenant, "tenant at its concurrent request limit");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this tenant's apps are at their limit of concurrent requests; retry shortly"
                    .into(),
            ));
        };

        let invocation = Invocation {
            tenant: app.tenant.clone(),
            app: app.name.clone(),
            request_id: access.request_id.clone(),
            settings: app.settings.clone(),
        };
        let mut store = self.runtime.new_store(invocation).map_err(|e| {
            tracing::error!(request_id = %access.request_id, error = %e, "could not create a store");
            (StatusCode::INTERNAL_SERVER_ERROR, "the node could not start the app".to_string())
        })?;

        let req = req.map(|b| body::LimitedIncoming::new(b, max_body));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (req_res, out_res) = {
            let mut http = store.data_mut().http();
            (
                http.new_incoming_request(Scheme::Http, req),
                http.new_response_outparam(sender),
            )
        };
        let (req_res, out_res) = match (req_res, out_res) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("the request cannot be handled: {e}"),
                ));
            }
        };

        let wall = self.runtime.limits().wall_time;
        let deadline = tokio::time::Instant::now() + wall;
        let inv_tenant = app.tenant.clone();
        let inv_app = app.name.clone();
        let rid = access.request_id.clone();
        let task = tokio::spawn(async move {
            let _permits = (node_permit, tenant_permit, app_permit);
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req_res, out_res)
                    .await
            };
            let result = match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Fault::classify(&e, &store.data().faults)),
                Err(_) => Err(Fault::WallTimeout {
                    limit_ms: wall.as_millis() as u64,
                }),
            };
            if let Err(fault) = &result {
                tracing::error!(
                    request_id = %rid, tenant = %inv_tenant, app = %inv_app,
                    fault = fault.kind(), cpu_ms = store.data().cpu.used_ns / 1_000_000, cpu_ticks = store.data().cpu.ticks,
                    "request failed: {fault}"
                );
            }
            result
        });
        let task = body::TaskGuard::new(task);

        match receiver.await {
            Ok(Ok(resp)) => {
                Ok(resp.map(|b| ProxyBody::guest(b, task, self.config.max_response_body)))
            }
            Ok(Err(code)) => {
                tracing::warn!(request_id = %access.request_id, error = ?code, "the app answered with an error code");
                Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the app answered with an error: {code:?}"),
                ))
            }
            Err(_) => {
                let outcome = task.join().await;
                match outcome {
                    Some(Err(fault)) => {
                        let status = match fault {
                            Fault::WallTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                            Fault::Host(_) => StatusCode::BAD_GATEWAY,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                        Err((status, fault.public_reason().to_string()))
                    }
                    Some(Ok(())) => {
                        tracing::error!(request_id = %access.request_id, "the app returned without setting a response");
                        Err((
                            StatusCode::BAD_GATEWAY,
                            "the app returned without sending a response".into(),
                        ))
                    }
                    None => Err((
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the app's task was lost".into(),
                    )),
                }
            }
        }
    }
}

fn error_response(status: StatusCode, message: &str, request_id: &str) -> Response<ProxyBody> {
    let text = format!("{message} (request id {request_id})\n");
    let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
