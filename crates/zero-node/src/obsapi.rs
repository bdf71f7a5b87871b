//! Operating a node over the management API: its metrics and its log and event streams.
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `GET /metrics` | `/node/metrics` | — |
//! | `GET /v1/node/events[?follow]` | `/node/events` | — |
//! | `GET /v1/tenants/{t}/logs[?follow]` | `/log/read` | `tenant`, and `app` to read one app's lines only |
//!
//! `/node/metrics` and `/node/events` are node administration: the chain must delegate them
//! (or `/node`) by name, as the Admin does to an operator's key; a tenant owner's chain, which
//! grants `/` within its tenant only, does not. `/log/read` is a tenant's: an owner reads their
//! own tenant's stream and never another's (the chain's policy on `.tenant`).
//!
//! A stream is newline-delimited JSON (`application/x-ndjson`): the stream's recent lines,
//! then, with `follow`, every new line as it is written until the client goes away or the node
//! stops. Kinds: `guest` (a guest's stdout or stderr line), `access` (an answered HTTP request),
//! `fault` (a run that failed), `event` (node events: `deploy`, `remove`, `revoke`, `tenant`,
//! `fault`) and `dropped` (this follower fell behind and missed `dropped` lines, see
//! [`crate::events`]). An empty line is sent when nothing else was for a third of
//! `[admin] request_timeout_ms`, so that an idle follow is not taken for a stalled client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use bytes::Bytes;
use http::{StatusCode, Uri};
use tokio::sync::broadcast::error::RecvError;
use zero_auth::VerifiedInvocation;

use crate::api::{Api, Body, Resp, arg_str, full_body};
use crate::apps::Refusal;
use crate::events::{Line, Reader, dropped_line, hub};
use crate::ucan::{Endpoint, Ucan};

/// `GET /metrics`.
pub(crate) struct MetricsRead;
impl Endpoint for MetricsRead {
    const COMMAND: &'static str = "/node/metrics";
}

/// `GET /v1/node/events`.
pub(crate) struct EventsRead;
impl Endpoint for EventsRead {
    const COMMAND: &'static str = "/node/events";
}

/// `GET /v1/tenants/{tenant}/logs`.
pub(crate) struct LogRead;
impl Endpoint for LogRead {
    const COMMAND: &'static str = "/log/read";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// Refuses an invocation whose chain does not delegate node administration (`/node` or one
/// of its commands) by name: a tenant owner's `/` within its tenant is not enough.
fn node_level(inv: &VerifiedInvocation, what: &str) -> Result<(), Refusal> {
    let node = zero_auth::Command::parse("/node")
        .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
    match inv.capabilities.iter().find(|c| !node.covers(&c.command)) {
        None => Ok(()),
        Some(cap) => Err(Refusal::new(
            403,
            "InvalidClaim",
            format!(
                "{what} takes the Admin's key or a delegation of `{}` itself; the chain delegates \
                 `{}` (delegation {}), which does not grant node administration",
                inv.command, cap.command, cap.delegation
            ),
        )),
    }
}

/// `GET /metrics`: every series in the Prometheus text format.
pub(crate) async fn metrics(
    State(api): State<Arc<Api>>,
    ucan: Ucan<MetricsRead>,
) -> Result<Resp, Refusal> {
    node_level(&ucan.inv, "reading the node's metrics")?;
    let apps = api.apps.clone();
    let text = api
        .metrics
        .encode(|tenant, app| apps.of_tenant(tenant).iter().any(|a| &*a.name == app))
        .map_err(|e| Refusal::new(500, "Internal", format!("encoding the metrics failed: {e}")))?;
    let mut r = Resp::new(full_body(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// `GET /v1/node/events`: the node's events.
pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    uri: Uri,
    ucan: Ucan<EventsRead>,
) -> Result<Resp, Refusal> {
    node_level(&ucan.inv, "reading the node's events")?;
    Ok(stream(&api, hub().reader(None), None, follows(&uri)))
}

/// `GET /v1/tenants/{tenant}/logs`: a tenant's lines (one app's with `args.app`).
pub(crate) async fn logs(
    State(api): State<Arc<Api>>,
    uri: Uri,
    ucan: Ucan<LogRead>,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let tenant = arg_str(args, "tenant")?;
    api.require_tenant(tenant)?;
    let app = match args.get("app") {
        None => None,
        Some(_) => Some(arg_str(args, "app")?.to_string()),
    };
    Ok(stream(&api, hub().reader(Some(tenant)), app, follows(&uri)))
}

/// Whether the query asks to follow (`?follow`, `?follow=true` or `?follow=1`).
fn follows(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| matches!(p, "follow" | "follow=true" | "follow=1"))
    })
}

/// Where a stream is.
struct Streaming {
    recent: VecDeque<Arc<Line>>,
    reader: Reader,
    app: Option<String>,
    follow: bool,
    closing: tokio::sync::watch::Receiver<bool>,
    heartbeat: Duration,
    /// When the stream last sent something (lines of other apps, filtered out, do not count).
    last_sent: tokio::time::Instant,
}

impl Streaming {
    fn wants(&self, line: &Line) -> bool {
        self.app
            .as_deref()
            .is_none_or(|a| line.app.as_deref() == Some(a))
    }
}

fn text_line(json: &str) -> Bytes {
    let mut v = Vec::with_capacity(json.len() + 1);
    v.extend_from_slice(json.as_bytes());
    v.push(b'\n');
    Bytes::from(v)
}

/// The NDJSON response of a stream (see the module documentation).
fn stream(api: &Api, reader: Reader, app: Option<String>, follow: bool) -> Resp {
    let mut state = Streaming {
        recent: VecDeque::new(),
        reader,
        app,
        follow,
        closing: api.closing.subscribe(),
        heartbeat: (api.limits.request_timeout / 3)
            .clamp(Duration::from_millis(100), Duration::from_secs(10)),
        last_sent: tokio::time::Instant::now(),
    };
    let recent = std::mem::take(&mut state.reader.recent);
    state.recent = recent.into_iter().filter(|l| state.wants(l)).collect();
    let lines = futures::stream::unfold(state, |mut st| async move {
        if let Some(line) = st.recent.pop_front() {
            return Some((Ok::<Bytes, Infallible>(text_line(&line.json)), st));
        }
        if !st.follow || *st.closing.borrow() {
            return None;
        }
        let sent = loop {
            let beat = st.last_sent + st.heartbeat;
            tokio::select! {
                got = st.reader.rx.recv() => match got {
                    Ok(line) if st.wants(&line) => break text_line(&line.json),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => break text_line(&dropped_line(n)),
                    Err(RecvError::Closed) => return None,
                },
                _ = st.closing.changed() => return None,
                _ = tokio::time::sleep_until(beat) => break Bytes::from_static(b"\n"),
            }
        };
        st.last_sent = tokio::time::Instant::now();
        Some((Ok(sent), st))
    });
    let mut r = Resp::new(Body::from_stream(lines));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}
