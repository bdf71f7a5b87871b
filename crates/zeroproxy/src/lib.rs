//! `zeroproxy`, the HTTP event provider of zerocore.
//!
//! It accepts HTTP/1.1 and HTTP/2 (cleartext, or over TLS when `[http]` names a certificate:
//! see [`tls`]) on a hyper server, routes each request by host and
//! path prefix to an app, and hands it to the core ([`zerocore::App::http`]), which runs the
//! app's `wasi:http/incoming-handler` in a fresh store under its limits, the wall-clock one
//! included, and classifies and logs its faults. Bodies stream in both directions. The proxy
//! keeps only HTTP: the listener, routing ([`HttpApp`]: a core [`App`] with its routes), request
//! and response body caps, the number of requests in flight (per node, tenant and app, so that
//! one app cannot take every slot), the connections (how many, on the node and from one
//! client, and how long one may wait for its request's head or sit idle: see [`ProxyConfig`])
//! and the mapping of outcomes to responses. Every response carries an `x-request-id`; every
//! failure is logged with its cause and answered with a 5xx that names the request id.
//!
//! The crate also holds [`HttpResources`], the resource provider for `wasi:http/types` and
//! `wasi:http/outgoing-handler`, which denies outgoing requests unless the app's settings and
//! the node's [`OutboundConfig`] allow the destination host and every address it resolves to.

#![deny(missing_docs)]

mod body;
pub mod conn;
mod metrics;
mod outbound;
mod router;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use zero_provider::admission::{Admission, TenantSlots};
use zero_provider::{EventProvider, Provider, Shutdown};
use zerocore::{App, Fault, Unavailable};

