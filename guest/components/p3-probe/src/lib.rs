//! `p3-probe`: a WASI 0.3 test component (`wasi:http/service`, built with the `wasip3` crate).
//! By the last segment of its path:
//!
//! - `echo`: streams the request body back as the response body, copying it through guest
//!   memory in chunks from a task spawned after the response was returned;
//! - `spin`: loops forever (for the CPU limit);
//! - `trap`: traps (`unreachable`);
//! - `read?path=P`: reads the file P with `std::fs` (through the node's `wasi:filesystem`, i.e.
//!   zerofs under the app's grants) and answers `ok: CONTENT` or `error: KIND`;
//! - `todos` / `users`: `SELECT` the first row's text column of table `todos` / `users` in the
//!   app's database `app` through `zero:db` (under the app's grants), answering `ok: TEXT` or
//!   `error: KIND: MESSAGE`;
//! - `count-KEY`: increments the `zero:cache` key `KEY:hits` (under the app's grants), answering
//!   `ok: N` or `error: KIND: MESSAGE`;
//! - `slow`: waits 400 ms (an async wait, so the instance can serve other requests meanwhile),
//!   then answers `served=S max=M`: S counts the requests this instance has started (1 on a
//!   fresh instance), M the most it had in flight at once so far;
//! - `forever`: streams `x` bytes until the client goes away (its stream is dropped), counted in
//!   flight until then; `inflight` answers `in_flight=N`, the requests in flight on this
//!   instance;
//! - `fetch`: makes an outgoing GET (`wasi:http/client@0.3`) to the URL in the request header
//!   `x-target` and answers 200 with the upstream body, or 502 `outgoing request failed:
//!   {error-code:?} (request N of M)`; `x-repeat: N` makes it N times in a row and
//!   `x-first-byte-timeout-ms` / `x-between-bytes-timeout-ms` ask for those timeouts;
//! - `trailers`: reads the request body and its trailers, answers `body=N trailers=[name:
//!   value, …]` and sends the response trailers `x-body-length: N` and `x-probe: done`
//!   (declared in its `trailer` header, as HTTP/1.1 needs);
//! - `membomb`: allocates 1 MiB blocks until memory runs out (for the memory limit);
//! - `sleep`: waits 60 s (for the wall-clock limit);
//! - anything else: `hello from wasi 0.3` (and one line on stdout, for the node log).
//!
//! It also exports `zero:chrono/tick-handler` (a sync export beside the async HTTP handler):
//! a tick prints `p3-probe tick SCHEDULE attempt N`, bumps the `zero:cache` key `ticks:hits`
//! (when granted; `count-ticks` over HTTP reads it back, bumped once more), and a schedule
//! named `fail*` returns an error.

use std::sync::atomic::{AtomicU32, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, RequestOptions, Response, Scheme};

wit_bindgen::generate!({
    path: "../../../wit/zero-db",
    world: "zero:db/imports",
});

use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};
mod cache {
    wit_bindgen::generate!({
        path: "../../../wit/zero-cache",
        world: "zero:cache/imports",
    });
}

mod chrono {
    wit_bindgen::generate!({
        path: "../../../wit/zero-chrono",
        world: "zero:chrono/ticker",
    });
}

use cache::zero::cache::cache::{Error as CacheError, increment};
use chrono::exports::zero::chrono::tick_handler::{Guest as TickGuest, Tick};
use zero::db::db::{Database, Error as DbError, Value};

wasip3::http::service::export!(Probe);
chrono::export!(Probe with_types_in chrono);

impl TickGuest for Probe {
    fn handle_tick(tick: Tick) -> Result<(), String> {
        println!("p3-probe tick {} attempt {}", tick.schedule, tick.attempt);
        // Counted where the app may (a cache grant on `ticks:hits`); a tick without it still
        // runs.
        let _ = increment("ticks:hits", 1, None);
        if tick.schedule.starts_with("fail") {
            return Err("p3-probe was told to fail".into());
        }
        Ok(())
    }
}

