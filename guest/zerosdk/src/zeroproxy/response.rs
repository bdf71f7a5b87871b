//! The answer: [`Response`] and what converts into one ([`IntoResponse`]).

use std::io;

use serde::Serialize;

use super::body::{Body, BodyWriter};
use super::error::Error;
use super::types::{Headers, StatusCode};

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const BYTES: &str = "application/octet-stream";

/// An HTTP response: status, headers and a body (in memory or streamed).
///
/// ```text
/// Response::text("hi");                                  // 200 text/plain
/// Response::json(&todo);                                 // 200 application/json
/// Response::new(StatusCode::CREATED).with_header("location", "/todos/3");
/// Response::from_reader(std::fs::File::open("/site/big.bin")?); // streamed
/// ```
pub struct Response {
    status: StatusCode,
    headers: Headers,
    body: Body,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish()
    }
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: Body::empty(),
        }
    }

    /// 200 with a `text/plain; charset=utf-8` body.
    pub fn text(text: impl Into<String>) -> Response {
        Response::new(StatusCode::OK)
            .with_header("content-type", TEXT)
            .with_body(text.into())
    }

    /// 200 with an `application/octet-stream` body.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Response {
        Response::new(StatusCode::OK)
            .with_header("content-type", BYTES)
            .with_body(bytes.into())
    }

    /// 200 with `value` as an `application/json` body (500 if it cannot be serialized, e.g. a
    /// map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(StatusCode::OK)
                .with_header("content-type", JSON)
                .with_body(body),
            Err(e) => Error::internal(format!("the response could not be serialized as JSON: {e}"))
                .into_response(),
        }
    }

    /// 200 streaming what `reader` yields (a file, …), read and sent 64 KiB at a time; set a
    /// `content-length` header if the length is known.
    pub fn from_reader(reader: impl io::Read + 'static) -> Response {
        Response::new(StatusCode::OK)
            .with_header("content-type", BYTES)
            .with_body(Body::from_reader(reader))
    }

    /// 200 whose body is written by `write` after the headers are sent, for bodies produced
    /// on the fly: `Response::stream(async |mut w| { w.write_all(b"...").await })`.
    pub fn stream<F>(write: F) -> Response
    where
        F: AsyncFnOnce(&mut BodyWriter) -> io::Result<()> + 'static,
    {
        Response::new(StatusCode::OK)
            .with_header("content-type", BYTES)
            .with_body(Body::from_writer(write))
    }

    /// A redirect (`302 Found`) to `location`.
    pub fn redirect(location: &str) -> Response {
        Response::new(StatusCode::FOUND).with_header("location", location)
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: StatusCode) -> Response {
        self.status = status;
        self
    }

    /// The same response with `name` set to `value` (replacing earlier values).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Response {
        self.headers.set(name, value);
        self
    }

    /// The same response with another body (the headers, `content-type` included, stay).
    pub fn with_body(mut self, body: impl Into<Body>) -> Response {
        self.body = body.into();
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    pub(crate) fn into_parts(self) -> (StatusCode, Headers, Body) {
        (self.status, self.headers, self.body)
    }
}

impl From<&str> for Response {
    fn from(s: &str) -> Response {
        Response::text(s)
    }
}

impl From<String> for Response {
    fn from(s: String) -> Response {
        Response::text(s)
    }
}

impl From<Vec<u8>> for Response {
    fn from(b: Vec<u8>) -> Response {
        Response::bytes(b)
    }
}

impl From<StatusCode> for Response {
    fn from(s: StatusCode) -> Response {
        Response::new(s)
    }
}

/// What a handler may return.
///
/// Implemented for [`Response`], `&str` and `String` (text), `Vec<u8>` and `&[u8]` (bytes),
/// [`Json<T>`], [`StatusCode`] (an empty body), `()` (204), `(StatusCode or u16, R)` (`R` with
/// another status), `(StatusCode or u16, Headers, R)`, `Option<R>` (`None`: 404) and
/// `Result<T, E>` where both sides are (e.g. `Result<Json<Todo>, Error>`).
pub trait IntoResponse {
    /// The response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::bytes(self)
    }
}

