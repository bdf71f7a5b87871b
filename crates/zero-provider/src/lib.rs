//! The plug between the zerocore runtime and its providers.
//!
//! A *provider* brings one capability to the platform. **Resource providers** (files, databases,
//! outgoing HTTP, …) add host interfaces to the component `Linker` and keep their own state;
//! **event providers** (HTTP, schedules) receive events from the outside world and ask the core
//! to run components for them. The core knows providers only through these traits; the one place
//! that names concrete providers is the node assembly (`zero-node`).
//!
//! A [`ResourceProvider`] has two phases: [`prepare`](ResourceProvider::prepare) runs once per
//! deployment and yields its [`App`](ResourceProvider::App) state (grants built from the
//! component's chain, parsed settings), [`instance`](ResourceProvider::instance) runs for every
//! store and yields its [`Instance`](ResourceProvider::Instance) state. Its host traits are
//! implemented on a [`View`] of that instance state — the instance, the store's resource table,
//! the [`Invocation`] and the request's CPU [`Meter`] — which the store data hands out through
//! [`HasView`]: a provider's host calls reach their own state directly, with no lookup.
//!
//! A provider shows what it does on the node's `/metrics` endpoint through one more trait,
//! [`metrics::Metrics`].
//!
//! The store data itself (the WASI context, the limiter, the CPU meter, the guest log) belongs
//! to the core (`zerocore`); providers see only what a [`View`] carries.

#![deny(missing_docs)]

pub mod admission;
pub mod metrics;
pub mod settings;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};

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
    /// The span this invocation's spans are children of (the request's `zero.request` span),
    /// when traces are on and the invocation serves one request; `None` otherwise (see
    /// [`trace`]).
    pub trace: Option<trace::Context>,
}

/// Settings an app declares at deployment that providers consult.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    /// Hosts (`host` or `host:port`, or `*` for any) the app may reach with outgoing HTTP.
    /// Empty means none: outgoing HTTP is denied by default.
    pub allowed_outbound_hosts: Vec<String>,
    /// The component's content hash (`sha256:…`), when known.
    pub component: Option<String>,
    /// The capabilities granted by the component's embedded token, verified at deploy: one
    /// chain per capability the component was signed with. `None`: the component carries no
    /// token and gets no capabilities.
    pub capabilities: Option<Arc<[zero_auth::Chain]>>,
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
        self.capabilities
            .iter()
            .flat_map(|chains| chains.iter())
            .chain(self.owner_credential.as_deref())
            .filter_map(zero_auth::Chain::expiration)
            .min()
    }

    /// Why the app must not serve at Unix time `now`, if it must not.
    pub fn expired(&self, now: u64) -> Option<String> {
        let at = self.not_after?;
        if now < at {
            return None;
        }
        let token = self
            .capabilities
            .iter()
            .flat_map(|chains| chains.iter())
            .any(|c| c.expiration() == Some(at));
        let which = if token {
            "the component's capability token"
        } else {
            "the owner's credential the code was deployed with"
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

/// The words of a run-time refusal for a capability the app's code used but was not granted:
/// what was refused and the line of the app manifest (`zero.toml`) that grants it, e.g.
/// `not granted: /fs/read on /secret/a.txt; add to zero.toml: [capabilities.files] read =
/// ["/secret"]`. Each provider renders its own `what` and `manifest` line (see
/// [`toml_list`]) and logs this in the app's log line for the refused call.
pub fn not_granted(what: &str, manifest: &str) -> String {
    format!("not granted: {what}; add to zero.toml: {manifest}")
}

/// A one-element TOML array of the basic string `value` (`["/site"]`), with `"`, `\` and
/// control characters escaped so that the line can be pasted into `zero.toml` as is.
pub fn toml_list(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    out.push_str("[\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push_str("\"]");
    out
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

/// What a provider is told about a deployment in its per-app phase.
#[derive(Debug, Clone, Copy)]
pub struct AppContext<'a> {
    /// The tenant that owns the app.
    pub tenant: &'a str,
    /// The app's name within its tenant.
    pub name: &'a str,
    /// The app's settings (component hash, capabilities, outgoing hosts, …).
    pub settings: &'a AppSettings,
}

/// The request's CPU meter as providers see it: host work done on a request's behalf on
/// another thread (a blocking SQLite statement) is charged here, so that it counts against the
/// request's CPU budget like guest code does.
pub trait Meter: Send {
    /// The CPU time the request may still use.
    fn cpu_left(&self) -> Duration;
    /// Charges `used` to the request. The guest is stopped at its next epoch tick if the
    /// budget is spent.
    fn charge_cpu(&mut self, used: Duration);
    /// The node's fair turns for host work that uses the CPU on the request's behalf on another
    /// thread (a SQLite statement on the blocking pool), charged to the request's tenant;
    /// `None` where the node has none.
    fn cpu_turns(&self) -> Option<Arc<dyn CpuTurns>> {
        None
    }
}

/// The node's fair turns as host work on a blocking thread sees them: the CPU is shared
/// between tenants by the same turns whether guest code or host work uses it, so a tenant
/// cannot get more of it by moving its work into, say, SQL statements.
pub trait CpuTurns: Send + Sync {
    /// A turn for host work, not held yet: the work takes it at its first
    /// [`HeldTurn::checkpoint`], so that it never holds a turn while it blocks on something
    /// other than the CPU (a lock, a connection).
    fn turn(&self) -> Box<dyn HeldTurn>;
}

/// A turn for host work (see [`CpuTurns`]); given back when dropped.
pub trait HeldTurn: Send + std::fmt::Debug {
    /// Called often while the work uses the CPU (cheap when nothing is to be done): takes the
    /// turn if it is not held, waiting for it; once it has been held for a slice, or when a
    /// more entitled guest waits for one, gives it back and waits for it again. Returns how
    /// long it waited, so that time limits of the work can leave that time out.
    fn checkpoint(&mut self) -> Duration;
    /// Gives the turn back if it is held, before the work blocks or ends.
    fn pause(&mut self);
}

/// What a provider's host calls see of one store: its own instance state, the store's resource
/// table, who is running, and the request's CPU meter. Providers implement their host traits on
/// a `View` of their [`ResourceProvider::Instance`] (through a `wasmtime::component::HasData`
/// type whose `Data<'a>` is `View<'a, Instance>`).
pub struct View<'a, I> {
    /// The provider's state for this store.
    pub instance: &'a mut I,
    /// The store's resource table, shared by every interface of the store.
    pub table: &'a mut ResourceTable,
    /// Who is running.
    pub invocation: &'a Invocation,
    /// The request's CPU meter.
    pub meter: &'a mut dyn Meter,
    /// The host call's span (see [`trace`]), ended when the view is dropped: when the host
    /// function returns.
    span: trace::Span,
}

impl<'a, I> View<'a, I> {
    /// A view over these parts, within the host call's `span` ([`trace::Span::none`] when the
    /// call is not traced).
    pub fn new(
        instance: &'a mut I,
        table: &'a mut ResourceTable,
        invocation: &'a Invocation,
        meter: &'a mut dyn Meter,
        span: trace::Span,
    ) -> Self {
        View {
            instance,
            table,
            invocation,
            meter,
            span,
        }
    }

    /// The host call's span, if it is traced: a provider may add attributes of its own
    /// (never guest-chosen text) or mark it failed.
    pub fn span(&self) -> &trace::Span {
        &self.span
    }
}

/// Store data that holds provider `P`'s instance state: the accessor a provider's
/// [`add_to_linker`](ResourceProvider::add_to_linker) uses for its host functions
/// (`<T as HasView<P>>::view` is the `fn(&mut T) -> D::Data<'_>` getter wasmtime's generated
/// `add_to_linker` functions take). The node's store data implements it once per provider
/// (generated by `zerocore::providers!`).
pub trait HasView<P: ResourceProvider>: Send + 'static {
    /// The view of `P`'s state in this store.
    fn view(&mut self) -> View<'_, P::Instance>;
}