struct Probe;

/// Requests this instance has started, and has in flight now and at most.
static SERVED: AtomicU32 = AtomicU32::new(0);
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
static MAX_IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

const CHUNK: usize = 64 * 1024;

/// A response whose body is `body`, written by a spawned task.
fn respond(body: Vec<u8>) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    drop(trailers_tx);
    wit_bindgen::spawn_local(async move {
        body_tx.write_all(body).await;
    });
    response
}

/// Runs `sql` on the database `app` and describes the first row's first column, or the error.
fn select(sql: &str) -> String {
    let rows = Database::open("app").and_then(|db| db.query(sql, &[]));
    match rows {
        Ok(rows) => match rows.rows.first().and_then(|r| r.first()) {
            Some(Value::Text(t)) => format!("ok: {t}"),
            Some(other) => format!("ok: {other:?}"),
            None => "ok: no rows".to_string(),
        },
        Err(DbError::PermissionDenied(d)) => format!("error: permission-denied: {}", d.message),
        Err(e) => format!("error: {e:?}"),
    }
}

fn echo(request: Request) -> Response {
    let (consumed_tx, consumed_rx) = wit_future::new(|| Ok(()));
    let (mut body_in, _request_trailers) = Request::consume_body(request, consumed_rx);
    let (mut body_out, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    wit_bindgen::spawn_local(async move {
        loop {
            let (result, chunk) = body_in.read(Vec::with_capacity(CHUNK)).await;
            match result {
                StreamResult::Complete(_) => {}
                StreamResult::Dropped | StreamResult::Cancelled => break,
            }
            if !chunk.is_empty() && !body_out.write_all(chunk).await.is_empty() {
                // The client went away.
                break;
            }
        }
        drop(consumed_tx);
        drop(trailers_tx);
    });
    response
}

/// A response with `status` and the text `body`.
fn respond_status(status: u16, body: String) -> Response {
    let response = respond(body.into_bytes());
    // A status code in 100..=999 is always accepted.
    let _ = response.set_status_code(status);
    response
}

/// The first value of the request header `name`, as text.
fn header(request: &Request, name: &str) -> Option<String> {
    let values = request.get_headers().get(name);
    values
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// `fetch`: the outgoing GETs the request's headers ask for.
async fn fetch(request: &Request) -> Response {
    let Some(target) = header(request, "x-target") else {
        return respond_status(400, "missing x-target header\n".into());
    };
    let number = |name: &str| header(request, name).and_then(|v| v.parse::<u64>().ok());
    let repeat = number("x-repeat").unwrap_or(1).max(1);
    let timeouts = (
        number("x-first-byte-timeout-ms"),
        number("x-between-bytes-timeout-ms"),
    );
    let mut last = Vec::new();
    for n in 1..=repeat {
        match get(&target, timeouts).await {
            Ok(body) => last = body,
            Err(code) => {
                return respond_status(
                    502,
                    format!("outgoing request failed: {code:?} (request {n} of {repeat})"),
                );
            }
        }
    }
    respond(last)
}

/// One outgoing GET of `url` (`http://authority/path`), returning the response body.
async fn get(
    url: &str,
    (first_byte_ms, between_ms): (Option<u64>, Option<u64>),
) -> Result<Vec<u8>, ErrorCode> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(ErrorCode::HttpRequestUriInvalid);
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() { "/" } else { path };
    let options = RequestOptions::new();
    let ms = |v: u64| v.saturating_mul(1_000_000);
    if let Some(v) = first_byte_ms {
        options
            .set_first_byte_timeout(Some(ms(v)))
            .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    }
    if let Some(v) = between_ms {
        options
            .set_between_bytes_timeout(Some(ms(v)))
            .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    }
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, Some(options));
    let invalid = |what: &str| ErrorCode::InternalError(Some(format!("invalid {what}")));
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let response = wasip3::http::client::send(request).await?;
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (body, trailers) = Response::consume_body(response, done_rx);
    let body = body.collect().await;
    // The body's end (or its error) comes with the trailers.
    trailers.await?;
    drop(done_tx);
    Ok(body)
}

