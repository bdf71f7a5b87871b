//! `cached-notes`: notes kept in zerodb and served from zerocache, the example of a zerocore
//! app that caches a database query.
//!
//! Mount it at `/notes`:
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT /notes/{id}` with `{"text": "…"}` | `204`: the row is written and its cache entry dropped |
//! | `GET /notes/{id}` | `200 {"id": …, "text": …}` with `x-cache: miss` (read from the database, then cached for 30 s) or `x-cache: hit` (from the cache), or `404` |
//!
//! The notes live in the tenant's database `notes` (table `notes`, created on first use) and
//! their cached answers under the keys `note:{id}`. Errors answer JSON `{"error": "…"}` with
//! 400, 403 (a capability is missing) or 500.

use serde_json::{Value as Json, json};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod db {
    wit_bindgen::generate!({
        path: "../../../wit/zero-db",
        world: "zero:db/imports",
    });
}

mod cache {
    wit_bindgen::generate!({
        path: "../../../wit/zero-cache",
        world: "zero:cache/imports",
    });
}

use cache::zero::cache::cache as kv;
use db::zero::db::db::{Database, Error as DbError, Value};

/// The database (within the caller's tenant) holding the notes.
const DB: &str = "notes";
const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)";
/// How long a cached answer is served before the database is read again.
const TTL_MS: u64 = 30_000;

struct Component;

wasi::http::proxy::export!(Component);

/// An HTTP answer: status, the `x-cache` header (if any) and a body.
struct Reply {
    status: u16,
    cache: Option<&'static str>,
    body: Option<Vec<u8>>,
}

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        respond(response_out, route(&request));
    }
}

fn route(request: &IncomingRequest) -> Reply {
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let id = match segments.as_slice() {
        [.., "notes", id] => match id.parse::<i64>() {
            Ok(id) => id,
            Err(_) => return error(400, &format!("`{id}` is not a note id (a whole number)")),
        },
        _ => return error(404, "not found: use /notes/{id}"),
    };
    match request.method() {
        Method::Get => get(id),
        Method::Put => put(id, &read_body(request)),
        _ => error(405, "method not allowed: use GET or PUT /notes/{id}"),
    }
}

fn key(id: i64) -> String {
    format!("note:{id}")
}

fn get(id: i64) -> Reply {
    match kv::get(&key(id)) {
        Ok(Some(body)) => {
            return Reply {
                status: 200,
                cache: Some("hit"),
                body: Some(body),
            };
        }
        Ok(None) => {}
        Err(e) => return cache_error(&e),
    }
    let db = match Database::open(DB) {
        Ok(db) => db,
        Err(e) => return db_error(&e),
    };
    let params = [Value::Integer(id)];
    let rows = match with_table(&db, || {
        db.query("SELECT text FROM notes WHERE id = ?", &params)
    }) {
        Ok(rows) => rows,
        Err(e) => return db_error(&e),
    };
    let Some(Value::Text(text)) = rows.rows.first().and_then(|r| r.first()) else {
        return error(404, &format!("no note {id}"));
    };
    let body = json!({"id": id, "text": text}).to_string().into_bytes();
    if let Err(e) = kv::set(&key(id), &body, Some(TTL_MS)) {
        return cache_error(&e);
    }
    Reply {
        status: 200,
        cache: Some("miss"),
        body: Some(body),
    }
}

fn put(id: i64, body: &[u8]) -> Reply {
    let text = match serde_json::from_slice::<Json>(body) {
        Ok(v) => match v["text"].as_str() {
            Some(t) => t.to_string(),
            None => return error(400, "the body must be {\"text\": \"…\"}"),
        },
        Err(e) => return error(400, &format!("the body is not JSON: {e}")),
    };
    let db = match Database::open(DB) {
        Ok(db) => db,
        Err(e) => return db_error(&e),
    };
    let params = [Value::Integer(id), Value::Text(text)];
    if let Err(e) = with_table(&db, || {
        db.execute(
            "INSERT INTO notes (id, text) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET text = excluded.text",
            &params,
        )
    }) {
        return db_error(&e);
    }
    // The next read goes to the database again.
    if let Err(e) = kv::delete(&key(id)) {
        return cache_error(&e);
    }
    Reply {
        status: 204,
        cache: None,
        body: None,
    }
}

/// Runs `op`; when the table does not exist yet, creates it and runs `op` again.
fn with_table<T>(db: &Database, op: impl Fn() -> Result<T, DbError>) -> Result<T, DbError> {
    match op() {
        Err(DbError::Syntax(s)) if s.message.contains("no such table") => {
            db.execute(SCHEMA, &[])?;
            op()
        }
        other => other,
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply {
        status,
        cache: None,
        body: Some(json!({"error": message}).to_string().into_bytes()),
    }
}

fn db_error(e: &DbError) -> Reply {
    match e {
        DbError::PermissionDenied(p) => error(403, &p.message),
        DbError::Constraint(m) | DbError::Invalid(m) => error(400, m),
        DbError::Syntax(s) => error(500, &s.message),
        DbError::LimitExceeded(l) => error(413, &l.message),
        DbError::Refused(m) | DbError::Other(m) => error(500, m),
    }
}

fn cache_error(e: &kv::Error) -> Reply {
    match e {
        kv::Error::PermissionDenied(p) => error(403, &p.message),
        kv::Error::LimitExceeded(l) => error(413, &l.message),
        kv::Error::NotAnInteger(m) | kv::Error::Overflow(m) | kv::Error::Invalid(m) => {
            error(500, m)
        }
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
            if out.len() > 64 * 1024 {
                break;
            }
        }
    }
    drop(IncomingBody::finish(body));
    out
}

fn respond(response_out: ResponseOutparam, reply: Reply) {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    if reply.body.is_some() {
        headers.push(("content-type".into(), b"application/json".to_vec()));
    }
    if let Some(c) = reply.cache {
        headers.push(("x-cache".into(), c.as_bytes().to_vec()));
    }
    let headers = Fields::from_list(&headers).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(reply.status);
    let Ok(out) = response.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    if let Some(body) = reply.body
        && let Ok(stream) = out.write()
    {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(out, None);
}
