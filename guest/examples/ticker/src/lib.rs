//! `ticker`: one component with two triggers. Its schedules' ticks (`zero:chrono/tick-handler`)
//! record the last tick in the tenant's cache (`zero:cache`, key `ticker:last`); its HTTP
//! handler (`wasi:http/incoming-handler`) shows it, with the app's schedules as
//! `zero:chrono/schedules` lists them:
//!
//! `GET /` answers `200 {"last": {"schedule", "scheduled_ms", "actual_ms", "attempt",
//! "run_id"} | null, "schedules": [{"name", "expression", "time_zone", "next_ms"}]}`.

use serde_json::{Value as Json, json};
use wasi::exports::http::incoming_handler::Guest as HttpGuest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod chrono {
    wit_bindgen::generate!({
        path: "../../../wit/zero-chrono",
        world: "zero:chrono/scheduled",
    });
}

mod cache {
    wit_bindgen::generate!({
        path: "../../../wit/zero-cache",
        world: "zero:cache/imports",
    });
}

use cache::zero::cache::cache as kv;
use chrono::exports::zero::chrono::tick_handler::{Guest as TickGuest, Tick};
use chrono::zero::chrono::schedules;

/// Where the last tick is kept.
const KEY: &str = "ticker:last";

struct Component;

wasi::http::proxy::export!(Component);
chrono::export!(Component with_types_in chrono);

impl TickGuest for Component {
    fn handle_tick(tick: Tick) -> Result<(), String> {
        let last = json!({
            "schedule": tick.schedule,
            "scheduled_ms": tick.scheduled_ms,
            "actual_ms": tick.actual_ms,
            "attempt": tick.attempt,
            "run_id": tick.run_id,
        });
        println!("tick {} at {}", tick.schedule, tick.scheduled_ms);
        kv::set(KEY, last.to_string().as_bytes(), None)
            .map_err(|e| format!("could not record the tick: {e:?}"))
    }
}

impl HttpGuest for Component {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = match page() {
            Ok(page) => (200, page),
            Err(e) => (500, json!({ "error": e })),
        };
        respond(response_out, status, body.to_string().into_bytes());
    }
}

fn page() -> Result<Json, String> {
    let last = match kv::get(KEY).map_err(|e| format!("reading the last tick failed: {e:?}"))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
        None => Json::Null,
    };
    let schedules: Vec<Json> = schedules::all()
        .into_iter()
        .map(|s| json!({"name": s.name, "expression": s.expression, "time_zone": s.time_zone, "next_ms": s.next_ms}))
        .collect();
    Ok(json!({ "last": last, "schedules": schedules }))
}

fn respond(response_out: ResponseOutparam, status: u16, body: Vec<u8>) {
    let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(out) = response.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(stream) = out.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(out, None);
}
