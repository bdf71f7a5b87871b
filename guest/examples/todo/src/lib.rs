//! `todo`: a JSON todo API over zerodb, the example of a zerocore app with a database.
//!
//! Mount it at `/todos` (the paths below are within the app: the node strips the route):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /todos` | `200 [{"done": false, "id": 1, "title": "…"}, …]` |
//! | `POST /todos` with `{"title": "…"}` | `201 {"id": N}` |
//! | `GET /todos/{id}` | `200 {"done": …, "id": …, "title": …}` or `404` |
//! | `DELETE /todos/{id}` | `204` or `404` |
//!
//! The todos live in the tenant's database `todo`, table `todos`, created on first use (which
//! needs the `/db/create` capability; see README.md for signing). Errors answer JSON
//! `{"error": "…"}` with 400 (bad request), 403 (capability missing), 404, 405 or 500.

use serde::{Deserialize, Serialize};
use zerosdk::db::Database;
use zerosdk::zeroproxy::{self, Error, Json, Request, Response, Router, StatusCode};

/// The database (within the caller's tenant) holding the todos.
const DB: &str = "todo";
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (\
    id INTEGER PRIMARY KEY, \
    title TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 1000), \
    done INTEGER NOT NULL DEFAULT 0)";

/// A todo as stored and as answered (fields in the order they are serialized).
#[derive(Serialize, Deserialize)]
struct Todo {
    done: bool,
    id: i64,
    title: String,
}

/// The body of `POST /todos`.
#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

#[zeroproxy::handler]
fn handler(req: &mut Request) -> Response {
    Router::new()
        .get("/", list)
        .post("/", create)
        .get("/{id}", get)
        .delete("/{id}", delete)
        .handle(req)
}

fn list(_req: &mut Request) -> Result<Json<Vec<Todo>>, Error> {
    let db = Database::open(DB)?;
    let todos = db.with_schema(SCHEMA, |db| {
        db.query(
            "SELECT id, title, done FROM todos ORDER BY id LIMIT 1000",
            (),
        )
    })?;
    Ok(Json(todos))
}

fn get(req: &mut Request) -> Result<Json<Todo>, Error> {
    let id: i64 = req.param_as("id")?;
    let db = Database::open(DB)?;
    db.with_schema(SCHEMA, |db| {
        db.query_one("SELECT id, title, done FROM todos WHERE id = ?", (id,))
    })?
    .map(Json)
    .ok_or_else(|| Error::not_found(format!("no todo {id}")))
}

fn create(req: &mut Request) -> Result<(StatusCode, Json<zerosdk::serde_json::Value>), Error> {
    let new: NewTodo = req.json()?;
    let db = Database::open(DB)?;
    let r = db.with_schema(SCHEMA, |db| {
        db.execute("INSERT INTO todos (title) VALUES (?)", (&new.title,))
    })?;
    Ok((
        StatusCode::CREATED,
        Json(zerosdk::serde_json::json!({ "id": r.last_insert_id })),
    ))
}

fn delete(req: &mut Request) -> Result<StatusCode, Error> {
    let id: i64 = req.param_as("id")?;
    let db = Database::open(DB)?;
    let r = db.with_schema(SCHEMA, |db| {
        db.execute("DELETE FROM todos WHERE id = ?", (id,))
    })?;
    if r.rows_affected > 0 {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found(format!("no todo {id}")))
    }
}
