//! `cached-notes`: notes kept in zerodb and served from zerocache, the example of a zerocore
//! app that caches a database query.
//!
//! Mount it at `/notes` (it serves `/{id}` within the app) or at `/` (it serves
//! `/notes/{id}`):
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT /notes/{id}` with `{"text": "…"}` | `204`: the row is written and its cache entry dropped |
//! | `GET /notes/{id}` | `200 {"id": …, "text": …}` with `x-cache: miss` (read from the database, then cached for 30 s) or `x-cache: hit` (from the cache), or `404` |
//!
//! The notes live in the tenant's database `notes` (table `notes`, created on first use) and
//! their cached answers under the keys `note:{id}`. Errors answer JSON `{"error": "…"}` with
//! 400, 403 (a capability is missing), 404, 405 or 500.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zerosdk::cache;
use zerosdk::db::Database;
use zerosdk::zeroproxy::{self, Error, Request, Response, Router, StatusCode};

/// The database (within the caller's tenant) holding the notes.
const DB: &str = "notes";
const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)";
/// How long a cached answer is served before the database is read again.
const TTL: Duration = Duration::from_secs(30);

/// A note as stored and as answered.
#[derive(Serialize, Deserialize)]
struct Note {
    id: i64,
    text: String,
}

/// The body of `PUT`.
#[derive(Deserialize)]
struct NewText {
    text: String,
}

#[zeroproxy::handler]
fn handler(req: &mut Request) -> Response {
    Router::new()
        .get("/{id}", get)
        .put("/{id}", put)
        .get("/notes/{id}", get)
        .put("/notes/{id}", put)
        .handle(req)
}

fn key(id: i64) -> String {
    format!("note:{id}")
}

fn note_id(req: &Request) -> Result<i64, Error> {
    let raw = req.param("id").unwrap_or_default();
    raw.parse()
        .map_err(|_| Error::bad_request(format!("`{raw}` is not a note id (a whole number)")))
}

fn json_with_cache(body: Vec<u8>, cache: &str) -> Response {
    Response::new(StatusCode::OK)
        .with_header("content-type", "application/json")
        .with_header("x-cache", cache)
        .with_body(body)
}

fn get(req: &mut Request) -> Result<Response, Error> {
    let id = note_id(req)?;
    if let Some(body) = cache::get(&key(id))? {
        return Ok(json_with_cache(body, "hit"));
    }
    let db = Database::open(DB)?;
    let note: Option<Note> = db.with_schema(SCHEMA, |db| {
        db.query_one("SELECT id, text FROM notes WHERE id = ?", (id,))
    })?;
    let note = note.ok_or_else(|| Error::not_found(format!("no note {id}")))?;
    let body = zerosdk::serde_json::to_vec(&note).map_err(|e| Error::internal(e.to_string()))?;
    cache::set(&key(id), &body, Some(TTL))?;
    Ok(json_with_cache(body, "miss"))
}

fn put(req: &mut Request) -> Result<StatusCode, Error> {
    let id = note_id(req)?;
    let new: NewText = req.json()?;
    let db = Database::open(DB)?;
    db.with_schema(SCHEMA, |db| {
        db.execute(
            "INSERT INTO notes (id, text) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET text = excluded.text",
            (id, &new.text),
        )
    })?;
    // The next read goes to the database again.
    cache::delete(&key(id))?;
    Ok(StatusCode::NO_CONTENT)
}
