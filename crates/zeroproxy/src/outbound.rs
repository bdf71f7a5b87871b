//! `wasi:http/types` and `wasi:http/outgoing-handler` for components (WASI 0.2), and
//! `wasi:http/client` for WASI 0.3 components, under the node's outgoing-HTTP rule: both
//! versions send through the same [`OutboundPolicy`] hooks, so every rule below holds for both.
//!
//! An outgoing request is sent only when all of these hold, checked in this order:
//! 1. the invocation has made fewer than [`OutboundConfig::max_requests_per_invocation`]
//!    outgoing requests;
//! 2. the host (and port) is in the app's `allowed_outbound_hosts` (set by the deployer);
//! 3. the host is within the node's ceiling ([`OutboundConfig::host_ceiling`], set by the
//!    operator; deploys naming more are refused, and this check catches apps deployed before a
//!    ceiling was lowered);
//! 4. the host resolves (an IP literal is taken as is), and **every** address it resolves to
//!    passes the address rule ([`AddrPolicy`]): public, or listed by the operator, and never
//!    the node's management API.
//!
//! The connection then goes to the checked addresses themselves, never to a second lookup of
//! the name, so a DNS answer that changes between the check and the connection (DNS
//! rebinding) cannot redirect it. Connecting (DNS, TCP, TLS, HTTP handshake), the response head
//! and every gap in the response body are bounded by the node's timeouts (a guest may ask for
//! shorter ones, never longer), and everything an invocation started ends when its store is
//! dropped, at the latest when the request's wall-clock limit ends it.

mod addr;
mod send;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::{LinkOptions, http as wit};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttp, WasiHttpCtx, WasiHttpCtxView,
    WasiHttpHooks,
};
use zero_provider::{AppContext, HasView, HostPattern, Invocation, ResourceProvider, View};

pub use addr::{AddrPolicy, AddrRefusal, AllowedNet, classify};

/// The operator's rule for outgoing HTTP: `[outbound]` in `zerocore.toml` (keys in brackets).
///
/// A request goes out only if its host is in the app's `allowed_outbound_hosts` (set by whoever
/// deploys it) and within the ceiling (set by the operator), and every address the host
/// resolves to is public or allowed here. The ceiling applies to every app, those declared in
/// the configuration file included.
#[derive(Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// The most that an app's `allowed_outbound_hosts` may name: every entry must be covered
    /// by one of these (`allowed_hosts_ceiling`: `*`, `host`, `host:port`, `*.domain`). `*`,
    /// the default, lets deployers name any host (destinations are still held to the address
    /// rule).
    #[serde(rename = "allowed_hosts_ceiling", deserialize_with = "host_ceiling")]
    pub host_ceiling: Vec<HostPattern>,
    /// Non-public destinations the operator allows (`allow_private`: networks such as
    /// `"10.0.0.0/8"`, or `address:port`). Default empty; the node's management API stays
    /// unreachable whatever this says.
    pub allow_private: Vec<AllowedNet>,
    /// Longest time from the start of an outgoing request to an established connection (DNS,
    /// TCP, TLS and HTTP handshakes; `connect_timeout_ms`).
    #[serde(
        rename = "connect_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the request is sent (`first_byte_timeout_ms`).
    #[serde(
        rename = "first_byte_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub first_byte_timeout: Duration,
    /// Longest gap between two frames of a response body (`between_bytes_timeout_ms`).
    #[serde(
        rename = "between_bytes_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub between_bytes_timeout: Duration,
    /// Outgoing requests one invocation (an incoming request, an event) may make
    /// (`max_requests_per_invocation`).
    pub max_requests_per_invocation: usize,
    /// The node's own listeners, refused whatever `allow_private` says (filled in by
    /// [`OutboundConfig::protect`] once they are bound; not configurable).
    #[serde(skip)]
    pub protected: RwLock<Vec<SocketAddr>>,
}

/// Reads `allowed_hosts_ceiling`, naming it in the error of a bad entry.
fn host_ceiling<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<HostPattern>, D::Error> {
    let entries = <Vec<String> as serde::Deserialize>::deserialize(d)?;
    entries
        .iter()
        .map(|h| {
            HostPattern::parse(h)
                .map_err(|e| serde::de::Error::custom(format!("allowed_hosts_ceiling: {e}")))
        })
        .collect()
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            host_ceiling: HostPattern::parse("*").into_iter().collect(),
            allow_private: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            between_bytes_timeout: Duration::from_secs(10),
            max_requests_per_invocation: 16,
            protected: RwLock::new(Vec::new()),
        }
    }
}

