//! The incoming request.

use serde::de::DeserializeOwned;

use super::body::BodyReader;
use super::error::Error;
use super::types::{Headers, Method, StatusCode};

/// The node's header with the path within the app (set by the node, never by a client).
pub(crate) const PATH_INFO_HEADER: &str = "zero-path-info";
/// The node's header with the route prefix that matched (set by the node, never by a client).
pub(crate) const ROUTE_HEADER: &str = "zero-matched-route";

/// The largest body [`Request::body`], [`Request::text`] and [`Request::json`] read into
/// memory; larger bodies are read with [`Request::body_reader`].
pub const MAX_BODY_IN_MEMORY: usize = 16 * 1024 * 1024;

/// Where the request body is.
enum BodyState {
    /// Not read yet (`None`: the request has no body to read).
    Unread(Option<wasip2::http::types::IncomingBody>),
    /// Read whole.
    Read(Vec<u8>),
    /// Longer than [`MAX_BODY_IN_MEMORY`] (WASI 0.3, where the SDK reads the body before the
    /// handler runs).
    #[cfg(feature = "p3")]
    TooLarge,
    /// Handed out as a stream.
    Taken,
}

/// An HTTP request, as the app sees it.
///
/// `path()` is the path within the app (the node strips the route prefix); `route()` is the
/// prefix. The body is read on demand: whole with [`body`](Request::body),
/// [`text`](Request::text) or [`json`](Request::json), or as a stream with
/// [`body_reader`](Request::body_reader).
pub struct Request {
    // Field order matters: the body is a child of the request and is dropped first.
    body: BodyState,
    method: Method,
    path: String,
    query: Option<String>,
    route: String,
    headers: Headers,
    params: Vec<(String, String)>,
}

impl Request {
    /// A request from its parts (for tests and for calling a handler directly). The path is the
    /// path within the app and may carry a query (`/todos?done=1`).
    pub fn new(method: Method, path_and_query: &str, headers: Headers, body: Vec<u8>) -> Request {
        let (path, query) = split_query(path_and_query);
        Request {
            body: BodyState::Read(body),
            method,
            path,
            query,
            route: "/".to_string(),
            headers,
            params: Vec::new(),
        }
    }

    pub(crate) fn from_incoming(req: wasip2::http::types::IncomingRequest) -> Request {
        let method = match req.method() {
            wasip2::http::types::Method::Get => Method::Get,
            wasip2::http::types::Method::Head => Method::Head,
            wasip2::http::types::Method::Post => Method::Post,
            wasip2::http::types::Method::Put => Method::Put,
            wasip2::http::types::Method::Delete => Method::Delete,
            wasip2::http::types::Method::Connect => Method::Connect,
            wasip2::http::types::Method::Options => Method::Options,
            wasip2::http::types::Method::Trace => Method::Trace,
            wasip2::http::types::Method::Patch => Method::Patch,
            wasip2::http::types::Method::Other(m) => Method::Other(m),
        };
        let headers = Headers::from_list(req.headers().entries());
        let full = req.path_with_query().unwrap_or_else(|| "/".to_string());
        let (full_path, query) = split_query(&full);
        // The node passes the path within the app; another host may not, and then the app sees
        // the whole path.
        let path = headers
            .get(PATH_INFO_HEADER)
            .map(str::to_string)
            .unwrap_or(full_path);
        let route = headers.get(ROUTE_HEADER).unwrap_or("/").to_string();
        let body = req.consume().ok();
        // The request resource is no longer needed once its body is taken; the body outlives it.
        drop(req);
        Request {
            body: BodyState::Unread(body),
            method,
            path,
            query,
            route,
            headers,
            params: Vec::new(),
        }
    }

