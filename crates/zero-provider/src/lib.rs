//! The plug between the zerocore runtime and its providers.
//!
//! A *provider* brings one capability to the platform. **Resource providers** (files, databases,
//! outgoing HTTP, …) add host interfaces to the component [`Linker`] and prepare per-request
//! state; **event providers** (HTTP, schedules) receive events from the outside world and ask the
//! core to run components for them. The core knows providers only through these traits; the one
//! place that names concrete providers is the node assembly (`zero-node`).
//!
//! This crate also defines [`HostState`], the data of every wasmtime `Store` the core creates:
//! the WASI context, the resource table, the HTTP context, the limits, the guest log sink and a
//! typed [`Extensions`] map where providers keep their own per-request state.

#![deny(missing_docs)]

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Who is running and why: the tenant, the app and the request (or event) id. Every log line a
/// guest produces carries these.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The tenant that owns the app.
    pub tenant: Arc<str>,
    /// The app's name within its tenant.
    pub app: Arc<str>,
    /// A unique id for this request or event, returned to HTTP clients in `x-request-id`.
    pub request_id: Arc<str>,
    /// The app's declared settings.
    pub settings: Arc<AppSettings>,
}

/// Settings an app declares at deployment that providers consult.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    /// Hosts (`host` or `host:port`, or `*` for any) the app may reach with outgoing HTTP.
    /// Empty means none: outgoing HTTP is denied by default.
    pub allowed_outbound_hosts: Vec<String>,
    /// The component's content hash (`sha256:…`), when known.
    pub component: Option<String>,
    /// The capabilities granted by the component's embedded token, verified at deploy. `None`:
    /// the component carries no token and gets no capabilities.
    pub capabilities: Option<Arc<zero_auth::Chain>>,
    /// The capability checker of the component, made once per deployment from
    /// [`AppSettings::capabilities`] with its tenant and content hash
    /// ([`zero_auth::ScopedChain::of_component`]): every provider asks it, and its answers are
    /// shared by all the app's instances. The default (no token) allows nothing.
    pub grants: Arc<zero_auth::ScopedChain>,
    /// The owner's credential the code was read with (deployed apps), validated when the code
    /// was fetched from zerofs.
    pub owner_credential: Option<Arc<zero_auth::Chain>>,
    /// Unix seconds after which the app must not serve: the earliest expiry of its capability
    /// token and of its owner's credential. `None`: neither expires.
    pub not_after: Option<u64>,
}

impl AppSettings {
    /// The earliest expiry of the capability token and the owner's credential, for
    /// [`AppSettings::not_after`].
    pub fn earliest_expiry(&self) -> Option<u64> {
        [&self.capabilities, &self.owner_credential]
            .into_iter()
            .flatten()
            .filter_map(|c| c.expiration())
            .min()
    }

    /// Why the app must not serve at Unix time `now`, if it must not.
    pub fn expired(&self, now: u64) -> Option<String> {
        let at = self.not_after?;
        if now < at {
            return None;
        }
        let which = match &self.capabilities {
            Some(c) if c.expiration() == Some(at) => "the component's capability token",
            _ => "the owner's credential the code was deployed with",
        };
        Some(format!(
            "{which} expired at {at} (Unix seconds); sign the component again with a valid \
             credential and deploy it"
        ))
    }

    /// Whether outgoing HTTP to `host` on `port` is allowed by the app's
    /// [`allowed_outbound_hosts`](AppSettings::allowed_outbound_hosts) (entries that are not
    /// valid [`HostPattern`]s match nothing). The node's own ceiling and the destination's
    /// address are checked separately by the outgoing-HTTP provider.
    pub fn outbound_allowed(&self, host: &str, port: u16) -> bool {
        self.allowed_outbound_hosts
            .iter()
            .filter_map(|entry| HostPattern::parse(entry).ok())
            .any(|p| p.matches(host, port))
    }
}

/// The host part of a [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    /// `*`: any host.
    Any,
    /// One host name or IP literal (lowercase, without a trailing dot, IPs in canonical form).
    Exact(String),
    /// `*.domain`: every name under `domain`, not `domain` itself.
    Subdomains(String),
}

/// One entry of an outbound host list (an app's `allowed_outbound_hosts`, or the node's
/// ceiling): `*` (any host), `host`, `*.domain` (any name under `domain`), each optionally with
/// `:port`; IPv6 literals are written `[::1]` or `[::1]:8080`. Without a port, any port matches.
/// Names compare case-insensitively and without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostName,
    port: Option<u16>,
}

