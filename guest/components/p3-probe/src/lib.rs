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
//! - `membomb`: allocates 1 MiB blocks until memory runs out (for the memory limit);
//! - `sleep`: waits 60 s (for the wall-clock limit);
//! - anything else: `hello from wasi 0.3` (and one line on stdout, for the node log).

use std::sync::atomic::{AtomicU32, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, Response};

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

use cache::zero::cache::cache::{Error as CacheError, increment};
use zero::db::db::{Database, Error as DbError, Value};

wasip3::http::service::export!(Probe);

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