impl IntoResponse for &[u8] {
    fn into_response(self) -> Response {
        Response::bytes(self)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(StatusCode::NO_CONTENT)
    }
}

/// A status given as a number; outside 100 to 999 it is a programming error answered with a
/// 500 that says so.
fn status_from(code: u16) -> Result<StatusCode, Response> {
    StatusCode::new(code).ok_or_else(|| {
        Error::internal(format!(
            "the app answered with status {code}, which is not an HTTP status (100 to 999)"
        ))
        .into_response()
    })
}

impl<R: IntoResponse> IntoResponse for (StatusCode, R) {
    fn into_response(self) -> Response {
        self.1.into_response().with_status(self.0)
    }
}

impl<R: IntoResponse> IntoResponse for (u16, R) {
    fn into_response(self) -> Response {
        match status_from(self.0) {
            Ok(s) => (s, self.1).into_response(),
            Err(r) => r,
        }
    }
}

impl<R: IntoResponse> IntoResponse for (StatusCode, Headers, R) {
    fn into_response(self) -> Response {
        let mut r = self.2.into_response().with_status(self.0);
        for (name, value) in self.1.iter() {
            r.headers.set(name, value);
        }
        r
    }
}

impl<R: IntoResponse> IntoResponse for (u16, Headers, R) {
    fn into_response(self) -> Response {
        match status_from(self.0) {
            Ok(s) => (s, self.1, self.2).into_response(),
            Err(r) => r,
        }
    }
}

impl<R: IntoResponse> IntoResponse for Option<R> {
    fn into_response(self) -> Response {
        match self {
            Some(r) => r.into_response(),
            None => Error::not_found("not found").into_response(),
        }
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(t) => t.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// A JSON body: `Json(value)` answers 200 `application/json` (with `(StatusCode::CREATED,
/// Json(v))` another status).
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response) -> &[u8] {
        match r.body() {
            Body::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    #[test]
    fn text_bytes_and_json_set_their_content_type() {
        let r = "hi".into_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers().get("content-type"), Some(TEXT));
        assert_eq!(body(&r), b"hi");
        let r = vec![1u8, 2].into_response();
        assert_eq!(r.headers().get("content-type"), Some(BYTES));
        let r = Json(serde_json::json!({"a": 1})).into_response();
        assert_eq!(r.headers().get("content-type"), Some(JSON));
        assert_eq!(body(&r), br#"{"a":1}"#);
        let r: Response = "Hello".into();
        assert_eq!(body(&r), b"Hello");
    }

    #[test]
    fn tuples_options_and_results_map_to_their_status() {
        let r = (StatusCode::CREATED, Json(1)).into_response();
        assert_eq!((r.status().as_u16(), body(&r)), (201, b"1".as_slice()));
        let r = (418, "teapot").into_response();
        assert_eq!(r.status().as_u16(), 418);
        let r = (1000, "nope").into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8_lossy(body(&r)).contains("not an HTTP status"));
        let r = None::<String>.into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ().into_response();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r: Result<&str, Error> = Err(Error::bad_request("bad id"));
        let r = r.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(&r), br#"{"error":"bad id"}"#);
        assert_eq!(r.headers().get("content-type"), Some(JSON));
        let mut h = Headers::new();
        h.set("x-cache", "hit");
        let r = (StatusCode::OK, h, "x").into_response();
        assert_eq!(r.headers().get("x-cache"), Some("hit"));
        assert_eq!(r.headers().get("content-type"), Some(TEXT));
    }

    #[test]
    fn json_that_cannot_be_serialized_is_a_500_saying_why() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let r = Response::json(&m);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8_lossy(body(&r)).contains("could not be serialized"));
    }
}