/// Lowercases a host, strips `[`…`]` and one trailing dot, and writes IP literals canonically.
fn normalize_host(host: &str) -> String {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let h = h.strip_suffix('.').unwrap_or(h);
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

impl HostPattern {
    /// Parses an entry, saying what is wrong with a bad one.
    pub fn parse(entry: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| {
            format!(
                "`{entry}` is not a host pattern ({why}): write `host`, `host:port`, \
                 `*.domain`, `*` or `[ipv6]:port`, e.g. \"api.example.com\" or \"api.example.com:443\""
            )
        };
        let s = entry.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between `[` and `]`"));
            }
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| bad("text after `]`"))?),
            };
            (h, port)
        } else if s.matches(':').count() > 1 {
            if s.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("too many `:`"));
            }
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad("the port is not a number from 1 to 65535")),
            },
        };
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
        };
        let host = if host == "*" {
            HostName::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            let domain = normalize_host(domain);
            if !valid_name(&domain) {
                return Err(bad("`*.` must be followed by a domain name"));
            }
            HostName::Subdomains(domain)
        } else {
            let name = normalize_host(host);
            if name.parse::<std::net::IpAddr>().is_err() && !valid_name(&name) {
                return Err(bad(
                    "a host name is made of letters, digits, `-` and `_` between dots",
                ));
            }
            HostName::Exact(name)
        };
        Ok(HostPattern { host, port })
    }

    /// Whether a request to `host` (as written in a URI: `[::1]` for IPv6) on `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = normalize_host(host);
        match &self.host {
            HostName::Any => true,
            HostName::Exact(h) => *h == host,
            HostName::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// Whether every request `other` matches is also matched by `self` (used to hold a
    /// deployment's hosts under the node's ceiling).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let port_ok = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let under = |name: &str, d: &str| {
            name.strip_suffix(d)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        };
        port_ok
            && match (&self.host, &other.host) {
                (HostName::Any, _) => true,
                (_, HostName::Any) => false,
                (HostName::Exact(a), HostName::Exact(b)) => a == b,
                (HostName::Exact(_), HostName::Subdomains(_)) => false,
                (HostName::Subdomains(d), HostName::Exact(n)) => under(n, d),
                (HostName::Subdomains(d), HostName::Subdomains(e)) => e == d || under(e, d),
            }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostName::Any => f.write_str("*")?,
            HostName::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            HostName::Exact(h) => f.write_str(h)?,
            HostName::Subdomains(d) => write!(f, "*.{d}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// Splits `host:port` (with `[v6]:port` support). A missing or unparsable port gives `None`.
pub fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

/// Limits applied to one guest instance.
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    /// Maximum bytes of each linear memory.
    pub memory_bytes: usize,
    /// Maximum elements of each table.
    pub table_elements: usize,
    /// Maximum core instances in the store.
    pub instances: usize,
    /// Maximum tables in the store.
    pub tables: usize,
    /// Maximum linear memories in the store.
    pub memories: usize,
    /// CPU budget in nanoseconds.
    pub cpu_ns: u64,
}

/// Which limit a guest ran into, recorded so that a following trap can be explained.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// A memory growth beyond the cap was refused.
    pub memory_limit: Option<usize>,
    /// A table growth beyond the cap was refused.
    pub table_limit: Option<usize>,
    /// The CPU budget ran out.
    pub cpu_limit: bool,
    /// The guest printed a Rust panic message on stderr.
    pub panicked: Arc<AtomicBool>,
}

/// A guest's CPU meter, updated at every epoch tick while the guest runs.
#[derive(Debug, Default, Clone)]
pub struct CpuMeter {
    /// CPU time charged so far, in nanoseconds.
    pub used_ns: u64,
    /// Epoch ticks at which the guest was found running.
    pub ticks: u64,
    /// Where and when the guest last resumed after yielding: its thread, that thread's CPU
    /// clock, and the wall clock.
    pub mark: Arc<Mutex<Option<CpuMark>>>,
}

/// The calling thread's CPU clock in nanoseconds, where the platform has one: what the CPU
/// meter charges for guest code and for host work done on a request's behalf.
pub fn thread_cpu_ns() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is a clock id
        // every supported unix provides; the call writes only into `ts`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Some(
                (ts.tv_sec as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_nsec as u64),
            );
        }
    }
    None
}

/// A point at which a guest resumed running on a thread.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// The thread.
    pub thread: std::thread::ThreadId,
    /// The thread's CPU clock then, in nanoseconds.
    pub thread_cpu_ns: u64,
    /// The wall clock then.
    pub at: std::time::Instant,
}

/// Per-request typed storage for providers' own state.
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl Extensions {
    /// Stores a value, replacing any previous value of the same type.
    pub fn insert<T: Any + Send>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// Borrows the value of type `T`, if present.
    pub fn get<T: Any + Send>(&self) -> Option<&T> {
        self.map.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Mutably borrows the value of type `T`, if present.
    pub fn get_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        self.map.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }
}