/// `trailers`: reads the request body and trailers, answers with what it saw and sends
/// response trailers.
async fn trailers(request: Request) -> Response {
    let (consumed_tx, consumed_rx) = wit_future::new(|| Ok(()));
    let (body_in, request_trailers) = Request::consume_body(request, consumed_rx);
    let body = body_in.collect().await;
    let seen = match request_trailers.await {
        Ok(Some(fields)) => fields
            .copy_all()
            .into_iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(&v)))
            .collect::<Vec<_>>()
            .join(", "),
        Ok(None) => String::new(),
        Err(e) => format!("error {e:?}"),
    };
    drop(consumed_tx);
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    // HTTP/1.1 sends only the trailers the response head declares.
    let headers = Fields::new();
    let _ = headers.append("trailer", b"x-body-length, x-probe");
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    let length = body.len();
    let text = format!("body={length} trailers=[{seen}]");
    wit_bindgen::spawn_local(async move {
        body_tx.write_all(text.into_bytes()).await;
        drop(body_tx);
        let out = Fields::new();
        let _ = out.append("x-body-length", length.to_string().as_bytes());
        let _ = out.append("x-probe", b"done");
        let _ = trailers_tx.write(Ok(Some(out))).await;
    });
    response
}

impl wasip3::exports::http::handler::Guest for Probe {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let last = route.rsplit('/').next().unwrap_or_default();
        match last {
            "read" => {
                let file = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("path="))
                    .unwrap_or_default();
                let answer = match std::fs::read_to_string(file) {
                    Ok(content) => format!("ok: {content}"),
                    Err(e) => format!("error: {:?}", e.kind()),
                };
                Ok(respond(answer.into_bytes()))
            }
            "echo" => Ok(echo(request)),
            "fetch" => Ok(fetch(&request).await),
            "trailers" => Ok(trailers(request).await),
            "forever" => {
                IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
                let (mut body_tx, body_rx) = wit_stream::new();
                let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
                wit_bindgen::spawn_local(async move {
                    while body_tx.write_all(vec![b'x'; CHUNK]).await.is_empty() {}
                    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                    drop(trailers_tx);
                });
                Ok(response)
            }
            "inflight" => Ok(respond(
                format!("in_flight={}", IN_FLIGHT.load(Ordering::SeqCst)).into_bytes(),
            )),
            "membomb" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "sleep" => {
                wasip3::clocks::monotonic_clock::wait_for(60_000_000_000).await;
                Ok(respond(b"woke up\n".to_vec()))
            }
            "slow" => {
                let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
                let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
                MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
                wasip3::clocks::monotonic_clock::wait_for(400_000_000).await;
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                let max = MAX_IN_FLIGHT.load(Ordering::SeqCst);
                Ok(respond(format!("served={served} max={max}").into_bytes()))
            }
            count if count.starts_with("count-") => {
                let key = format!("{}:hits", &count["count-".len()..]);
                let answer = match increment(&key, 1, None) {
                    Ok(n) => format!("ok: {n}"),
                    Err(CacheError::PermissionDenied(d)) => {
                        format!("error: permission-denied: {}", d.message)
                    }
                    Err(e) => format!("error: {e:?}"),
                };
                Ok(respond(answer.into_bytes()))
            }
            "todos" => Ok(respond(select("SELECT title FROM todos").into_bytes())),
            "users" => Ok(respond(select("SELECT name FROM users").into_bytes())),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => std::process::abort(),
            _ => {
                println!("p3-probe served {path}");
                Ok(respond(b"hello from wasi 0.3\n".to_vec()))
            }
        }
    }
}