/// Why a list of outbound hosts cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// An entry is not a valid host pattern.
    #[error("allowed_outbound_hosts: {0}")]
    Invalid(String),
    /// An entry asks for more than the node's ceiling.
    #[error(
        "allowed_outbound_hosts entry `{entry}` is beyond what this node lets deployers allow: \
         the operator's ceiling ([outbound] allowed_hosts_ceiling in zerocore.toml) is {ceiling}; \
         name only hosts within it, or ask the operator to raise it"
    )]
    AboveCeiling {
        /// The entry, as given.
        entry: String,
        /// The ceiling, for the message.
        ceiling: String,
    },
}

impl OutboundConfig {
    /// Checks a deployment's `allowed_outbound_hosts`: every entry must be a valid
    /// [`HostPattern`] covered by the ceiling.
    pub fn check_hosts(&self, entries: &[String]) -> Result<(), HostsError> {
        for entry in entries {
            let pattern = HostPattern::parse(entry).map_err(HostsError::Invalid)?;
            if !self.host_ceiling.iter().any(|c| c.covers(&pattern)) {
                return Err(HostsError::AboveCeiling {
                    entry: entry.clone(),
                    ceiling: self.ceiling_text(),
                });
            }
        }
        Ok(())
    }

    fn ceiling_text(&self) -> String {
        if self.host_ceiling.is_empty() {
            return "empty (no outgoing HTTP)".into();
        }
        let list: Vec<String> = self
            .host_ceiling
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Marks one of the node's own listeners (the management API) as never reachable by
    /// components.
    pub fn protect(&self, addr: SocketAddr) {
        let mut p = self.protected.write().unwrap_or_else(|e| e.into_inner());
        p.push(addr);
    }

    /// The address rule as configured now.
    pub fn addr_policy(&self) -> AddrPolicy {
        AddrPolicy {
            allow_private: self.allow_private.clone(),
            protected: self
                .protected
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The resource provider for `wasi:http` host interfaces.
#[derive(Debug, Default)]
pub struct HttpResources {
    config: Arc<OutboundConfig>,
}

impl HttpResources {
    /// The provider, with the node's outgoing-HTTP rule.
    pub fn new(config: Arc<OutboundConfig>) -> HttpResources {
        HttpResources { config }
    }
}

/// What the provider keeps per deployment: the app's `allowed_outbound_hosts`, parsed once
/// (entries that are not valid patterns match nothing; deploys refuse them before this).
#[derive(Debug, Default)]
pub struct OutboundApp {
    hosts: Vec<HostPattern>,
}

impl OutboundApp {
    /// The parsed list of `entries`.
    pub fn new(entries: &[String]) -> OutboundApp {
        OutboundApp {
            hosts: entries
                .iter()
                .filter_map(|e| HostPattern::parse(e).ok())
                .collect(),
        }
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port))
    }
}

/// What the provider keeps per store: the `wasi:http` context of the guest's outgoing side
/// and the invocation's [`OutboundPolicy`].
pub struct HttpInstance {
    ctx: WasiHttpCtx,
    policy: OutboundPolicy,
}

/// The `wasi:http` view of a store, over its [`HttpInstance`] (wasi:http's own host traits are
/// implemented on `WasiHttpCtxView`).
fn http_view<T: HasView<HttpResources>>(data: &mut T) -> WasiHttpCtxView<'_> {
    let View {
        instance, table, ..
    } = data.view();
    let HttpInstance { ctx, policy } = instance;
    WasiHttpCtxView {
        ctx,
        table,
        hooks: policy,
    }
}

impl ResourceProvider for HttpResources {
    type App = OutboundApp;
    type Instance = HttpInstance;

    fn name(&self) -> &'static str {
        "wasi-http"
    }

    // `wasi:http/types` is dozens of small calls per request (fields, streams): each outgoing
    // request gets one `zero.outbound` span instead (`OutboundPolicy::send_request`).
    const TRACE_HOST_CALLS: bool = false;