pub use body::ProxyBody;
pub use outbound::{
    AddrPolicy, AddrRefusal, AllowedNet, HostsError, HttpInstance, HttpResources, OutboundApp,
    OutboundConfig, OutboundPolicy, classify,
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
    /// Runs in flight on the whole node (`max_concurrent_requests`): HTTP requests and every
    /// other event provider's runs (scheduled ticks), through `zero_provider::admission`.
    #[serde(rename = "max_concurrent_requests")]
    pub max_concurrent: usize,
    /// Requests in flight for one app (`max_concurrent_requests_per_app`).
    #[serde(rename = "max_concurrent_requests_per_app")]
    pub max_concurrent_per_app: usize,
    /// Runs in flight for all the apps of one tenant (`max_concurrent_requests_per_tenant`):
    /// requests and scheduled runs alike.
    #[serde(rename = "max_concurrent_requests_per_tenant")]
    pub max_concurrent_per_tenant: usize,
    /// Requests in flight from one client address (an IPv6 client's /64)
    /// (`max_concurrent_requests_per_client`), on all its connections and HTTP/2 streams, so
    /// that one client cannot take every request slot of the node. Behind a reverse proxy,
    /// raise it to `max_concurrent_requests`. Unset (`None`), it is
    /// `min(128, max_concurrent_requests)`: see [`ProxyConfig::concurrent_per_client`]. A value
    /// set above `max_concurrent_requests` is refused by the node's configuration check.
    #[serde(rename = "max_concurrent_requests_per_client")]
    pub max_concurrent_per_client: Option<usize>,
    /// How long a client may take to send its request headers (`header_read_timeout_ms`).
    #[serde(
        rename = "header_read_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub header_read_timeout: Duration,
    /// Connections open at once on the node (`max_connections`). Past it a new connection is
    /// answered `503` with `connection: close` in one non-blocking write and closed; those
    /// already open are served as before.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client's /64)
    /// (`max_connections_per_client`), so that one client cannot take every slot. Behind a
    /// reverse proxy every connection comes from the proxy's address: raise it to
    /// `max_connections` there. Unset (`None`), it is `min(256, max_connections)`: see
    /// [`ProxyConfig::connections_per_client`]. A value set above `max_connections` is refused
    /// by the node's configuration check.
    pub max_connections_per_client: Option<usize>,
    /// How long a connection may stay open with no request in flight (`idle_timeout_ms`):
    /// then it is closed (HTTP/2 with a GOAWAY). An HTTP/1.1 connection waiting for its next
    /// request is also closed at `header_read_timeout_ms`, which hyper times from the end of
    /// the previous response. A connection with requests in flight whose responses make no
    /// progress (the client stopped reading) for this long, or for the wall-clock limit and a
    /// second if that is longer, is closed outright: a reader must take a body frame (up to
    /// 64 KiB) at least that often.
    #[serde(
        rename = "idle_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub idle_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once (`max_concurrent_streams`).
    pub max_concurrent_streams: u32,
    /// PEM certificate chain served over TLS on `listen` (`tls_cert`, with `tls_key`); unset,
    /// the listener speaks cleartext. Reloaded when the file changes (see [`tls::CertFiles`]).
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert` (`tls_key`).
    pub tls_key: Option<std::path::PathBuf>,
    /// A cleartext listener that answers every request with a `308` redirect to the same
    /// host and path over HTTPS on `listen`'s port (`redirect_listen`; needs `tls_cert`).
    pub redirect_listen: Option<SocketAddr>,
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
            max_concurrent_per_client: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_client: None,
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            tls_cert: None,
            tls_key: None,
            redirect_listen: None,
        }
    }
}

impl ProxyConfig {
    /// Default of `max_concurrent_requests_per_client` when `max_concurrent_requests` allows it.
    pub const DEFAULT_CONCURRENT_PER_CLIENT: usize = 128;
    /// Default of `max_connections_per_client` when `max_connections` allows it.
    pub const DEFAULT_CONNECTIONS_PER_CLIENT: usize = 256;

    /// Requests in flight allowed from one client: `max_concurrent_requests_per_client` if set,
    /// else `min(128, max_concurrent_requests)`, so that lowering the node-wide limit alone
    /// keeps a valid configuration.
    pub fn concurrent_per_client(&self) -> usize {
        self.max_concurrent_per_client
            .unwrap_or(Self::DEFAULT_CONCURRENT_PER_CLIENT.min(self.max_concurrent))
    }

    /// Connections open at once allowed from one client: `max_connections_per_client` if set,
    /// else `min(256, max_connections)`.
    pub fn connections_per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or(Self::DEFAULT_CONNECTIONS_PER_CLIENT.min(self.max_connections))
    }
}

/// An app as the proxy sees it: the core's [`App`] (reached through `Deref`) with its routes
/// and its concurrency limit.
pub struct HttpApp {
    /// The app.
    pub app: Arc<App>,
    /// Where it is mounted.
    pub routes: Vec<Route>,
    permits: Arc<Semaphore>,
    /// Refusals at the app's limit, logged at most once a second.
    refused: conn::Throttle,
}

impl HttpApp {
    /// Mounts `app` at `routes`, with at most `max_concurrent` requests in flight.
    pub fn new(app: Arc<App>, routes: Vec<Route>, max_concurrent: usize) -> HttpApp {
        HttpApp {
            app,
            routes,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            refused: conn::Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Why the app cannot serve HTTP (it failed to load, or exports no
    /// `wasi:http/incoming-handler`), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.app.http_entry().err()
    }
}

impl std::ops::Deref for HttpApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

struct Inner {
    /// The core's wall-clock limit of a request: how long shutdown waits for those in flight.
    wall_time: Duration,
    config: ProxyConfig,
    routing: RwLock<Routing>,
    /// The node's and each tenant's run slots, shared with the other event providers.
    admission: Arc<Admission>,
    /// Every tenant's gate, kept across routing-table swaps (with their refusal throttles).
    tenant_gates: std::sync::Mutex<HashMap<Arc<str>, Arc<TenantGate>>>,
    /// Refusals at the node's limit, logged at most once a second.
    node_refused: conn::Throttle,
    /// Requests in flight per client address.
    client_permits: Arc<conn::PerClient>,
    /// Refusals of a client's requests, logged at most once a second.
    client_log: conn::Throttle,
    /// Requests and latencies (see `metrics`).
    metrics: Arc<metrics::HttpMetrics>,
}

/// The routing table with each routed tenant's semaphore, resolved when the table is
/// installed so that a request needs no lock beyond the table's read lock.
#[derive(Default)]
struct Routing {
    router: Router,
    tenants: HashMap<Arc<str>, Arc<TenantGate>>,
}

/// A tenant's limit of requests in flight over all its apps (its run slots, which its
/// scheduled runs take too).
struct TenantGate {
    slots: TenantSlots,
    /// Refusals at the limit, logged at most once a second (a tenant hammering its own limit
    /// must not turn into a flood of log lines).
    refused: conn::Throttle,
}

impl Routing {
    fn lookup(&self, host: &str, path: &str) -> Option<(Arc<HttpApp>, usize, Arc<TenantGate>)> {
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
    /// The certificates served when `[http]` names one: its default pair and the tenants'
    /// per host.
    tls: Option<Arc<tls::SniCerts>>,
    /// The cleartext listener that redirects to HTTPS, when configured.
    redirect: Mutex<Option<TcpListener>>,
    redirect_addr: Option<SocketAddr>,
}

impl ZeroProxy {
    /// Binds the listener (so that the address, including an ephemeral port, is known before
    /// serving starts). `wall_time` is the core's wall-clock limit of a request (shutdown waits
    /// that long for requests in flight). Each request takes a run slot of the node and of its
    /// tenant from `admission` (made with `config.max_concurrent` and
    /// `config.max_concurrent_per_tenant`, and shared with the other event providers).
    pub async fn bind(
        config: ProxyConfig,
        wall_time: Duration,
        admission: Arc<Admission>,
    ) -> anyhow::Result<ZeroProxy> {
        let listener = listen(config.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (is another process using that port? change [http] listen in zerocore.toml)",
                config.listen
            )
        })?;
        let local_addr = listener.local_addr()?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::SniCerts::new(
                tls::CertFiles::load("[http]", cert, key).map_err(anyhow::Error::msg)?,
            )),
            (None, None) => None,
            _ => anyhow::bail!(
                "[http] tls_cert and tls_key go together: set both (PEM files) to serve HTTPS, or neither"
            ),
        };
        let redirect = match config.redirect_listen {
            Some(addr) if tls.is_some() => Some(listen(addr).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {addr}: {e} (is another process using that port? change [http] redirect_listen in zerocore.toml)"
                )
            })?),
            Some(_) => anyhow::bail!(
                "[http] redirect_listen redirects to HTTPS, but [http] has no tls_cert and tls_key: set them, or remove redirect_listen"
            ),
            None => None,
        };
        let redirect_addr = match &redirect {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let client_permits = conn::PerClient::new(config.concurrent_per_client());
        Ok(ZeroProxy {
            inner: Arc::new(Inner {
                wall_time,
                client_permits,
                client_log: conn::Throttle::new(Duration::from_secs(1)),
                node_refused: conn::Throttle::new(Duration::from_secs(1)),
                config,
                routing: RwLock::new(Routing::default()),
                admission,
                tenant_gates: std::sync::Mutex::new(HashMap::new()),
                metrics: Arc::default(),
            }),
            listener: Mutex::new(Some(listener)),
            local_addr,
            tls,
            redirect: Mutex::new(redirect),
            redirect_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `"https"` when the listener serves TLS, else `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The listener's certificates, when it serves TLS: the node installs the tenants' ones
    /// per host with [`tls::SniCerts::set_hosts`].
    pub fn certificates(&self) -> Option<&Arc<tls::SniCerts>> {
        self.tls.as_ref()
    }

    /// The address of the cleartext listener redirecting to HTTPS, when configured.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
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
                .tenant_gates
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let admission = &self.inner.admission;
            apps.iter()
                .map(|app| {
                    let sem = all
                        .entry(app.tenant.clone())
                        .or_insert_with(|| {
                            Arc::new(TenantGate {
                                slots: admission.tenant(&app.tenant),
                                refused: conn::Throttle::new(Duration::from_secs(1)),
                            })
                        })
                        .clone();
                    (app.tenant.clone(), sem)
                })
                .collect()
        };
        let deployed = apps
            .iter()
            .map(|a| (a.tenant.clone(), a.name.clone()))
            .collect();
        let router = Router::build(apps)?;
        self.inner.metrics.deployed(deployed);
        *self
            .inner
            .routing
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Routing { router, tenants };
        Ok(())
    }
}

