//! `sdk-p3`: a zerosdk app built for WASI 0.3 (zerosdk's `p3` feature, so
//! `#[zeroproxy::handler]` exports `wasi:http/handler@0.3`). Its `async` handler serves (paths
//! within the app):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /hello` | `hello from zerosdk on wasi 0.3` |
//! | `POST /items` with `{"name": "…", "qty": N}` | `201` with the item as JSON; a bad body is a 400 saying why |
//! | `GET /where` | `{"path", "route", "query"}` as the SDK sees them |
//! | `GET /big/{kib}` | `kib` KiB of `z`, streamed from a reader |
//! | `GET /visits` | `visits N`: the requests this instance has served (instances may be reused under 0.3) |
//! | `GET /stream` | a body written with `Body::from_writer`, which the SDK refuses under 0.3 (a 500) |
//!
//! Anything else is the router's 404 or 405. Its `#[zerochrono::handler]` (a sync export
//! beside the 0.3 HTTP handler) prints `sdk-p3 tick SCHEDULE attempt N` at every tick.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use zerosdk::serde_json::json;
use zerosdk::zerochrono::{self, Tick};
use zerosdk::zeroproxy::{self, Body, Error, Json, Request, Response, Router, StatusCode};

/// An item of `POST /items`.
#[derive(Serialize, Deserialize)]
struct Item {
    name: String,
    qty: u32,
}

/// Requests this instance has served.
static VISITS: AtomicU32 = AtomicU32::new(0);

#[zeroproxy::handler]
async fn handler(req: &mut Request) -> Response {
    VISITS.fetch_add(1, Ordering::SeqCst);
    router().handle(req)
}

#[zerochrono::handler]
fn tick(t: Tick) {
    println!("sdk-p3 tick {} attempt {}", t.schedule, t.attempt);
}

fn router() -> Router {
    Router::new()
        .get("/hello", |_: &mut Request| "hello from zerosdk on wasi 0.3")
        .post("/items", create_item)
        .get("/where", |req: &mut Request| {
            Json(json!({ "path": req.path(), "route": req.route(), "query": req.query() }))
        })
        .get(
            "/big/{kib}",
            |req: &mut Request| -> Result<Response, Error> {
                let kib: u64 = req.param_as("kib")?;
                let body = std::io::Read::take(std::io::repeat(b'z'), kib * 1024);
                Ok(Response::from_reader(body))
            },
        )
        .get("/visits", |_: &mut Request| {
            format!("visits {}", VISITS.load(Ordering::SeqCst))
        })
        .get("/stream", |_: &mut Request| {
            Response::new(StatusCode::OK).with_body(Body::from_writer(async |w| {
                w.write_all(b"never sent").await
            }))
        })
}

fn create_item(req: &mut Request) -> Result<(StatusCode, Json<Item>), Error> {
    let item: Item = req.json()?;
    Ok((StatusCode::CREATED, Json(item)))
}
