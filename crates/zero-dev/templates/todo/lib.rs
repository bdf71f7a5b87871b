//! {{name}}: a JSON todo API over the tenant's database `todo` (table `todos`, created on first
//! use). Routed at `/todos` (see zero.toml), so the paths below are within that route:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /todos` | `200 [{"id": 1, "title": "milk", "done": false}, …]` |
//! | `POST /todos` with `{"title": "milk"}` | `201 {"id": 1}` |
//! | `GET /todos/1` | `200 {"id": 1, "title": "milk", "done": false}`, or `404` |
//! | `DELETE /todos/1` | `204`, or `404` |

use zerosdk::db::Database;
use zerosdk::serde::{Deserialize, Serialize};
use zerosdk::zeroproxy::{self, Error, Json, Request, Response, Router, StatusCode};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
)";

#[derive(Serialize, Deserialize)]
#[serde(crate = "zerosdk::serde")]
struct Todo {
    id: i64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
#[serde(crate = "zerosdk::serde")]
struct NewTodo {
    title: String,
}

#[derive(Serialize)]
#[serde(crate = "zerosdk::serde")]
struct Created {
    id: i64,
}

fn list(_req: &mut Request) -> Result<Json<Vec<Todo>>, Error> {
    let db = Database::open("todo")?;
    let todos = db.with_schema(SCHEMA, |db| {
        db.query("SELECT id, title, done FROM todos ORDER BY id", ())
    })?;
    Ok(Json(todos))
}

fn create(req: &mut Request) -> Result<(StatusCode, Json<Created>), Error> {
    let new: NewTodo = req.json()?;
    if new.title.trim().is_empty() {
        return Err(Error::bad_request("the title is empty"));
    }
    let db = Database::open("todo")?;
    let id = db.with_schema(SCHEMA, |db| {
        db.query_one::<i64>(
            "INSERT INTO todos (title) VALUES (?) RETURNING id",
            (new.title.as_str(),),
        )
    })?;
    let id = id.ok_or_else(|| Error::internal("the insert returned no id"))?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

fn show(req: &mut Request) -> Result<Json<Todo>, Error> {
    let id: i64 = req.param_as("id")?;
    let db = Database::open("todo")?;
    let todo = db.with_schema(SCHEMA, |db| {
        db.query_one("SELECT id, title, done FROM todos WHERE id = ?", (id,))
    })?;
    todo.map(Json)
        .ok_or_else(|| Error::not_found(format!("no todo {id}")))
}

fn remove(req: &mut Request) -> Result<StatusCode, Error> {
    let id: i64 = req.param_as("id")?;
    let db = Database::open("todo")?;
    let gone = db.with_schema(SCHEMA, |db| {
        db.query_one::<i64>("DELETE FROM todos WHERE id = ? RETURNING id", (id,))
    })?;
    match gone {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(Error::not_found(format!("no todo {id}"))),
    }
}

#[zeroproxy::handler]
pub fn handler(req: &mut Request) -> impl Response {
    Router::new()
        .get("/", list)
        .post("/", create)
        .get("/{id}", show)
        .delete("/{id}", remove)
        .handle(req)
}