/// Outgoing-HTTP hooks that refuse every request: the default for every store, so that a guest
/// can reach the network only when a provider installs a policy that allows it.
pub struct DenyAllOutgoing;

impl WasiHttpHooks for DenyAllOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        tracing::warn!(uri = %request.uri(), "outgoing HTTP request denied: no outgoing HTTP is configured for this store");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The data of every `Store` created by the core.
pub struct HostState {
    /// Who is running.
    pub invocation: Invocation,
    /// The WASI context (stdio, clocks, random, filesystem preopens, sockets policy).
    pub wasi: WasiCtx,
    /// Resource table shared by WASI and the providers.
    pub table: ResourceTable,
    /// wasi:http context.
    pub http: WasiHttpCtx,
    /// wasi:http hooks (outgoing HTTP policy). Defaults to [`DenyAllOutgoing`].
    pub http_hooks: Box<dyn WasiHttpHooks>,
    /// Limits for this instance.
    pub limits: GuestLimits,
    /// Which limits were hit.
    pub faults: Faults,
    /// CPU meter.
    pub cpu: CpuMeter,
    /// Providers' per-request state.
    pub extensions: Extensions,
}

impl HostState {
    /// Creates the state for one invocation; `wasi` is built by the core from a builder that
    /// providers configured through [`ResourceProvider::configure_wasi`].
    pub fn new(invocation: Invocation, wasi: WasiCtx, limits: GuestLimits, faults: Faults) -> Self {
        HostState {
            invocation,
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: Box::new(DenyAllOutgoing),
            limits,
            faults,
            cpu: CpuMeter::default(),
            extensions: Extensions::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut *self.http_hooks,
        }
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.faults.memory_limit = Some(self.limits.memory_bytes);
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.faults.table_limit = Some(self.limits.table_elements);
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

/// Which guest stream a [`GuestLog`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl GuestStream {
    fn as_str(self) -> &'static str {
        match self {
            GuestStream::Stdout => "stdout",
            GuestStream::Stderr => "stderr",
        }
    }
}

/// Longest guest log line kept; longer lines are split.
pub const MAX_LOG_LINE: usize = 4096;

struct LogSink {
    invocation: Invocation,
    stream: GuestStream,
    buf: Vec<u8>,
    budget: usize,
    truncated: bool,
    panicked: Arc<AtomicBool>,
}

impl LogSink {
    fn emit(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if self.stream == GuestStream::Stderr && line.contains("panicked at") {
            self.panicked.store(true, Ordering::Relaxed);
        }
        if self.budget < line.len() {
            if !self.truncated {
                self.truncated = true;
                tracing::warn!(
                    target: "guest",
                    tenant = %self.invocation.tenant,
                    app = %self.invocation.app,
                    request_id = %self.invocation.request_id,
                    stream = self.stream.as_str(),
                    "guest output exceeded its log budget; further output of this request is dropped"
                );
            }
            return;
        }
        self.budget -= line.len();
        tracing::info!(
            target: "guest",
            tenant = %self.invocation.tenant,
            app = %self.invocation.app,
            request_id = %self.invocation.request_id,
            stream = self.stream.as_str(),
            "{line}"
        );
    }

