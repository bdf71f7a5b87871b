//! `sdkprobe`: a test component written with zerosdk, for the end-to-end tests of what only
//! runs in wasm. Its handler is `async`; mounted anywhere, it serves (paths within the app):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /sleep?ms=N` | sleeps N ms on the reactor (a `wasi:clocks` pollable), then `slept N ms` |
//! | `POST /count` | reads the body as it arrives (async chunks): `{"bytes": N, "fnv": H}` (FNV-1a 64) |
//! | `POST /echo` | streams the body back as it arrives (a reader into the response) |
//! | `GET /stream/{mib}` | streams `mib` MiB, byte `i` being `i % 251`, written by an async writer |
//! | `POST /items` with `{"name": "…", "qty": N}` | `201` with the item as JSON; a bad body is a 400 saying why |
//! | `GET /items/{id}` | `{"id": id}`; a non-numeric id is a 400 |
//! | `GET /where` | `{"path", "route", "query"}` as the SDK sees them |
//! | `GET /bad-header` | a response with an invalid header name (the SDK answers 500) |
//! | `GET /panic` | panics with `sdkprobe: the todo list is on fire` |
//! | `GET /visits` | counts this request in a global and in a heap-allocated list, and answers both counts, `visits 1, list 1` in a fresh instance; what an earlier request wrote must never be visible |
//!
//! Anything else is the router's 404 or 405.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use zerosdk::serde_json::json;
use zerosdk::zeroproxy::{
    self, Body, Error, IntoResponse, Json, Method, Request, Response, Router, StatusCode,
};

/// An item of `POST /items`.
#[derive(Serialize, Deserialize)]
struct Item {
    name: String,
    qty: u32,
}

/// Requests this instance has seen (a fresh instance starts at 0).
static VISITS: AtomicU32 = AtomicU32::new(0);
/// The same count, kept in heap memory.
static LIST: Mutex<Vec<u32>> = Mutex::new(Vec::new());

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[zeroproxy::handler]
async fn handler(req: &mut Request) -> Response {
    match (req.method(), req.path()) {
        (Method::Get, "/sleep") => sleep(req).await,
        (Method::Post, "/count") => count(req).await,
        _ => router().handle(req),
    }
}

async fn sleep(req: &mut Request) -> Response {
    let ms: u64 = match req.query_param("ms").map(|m| m.parse()) {
        Some(Ok(ms)) => ms,
        _ => return Error::bad_request("give ?ms=N").into_response(),
    };
    zerosdk::wstd::task::sleep(std::time::Duration::from_millis(ms).into()).await;
    Response::text(format!("slept {ms} ms"))
}

async fn count(req: &mut Request) -> Response {
    let Some(mut body) = req.body_reader() else {
        return Error::bad_request("no body").into_response();
    };
    let (mut bytes, mut h) = (0u64, FNV_OFFSET);
    loop {
        match body.chunk().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len() as u64;
                h = fnv(h, &chunk);
            }
            Ok(None) => break,
            Err(e) => return Error::bad_request(e.to_string()).into_response(),
        }
    }
    Json(json!({ "bytes": bytes, "fnv": format!("{h:016x}") })).into_response()
}

fn router() -> Router {
    Router::new()
        .post("/echo", echo)
        .get("/stream/{mib}", stream)
        .post("/items", create_item)
        .get("/items/{id}", |req: &mut Request| {
            req.param_as::<u32>("id")
                .map(|id| Json(json!({ "id": id })))
        })
        .get("/where", |req: &mut Request| {
            Json(json!({ "path": req.path(), "route": req.route(), "query": req.query() }))
        })
        .get("/bad-header", |_: &mut Request| {
            Response::text("never sent").with_header("bad name", "v")
        })
        .get("/visits", |_: &mut Request| {
            let visits = VISITS.fetch_add(1, Ordering::SeqCst) + 1;
            let mut list = LIST
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            list.push(visits);
            Response::text(format!("visits {visits}, list {}", list.len()))
        })
        .get("/panic", |_: &mut Request| -> Response {
            panic!("sdkprobe: the todo list is on fire")
        })
}

fn echo(req: &mut Request) -> Response {
    match req.body_reader() {
        Some(body) => Response::new(StatusCode::OK).with_body(Body::from_reader(body)),
        None => Error::bad_request("no body").into_response(),
    }
}

fn stream(req: &mut Request) -> Result<Response, Error> {
    let mib: usize = req.param_as("mib")?;
    Ok(Response::stream(async move |w| {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut offset = 0usize;
        for _ in 0..mib * 16 {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = ((offset + i) % 251) as u8;
            }
            w.write_all(&chunk).await?;
            offset += chunk.len();
        }
        Ok(())
    })
    .with_header("content-length", (mib * 1024 * 1024).to_string()))
}

fn create_item(req: &mut Request) -> Result<(StatusCode, Json<Item>), Error> {
    let item: Item = req.json()?;
    Ok((StatusCode::CREATED, Json(item)))
}