    fn interfaces(&self) -> Vec<String> {
        vec![
            "wasi:http/types".into(),
            "wasi:http/outgoing-handler".into(),
            // WASI 0.3's outgoing HTTP (its `wasi:http/types@0.3` is the core's).
            "wasi:http/client@0.3".into(),
        ]
    }

    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        let options = LinkOptions::default();
        wit::outgoing_handler::add_to_linker::<T, WasiHttp>(linker, http_view::<T>)?;
        wit::types::add_to_linker::<T, WasiHttp>(linker, &(&options).into(), http_view::<T>)?;
        // `wasi:http/client@0.3#send` hands the guest's request to the same hooks
        // (`WasiHttpHooks::send_request`) as 0.2's `outgoing-handler#handle`. Its request and
        // response resources live in the store's one table, next to those of the core's
        // `wasi:http/types@0.3`.
        wasmtime_wasi_http::p3::bindings::http::client::add_to_linker::<T, WasiHttp>(
            linker,
            http_view::<T>,
        )?;
        Ok(())
    }

    fn request_accepted(instance: &mut HttpInstance, alone: bool) {
        instance.policy.request_accepted(alone);
    }

    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<OutboundApp> {
        Ok(OutboundApp::new(&app.settings.allowed_outbound_hosts))
    }

    fn instance(
        &self,
        app: &Arc<OutboundApp>,
        invocation: &Invocation,
    ) -> anyhow::Result<HttpInstance> {
        Ok(HttpInstance {
            ctx: WasiHttpCtx::new(),
            policy: OutboundPolicy::new(invocation.clone(), app.clone(), self.config.clone()),
        })
    }
}

/// Outgoing-HTTP hooks of one invocation: the node's rule (see the module documentation),
/// the invocation's request count, and the signal that ends its outgoing requests when the
/// invocation's store is dropped.
pub struct OutboundPolicy {
    invocation: Invocation,
    app: Arc<OutboundApp>,
    config: Arc<OutboundConfig>,
    sent: usize,
    /// The count of `sent` up to which requests go out: `max_requests_per_invocation` for a
    /// store serving one request (see [`OutboundPolicy::request_accepted`] for reused ones).
    allowed: usize,
    /// Dropped with the store; every outgoing request of this invocation watches it.
    alive: tokio::sync::watch::Sender<()>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// The refusal of outgoing HTTP to `host` on `port` in the words of the app manifest: the
/// `[app] outbound` line that allows it (the host alone on the scheme's default port, with
/// the port otherwise; an IPv6 literal in brackets).
pub fn refusal_hint(host: &str, port: u16, use_tls: bool) -> String {
    let default_port = if use_tls { 443 } else { 80 };
    let name = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let entry = if port == default_port {
        name
    } else {
        format!("{name}:{port}")
    };
    zero_provider::not_granted(
        &format!("outgoing HTTP to {entry}"),
        &format!("[app] outbound = {}", zero_provider::toml_list(&entry)),
    )
}

/// What the guest asked to reach.
struct Target {
    host: String,
    port: u16,
    use_tls: bool,
}

impl OutboundPolicy {
    /// The hooks for one invocation of an app allowed `app`'s hosts.
    pub fn new(
        invocation: Invocation,
        app: Arc<OutboundApp>,
        config: Arc<OutboundConfig>,
    ) -> OutboundPolicy {
        let allowed = config.max_requests_per_invocation;
        OutboundPolicy {
            invocation,
            app,
            config,
            sent: 0,
            allowed,
            alive: tokio::sync::watch::channel(()).0,
        }
    }

    /// The store is a reused (WASI 0.3) instance that accepted a request: that request may make
    /// `max_requests_per_invocation` outgoing requests. `alone` (no other request in flight on
    /// the instance): exactly that many from now on, so requests served one after another
    /// each get their own count; otherwise that many more for the requests in flight together
    /// (at most `max_requests_per_invocation` × `max_concurrent_per_instance` outstanding).
    pub fn request_accepted(&mut self, alone: bool) {
        let max = self.config.max_requests_per_invocation;
        let base = if alone { self.sent } else { self.allowed };
        self.allowed = base.saturating_add(max);
    }

    fn deny(&self, uri: &http::Uri, message: &str) {
        tracing::warn!(
            tenant = %self.invocation.tenant,
            app = %self.invocation.app,
            request_id = %self.invocation.request_id,
            %uri,
            "{message}"
        );
    }