/// A provider of host interfaces to components.
///
/// A provider costs its crate, its WIT, one line in the node's `zerocore::providers!` list
/// and its configuration section. It is used statically (the node's provider set is one
/// struct generated from that list), so its methods may be generic.
pub trait ResourceProvider: Send + Sync + Sized + 'static {
    /// What the provider keeps per deployment (built once by [`prepare`](Self::prepare), shared
    /// by every store of the app).
    type App: Send + Sync + 'static;
    /// What the provider keeps per store (built by [`instance`](Self::instance) for every
    /// request or event, dropped with the store).
    type Instance: Send + 'static;

    /// A short name for logs and errors, such as `zerodb`.
    fn name(&self) -> &'static str;

    /// Whether the core opens a [`trace::names::HOST_CALL`] span for each of this provider's
    /// host calls (while traces are on). A provider whose host functions are many and small
    /// (`wasi:http`'s field accessors) turns it off and traces what matters itself.
    const TRACE_HOST_CALLS: bool = true;

    /// The WIT interfaces (`package/interface`, without version) this provider supplies, used to
    /// explain a missing import.
    fn interfaces(&self) -> Vec<String>;

    /// Adds the provider's host functions to the linker shared by every component; they reach
    /// the provider's state through `T`'s [`HasView`] accessor.
    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()>;

    /// The per-app phase: work done once per deployment (grants from the component's chain,
    /// parsed settings). An error refuses the app with its message.
    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<Self::App>;

    /// The per-instance phase: the state of one new store of the app. An error fails the
    /// request before the guest runs.
    fn instance(
        &self,
        app: &Arc<Self::App>,
        invocation: &Invocation,
    ) -> anyhow::Result<Self::Instance>;

    /// A reused instance (a WASI 0.3 app under `max_reuse` or `max_concurrent_per_instance`)
    /// accepted a request, `alone` if no other request was in flight on it (always for its
    /// first): a per-request allowance kept in the instance state (such as a count of outgoing
    /// requests) gives that request its share — afresh when `alone`, added to what the
    /// requests in flight still have otherwise. The default does nothing.
    fn request_accepted(_instance: &mut Self::Instance, _alone: bool) {}
}

/// Common to every event provider.
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and errors, such as `zeroproxy`.
    fn name(&self) -> &'static str;
}

/// A signal that tells a running event provider to stop.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// A provider of events (HTTP requests, schedule ticks) that run components (through the
/// core's `zerocore::App`).
#[async_trait::async_trait]
pub trait EventProvider: Provider {
    /// Serves events until `shutdown` turns `true`, then finishes in-flight work and returns.
    async fn serve(&self, shutdown: Shutdown) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_hints_are_pastable_manifest_lines() {
        assert_eq!(toml_list("/site"), r#"["/site"]"#);
        assert_eq!(toml_list("a\"b\\c\n"), r#"["a\"b\\c\u000A"]"#);
        assert_eq!(
            not_granted(
                "/fs/read on /secret/a.txt",
                "[capabilities.files] read = [\"/secret\"]"
            ),
            r#"not granted: /fs/read on /secret/a.txt; add to zero.toml: [capabilities.files] read = ["/secret"]"#
        );
    }

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
}
