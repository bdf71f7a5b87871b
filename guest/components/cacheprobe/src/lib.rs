//! `cacheprobe`: a test component for zero:cache.
//!
//! `POST` a JSON body naming one operation and it answers `200` with `{"ok": RESULT}` or
//! `{"error": {"kind": …, …}}` describing the `zero:cache` error variant. Values are UTF-8
//! strings:
//!
//! | body | result |
//! | --- | --- |
//! | `{"op": "get", "key": K}` | the value or `null` |
//! | `{"op": "get-many", "keys": [K, …]}` | a list of values or `null`s |
//! | `{"op": "set", "key": K, "value": V, "ttl_ms": N?}` | `null` |
//! | `{"op": "delete", "key": K}` | `null` |
//! | `{"op": "increment", "key": K, "delta": D, "ttl_ms": N?}` | the new integer |
//! | `{"op": "cas", "key": K, "expected": V or null, "new": V, "ttl_ms": N?}` | whether it swapped |
//!
//! `GET /…?key=K` answers the value of `K` as the body (`200`), or `404` when it is absent: the
//! cache hit measured by `benches/cache.sh`.

use serde_json::{Value as Json, json};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wit_bindgen::generate!({
    path: "../../../wit/zero-cache",
    world: "zero:cache/imports",
});

use zero::cache::cache::{self as cache, Error, LimitKind};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        if matches!(request.method(), Method::Get) {
            let path = request.path_with_query().unwrap_or_default();
            let key = path
                .split_once("?key=")
                .map(|(_, k)| k.to_string())
                .unwrap_or_default();
            return match cache::get(&key) {
                Ok(Some(v)) => respond(response_out, 200, "application/octet-stream", &v),
                Ok(None) => respond(response_out, 404, "text/plain", b"absent"),
                Err(e) => respond(
                    response_out,
                    500,
                    "application/json",
                    error_json(&e).to_string().as_bytes(),
                ),
            };
        }
        let body = read_body(&request);
        let answer = match serde_json::from_slice::<Json>(&body) {
            Ok(req) => run(&req),
            Err(e) => json!({"error": {"kind": "bad-request", "message": e.to_string()}}),
        };
        respond(
            response_out,
            200,
            "application/json",
            answer.to_string().as_bytes(),
        );
    }
}

fn text(v: &[u8]) -> Json {
    Json::String(String::from_utf8_lossy(v).into_owned())
}

fn run(req: &Json) -> Json {
    let key = req["key"].as_str().unwrap_or("");
    let ttl = req["ttl_ms"].as_u64();
    let bytes = |v: &Json| v.as_str().unwrap_or("").as_bytes().to_vec();
    let result = match req["op"].as_str().unwrap_or("") {
        "get" => cache::get(key).map(|v| v.as_deref().map_or(Json::Null, text)),
        "get-many" => {
            let keys: Vec<String> = req["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k.as_str().unwrap_or("").to_string())
                .collect();
            cache::get_many(&keys).map(|vs| {
                Json::Array(
                    vs.iter()
                        .map(|v| v.as_deref().map_or(Json::Null, text))
                        .collect(),
                )
            })
        }
        "set" => cache::set(key, &bytes(&req["value"]), ttl).map(|()| Json::Null),
        "delete" => cache::delete(key).map(|()| Json::Null),
        "increment" => {
            cache::increment(key, req["delta"].as_i64().unwrap_or(1), ttl).map(|n| json!(n))
        }
        "cas" => {
            let expected = req["expected"].as_str().map(|s| s.as_bytes().to_vec());
            cache::compare_and_swap(key, expected.as_deref(), &bytes(&req["new"]), ttl)
                .map(|b| json!(b))
        }
        other => {
            return json!({"error": {"kind": "bad-request", "message": format!("unknown op `{other}`")}});
        }
    };
    match result {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": error_json(&e)}),
    }
}

fn error_json(e: &Error) -> Json {
    match e {
        Error::PermissionDenied(p) => json!({
            "kind": "permission-denied",
            "key": p.key,
            "command": p.command,
            "message": p.message,
        }),
        Error::LimitExceeded(l) => json!({
            "kind": "limit-exceeded",
            "limit_kind": match l.kind {
                LimitKind::KeySize => "key-size",
                LimitKind::ValueSize => "value-size",
                LimitKind::BatchKeys => "batch-keys",
                LimitKind::BatchSize => "batch-size",
                LimitKind::Quota => "quota",
                LimitKind::Memory => "memory",
            },
            "limit": l.limit,
            "requested": l.requested,
            "message": l.message,
        }),
        Error::NotAnInteger(m) => json!({"kind": "not-an-integer", "message": m}),
        Error::Overflow(m) => json!({"kind": "overflow", "message": m}),
        Error::Invalid(m) => json!({"kind": "invalid", "message": m}),
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else {
        return out;
    };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            out.extend_from_slice(&chunk);
        }
    }
    drop(IncomingBody::finish(body));
    out
}

fn respond(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .expect("valid header");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let out = response.body().expect("outgoing body");
    ResponseOutparam::set(response_out, Ok(response));
    {
        let stream = out.write().expect("outgoing stream");
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write body");
        }
    }
    OutgoingBody::finish(out, None).expect("finish body");
}