    fn push(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            let (head, tail) = data.split_at(pos);
            self.buf.extend_from_slice(head);
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
            data = &tail[1..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MAX_LOG_LINE {
            let rest = self.buf.split_off(MAX_LOG_LINE);
            let line = std::mem::replace(&mut self.buf, rest);
            self.emit(&line);
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

/// A guest's stdout or stderr that becomes node log lines tagged with tenant, app and request id.
///
/// Output is split into lines (at most [`MAX_LOG_LINE`] bytes each) and capped at a byte budget
/// per request so that a chatty guest cannot flood the node's log.
#[derive(Clone)]
pub struct GuestLog {
    sink: Arc<Mutex<LogSink>>,
}

impl GuestLog {
    /// A log sink for one stream of one invocation, keeping at most `budget` bytes.
    pub fn new(
        invocation: Invocation,
        stream: GuestStream,
        budget: usize,
        panicked: Arc<AtomicBool>,
    ) -> Self {
        GuestLog {
            sink: Arc::new(Mutex::new(LogSink {
                invocation,
                stream,
                buf: Vec::new(),
                budget,
                truncated: false,
                panicked,
            })),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.sink.lock() {
            Ok(mut sink) => sink.push(buf),
            Err(poisoned) => poisoned.into_inner().push(buf),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Common to every provider.
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and errors, such as `zeroproxy`.
    fn name(&self) -> &'static str;
}

/// A provider of host interfaces to components.
pub trait ResourceProvider: Provider {
    /// The WIT interfaces (`package/interface`, without version) this provider supplies, used to
    /// explain a missing import.
    fn interfaces(&self) -> Vec<String>;

    /// Adds the provider's host functions to the linker shared by every component.
    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> anyhow::Result<()>;

    /// Adjusts the WASI context of a new store (for example, preopened directories).
    fn configure_wasi(
        &self,
        _invocation: &Invocation,
        _builder: &mut WasiCtxBuilder,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Prepares per-request state in a new store (for example, an outgoing-HTTP policy).
    fn configure_store(&self, _state: &mut HostState) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A signal that tells a running event provider to stop.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// A provider of events (HTTP requests, schedule ticks) that run components.
#[async_trait::async_trait]
pub trait EventProvider: Provider {
    /// Serves events until `shutdown` turns `true`, then finishes in-flight work and returns.
    async fn serve(&self, shutdown: Shutdown) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_policy_matches_host_and_port() {
        let s = AppSettings {
            allowed_outbound_hosts: vec!["api.example.com".into(), "127.0.0.1:8080".into()],
            ..AppSettings::default()
        };
        assert!(s.outbound_allowed("api.example.com", 443));
        assert!(s.outbound_allowed("API.example.com.", 80));
        assert!(s.outbound_allowed("127.0.0.1", 8080));
        assert!(!s.outbound_allowed("127.0.0.1", 8081));
        assert!(!s.outbound_allowed("evil.example.com", 443));
        assert!(!AppSettings::default().outbound_allowed("localhost", 80));
        let any = AppSettings {
            allowed_outbound_hosts: vec!["*".into()],
            ..AppSettings::default()
        };
        assert!(any.outbound_allowed("anything", 1));
        let broken = AppSettings {
            allowed_outbound_hosts: vec!["http://x/".into()],
            ..AppSettings::default()
        };
        assert!(!broken.outbound_allowed("x", 80));
    }

    #[test]
    fn host_patterns_parse_match_and_refuse_nonsense() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert!(p("*.example.com").matches("a.b.example.com", 443));
        assert!(!p("*.example.com").matches("example.com", 443));
        assert!(!p("*.example.com").matches("evilexample.com", 443));
        assert!(p("[::1]:8080").matches("[0:0::1]", 8080));
        assert!(p("::1").matches("[::1]", 1));
        assert!(!p("*:443").matches("x", 80));
        assert_eq!(p("API.Example.com:443").to_string(), "api.example.com:443");
        assert_eq!(p("[::1]").to_string(), "[::1]");
        for bad in [
            "", "http://x", "x/y", "x:0", "x:http", "a b", "*.", "[::1", "[x]:1", "a..b", "1:2:3",
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.contains("not a host pattern"), "{bad}: {e}");
        }
    }

    #[test]
    fn ceilings_cover_only_what_they_allow() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert!(p("*").covers(&p("*")));
        assert!(p("*").covers(&p("x:1")));
        assert!(!p("api.example.com").covers(&p("*")));
        assert!(p("api.example.com").covers(&p("API.example.com:443")));
        assert!(!p("api.example.com:443").covers(&p("api.example.com")));
        assert!(!p("api.example.com").covers(&p("other.example.com")));
        assert!(p("*.example.com").covers(&p("a.example.com")));
        assert!(p("*.example.com").covers(&p("*.a.example.com")));
        assert!(p("*.example.com").covers(&p("*.example.com:443")));
        assert!(!p("*.example.com").covers(&p("example.com")));
        assert!(!p("a.example.com").covers(&p("*.example.com")));
        assert!(!p("*:443").covers(&p("*")));
    }

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("a:1"), ("a", Some(1)));
        assert_eq!(split_host_port("a"), ("a", None));
        assert_eq!(split_host_port("[::1]:8"), ("::1", Some(8)));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }

    #[test]
    fn extensions_are_typed() {
        let mut e = Extensions::default();
        e.insert(5u32);
        e.insert("x");
        *e.get_mut::<u32>().unwrap() += 1;
        assert_eq!(e.get::<u32>(), Some(&6));
        assert_eq!(e.get::<&str>(), Some(&"x"));
        assert!(e.get::<u64>().is_none());
    }

    #[test]
    fn log_sink_splits_lines_and_detects_panics() {
        let panicked = Arc::new(AtomicBool::new(false));
        let inv = Invocation {
            tenant: "t".into(),
            app: "a".into(),
            request_id: "r".into(),
            settings: Arc::default(),
        };
        let log = GuestLog::new(inv, GuestStream::Stderr, 1 << 20, panicked.clone());
        let mut sink = log.sink.lock().unwrap();
        sink.push(b"one\ntwo");
        assert_eq!(sink.buf, b"two");
        sink.push(b"\nthread 'main' panicked at src/lib.rs:1:1:\n");
        assert!(panicked.load(Ordering::Relaxed));
        sink.push(&vec![b'x'; MAX_LOG_LINE * 2 + 1]);
        assert_eq!(sink.buf.len(), 1);
    }
}
