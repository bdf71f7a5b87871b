//! Connection admission and lifetime, shared by the node's listeners (zeroproxy's `[http]` and
//! the management API's `[admin]`): the node's and each client's connection caps (and the
//! per-client count of requests in flight), the cheap refusal of connections past them, accept
//! with a backoff when the process runs out of descriptors, the per-connection deadlines hyper
//! does not enforce (the first request's head counted from the accept, as hyper starts its
//! timer only once the protocol is known; an idle connection, as HTTP/2 has no timer of its
//! own; a response the client stopped reading), and the lingering close that lets a client
//! still sending read its refusal instead of a connection reset.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a refused connection is sent before it is closed: a complete HTTP/1.1 response, written
/// with one non-blocking write (never waited for).
/// The body is `message` as text, or, for an API whose errors are JSON, the error `name` and
/// `message` as a JSON object.
fn shed_response(name: &str, message: &str, json: bool) -> Vec<u8> {
    let (kind, body) = if json {
        // Our own fixed texts: only quotes and backslashes need escaping.
        let esc = |t: &str| t.trim_end().replace('\\', "\\\\").replace('"', "\\\"");
        let body = format!(
            "{{\"error\":\"{}\",\"message\":\"{}\"}}\n",
            esc(name),
            esc(message)
        );
        ("application/json", body)
    } else {
        ("text/plain; charset=utf-8", message.to_string())
    };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {kind}\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Logs an event at most once per interval, counting the occurrences in between (an attack
/// must not turn into a flood of log lines).
pub struct Throttle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    pending: AtomicU64,
}

impl Throttle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// Records one occurrence; `Some(n)` when a line should be logged now, for the `n`
    /// occurrences since the last line (this one included).
    pub fn hit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

/// The key a client's connections and requests are counted under: its IPv4 address, or the /64 of its IPv6
/// address (one host commonly holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts what each client holds (connections, or requests in flight), at most `max` each.
pub(crate) struct PerClient {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One unit a client holds; released when dropped.
pub(crate) struct ClientPermit {
    counter: Arc<PerClient>,
    key: IpAddr,
}

impl PerClient {
    pub(crate) fn new(max: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            max: max.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// One more for the client at `ip`, unless it holds `max` already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientPermit> {
        let key = client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientPermit {
            counter: self.clone(),
            key,
        })
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut held = self.counter.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// How long a client that made an authenticated call counts as known (see [`Reserve`]).
pub const VOUCHED_FOR: Duration = Duration::from_secs(600);
/// Clients remembered as known at most; past it the oldest are forgotten first.
const MAX_VOUCHED: usize = 4096;

/// What a client proved in an authenticated call ([`Connections::vouch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouched {
    /// A verified invocation of anyone the node trusts (a tenant owner, a delegate).
    Known,
    /// A verified invocation issued by the node's root authority itself (the Admin's key).
    Admin,
}

/// When a known client last authenticated, and last did so as the Admin.
#[derive(Debug, Clone, Copy)]
struct KnownClient {
    at: Instant,
    admin_at: Option<Instant>,
}

/// Connections kept for known clients: those that made an authenticated call lately (the
/// management API's, where a flood of connections from many addresses that never
/// authenticate must not lock its operators and tenants out). Of them, `admin_size` are kept
/// for clients that authenticated as the Admin, so that tenant owners, who are known clients
/// too, cannot take every kept place and lock out the one who can revoke them.
struct Reserve {
    /// Every kept place, the Admin's included.
    size: usize,
    /// Of `size`, the places only the Admin's clients may use.
    admin_size: usize,
    /// `size - admin_size` places for any known client.
    slots: Arc<Semaphore>,
    /// `admin_size` places for the Admin's clients.
    admin_slots: Arc<Semaphore>,
    /// Known clients, by [`client_key`].
    known: Mutex<HashMap<IpAddr, KnownClient>>,
    log: Throttle,
    admin_log: Throttle,
    response: Vec<u8>,
    admin_response: Vec<u8>,
}

/// The open connections: at most `max` on the node and `max_per_client` from one client, and
/// optionally a share of `max` that only known clients may use ([`Connections::vouch`]).
pub struct Connections {
    /// The configuration section the limits are set in (`[http]`, `[admin]`), for the log.
    section: &'static str,
    max: usize,
    /// Places anyone may take (`max` less the reserve).
    slots: Arc<Semaphore>,
    reserve: Option<Reserve>,
    per_client: Arc<PerClient>,
    full_log: Throttle,
    client_log: Throttle,
    full_response: Vec<u8>,
    client_response: Vec<u8>,
}

/// Which places a [`Place`] was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// The places anyone may take.
    General,
    /// The places kept for known clients.
    Known,
    /// The places kept for the Admin's clients.
    Admin,
}

/// A place under the node's connection cap, not yet given to a connection.
pub struct Place {
    permit: OwnedSemaphorePermit,
    pool: Pool,
}

/// One admitted connection's place; released when dropped.
pub struct Slot {
    _client: ClientPermit,
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    /// At most `max` connections, `max_per_client` from one client (an IPv4 address or an
    /// IPv6 /64); `section` names where they are configured (`"[http]"`), for the log.
    pub fn new(max: usize, max_per_client: usize, section: &'static str) -> Arc<Connections> {
        Self::build(max, max_per_client, 0, 0, section, false)
    }

    /// As [`Connections::new`], for an API whose errors are JSON objects (`error`, `message`):
    /// refused connections get theirs (`TooManyConnections`); `reserved` of the `max` places
    /// (at most `max - 1`) are kept for known clients, and of those `admin_reserved` for
    /// clients known as the Admin (see [`Connections::vouch`]).
    pub fn with_json_refusals(
        max: usize,
        max_per_client: usize,
        reserved: usize,
        admin_reserved: usize,
        section: &'static str,
    ) -> Arc<Connections> {
        Self::build(max, max_per_client, reserved, admin_reserved, section, true)
    }

    fn build(
        max: usize,
        max_per_client: usize,
        reserved: usize,
        admin_reserved: usize,
        section: &'static str,
        json: bool,
    ) -> Arc<Connections> {
        let max = max.max(1);
        let reserved = reserved.min(max - 1);
        let admin_reserved = admin_reserved.min(reserved);
        let reserve = (reserved > 0).then(|| Reserve {
            size: reserved,
            admin_size: admin_reserved,
            slots: Arc::new(Semaphore::new(reserved - admin_reserved)),
            admin_slots: Arc::new(Semaphore::new(admin_reserved)),
            known: Mutex::new(HashMap::new()),
            log: Throttle::new(Duration::from_secs(1)),
            admin_log: Throttle::new(Duration::from_secs(1)),
            response: shed_response(
                "TooManyConnections",
                &format!(
                    "the node is at its limit of open connections for clients that have not made \
                     an authenticated call lately ({section} max_connections less \
                     reserved_connections); retry shortly\n"
                ),
                json,
            ),
            admin_response: shed_response(
                "TooManyConnections",
                &format!(
                    "every connection this node keeps for known clients is taken except the \
                     {admin_reserved} kept for the Admin ({section} admin_reserved_connections); \
                     retry shortly\n"
                ),
                json,
            ),
        });
        Arc::new(Connections {
            section,
            max,
            slots: Arc::new(Semaphore::new(max - reserved)),
            reserve,
            per_client: PerClient::new(max_per_client),
            full_log: Throttle::new(Duration::from_secs(1)),
            client_log: Throttle::new(Duration::from_secs(1)),
            full_response: shed_response(
                "TooManyConnections",
                "the node is at its limit of open connections; retry shortly\n",
                json,
            ),
            client_response: shed_response(
                "TooManyConnections",
                &format!(
                    "this client has too many connections open to this node ({section} \
                     max_connections_per_client is {max_per_client}); close some and retry\n"
                ),
                json,
            ),
        })
    }

    /// Admits a connection from `ip`, or tells why not (the bytes to send it before closing).
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, &[u8]> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            if let Some(refused) = self.full_log.hit() {
                tracing::warn!(
                    limit = self.max,
                    refused,
                    "refused connections: the node has {} max_connections ({}) open",
                    self.section,
                    self.max
                );
            }
            return Err(&self.full_response);
        };
        self.admit_into(
            Place {
                permit,
                pool: Pool::General,
            },
            ip,
        )
    }

    /// Waits for a place under the node's cap, for a listener that leaves further
    /// connections waiting in the listen backlog (accepting only with a place) rather than
    /// refusing them; then [`Connections::admit_into`].
    pub async fn place(&self) -> Place {
        // The semaphores are never closed.
        let general = self.slots.clone().acquire_owned();
        let (permit, pool) = match &self.reserve {
            None => (general.await, Pool::General),
            Some(r) => tokio::select! {
                biased;
                p = general => (p, Pool::General),
                p = r.slots.clone().acquire_owned() => (p, Pool::Known),
                p = r.admin_slots.clone().acquire_owned() => (p, Pool::Admin),
            },
        };
        match permit {
            Ok(permit) => Place { permit, pool },
            Err(_) => std::future::pending().await,
        }
    }

    /// Counts the client at `ip` as known for [`VOUCHED_FOR`]: it made an authenticated call
    /// (as `who`), so it may use the places kept for known clients, and with
    /// [`Vouched::Admin`] those kept for the Admin too. (A no-op without a reserve.)
    pub fn vouch(&self, ip: IpAddr, who: Vouched) {
        let Some(r) = &self.reserve else { return };
        let now = Instant::now();
        let mut known = r.known.lock().unwrap_or_else(|p| p.into_inner());
        let entry = known.entry(client_key(ip)).or_insert(KnownClient {
            at: now,
            admin_at: None,
        });
        entry.at = now;
        if who == Vouched::Admin {
            entry.admin_at = Some(now);
        }
        if known.len() > MAX_VOUCHED {
            known.retain(|_, c| now.duration_since(c.at) < VOUCHED_FOR);
            while known.len() > MAX_VOUCHED {
                let Some(oldest) = known.iter().min_by_key(|(_, c)| c.at).map(|(k, _)| *k) else {
                    break;
                };
                known.remove(&oldest);
            }
        }
    }

    /// What the client at `ip` proved within [`VOUCHED_FOR`], if anything.
    fn vouched(r: &Reserve, ip: IpAddr) -> Option<Vouched> {
        let known = r.known.lock().unwrap_or_else(|p| p.into_inner());
        let client = known.get(&client_key(ip))?;
        if client.admin_at.is_some_and(|at| at.elapsed() < VOUCHED_FOR) {
            Some(Vouched::Admin)
        } else if client.at.elapsed() < VOUCHED_FOR {
            Some(Vouched::Known)
        } else {
            None
        }
    }

    /// The place a connection from `ip` may keep: `place` if it is allowed one of its kind,
    /// else a place of a kind it is allowed that is free now (a swap), else the refusal.
    fn settle(&self, place: Place, ip: IpAddr) -> Result<Place, &[u8]> {
        let Some(r) = &self.reserve else {
            return Ok(place);
        };
        let who = Self::vouched(r, ip);
        let allowed = match place.pool {
            Pool::General => true,
            Pool::Known => who.is_some(),
            Pool::Admin => who == Some(Vouched::Admin),
        };
        if allowed {
            return Ok(place);
        }
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Place {
                permit,
                pool: Pool::General,
            });
        }
        if who.is_some() {
            // A known client on a place kept for the Admin: a known client's place, if one
            // freed meanwhile.
            if let Ok(permit) = r.slots.clone().try_acquire_owned() {
                return Ok(Place {
                    permit,
                    pool: Pool::Known,
                });
            }
            if let Some(refused) = r.admin_log.hit() {
                tracing::warn!(
                    client = %client_key(ip),
                    reserved = r.admin_size,
                    refused,
                    "refused connections: every {} place but the {} kept for the Admin \
                     (admin_reserved_connections) is taken",
                    self.section,
                    r.admin_size
                );
            }
            return Err(&r.admin_response);
        }
        if let Some(refused) = r.log.hit() {
            tracing::warn!(
                client = %client_key(ip),
                reserved = r.size,
                refused,
                "refused connections: every {} place for clients that have not \
                 authenticated lately is taken ({} of max_connections {} are \
                 kept for clients that have)",
                self.section,
                r.size,
                self.max
            );
        }
        Err(&r.response)
    }

    /// Admits a connection from `ip` into `place`, or tells why not (the bytes to send it
    /// before closing; the place is freed).
    pub fn admit_into(&self, place: Place, ip: IpAddr) -> Result<Slot, &[u8]> {
        // A kept place is only for a client allowed it; anyone else takes a place of its
        // own kind that freed meanwhile, or is refused.
        let place = self.settle(place, ip)?;
        let Some(client) = self.per_client.take(ip) else {
            let key = client_key(ip);
            if let Some(refused) = self.client_log.hit() {
                tracing::warn!(
                    client = %key,
                    limit = self.per_client.max(),
                    refused,
                    "refused connections: client {key} has {} max_connections_per_client ({}) open",
                    self.section,
                    self.per_client.max()
                );
            }
            return Err(&self.client_response);
        };
        Ok(Slot {
            _client: client,
            _permit: place.permit,
        })
    }

    /// Waits until every connection has closed, at most `grace`; `false` when some remain.
    pub async fn drained(&self, grace: Duration) -> bool {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let reserved = self.reserve.as_ref().map_or(0, |r| r.size);
        let all = async {
            let general = self.slots.acquire_many(count(self.max - reserved)).await;
            let kept = match &self.reserve {
                Some(r) => Some((
                    r.slots.acquire_many(count(r.size - r.admin_size)).await,
                    r.admin_slots.acquire_many(count(r.admin_size)).await,
                )),
                None => None,
            };
            (general, kept)
        };
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

/// How long a lingering close waits for the client to stop sending, at most.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of the client's input a lingering close reads and discards, at most.
pub const LINGER_BYTES: usize = 1 << 20;
/// Refused connections lingering at once (those past it are closed outright).
const LINGERING_REFUSALS: usize = 256;

/// Lingering close: after the last response, the write side is shut (the client reads the
/// response, then end of stream) and what the client still sends is read and discarded until
/// it closes, for at most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a socket with unread
/// input makes the kernel send a reset, which can destroy a response the client has not read
/// yet (a `413` or `503` to a client still sending its request).
pub async fn linger(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 << 10];
    let mut seen = 0usize;
    while seen <= LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => seen += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Refuses connections: sends each its response with one non-blocking write (a client that
/// does not read gets nothing), then closes it with a [`linger`] (at most
/// `LINGERING_REFUSALS` at once, so that a flood of refused connections holds no more sockets
/// than that; past it they are closed outright).
pub struct Refuser {
    lingering: Arc<Semaphore>,
}

impl Default for Refuser {
    fn default() -> Self {
        Refuser {
            lingering: Arc::new(Semaphore::new(LINGERING_REFUSALS)),
        }
    }
}

impl Refuser {
    /// Sends `response` and closes `stream` (with a lingering close when a place is free).
    /// The write goes to the socket itself: tokio's `try_write` would skip it until the
    /// reactor has seen the new socket writable.
    pub fn shed(&self, stream: TcpStream, response: &[u8]) {
        use std::io::Write;
        let _ = (&*socket2::SockRef::from(&stream)).write(response);
        if let Ok(permit) = self.lingering.clone().try_acquire_owned() {
            tokio::spawn(async move {
                linger(&stream).await;
                drop(permit);
            });
        }
    }

    /// The next connection admitted under `connections`' caps (those past them are shed with
    /// their refusal), or `None` once `shutdown` turns.
    pub async fn next_admitted(
        &self,
        acceptor: &mut Acceptor,
        listener: &TcpListener,
        connections: &Connections,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<(TcpStream, std::net::SocketAddr, Slot)> {
        loop {
            let (stream, remote) = tokio::select! {
                accepted = acceptor.accept(listener) => accepted,
                _ = shutdown.changed() => return None,
            };
            match connections.admit(remote.ip()) {
                Ok(slot) => return Some((stream, remote, slot)),
                Err(response) => self.shed(stream, response),
            }
        }
    }
}

/// Accepts connections, backing off when accepting fails for want of resources (out of file
/// descriptors, EMFILE or ENFILE, or of memory): the listener stays readable then, so
/// retrying at once would spin.
pub struct Acceptor {
    backoff: Duration,
    log: Throttle,
    hint: &'static str,
}

/// The first wait after `accept` fails, doubled up to [`ACCEPT_BACKOFF_MAX`] while it keeps
/// failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest wait between two `accept` attempts that failed.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

impl Acceptor {
    /// `hint` tells the operator what to lower when the process is out of descriptors
    /// (`"[http] max_connections and [fs] max_open_files"`).
    pub fn new(hint: &'static str) -> Acceptor {
        Acceptor {
            backoff: ACCEPT_BACKOFF_MIN,
            log: Throttle::new(Duration::from_secs(5)),
            hint,
        }
    }

    /// The next connection (cancel-safe: drop the future to stop waiting).
    pub async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(x) => {
                    self.backoff = ACCEPT_BACKOFF_MIN;
                    return x;
                }
                // The connection went away before it was accepted: nothing to wait for.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    if let Some(failures) = self.log.hit() {
                        tracing::warn!(error = %e, failures, backoff_ms = self.backoff.as_millis() as u64, "accepting connections failed; backing off (if the error is 'too many open files', raise `ulimit -n` or lower {})", self.hint);
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
}

/// A TCP stream shared between hyper, which serves the connection, and the listener, which
/// keeps it after hyper is done with it for the [`linger`]ing close. Shutting down its write
/// side shuts the socket's.
pub struct SharedStream(pub Arc<TcpStream>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            // Into the unfilled part as it is (not zeroed first: hyper's buffers are large).
            match self.0.try_read_buf(buf) {
                Ok(_) => return std::task::Poll::Ready(Ok(())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                r => return std::task::Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                r => return std::task::Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
        // Already shut, or the peer is gone: nothing left to do.
        std::task::Poll::Ready(match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// A response body that keeps its request [`InFlight`] until it ends, marking progress each
/// time hyper takes a frame (the client is reading).
pub struct Holding<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> Holding<B> {
    /// `inner`, holding `in_flight`.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Holding {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(_))) => {
                if let Some(f) = &self.in_flight {
                    f.progressed();
                }
            }
            std::task::Poll::Ready(_) => self.in_flight = None,
            std::task::Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is doing, for its deadlines: the requests in flight on it (until their
/// response bodies end), when the last one ended, and when a response last made progress.
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last went idle.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` when a request began or a response frame was taken.
    progress: AtomicU64,
    started: AtomicBool,
    /// Signalled when a request begins or ends (the deadline changes kind).
    changed: tokio::sync::Notify,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            started: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// A request begins on this connection.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.store(true, Ordering::Relaxed);
        self.progress.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight {
            activity: self.clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection's next deadline and what passing it means: with requests in flight,
    /// `stall` after the last progress; idle, `first` after the accept until the first request
    /// (the header read timeout), `idle` after the last request afterwards.
    fn deadline(&self, d: &Deadlines) -> (Instant, Closed) {
        let at = |ms: &AtomicU64, plus: Duration| {
            self.epoch + Duration::from_millis(ms.load(Ordering::Relaxed)) + plus
        };
        if self.in_flight.load(Ordering::Acquire) > 0 {
            (at(&self.progress, d.stall), Closed::Stalled)
        } else if !self.started.load(Ordering::Relaxed) {
            (self.epoch + d.first, Closed::FirstRequest)
        } else {
            (at(&self.idle_since, d.idle), Closed::Idle)
        }
    }
}

/// A request in flight on a connection; ends when dropped (with its response body).
pub struct InFlight {
    activity: Arc<Activity>,
}

impl InFlight {
    /// The response made progress: hyper took a frame of its body (so the client is reading).
    pub fn progressed(&self) {
        let a = &self.activity;
        a.progress.store(a.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        a.idle_since.store(a.now_ms(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

/// How long a connection may be idle.
#[derive(Clone, Copy)]
pub struct Deadlines {
    /// Until its first request has its headers (hyper's own header timeout starts only once
    /// the HTTP version is known).
    pub first: Duration,
    /// With no request in flight (between requests; HTTP/1.1 is also bounded by hyper's header
    /// timeout, which runs between requests).
    pub idle: Duration,
    /// With requests in flight but no response progress (a client that stops reading: hyper
    /// takes no more of the body while it cannot write, and would wait forever).
    pub stall: Duration,
}

/// Why a connection's driver closed it early.
#[derive(Clone, Copy)]
pub enum Closed {
    /// It sent no complete request head within the header timeout.
    FirstRequest,
    /// It had no request in flight for the idle timeout.
    Idle,
    /// Its responses made no progress for the stall timeout (closed at once, not gracefully:
    /// a graceful close would wait for them).
    Stalled,
}

/// An error a connection ended with (hyper's, or its service's).
pub type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one admitted connection with `service` on `builder`'s protocols, under the
/// connection's deadlines and the listener's `shutdown` (see [`drive`]), tells `ended` how it
/// ended (its own result, or why it was closed), then closes it with a lingering close
/// ([`linger`], which can take seconds). Both listeners serve their connections through this
/// one function.
///
/// With `tls`, the TLS handshake comes first, under the first request's deadline (a client
/// that trickles its handshake is closed like one that trickles its request head, as
/// [`Closed::FirstRequest`]); hyper then serves the decrypted stream, and when it closes the
/// connection it sends TLS `close_notify` before the TCP write side is shut; the lingering
/// close reads the raw socket.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, B>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    stream: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    service: S,
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: tokio::sync::watch::Receiver<bool>,
    ended: impl FnOnce(Result<Result<(), ConnError>, Closed>),
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
{
    let stream = Arc::new(stream);
    let shared = SharedStream(stream.clone());
    let outcome = match tls {
        None => serve_io(builder, shared, service, activity, deadlines, shutdown).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(deadlines.first, acceptor.accept(shared));
            match handshake.await {
                Err(_) => Err(Closed::FirstRequest),
                Ok(Err(e)) => Ok(Err(Box::new(e) as ConnError)),
                Ok(Ok(tls)) => serve_io(builder, tls, service, activity, deadlines, shutdown).await,
            }
        }
    };
    ended(outcome);
    linger(&stream).await;
}

/// Serves `io` (the TCP stream, or the TLS stream over it) with `service` until it ends.
async fn serve_io<I, S, B>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    io: I,
    service: S,
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Result<(), ConnError>, Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnError>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let conn = builder.serve_connection(io, service);
    let conn = std::pin::pin!(conn);
    drive(
        conn,
        |c| c.graceful_shutdown(),
        activity,
        deadlines,
        shutdown,
    )
    .await
}

/// Drives `conn` until it ends: closes it gracefully (then, after a second, outright) when it
/// is idle past its deadline, outright when its responses stalled, and gracefully when
/// `shutdown` turns. Returns the connection's own result, or why it was closed.
pub async fn drive<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    activity: &Activity,
    deadlines: Deadlines,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Result<(), E>, Closed>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut closing: Option<(Instant, Closed)> = None;
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        graceful(conn.as_mut());
    }
    loop {
        let wake = match &closing {
            Some((hard, _)) => *hard,
            None => activity.deadline(&deadlines).0,
        };
        tokio::select! {
            r = conn.as_mut() => return match closing {
                Some((_, why)) => Err(why),
                None => Ok(r),
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some((_, why)) = closing {
                    return Err(why);
                }
                // The deadline may have moved (a request began or ended, a frame was sent).
                let (at, why) = activity.deadline(&deadlines);
                if Instant::now() >= at {
                    if let Closed::Stalled = why {
                        return Err(why);
                    }
                    graceful(conn.as_mut());
                    closing = Some((Instant::now() + Duration::from_secs(1), why));
                }
            }
            _ = activity.changed.notified(), if closing.is_none() => {}
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_err() || *shutdown.borrow() {
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_kept_for_known_clients_are_refused_to_strangers() {
        let c = Connections::with_json_refusals(3, 3, 1, 0, "[admin]");
        let (stranger, known): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a = c.admit_into(c.place().await, stranger).ok().unwrap();
        let _b = c.admit_into(c.place().await, stranger).ok().unwrap();
        // The general places are taken: the next is the reserve's, refused to a stranger.
        let refused = c.admit_into(c.place().await, stranger).err().unwrap();
        let refused = String::from_utf8_lossy(refused);
        assert!(
            refused.contains("have not made an authenticated call lately"),
            "{refused}"
        );
        assert!(refused.contains("reserved_connections") && refused.contains("503"));
        // A known client gets it.
        c.vouch(known, Vouched::Known);
        let k = c.admit_into(c.place().await, known).ok().unwrap();
        // Every place is taken: the next waits.
        let wait = tokio::time::timeout(Duration::from_millis(50), c.place());
        assert!(wait.await.is_err());
        // A general place freed: a stranger gets it, even through a reserve place taken
        // before (it swaps).
        drop(k);
        let reserved = c.place().await;
        assert_eq!(reserved.pool, Pool::Known);
        drop(a);
        let s = c.admit_into(reserved, stranger).ok().unwrap();
        assert_eq!(c.slots.available_permits(), 0);
        assert_eq!(c.reserve.as_ref().unwrap().slots.available_permits(), 1);
        drop(s);
        // Without a reserve nothing changes.
        let plain = Connections::new(1, 1, "[http]");
        plain.vouch(known, Vouched::Admin);
        assert_eq!(plain.place().await.pool, Pool::General);
    }

    #[tokio::test]
    async fn places_kept_for_the_admin_are_refused_to_other_known_clients() {
        // 5 places: 2 general, 3 kept, of which 1 for the Admin.
        let c = Connections::with_json_refusals(5, 5, 3, 1, "[admin]");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (tenant, admin, stranger) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        c.vouch(tenant, Vouched::Known);
        // A tenant owner takes the general and the known clients' places...
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(c.admit_into(c.place().await, tenant).ok().unwrap());
        }
        // ...but not the Admin's: the next place is the Admin's, refused to it.
        let place = c.place().await;
        assert_eq!(place.pool, Pool::Admin);
        let refused = String::from_utf8_lossy(c.admit_into(place, tenant).err().unwrap());
        assert!(
            refused.contains("admin_reserved_connections") && refused.contains("503"),
            "{refused}"
        );
        // A stranger gets the other refusal.
        let place = c.place().await;
        let refused = String::from_utf8_lossy(c.admit_into(place, stranger).err().unwrap());
        assert!(
            refused.contains("have not made an authenticated call lately"),
            "{refused}"
        );
        // The Admin, even after a tenant's call from its address, is served.
        c.vouch(admin, Vouched::Admin);
        c.vouch(admin, Vouched::Known);
        let a = c.admit_into(c.place().await, admin).ok().unwrap();
        assert_eq!(
            c.reserve.as_ref().unwrap().admin_slots.available_permits(),
            0
        );
        // The Admin may also use a known client's place: with one freed, a second
        // connection of the Admin's takes it, and the tenant then waits.
        held.pop();
        let b = c.admit_into(c.place().await, admin).ok().unwrap();
        let wait = tokio::time::timeout(Duration::from_millis(50), c.place());
        assert!(wait.await.is_err());
        drop((a, b, held));
        assert!(c.drained(Duration::from_millis(50)).await);
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_ne!(
            client_key("192.0.2.7".parse().unwrap()),
            client_key("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn the_per_client_and_node_caps_admit_exactly_their_number_and_free_on_drop() {
        let c = Connections::new(3, 2, "[http]");
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let x1 = c.admit(x).ok().unwrap();
        let _x2 = c.admit(x).ok().unwrap();
        let refused = c.admit(x).err().unwrap();
        assert!(String::from_utf8_lossy(refused).contains("this client has too many"));
        let _y1 = c.admit(y).ok().unwrap();
        let refused = c.admit(y).err().unwrap();
        assert!(String::from_utf8_lossy(refused).contains("the node is at its limit"));
        drop(x1);
        let _y2 = c.admit(y).ok().unwrap();
        assert_eq!(c.per_client.held.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_waiting_listener_takes_a_place_then_applies_the_per_client_cap() {
        let c = Connections::new(2, 1, "[admin]");
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let _x1 = c.admit_into(c.place().await, x).ok().unwrap();
        // Refused past the per-client cap: its place is freed again.
        let refused = c.admit_into(c.place().await, x).err().unwrap();
        assert!(String::from_utf8_lossy(refused).contains("this client has too many"));
        let _y1 = c
            .admit_into(c.place().await, "10.0.0.2".parse().unwrap())
            .ok()
            .unwrap();
        // The node is full: a further place is waited for, not refused.
        let waited = tokio::time::timeout(Duration::from_millis(50), c.place()).await;
        assert!(waited.is_err());
    }

    #[test]
    fn the_throttle_logs_the_first_event_then_counts_the_rest() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.hit(), Some(3));
    }
}
