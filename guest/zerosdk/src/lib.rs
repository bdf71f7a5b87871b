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
//!
//! WASI 0.3: with the `p3` feature, `#[zeroproxy::handler]` exports `wasi:http/handler@0.3`
//! instead (the node may then serve several requests with one instance, see its
//! `max_concurrent_per_instance`). The handler is written the same way; what differs: the
//! request body is read whole before the handler runs (up to [`zeroproxy::MAX_BODY_IN_MEMORY`],
//! a larger one is a 413, and [`body_reader`](zeroproxy::Request::body_reader) is `None`),
//! an `async` handler runs on the component model's async runtime (so `wstd`'s timers and
//! client, which need WASI 0.2's reactor, are not for it; use `wasip3`'s), and a body written
//! with [`Body::from_writer`](zeroproxy::Body::from_writer) is refused with a 500 (answer with
//! bytes or a reader). Statics live as long as the instance, which may serve many requests.

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
    #[cfg(feature = "p3")]
    pub use wasip3;
}
