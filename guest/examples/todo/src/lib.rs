//! `todo`: a JSON todo API over zerodb, the example of a zerocore app with a database.
//!
//! Mount it at `/todos`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /todos` | `200 [{"id": 1, "title": "…", "done": false}, …]` |
//! | `POST /todos` with `{"title": "…"}` | `201 {"id": N}` |
//! | `GET /todos/{id}` | `200 {"id": …, "title": …, "done": …}` or `404` |
//! | `DELETE /todos/{id}` | `204` or `404` |
//!
//! The todos live in the tenant's database `todo`, table `todos`, created on first use (which
//! needs the `/db/create` capability; see README.md for signing). Errors answer JSON
//! `{"error": "…"}` with 400 (bad request), 403 (capability missing) or 500.

use serde_json::{Value as Json, json};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wit_bindgen::generate!({
    path: "../../../wit/zero-db",
    world: "zero:db/imports",
});

use zero::db::db::{Database, Error, Value};

/// The database (within the caller's tenant) holding the todos.
const DB: &str = "todo";
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (\
    id INTEGER PRIMARY KEY, \
    title TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 1000), \
    done INTEGER NOT NULL DEFAULT 0)";

struct Component;

wasi::http::proxy::export!(Component);

/// An HTTP answer: status and JSON body (`None`: no body).
struct Reply(u16, Option<Json>);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let Reply(status, body) = route(&request);
        respond(response_out, status, body);
    }
}

fn route(request: &IncomingRequest) -> Reply {
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.iter().rposition(|s| *s == "todos") {
        Some(i) => &segments[i + 1..],
        None => return error(404, "not found: the todo API lives at /todos"),
    };
    let db = match Database::open(DB) {
        Ok(db) => db,
        Err(e) => return db_error(&e),
    };
    match (request.method(), rest) {
        (Method::Get, []) => list(&db),
        (Method::Post, []) => create(&db, &read_body(request)),
        (Method::Get, [id]) => with_id(id, |id| get(&db, id)),
        (Method::Delete, [id]) => with_id(id, |id| delete(&db, id)),
        (_, [] | [_]) => error(
            405,
            "method not allowed: use GET, POST /todos or GET, DELETE /todos/{id}",
        ),
        _ => error(404, "not found: use /todos or /todos/{id}"),
    }
}

fn with_id(id: &str, f: impl FnOnce(i64) -> Reply) -> Reply {
    match id.parse::<i64>() {
        Ok(id) => f(id),
        Err(_) => error(400, &format!("`{id}` is not a todo id (a whole number)")),
    }
}

/// Runs `op`; when the table does not exist yet, creates it and runs `op` again.
fn with_table<T>(db: &Database, op: impl Fn() -> Result<T, Error>) -> Result<T, Error> {
    match op() {
        Err(Error::Syntax(s)) if s.message.contains("no such table") => {
            db.execute(SCHEMA, &[])?;
            op()
        }
        other => other,
    }
}

fn todo_json(row: &[Value]) -> Json {
    let id = match row.first() {
        Some(Value::Integer(i)) => json!(i),
        _ => Json::Null,
    };
    let title = match row.get(1) {
        Some(Value::Text(t)) => json!(t),
        _ => Json::Null,
    };
    let done = matches!(row.get(2), Some(Value::Integer(d)) if *d != 0);
    json!({"id": id, "title": title, "done": done})
}

fn list(db: &Database) -> Reply {
    match with_table(db, || {
        db.query(
            "SELECT id, title, done FROM todos ORDER BY id LIMIT 1000",
            &[],
        )
    }) {
        Ok(rows) => Reply(
            200,
            Some(Json::Array(
                rows.rows.iter().map(|r| todo_json(r)).collect(),
            )),
        ),
        Err(e) => db_error(&e),
    }
}

fn get(db: &Database, id: i64) -> Reply {
    let params = [Value::Integer(id)];
    match with_table(db, || {
        db.query("SELECT id, title, done FROM todos WHERE id = ?", &params)
    }) {
        Ok(rows) => match rows.rows.first() {
            Some(row) => Reply(200, Some(todo_json(row))),
            None => error(404, &format!("no todo {id}")),
        },
        Err(e) => db_error(&e),
    }
}

fn create(db: &Database, body: &[u8]) -> Reply {
    let title = match serde_json::from_slice::<Json>(body) {
        Ok(v) => match v["title"].as_str() {
            Some(t) => t.to_string(),
            None => return error(400, "the body must be {\"title\": \"…\"}"),
        },
        Err(e) => return error(400, &format!("the body is not JSON: {e}")),
    };
    let params = [Value::Text(title)];
    match with_table(db, || {
        db.execute("INSERT INTO todos (title) VALUES (?)", &params)
    }) {
        Ok(r) => Reply(201, Some(json!({"id": r.last_insert_id}))),
        Err(e) => db_error(&e),
    }
}

fn delete(db: &Database, id: i64) -> Reply {
    let params = [Value::Integer(id)];
    match with_table(db, || db.execute("DELETE FROM todos WHERE id = ?", &params)) {
        Ok(r) if r.rows_affected > 0 => Reply(204, None),
        Ok(_) => error(404, &format!("no todo {id}")),
        Err(e) => db_error(&e),
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply(status, Some(json!({"error": message})))
}

fn db_error(e: &Error) -> Reply {
    match e {
        Error::PermissionDenied(p) => error(403, &p.message),
        Error::Constraint(m) | Error::Invalid(m) => error(400, m),
        Error::Syntax(s) => error(500, &s.message),
        Error::LimitExceeded(l) => error(413, &l.message),
        Error::Refused(m) | Error::Other(m) => error(500, m),
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

fn respond(response_out: ResponseOutparam, status: u16, body: Option<Json>) {
    let headers = match &body {
        Some(_) => Fields::from_list(&[("content-type".to_string(), b"application/json".to_vec())])
            .unwrap_or_else(|_| Fields::new()),
        None => Fields::new(),
    };
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(out) = response.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    if let Some(body) = body {
        let text = body.to_string();
        if let Ok(stream) = out.write() {
            for chunk in text.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
    }
    let _ = OutgoingBody::finish(out, None);
}
