//! Log and event streams (`zero logs`): each tenant's guest log lines, access lines and faults,
//! and the node's own events (deploys, removals, revocations, tenants, faults), each on a
//! bounded broadcast.
//!
//! Lines reach the hub two ways: guest output (target `guest`, from the core) and access lines
//! (target `access`, from zeroproxy) are taken from the node's `tracing` events by
//! [`TapLayer`], which has its own filter, so they stream whatever the log level; node events
//! and faults are published directly ([`LogHub::node_event`], [`LogHub::fault`]).
//!
//! **Bounds.** A tenant's stream keeps its last [`RECENT`] lines (what `zero logs` without
//! `--follow` prints) and a broadcast of [`BACKLOG`] lines per follower. Publishing never waits:
//! a follower that reads slower than its tenant logs misses the lines it fell behind by, and is
//! told how many (a `{"kind": "dropped", "dropped": N}` line); the node, the tenant's other
//! followers and other tenants are not slowed. Only tenants that logged (deployed ones) get a
//! stream, so their number is bounded by the tenants the Admin created.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};

/// Lines kept per stream for a reader that does not follow.
pub const RECENT: usize = 200;
/// Lines a follower may fall behind by before it misses some.
pub const BACKLOG: usize = 1024;

/// One stream: recent lines and the followers' broadcast.
struct Stream {
    recent: Mutex<VecDeque<Arc<Line>>>,
    tx: broadcast::Sender<Arc<Line>>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    fn publish(&self, line: Arc<Line>) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        // No follower is not an error; a slow one lags (see the module documentation).
        let _ = self.tx.send(line);
    }
}

/// One line of a stream: its app (for the `app` filter) and its JSON text.
#[derive(Debug)]
pub struct Line {
    /// The app it concerns, if any.
    pub app: Option<String>,
    /// The line as one JSON object, without the newline.
    pub json: String,
}

/// Every stream of the node.
#[derive(Default)]
pub struct LogHub {
    tenants: RwLock<HashMap<String, Arc<Stream>>>,
    node: OnceLock<Arc<Stream>>,
}

/// The process's hub (one per process, like its `tracing` subscriber).
pub fn hub() -> &'static LogHub {
    static HUB: OnceLock<LogHub> = OnceLock::new();
    HUB.get_or_init(LogHub::default)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn line(kind: &str, mut fields: Map<String, Value>) -> Arc<Line> {
    fields.insert("ts_ms".into(), json!(now_ms()));
    fields.insert("kind".into(), json!(kind));
    let app = fields
        .get("app")
        .and_then(Value::as_str)
        .map(str::to_string);
    Arc::new(Line {
        app,
        json: Value::Object(fields).to_string(),
    })
}

impl LogHub {
    fn tenant(&self, tenant: &str) -> Arc<Stream> {
        if let Some(s) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return s.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Stream::new()))
            .clone()
    }

    fn node(&self) -> &Arc<Stream> {
        self.node.get_or_init(|| Arc::new(Stream::new()))
    }

    /// Publishes a line of `kind` (`guest`, `access`, `fault`) on `tenant`'s stream.
    pub fn tenant_line(&self, tenant: &str, kind: &str, fields: Map<String, Value>) {
        self.tenant(tenant).publish(line(kind, fields));
    }

    /// Publishes a node event (`deploy`, `remove`, `revoke`, `tenant`) on the node's stream.
    pub fn node_event(&self, event: &str, mut fields: Map<String, Value>) {
        fields.insert("event".into(), json!(event));
        self.node().publish(line("event", fields));
    }

    /// Publishes a fault on its tenant's stream and on the node's.
    pub fn fault(&self, tenant: &str, app: &str, request_id: &str, kind: &str, message: String) {
        let fields = |msg: String| {
            let mut m = Map::new();
            m.insert("tenant".into(), json!(tenant));
            m.insert("app".into(), json!(app));
            m.insert("request_id".into(), json!(request_id));
            m.insert("fault".into(), json!(kind));
            m.insert("message".into(), json!(msg));
            m
        };
        self.tenant_line(tenant, "fault", fields(message.clone()));
        let mut event = fields(message);
        event.insert("event".into(), json!("fault"));
        self.node().publish(line("event", event));
    }

    /// A reader of `tenant`'s stream (`None`: the node's events).
    pub fn reader(&self, tenant: Option<&str>) -> Reader {
        let stream = match tenant {
            Some(t) => self.tenant(t),
            None => self.node().clone(),
        };
        // Subscribed before the recent lines are copied: a line published in between is in
        // both, never in neither.
        let rx = stream.tx.subscribe();
        let recent = stream
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        Reader { recent, rx }
    }
}

/// The recent lines of a stream and its broadcast from now on.
pub struct Reader {
    /// The lines kept before the reader subscribed.
    pub recent: Vec<Arc<Line>>,
    /// What is published from now on.
    pub rx: broadcast::Receiver<Arc<Line>>,
}

/// The line telling a follower that it missed `n` lines.
pub fn dropped_line(n: u64) -> String {
    json!({
        "ts_ms": now_ms(),
        "kind": "dropped",
        "dropped": n,
        "message": format!("{n} lines were dropped because this follower read more slowly than they were written"),
    })
    .to_string()
}

/// Collects an event's fields as JSON (the message under `message`).
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().to_string(), Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), json!(value));
    }
}

/// The `tracing` layer that copies guest lines (target `guest`) and access lines (target
/// `access`) to their tenant's stream. Install it with [`tap_filter`].
pub struct TapLayer {
    hub: &'static LogHub,
}

impl TapLayer {
    /// A layer publishing to `hub`.
    pub fn new(hub: &'static LogHub) -> TapLayer {
        TapLayer { hub }
    }
}

/// Whether [`TapLayer`] reads an event of `meta` (guest and access lines, whatever the node's
/// log level).
fn tapped(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event() && matches!(meta.target(), "guest" | "access")
}

/// The per-layer filter of [`TapLayer`].
pub fn tap_filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(tapped as fn(&tracing::Metadata<'_>) -> bool)
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TapLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let kind = match event.metadata().target() {
            "guest" => "guest",
            "access" => "access",
            _ => return,
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(tenant) = fields
            .0
            .get("tenant")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        // An access line of a request no app took (`-`) belongs to no tenant.
        if tenant == "-" || tenant.is_empty() {
            return;
        }
        fields.0.insert(
            "level".into(),
            json!(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        self.hub.tenant_line(&tenant, kind, fields.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(app: &str, n: usize) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("app".into(), json!(app));
        m.insert("message".into(), json!(format!("line {n}")));
        m
    }

    #[tokio::test]
    async fn a_slow_follower_misses_lines_and_is_told_how_many_while_publishing_never_waits() {
        let hub = LogHub::default();
        let mut slow = hub.reader(Some("t"));
        let mut other = hub.reader(Some("u"));
        let start = std::time::Instant::now();
        for n in 0..(BACKLOG * 10) {
            hub.tenant_line("t", "guest", fields("a", n));
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "publishing waited for the follower"
        );
        match slow.rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => {
                assert_eq!(n as usize, BACKLOG * 9, "missed lines counted")
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = slow.rx.recv().await.unwrap();
        assert!(
            next.json.contains(&format!("line {}", BACKLOG * 9)),
            "{}",
            next.json
        );
        // Another tenant's follower saw nothing of it.
        assert!(matches!(
            other.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        // The recent lines are bounded.
        assert_eq!(hub.reader(Some("t")).recent.len(), RECENT);
        assert!(other.recent.is_empty());
        assert!(dropped_line(3).contains("\"dropped\":3"));
    }
}