    /// A request of `wasi:http@0.3` (the `p3` feature): its body is read here, whole, up to
    /// [`MAX_BODY_IN_MEMORY`].
    #[cfg(feature = "p3")]
    pub(crate) async fn from_p3(req: wasip3::http::types::Request) -> Request {
        use wasip3::http::types::Method as M;
        let method = match req.get_method() {
            M::Get => Method::Get,
            M::Head => Method::Head,
            M::Post => Method::Post,
            M::Put => Method::Put,
            M::Delete => Method::Delete,
            M::Connect => Method::Connect,
            M::Options => Method::Options,
            M::Trace => Method::Trace,
            M::Patch => Method::Patch,
            M::Other(m) => Method::Other(m),
        };
        let headers = Headers::from_list(req.get_headers().copy_all());
        let full = req.get_path_with_query().unwrap_or_else(|| "/".to_string());
        let (full_path, query) = split_query(&full);
        let path = headers
            .get(PATH_INFO_HEADER)
            .map(str::to_string)
            .unwrap_or(full_path);
        let route = headers.get(ROUTE_HEADER).unwrap_or("/").to_string();
        let (consumed_tx, consumed_rx) = wasip3::wit_future::new(|| Ok(()));
        let (mut stream, _trailers) = wasip3::http::types::Request::consume_body(req, consumed_rx);
        let mut bytes = Vec::new();
        let mut too_large = false;
        loop {
            let (result, chunk) = stream.read(Vec::with_capacity(64 * 1024)).await;
            if bytes.len() + chunk.len() > MAX_BODY_IN_MEMORY {
                too_large = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
            if !matches!(result, wasip3::wit_bindgen::StreamResult::Complete(_)) {
                break;
            }
        }
        drop(consumed_tx);
        Request {
            body: if too_large {
                BodyState::TooLarge
            } else {
                BodyState::Read(bytes)
            },
            method,
            path,
            query,
            route,
            headers,
            params: Vec::new(),
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path within the app, starting with `/` (an app routed at `/todos` sees
    /// `/todos/3` as `/3`), without the query. It is as sent: percent escapes are not decoded.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The route prefix the node matched (`/todos`, or `/`).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The query string without `?`, if any (`done=1&q=milk`), as sent.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The query's `name=value` pairs, decoded (`+` is a space, `%XX` a byte).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query.as_deref().map(parse_form).unwrap_or_default()
    }

    /// The first value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (any case) as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The path parameter `name` captured by the [`Router`](super::Router) (`{id}` in
    /// `/todos/{id}`), as sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path parameter `name` parsed as `T` (a number, …); a missing or unparsable one is a
    /// 400 [`Error`] that names it.
    pub fn param_as<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error> {
        let raw = self.param(name).ok_or_else(|| {
            Error::internal(format!(
                "the route has no parameter `{name}`: name it in the pattern, e.g. `/{{{name}}}`"
            ))
        })?;
        raw.parse().map_err(|_| {
            Error::bad_request(format!(
                "`{raw}` is not a valid {name} (expected {})",
                std::any::type_name::<T>()
            ))
        })
    }

    pub(crate) fn set_params(&mut self, params: Vec<(String, String)>) {
        self.params = params;
    }

    /// The whole body (read on first use, at most [`MAX_BODY_IN_MEMORY`] bytes; a larger or
    /// broken body is a 413 or 400 [`Error`], one already taken with
    /// [`body_reader`](Request::body_reader) a 500).
    pub fn body(&mut self) -> Result<&[u8], Error> {
        if let BodyState::Unread(incoming) = &mut self.body {
            let bytes = match incoming.take() {
                Some(incoming) => {
                    let mut reader =
                        BodyReader::new(incoming).map_err(|e| Error::bad_request(e.to_string()))?;
                    reader
                        .read_to_end_limited(MAX_BODY_IN_MEMORY)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::InvalidData => {
                                Error::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                            }
                            _ => Error::bad_request(e.to_string()),
                        })?
                }
                None => Vec::new(),
            };
            self.body = BodyState::Read(bytes);
        }
        match &self.body {
            BodyState::Read(b) => Ok(b),
            #[cfg(feature = "p3")]
            BodyState::TooLarge => Err(Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_IN_MEMORY} bytes"),
            )),
            _ => Err(Error::internal(
                "the request body was already taken as a stream with body_reader(); read it one way only",
            )),
        }
    }

    /// The body as UTF-8 text; other bytes are a 400 [`Error`].
    pub fn text(&mut self) -> Result<&str, Error> {
        let body = self.body()?;
        std::str::from_utf8(body)
            .map_err(|e| Error::bad_request(format!("the request body is not UTF-8 text: {e}")))
    }

    /// The body parsed as JSON into `T`; a body that is not JSON or not a `T` is a 400
    /// [`Error`] saying where and why (`missing field `title` at line 1 column 12`).
    pub fn json<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let body = self.body()?;
        serde_json::from_slice(body).map_err(|e| {
            Error::bad_request(format!("the request body is not the JSON expected: {e}"))
        })
    }

    /// The body as a stream, read as it arrives ([`std::io::Read`], or
    /// [`BodyReader::chunk`] in async code). Taken once: `None` if the body was already read
    /// or taken, and always `None` with the `p3` feature (WASI 0.3), where the body is read
    /// whole before the handler runs.
    pub fn body_reader(&mut self) -> Option<BodyReader> {
        match std::mem::replace(&mut self.body, BodyState::Taken) {
            BodyState::Unread(Some(incoming)) => BodyReader::new(incoming).ok(),
            other => {
                self.body = other;
                None
            }
        }
    }
}

fn split_query(path_and_query: &str) -> (String, Option<String>) {
    let without_fragment = path_and_query.split('#').next().unwrap_or("");
    match without_fragment.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (without_fragment.to_string(), None),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs.
pub(crate) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as written, invalid UTF-8 becomes U+FFFD.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let c = *b?;
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_decoding() {
        let r = Request::new(
            Method::Get,
            "/a?x=1&q=milk+and%20eggs&x=2&flag",
            Headers::new(),
            vec![],
        );
        assert_eq!(r.path(), "/a");
        assert_eq!(r.query(), Some("x=1&q=milk+and%20eggs&x=2&flag"));
        assert_eq!(r.query_param("q").as_deref(), Some("milk and eggs"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn json_bodies_parse_or_answer_400_with_the_reason() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct New {
            title: String,
        }
        let mut r = Request::new(
            Method::Post,
            "/",
            Headers::new(),
            br#"{"title":"milk"}"#.to_vec(),
        );
        assert_eq!(
            r.json::<New>().unwrap(),
            New {
                title: "milk".into()
            }
        );
        let mut r = Request::new(Method::Post, "/", Headers::new(), br#"{"nope":1}"#.to_vec());
        let e = r.json::<New>().unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("missing field `title`"), "{e}");
        let mut r = Request::new(Method::Post, "/", Headers::new(), vec![0xff]);
        assert_eq!(r.text().unwrap_err().status(), StatusCode::BAD_REQUEST);
        // A body read whole cannot also be taken as a stream.
        assert!(r.body_reader().is_none());
        assert_eq!(r.body().unwrap(), &[0xff]);
    }
}