    /// The checks that need no network: count, scheme, host lists.
    fn admit(&mut self, uri: &http::Uri) -> Result<Target, HttpError> {
        self.sent += 1;
        let max = self.config.max_requests_per_invocation;
        if self.sent > self.allowed {
            self.deny(
                uri,
                &format!(
                    "outgoing HTTP request denied: this request already made {max} outgoing requests, the most one request may make ([outbound] max_requests_per_invocation in zerocore.toml)"
                ),
            );
            return Err(HttpError::ConnectionLimitReached);
        }
        let use_tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                self.deny(
                    uri,
                    "outgoing HTTP request denied: only http and https URLs are supported",
                );
                return Err(HttpError::HttpProtocolError);
            }
        };
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
        if host.is_empty() {
            self.deny(uri, "outgoing HTTP request denied: the URL has no host");
            return Err(HttpError::HttpRequestUriInvalid);
        }
        let shown = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        if !self.app.allows(&host, port) {
            self.deny(
                uri,
                &format!(
                    "outgoing HTTP request denied: `{shown}` is not in the app's allowed_outbound_hosts (the deployer sets it: `zero deploy --allow-outbound HOST`, or allowed_outbound_hosts in zerocore.toml); {}",
                    refusal_hint(&host, port, use_tls)
                ),
            );
            return Err(HttpError::HttpRequestDenied);
        }
        if !self
            .config
            .host_ceiling
            .iter()
            .any(|c| c.matches(&host, port))
        {
            self.deny(
                uri,
                &format!(
                    "outgoing HTTP request denied: `{shown}` is beyond this node's ceiling {} ([outbound] allowed_hosts_ceiling in zerocore.toml)",
                    self.config.ceiling_text()
                ),
            );
            return Err(HttpError::HttpRequestDenied);
        }
        Ok(Target {
            host,
            port,
            use_tls,
        })
    }

    /// The node's timeouts, shortened where the guest asked for less.
    fn timeouts(&self, options: Option<RequestOptions>) -> send::Timeouts {
        let cap = |asked: Option<Duration>, max: Duration| asked.map_or(max, |a| a.min(max));
        let o = options.unwrap_or_default();
        send::Timeouts {
            connect: cap(o.connect_timeout, self.config.connect_timeout),
            first_byte: cap(o.first_byte_timeout, self.config.first_byte_timeout),
            between_bytes: cap(o.between_bytes_timeout, self.config.between_bytes_timeout),
        }
    }
}

/// Resolves `host` (an IP literal is taken as is).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let dns_error = |why: String| HttpError::DnsError {
        rcode: Some(why),
        info_code: None,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| dns_error(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(dns_error(format!("`{host}` has no address")));
    }
    Ok(addrs)
}

/// Ends `fut` with `ConnectionTerminated` once the invocation's store is gone.
async fn until_dropped<T>(
    mut alive: tokio::sync::watch::Receiver<()>,
    fut: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    tokio::select! {
        r = fut => r,
        _ = alive.changed() => Err(HttpError::ConnectionTerminated),
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri().clone();
        let target = match self.admit(&uri) {
            Ok(t) => t,
            Err(e) => return Box::new(async move { Err(e) }),
        };
        let span = outbound_span(&self.invocation, &mut request, &target);
        let timeouts = self.timeouts(options);
        let policy = self.config.addr_policy();
        let invocation = self.invocation.clone();
        let alive = self.alive.subscribe();
        Box::new(until_dropped(alive.clone(), async move {
            let deadline = tokio::time::Instant::now() + timeouts.connect;
            let addrs = tokio::time::timeout_at(deadline, resolve(&target.host, target.port))
                .await
                .map_err(|_| HttpError::DnsTimeout)??;
            for addr in &addrs {
                if let Err(refusal) = policy.check(*addr) {
                    tracing::warn!(
                        tenant = %invocation.tenant,
                        app = %invocation.app,
                        request_id = %invocation.request_id,
                        %uri,
                        "outgoing HTTP request to `{}` refused before connecting: {refusal}",
                        target.host
                    );
                    return Err(HttpError::DestinationIpProhibited);
                }
            }
            // Connect to exactly what was checked, IPv4-mapped addresses as plain IPv4.
            let addrs: Vec<SocketAddr> = addrs
                .iter()
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                .collect();
            let sent = send::send(
                request,
                &target.host,
                target.use_tls,
                &addrs,
                deadline,
                timeouts,
            )
            .await;
            let (res, io) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    span.fail(format!("{e:?}"));
                    return Err(e);
                }
            };
            span.set(zero_provider::trace::KeyValue::new(
                "http.response.status_code",
                i64::from(res.status().as_u16()),
            ));
            drop(span);
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(until_dropped(alive, Box::into_pin(io)));
            Ok((res, io))
        }))
    }
}