impl zero_provider::metrics::Metrics for ZeroProxy {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register_metrics(registry);
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
        let config = &self.inner.config;
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams);
        let connections = conn::Connections::new(
            config.max_connections,
            config.connections_per_client(),
            "[http]",
        );
        let deadlines = conn::Deadlines {
            first: config.header_read_timeout,
            idle: config.idle_timeout,
            // An app may take its whole wall-clock limit before it answers.
            stall: config
                .idle_timeout
                .max(self.inner.wall_time + Duration::from_secs(1)),
        };
        let closed_log = Arc::new(ClosedLog {
            header: conn::Throttle::new(Duration::from_secs(1)),
            idle: conn::Throttle::new(Duration::from_secs(1)),
            stalled: conn::Throttle::new(Duration::from_secs(1)),
            header_ms: config.header_read_timeout.as_millis(),
            idle_ms: config.idle_timeout.as_millis(),
            stall_ms: deadlines.stall.as_millis(),
        });
        let tls = match &self.tls {
            Some(certs) => {
                tokio::spawn(certs.default_files().clone().watch(shutdown.clone()));
                Some(tls::acceptor(certs.clone()).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        if let Some(redirect) = self.redirect.lock().await.take() {
            let https_port = self.local_addr.port();
            tokio::spawn(serve_redirects(
                redirect,
                https_port,
                builder.clone(),
                connections.clone(),
                deadlines,
                shutdown.clone(),
            ));
        }
        let mut acceptor = conn::Acceptor::new("[http] max_connections and [fs] max_open_files");
        let refuser = conn::Refuser::default();
        while let Some((stream, remote, slot)) = refuser
            .next_admitted(&mut acceptor, &listener, &connections, &mut shutdown)
            .await
        {
            let _ = stream.set_nodelay(true);
            let inner = self.inner.clone();
            let activity = conn::Activity::new();
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    let in_flight = activity.begin();
                    async move {
                        let resp = inner.handle(req, remote).await;
                        Ok::<_, Infallible>(resp.map(|b| b.holding(in_flight)))
                    }
                })
            };
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            let closed_log = closed_log.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let ended = |outcome| closed_log.log(remote, outcome);
                conn::serve(
                    &builder,
                    stream,
                    tls.as_ref(),
                    service,
                    &activity,
                    deadlines,
                    shutdown,
                    ended,
                )
                .await;
            });
        }
        drop(listener);
        tracing::info!("zeroproxy stopped accepting; waiting for requests in flight");
        let grace = self.inner.wall_time + Duration::from_secs(1);
        if !connections.drained(grace).await {
            tracing::warn!("some connections were still open after the grace period");
        }
        Ok(())
    }
}

