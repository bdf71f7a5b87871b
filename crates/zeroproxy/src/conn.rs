//! Connection admission and lifetime: the node's and each client's connection caps (and the
//! per-client count of requests in flight), the cheap refusal of connections past them, and the
//! per-connection deadlines hyper does not enforce: the first request's head counted from the
//! accept (hyper starts its timer only once the protocol is known), an idle connection (HTTP/2
//! has no timer of its own) and a response the client stopped reading.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a refused connection is sent before it is closed: a complete HTTP/1.1 response, written
/// with one non-blocking write (never waited for).
fn shed_response(message: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{message}",
        message.len()
    )
    .into_bytes()
}

/// Logs an event at most once per interval, counting the occurrences in between (an attack
/// must not turn into a flood of log lines).
pub(crate) struct Throttle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    pending: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// Records one occurrence; `Some(n)` when a line should be logged now, for the `n`
    /// occurrences since the last line (this one included).
    pub(crate) fn hit(&self) -> Option<u64> {
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

/// The open connections: at most `max` on the node and `max_per_client` from one client.
pub(crate) struct Connections {
    max: usize,
    slots: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    full_log: Throttle,
    client_log: Throttle,
    full_response: Vec<u8>,
    client_response: Vec<u8>,
}

/// One admitted connection's place; released when dropped.
pub(crate) struct Slot {
    _client: ClientPermit,
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    pub(crate) fn new(max: usize, max_per_client: usize) -> Arc<Connections> {
        let max = max.max(1);
        Arc::new(Connections {
            max,
            slots: Arc::new(Semaphore::new(max)),
            per_client: PerClient::new(max_per_client),
            full_log: Throttle::new(Duration::from_secs(1)),
            client_log: Throttle::new(Duration::from_secs(1)),
            full_response: shed_response(
                "the node is at its limit of open connections; retry shortly\n",
            ),
            client_response: shed_response(
                "this client has too many connections open to this node; close some and retry\n",
            ),
        })
    }

    /// Admits a connection from `ip`, or tells why not (the bytes to send it before closing).
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot, &[u8]> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            if let Some(refused) = self.full_log.hit() {
                tracing::warn!(
                    limit = self.max,
                    refused,
                    "refused connections: the node has [http] max_connections ({}) open",
                    self.max
                );
            }
            return Err(&self.full_response);
        };
        let Some(client) = self.per_client.take(ip) else {
            let key = client_key(ip);
            if let Some(refused) = self.client_log.hit() {
                tracing::warn!(
                    client = %key,
                    limit = self.per_client.max(),
                    refused,
                    "refused connections: client {key} has [http] max_connections_per_client ({}) open",
                    self.per_client.max()
                );
            }
            return Err(&self.client_response);
        };
        Ok(Slot {
            _client: client,
            _permit: permit,
        })
    }

    /// Waits until every connection has closed, at most `grace`; `false` when some remain.
    pub(crate) async fn drained(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Sends `response` with one non-blocking write (a client that does not read gets nothing) and
/// closes the connection. The write goes to the socket itself: tokio's `try_write` would skip
/// it until the reactor has seen the new socket writable.
pub(crate) fn shed(stream: tokio::net::TcpStream, response: &[u8]) {
    use std::io::Write;
    if let Ok(stream) = stream.into_std() {
        let _ = (&stream).write(response);
    }
}

/// What a connection is doing, for its deadlines: the requests in flight on it (until their
/// response bodies end), when the last one ended, and when a response last made progress.
pub(crate) struct Activity {
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
    pub(crate) fn new() -> Arc<Activity> {
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
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
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
    pub(crate) fn progressed(&self) {
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
pub(crate) struct Deadlines {
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
pub(crate) enum Closed {
    /// It sent no complete request head within the header timeout.
    FirstRequest,
    /// It had no request in flight for the idle timeout.
    Idle,
    /// Its responses made no progress for the stall timeout (closed at once, not gracefully:
    /// a graceful close would wait for them).
    Stalled,
}

/// Drives `conn` until it ends: closes it gracefully (then, after a second, outright) when it
/// is idle past its deadline, outright when its responses stalled, and gracefully when
/// `shutdown` turns. Returns the connection's own result, or why it was closed.
pub(crate) async fn drive<C, E>(
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
        let c = Connections::new(3, 2);
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