/// The [`OUTBOUND`](zero_provider::trace::names::OUTBOUND) span of an admitted outgoing
/// request of `invocation`, when it has a trace: `request` then carries that span's
/// `traceparent` (and its `tracestate`, if any), replacing whatever the guest set, so that the
/// upstream's spans join the request's trace. Without a trace the guest's headers go as they
/// are.
fn outbound_span<B>(
    invocation: &Invocation,
    request: &mut http::Request<B>,
    target: &Target,
) -> zero_provider::trace::Span {
    use zero_provider::trace::{self, KeyValue};
    let span = trace::Span::child(
        invocation.trace.as_ref(),
        trace::names::OUTBOUND,
        trace::Kind::Client,
        || {
            vec![
                KeyValue::new("http.request.method", method_name(request.method())),
                KeyValue::new("server.address", trace::bounded(&target.host)),
                KeyValue::new("server.port", i64::from(target.port)),
                KeyValue::new("zero.tenant", invocation.tenant.to_string()),
                KeyValue::new("zero.app", invocation.app.to_string()),
            ]
        },
    );
    if let Some(cx) = span.context() {
        let headers = request.headers_mut();
        headers.remove("traceparent");
        headers.remove("tracestate");
        if let Some(v) = trace::traceparent(cx).and_then(|v| http::HeaderValue::try_from(v).ok()) {
            headers.insert("traceparent", v);
        }
        if let Some(v) = trace::tracestate(cx).and_then(|v| http::HeaderValue::try_from(v).ok()) {
            headers.insert("tracestate", v);
        }
    }
    span
}

