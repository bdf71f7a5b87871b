//! `zerosdk`: write zerocore apps in plain Rust.
//!
//! ```text
//! use zerosdk::zeroproxy::{self, Request, Response};
//!
//! #[zeroproxy::handler]
//! pub fn handler(_req: &mut Request) -> impl Response {
//!     "Hello, World!".into()
//! }
//! ```
//!
//! - [`zeroproxy`]: the HTTP handler (`#[zeroproxy::handler]`, sync or `async fn`),
//!   [`Request`](zeroproxy::Request), [`Response`](zeroproxy::Response) and
//!   [`IntoResponse`](zeroproxy::IntoResponse), a small [`Router`](zeroproxy::Router).
//! - [`db`]: the tenant's zerodb databases, with parameters from Rust values and rows into Rust
//!   types.
//! - [`cache`]: the tenant's zerocache.
//! - [`zerochrono`]: `#[zerochrono::handler]` for schedule ticks, and the app's schedules.
//! - Files: plain [`std::fs`]; the tenant's files granted to the component appear under `/`.
//! - Async: handlers may be `async fn`; they run on [`wstd`]'s reactor over `wasi:io`
//!   pollables, so [`wstd::time`], [`wstd::http::Client`] and friends work inside them.
//!
//! A panic in a handler makes the request fail with a 500; the node's log line for the request
//! carries the panic message.
//!
//! The crate builds for `wasm32-wasip2`; a user's crate needs `crate-type = ["cdylib"]` and
//! depends on `zerosdk` only.

#![warn(missing_docs)]

pub mod cache;
pub mod db;
pub mod zerochrono;
pub mod zeroproxy;

/// The async runtime and I/O (timers, outgoing HTTP, streams) that async handlers use.
pub use wstd;

/// JSON, re-exported so that apps use the same `serde_json` as the SDK.
pub use serde_json;

/// `serde`, re-exported (with `derive`) for `#[derive(Serialize, Deserialize)]` on app types:
/// write `use zerosdk::serde::{Deserialize, Serialize};` and `#[serde(crate =
/// "zerosdk::serde")]` on the type, or depend on `serde` directly.
pub use serde;

/// What the macros expand to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use wasip2;
}