/// Serves the cleartext listener of `[http] redirect_listen`: every request is answered `308`
/// to `https://HOST:https_port/PATH` (the port left out when it is 443), under the HTTP
/// listener's connection caps and deadlines. A request without a valid `host` gets `400`.
async fn serve_redirects(
    listener: TcpListener,
    https_port: u16,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    connections: Arc<conn::Connections>,
    deadlines: conn::Deadlines,
    mut shutdown: Shutdown,
) {
    let mut acceptor = conn::Acceptor::new("[http] max_connections and [fs] max_open_files");
    let refuser = conn::Refuser::default();
    while let Some((stream, _remote, slot)) = refuser
        .next_admitted(&mut acceptor, &listener, &connections, &mut shutdown)
        .await
    {
        let activity = conn::Activity::new();
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let _in_flight = activity.begin();
                let resp = redirect_response(&req, https_port);
                async move { Ok::<_, Infallible>(resp) }
            })
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            conn::serve(
                &builder,
                stream,
                None,
                service,
                &activity,
                deadlines,
                shutdown,
                |_| {},
            )
            .await;
        });
    }
}

/// The answer of the redirecting listener to `req`.
fn redirect_response(
    req: &Request<Incoming>,
    https_port: u16,
) -> Response<http_body_util::Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| req.uri().authority().cloned());
    let Some(host) = host else {
        let mut r = Response::new(http_body_util::Full::new(Bytes::from_static(
            b"this listener redirects to HTTPS and needs a valid host header\n",
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{}{port}{path}", host.host());
    let mut r = Response::new(http_body_util::Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// Connections the kernel completes and queues before the node accepts them. `std`'s 128 is
/// too few for a burst (or while `accept` backs off): past it the kernel drops SYNs and a
/// client's connect waits for its retransmissions, seconds. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, as `std` does) and listens with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Logs, at most once a second each, connections closed for a deadline.
struct ClosedLog {
    header: conn::Throttle,
    idle: conn::Throttle,
    stalled: conn::Throttle,
    header_ms: u128,
    idle_ms: u128,
    stall_ms: u128,
}

impl ClosedLog {
    fn log(&self, remote: SocketAddr, outcome: Result<Result<(), body::BoxError>, conn::Closed>) {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // hyper's own header timeout (HTTP/1.1).
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
                {
                    self.header_closed(remote);
                } else {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            }
            Err(conn::Closed::FirstRequest) => self.header_closed(remote),
            Err(conn::Closed::Idle) => {
                if let Some(closed) = self.idle.hit() {
                    tracing::info!(%remote, closed, "closed connections with no request in flight for [http] idle_timeout_ms ({} ms)", self.idle_ms);
                }
            }
            Err(conn::Closed::Stalled) => {
                if let Some(closed) = self.stalled.hit() {
                    tracing::warn!(%remote, closed, "closed connections whose responses made no progress for [http] idle_timeout_ms ({} ms; at least the wall-clock limit): the client stopped reading", self.stall_ms);
                }
            }
        }
    }

    fn header_closed(&self, remote: SocketAddr) {
        if let Some(closed) = self.header.hit() {
            tracing::info!(%remote, closed, "closed connections that sent no complete request head (or TLS handshake) within [http] header_read_timeout_ms ({} ms)", self.header_ms);
        }
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
    /// The request's URI (a shared reference to hyper's buffer; the log shows its path).
    pub uri: http::Uri,
    pub remote: SocketAddr,
    pub start: Instant,
    /// Where the answered request is counted.
    pub metrics: Arc<metrics::HttpMetrics>,
    /// The request's spans, while traces are on.
    pub trace: Option<RequestTrace>,
}

/// The spans of one request (see `zero_provider::trace`): its `zero.request` span and, once
/// the app sets its response, the `zero.response` span. Both end with the response body.
#[derive(Clone)]
pub(crate) struct RequestTrace {
    pub request: zero_provider::trace::Context,
    pub response: Option<zero_provider::trace::Context>,
}

impl RequestTrace {
    /// The `zero.request` span of `req`: a child of the span its `traceparent` names when that
    /// header is valid and sent once, else the root of a new trace.
    fn start(req: &Request<Incoming>, request_id: &str) -> Option<RequestTrace> {
        use zero_provider::trace::{self, KeyValue};
        let once = |name: &str| {
            let mut all = req.headers().get_all(name).iter();
            let first = all.next()?;
            all.next().is_none().then(|| first.as_bytes())
        };
        let parent = trace::remote_parent(once("traceparent"), once("tracestate"));
        let request = trace::start(
            trace::names::REQUEST,
            trace::Kind::Server,
            &parent,
            vec![
                KeyValue::new("http.request.method", outbound::method_name(req.method())),
                KeyValue::new("url.path", trace::bounded(req.uri().path())),
                KeyValue::new("zero.request_id", request_id.to_owned()),
            ],
        )?;
        Some(RequestTrace {
            request,
            response: None,
        })
    }

    /// Ends the spans with the response's `status` and the `bytes` sent.
    pub(crate) fn finish(&self, status: StatusCode, bytes: u64, outcome: &'static str) {
        use zero_provider::trace::{self, KeyValue, TraceContextExt};
        let code = KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
        if let Some(response) = &self.response {
            let span = response.span();
            span.set_attribute(code.clone());
            span.set_attribute(KeyValue::new(
                "zero.response.bytes",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            ));
            span.set_attribute(KeyValue::new("zero.response.outcome", outcome));
            if outcome != "complete" {
                trace::fail(response, outcome);
            }
            span.end();
        }
        let span = self.request.span();
        span.set_attribute(code);
        if status.is_server_error() {
            trace::fail(&self.request, "the response is a server error");
        }
        span.end();
    }
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
            uri: req.uri().clone(),
            remote,
            start: Instant::now(),
            metrics: self.metrics.clone(),
            trace: if zero_provider::trace::enabled() {
                RequestTrace::start(&req, &request_id)
            } else {
                None
            },
        };
        let mut resp = match self.dispatch(req, &mut access).await {
            Ok(resp) => resp,
            Err((status, message)) => error_response(status, &message, &request_id),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        let status = resp.status();
        // The length the response declares (hyper sends exactly that much, then stops).
        let length = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        resp.map(|b| ProxyBody::tracked(b, access, status, length))
    }

    async fn dispatch(
        &self,
        mut req: Request<Incoming>,
        access: &mut AccessInfo,
    ) -> Result<Response<ProxyBody>, (StatusCode, String)> {
        let head = head_bytes(&req);
        if head > MAX_HEAD_BYTES {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request's target and headers are {head} bytes, more than the node's limit of {MAX_HEAD_BYTES}; send fewer or smaller headers"
                ),
            ));
        }
        let app = {
            let host = req.uri().host().or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| zero_provider::split_host_port(h).0)
            });
            let Some(host) = host else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "the request has no Host header; send one (HTTP/1.1 requires it)".into(),
                ));
            };
            let span = zero_provider::trace::Span::child(
                access.trace.as_ref().map(|t| &t.request),
                zero_provider::trace::names::ROUTE,
                zero_provider::trace::Kind::Internal,
                Vec::new,
            );
            let routing = self.routing.read().unwrap_or_else(|p| p.into_inner());
            let found = routing.lookup(host, req.uri().path());
            if found.is_none() {
                span.fail("no app is routed here");
            }
            found
        };
        let Some((app, prefix_len, tenant_gate)) = app else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no app is routed at {}", req.uri().path()),
            ));
        };
        set_route_headers(&mut req, prefix_len);
        access.tenant = Some(app.tenant.clone());
        access.app = Some(app.name.clone());
        if let Some(t) = &access.trace {
            use zero_provider::trace::{KeyValue, TraceContextExt};
            let route = req
                .headers()
                .get(ROUTE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(zero_provider::trace::bounded)
                .unwrap_or_default();
            t.request.span().set_attributes([
                KeyValue::new("zero.tenant", app.tenant.to_string()),
                KeyValue::new("zero.app", app.name.to_string()),
                KeyValue::new("http.route", route),
            ]);
            req.extensions_mut()
                .insert(zero_provider::trace::Parent(t.request.clone()));
        }
        app.available(&access.request_id).map_err(refusal)?;

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

        let Some(client_permit) = self.client_permits.take(access.remote.ip()) else {
            let limit = self.client_permits.max();
            if let Some(refused) = self.client_log.hit() {
                tracing::warn!(request_id = %access.request_id, client = %access.remote.ip(), limit, refused, "refused requests: the client has [http] max_concurrent_requests_per_client ({limit}) in flight");
            }
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this client has too many requests in flight on this node; retry shortly".into(),
            ));
        };
        let Ok(node_permit) = self.admission.node_slot() else {
            if let Some(refused) = self.node_refused.hit() {
                let limit = self.admission.node_limit();
                tracing::warn!(request_id = %access.request_id, limit, refused, "refused requests: the node has [http] max_concurrent_requests ({limit}) in flight");
            }
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is at its limit of concurrent requests; retry shortly".into(),
            ));
        };
        let Ok(app_permit) = app.permits.clone().try_acquire_owned() else {
            if let Some(refused) = app.refused.hit() {
                tracing::warn!(request_id = %access.request_id, tenant = %app.tenant, app = %app.name, refused, "refused requests: the app is at its limit of concurrent requests");
            }
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this app is at its limit of concurrent requests; retry shortly".into(),
            ));
        };

        let Ok(tenant_permit) = self.admission.tenant_slot(&tenant_gate.slots) else {
            if let Some(refused) = tenant_gate.refused.hit() {
                let limit = self.admission.tenant_limit();
                tracing::warn!(request_id = %access.request_id, tenant = %app.tenant, limit, refused, "refused requests: the tenant has [http] max_concurrent_requests_per_tenant ({limit}) in flight");
            }
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this tenant's apps are at their limit of concurrent requests; retry shortly"
                    .into(),
            ));
        };

        let req = req.map(|b| body::LimitedIncoming::new(b, max_body).boxed_unsync());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let run = app
            .http(access.request_id.clone(), req, sender)
            .map_err(refusal)?;
        let task = tokio::spawn(async move {
            let _permits = (client_permit, node_permit, tenant_permit, app_permit);
            run.await
        });
        let task = body::TaskGuard::new(task);

        match receiver.await {
            Ok(Ok(resp)) => {
                if let Some(t) = &mut access.trace {
                    use zero_provider::trace::{self, KeyValue};
                    t.response = trace::start(
                        trace::names::RESPONSE,
                        trace::Kind::Internal,
                        &t.request,
                        vec![
                            KeyValue::new("zero.tenant", app.tenant.to_string()),
                            KeyValue::new("zero.app", app.name.to_string()),
                        ],
                    );
                }
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

/// The answer to a request the core refused to run.
fn refusal(why: Unavailable) -> (StatusCode, String) {
    match why {
        Unavailable::Failed | Unavailable::NoEntry => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this app is not available: it failed to load (the node log has the reason)".into(),
        ),
        Unavailable::Expired => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this app is not available: its authority expired (the node log has the reason)".into(),
        ),
        Unavailable::Start => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the node could not start the app".into(),
        ),
        Unavailable::Invalid(e) => (
            StatusCode::BAD_REQUEST,
            format!("the request cannot be handled: {e}"),
        ),
    }
}

/// The most bytes a request's target and headers may take, however they arrived: hyper refuses
/// a head over its read buffer (400 KiB) only when the head is still incomplete at that size,
/// so a larger head that arrives in one read would otherwise be served.
pub const MAX_HEAD_BYTES: usize = 400 << 10;

/// The bytes of `req`'s target and headers as they are written on the wire (`name: value\r\n`).
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
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
    if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
        // As hyper does for its own 431: the connection is not reused.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