/// A request method as a span attribute: one of the standard methods, or `_OTHER` (the
/// OpenTelemetry convention), so that a guest's or client's made-up method names are not
/// recorded.
pub fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::CONNECT => "CONNECT",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero_provider::AppSettings;

    #[test]
    fn a_traced_outgoing_request_carries_the_nodes_trace_context_not_the_guests() {
        use zero_provider::trace;
        // A tracer that makes no spans of its own: a span's context is its parent's, so the
        // header the upstream gets is the request's own traceparent. (The other tests of this
        // binary make no spans.)
        trace::install(opentelemetry::global::BoxedTracer::new(Box::new(
            opentelemetry::trace::noop::NoopTracer::new(),
        )));
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let target = Target {
            host: "api.example.com".into(),
            port: 443,
            use_tls: true,
        };
        let guest_request = || {
            http::Request::builder()
                .uri("https://api.example.com/")
                .header(
                    "traceparent",
                    "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01",
                )
                .header("tracestate", "guest=chosen")
                .body(())
                .unwrap()
        };
        let invocation = |state: Option<&[u8]>| Invocation {
            tenant: "t".into(),
            app: "a".into(),
            request_id: "r".into(),
            settings: Arc::default(),
            trace: Some(trace::remote_parent(Some(parent.as_bytes()), state)),
        };
        let mut req = guest_request();
        let span = outbound_span(&invocation(Some(b"node=1")), &mut req, &target);
        assert!(span.context().is_some());
        assert_eq!(req.headers()["traceparent"], parent);
        assert_eq!(req.headers()["tracestate"], "node=1");
        assert_eq!(req.headers().get_all("traceparent").iter().count(), 1);
        // No tracestate in the trace: the guest's is removed too.
        let mut req = guest_request();
        let _span = outbound_span(&invocation(None), &mut req, &target);
        assert_eq!(req.headers()["traceparent"], parent);
        assert!(req.headers().get("tracestate").is_none());
        // An invocation without a trace (a reused instance, a tick): the guest's headers go.
        let mut req = guest_request();
        let untraced = Invocation {
            trace: None,
            ..invocation(None)
        };
        let span = outbound_span(&untraced, &mut req, &target);
        assert!(span.context().is_none());
        assert_eq!(
            req.headers()["traceparent"],
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"
        );
        assert_eq!(req.headers()["tracestate"], "guest=chosen");
    }

    fn policy(app_hosts: &[&str], config: OutboundConfig) -> OutboundPolicy {
        let hosts: Vec<String> = app_hosts.iter().map(|s| s.to_string()).collect();
        let invocation = Invocation {
            tenant: "t".into(),
            app: "a".into(),
            request_id: "r".into(),
            settings: Arc::new(AppSettings {
                allowed_outbound_hosts: hosts.clone(),
                ..AppSettings::default()
            }),
            trace: None,
        };
        OutboundPolicy::new(
            invocation,
            Arc::new(OutboundApp::new(&hosts)),
            Arc::new(config),
        )
    }

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn the_ceiling_holds_at_run_time_too() {
        // An app deployed with `*` before the operator lowered the ceiling.
        let mut p = policy(
            &["*"],
            OutboundConfig {
                host_ceiling: vec![HostPattern::parse("api.example.com:443").unwrap()],
                ..OutboundConfig::default()
            },
        );
        assert!(p.admit(&uri("https://api.example.com/x")).is_ok());
        assert!(matches!(
            p.admit(&uri("http://api.example.com/x")),
            Err(HttpError::HttpRequestDenied)
        ));
        assert!(matches!(
            p.admit(&uri("https://other.example.com/")),
            Err(HttpError::HttpRequestDenied)
        ));
    }

    #[test]
    fn a_refused_host_names_the_manifest_line_to_add() {
        assert_eq!(
            refusal_hint("api.example.com", 443, true),
            r#"not granted: outgoing HTTP to api.example.com; add to zero.toml: [app] outbound = ["api.example.com"]"#
        );
        assert!(refusal_hint("svc.test", 8080, false).ends_with(r#"outbound = ["svc.test:8080"]"#));
        assert!(refusal_hint("::1", 80, false).ends_with(r#"outbound = ["[::1]"]"#));
    }

    #[test]
    fn the_app_list_is_checked_with_default_ports() {
        let mut p = policy(&["[::1]:8080", "svc.test:80"], OutboundConfig::default());
        let t = p.admit(&uri("http://[::1]:8080/")).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.use_tls), ("::1", 8080, false));
        assert!(p.admit(&uri("http://svc.test/")).is_ok());
        assert!(matches!(
            p.admit(&uri("https://svc.test/")),
            Err(HttpError::HttpRequestDenied)
        ));
    }

    #[test]
    fn an_invocation_makes_at_most_the_configured_number_of_requests() {
        let mut p = policy(
            &["*"],
            OutboundConfig {
                max_requests_per_invocation: 2,
                ..OutboundConfig::default()
            },
        );
        // Refused requests count too: a guest cannot probe without bound.
        assert!(p.admit(&uri("ftp://x/")).is_err());
        assert!(p.admit(&uri("http://x/")).is_ok());
        assert!(matches!(
            p.admit(&uri("http://x/")),
            Err(HttpError::ConnectionLimitReached)
        ));
        // A reused instance accepting the next request alone: that request's count, afresh.
        p.request_accepted(true);
        assert!(p.admit(&uri("http://x/")).is_ok());
        assert!(p.admit(&uri("http://x/")).is_ok());
        assert!(p.admit(&uri("http://x/")).is_err());
        // Two requests in flight together share twice the count, no more.
        p.request_accepted(true);
        p.request_accepted(false);
        for _ in 0..4 {
            assert!(p.admit(&uri("http://x/")).is_ok());
        }
        assert!(p.admit(&uri("http://x/")).is_err());
    }

    #[test]
    fn guests_may_shorten_timeouts_but_not_lengthen_them() {
        let p = policy(&["*"], OutboundConfig::default());
        let t = p.timeouts(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(600)),
            first_byte_timeout: Some(Duration::from_millis(5)),
            between_bytes_timeout: None,
        }));
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.first_byte, Duration::from_millis(5));
        assert_eq!(t.between_bytes, Duration::from_secs(10));
    }

    #[test]
    fn deploys_beyond_the_ceiling_are_named() {
        let c = OutboundConfig {
            host_ceiling: vec![HostPattern::parse("*.example.com").unwrap()],
            ..OutboundConfig::default()
        };
        assert!(
            c.check_hosts(&["a.example.com".into(), "*.b.example.com:443".into()])
                .is_ok()
        );
        let e = c.check_hosts(&["example.com".into()]).unwrap_err();
        assert!(
            matches!(&e, HostsError::AboveCeiling { entry, .. } if entry == "example.com"),
            "{e}"
        );
        assert!(e.to_string().contains("[\"*.example.com\"]"), "{e}");
        let none = OutboundConfig {
            host_ceiling: vec![],
            ..OutboundConfig::default()
        };
        assert!(none.check_hosts(&[]).is_ok());
        assert!(
            none.check_hosts(&["a.test".into()])
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
