//! HTTP apps: the `#[zeroproxy::handler]` macro, [`Request`], [`Response`], [`IntoResponse`] and
//! a small [`Router`].
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
//! The handler is `fn(&mut Request) -> R` or `async fn(&mut Request) -> R` for any `R:
//! IntoResponse` (`Response`, `&str`, `String`, `Vec<u8>`, `Json<T>`, `(StatusCode, body)`,
//! `Result<T, E>` where both sides are, …). A component has one handler; a [`Router`] inside
//! it dispatches on method and path.
//!
//! Paths are the path *within the app*: the node strips the route prefix it matched (an app
//! routed at `/todos` sees `GET /todos/3` as `GET /3`) and tells the component in the
//! `zero-path-info` and `zero-matched-route` headers, which it always sets itself (a client
//! cannot forge them).

mod body;
mod error;
mod request;
mod response;
mod router;
mod serve;
#[cfg(feature = "p3")]
mod serve_p3;
mod types;

pub use body::{Body, BodyReader, BodyWriter};
pub use error::Error;
pub use request::{MAX_BODY_IN_MEMORY, Request};
pub use response::{IntoResponse, Json, Response};
pub use router::Router;
pub use types::{Headers, Method, StatusCode};

/// Marks the app's HTTP handler: `#[zeroproxy::handler] fn handler(req: &mut Request) -> R`
/// (or `async fn`), where `R: IntoResponse`; a return type written `impl Response` means
/// [`Response`]. It exports `wasi:http/incoming-handler` calling the function, or, with the
/// crate's `p3` feature, `wasi:http/handler@0.3` (the `wasi:http/service` world of WASI 0.3).
pub use zerosdk_macros::http_handler as handler;

/// What `#[zeroproxy::handler]` expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use super::serve::{serve, serve_async};
    #[cfg(feature = "p3")]
    pub use super::serve_p3::serve_p3;
}
