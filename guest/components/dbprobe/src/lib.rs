//! `dbprobe`: a test component for zero:db. `POST` a JSON body
//! `{"db": NAME, "op": "query" | "execute" | "batch", "sql": SQL, "params": [...],
//! "statements": [{"sql": SQL, "params": [...]}]}` and it answers `200` with
//! `{"ok": RESULT}` or `{"error": {"kind": ..., ...}}` describing the `zero:db` error variant.
//! Parameters are JSON: null, integers, floats, strings, `{"blob": [bytes]}`.
//! `{"op": "open-many", "dbs": [NAME, ...]}` opens every named database in one request and keeps
//! the handles open, answering `{"ok": {"opened": N}}` or the first error with `"opened"`.

use serde_json::{Value as Json, json};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wit_bindgen::generate!({
    path: "../../../wit/zero-db",
    world: "zero:db/imports",
});

use zero::db::db::{Action, Database, Error, LimitKind, Statement, Value};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body = read_body(&request);
        let answer = match serde_json::from_slice::<Json>(&body) {
            Ok(req) => run(&req),
            Err(e) => json!({"error": {"kind": "bad-request", "message": e.to_string()}}),
        };
        respond(response_out, 200, answer.to_string().as_bytes());
    }
}

fn run(req: &Json) -> Json {
    if req["op"] == "open-many" {
        let mut handles = Vec::new();
        for name in req["dbs"].as_array().into_iter().flatten() {
            match Database::open(name.as_str().unwrap_or("")) {
                Ok(db) => handles.push(db),
                Err(e) => return json!({"error": error_json(&e), "opened": handles.len()}),
            }
        }
        return json!({"ok": {"opened": handles.len()}});
    }
    let name = req["db"].as_str().unwrap_or("probe");
    let db = match Database::open(name) {
        Ok(db) => db,
        Err(e) => return json!({"error": error_json(&e)}),
    };
    let params = |v: &Json| -> Vec<Value> {
        v.as_array()
            .map(|a| a.iter().map(to_value).collect())
            .unwrap_or_default()
    };
    let sql = req["sql"].as_str().unwrap_or("");
    let result = match req["op"].as_str().unwrap_or("query") {
        "execute" => db.execute(sql, &params(&req["params"])).map(|r| {
            json!({"rows_affected": r.rows_affected, "last_insert_id": r.last_insert_id})
        }),
        "batch" => {
            let statements: Vec<Statement> = req["statements"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| Statement {
                            sql: s["sql"].as_str().unwrap_or("").to_string(),
                            params: params(&s["params"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            db.batch(&statements).map(|rs| {
                Json::Array(
                    rs.iter()
                        .map(|r| json!({"rows_affected": r.rows_affected, "last_insert_id": r.last_insert_id}))
                        .collect(),
                )
            })
        }
        _ => db.query(sql, &params(&req["params"])).map(|r| {
            json!({
                "columns": r.columns,
                "rows": r.rows.iter().map(|row| row.iter().map(from_value).collect::<Vec<_>>()).collect::<Vec<_>>(),
            })
        }),
    };
    match result {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": error_json(&e)}),
    }
}

fn to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) => Value::Blob(
            o.get("blob")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.as_u64())
                        .map(|b| b as u8)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Json::Array(_) => Value::Null,
    }
}

fn from_value(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!({"blob": b}),
    }
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Read => "read",
        Action::Write => "write",
        Action::Create => "create",
        Action::Delete => "delete",
    }
}

fn error_json(e: &Error) -> Json {
    match e {
        Error::PermissionDenied(p) => json!({
            "kind": "permission-denied",
            "database": p.database,
            "action": p.action.map(action),
            "table": p.table,
            "message": p.message,
        }),
        Error::Syntax(s) => json!({"kind": "syntax", "message": s.message, "offset": s.offset}),
        Error::Constraint(m) => json!({"kind": "constraint", "message": m}),
        Error::LimitExceeded(l) => json!({
            "kind": "limit-exceeded",
            "limit_kind": match l.kind {
                LimitKind::StatementLength => "statement-length",
                LimitKind::Rows => "rows",
                LimitKind::Time => "time",
                LimitKind::Size => "size",
                LimitKind::ValueSize => "value-size",
                LimitKind::ResultSize => "result-size",
                LimitKind::Statements => "statements",
                LimitKind::Databases => "databases",
                LimitKind::Quota => "quota",
                LimitKind::OpenDatabases => "open-databases",
                LimitKind::Memory => "memory",
            },
            "limit": l.limit,
            "message": l.message,
        }),
        Error::Invalid(m) => json!({"kind": "invalid", "message": m}),
        Error::Refused(m) => json!({"kind": "refused", "message": m}),
        Error::Other(m) => json!({"kind": "other", "message": m}),
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

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/json".to_vec())])
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
