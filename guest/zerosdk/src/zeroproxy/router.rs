//! A small router: method and path pattern to a handler.

use super::error::Error;
use super::request::Request;
use super::response::{IntoResponse, Response};
use super::types::{Method, StatusCode};

type Handler = Box<dyn Fn(&mut Request) -> Response>;

/// The captures of a match (`[("id", "7")]`) and its rank (per segment: 2 literal, 1
/// parameter, 0 rest; higher is more specific).
struct Match {
    params: Vec<(String, String)>,
    rank: Vec<u8>,
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must be equal.
    Literal(String),
    /// `{name}`: any one segment, captured.
    Param(String),
    /// `{*name}`: the rest of the path (possibly empty), captured; last only.
    Rest(String),
}

struct Route {
    method: Method,
    pattern: String,
    segments: Vec<Segment>,
    handler: Handler,
}

/// Dispatches a request on its method and path (within the app) to one of its handlers.
///
/// ```text
/// let router = Router::new()
///     .get("/", list)
///     .post("/", create)
///     .get("/{id}", show)          // req.param("id"), req.param_as::<i64>("id")
///     .delete("/{id}", remove)
///     .get("/files/{*path}", file); // the rest of the path
/// router.handle(req)
/// ```
///
/// Patterns are matched segment by segment (empty segments and a trailing `/` are ignored);
/// literals win over `{param}`, which wins over `{*rest}`, whatever the order of declaration.
/// No pattern matching the path answers 404; a pattern matching with another method answers
/// 405 with an `allow` header. `HEAD` is served by the `GET` handler unless one is declared
/// for it. Both errors are JSON `{"error": "…"}` saying what exists.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    /// Malformed patterns, reported on every request.
    invalid: Vec<String>,
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds `handler` for `method` on `pattern` (`/todos/{id}`).
    ///
    /// A malformed pattern (a `{` without `}`, an empty `{}` name, `{*rest}` not last) makes
    /// every request answer 500 with the reason.
    pub fn route<R: IntoResponse>(
        mut self,
        method: Method,
        pattern: &str,
        handler: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        let segments = match parse_pattern(pattern) {
            Ok(s) => s,
            Err(e) => {
                self.invalid
                    .push(format!("invalid route pattern `{pattern}`: {e}"));
                return self;
            }
        };
        self.routes.push(Route {
            method,
            pattern: pattern.to_string(),
            segments,
            handler: Box::new(move |req| handler(req).into_response()),
        });
        self
    }

    /// Adds a `GET` route.
    pub fn get<R: IntoResponse>(
        self,
        pattern: &str,
        h: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        self.route(Method::Get, pattern, h)
    }

    /// Adds a `POST` route.
    pub fn post<R: IntoResponse>(
        self,
        pattern: &str,
        h: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        self.route(Method::Post, pattern, h)
    }

    /// Adds a `PUT` route.
    pub fn put<R: IntoResponse>(
        self,
        pattern: &str,
        h: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        self.route(Method::Put, pattern, h)
    }

    /// Adds a `PATCH` route.
    pub fn patch<R: IntoResponse>(
        self,
        pattern: &str,
        h: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        self.route(Method::Patch, pattern, h)
    }

    /// Adds a `DELETE` route.
    pub fn delete<R: IntoResponse>(
        self,
        pattern: &str,
        h: impl Fn(&mut Request) -> R + 'static,
    ) -> Router {
        self.route(Method::Delete, pattern, h)
    }

    /// Answers `req` with the handler of the best matching route (see [`Router`]).
    pub fn handle(&self, req: &mut Request) -> Response {
        if !self.invalid.is_empty() {
            return Error::internal(self.invalid.join("; ")).into_response();
        }
        let path_segments: Vec<&str> = req.path().split('/').filter(|s| !s.is_empty()).collect();
        // The best match of each route, by specificity; ties go to the route declared first.
        let mut matching: Vec<(&Route, Match)> = self
            .routes
            .iter()
            .filter_map(|r| match_segments(&r.segments, &path_segments).map(|m| (r, m)))
            .collect();
        if matching.is_empty() {
            let known: Vec<&str> = self.routes.iter().map(|r| r.pattern.as_str()).collect();
            return Error::not_found(format!(
                "not found: {} {} matches no route of this app (routes: {})",
                req.method(),
                req.path(),
                dedup(known).join(", ")
            ))
            .into_response();
        }
        matching.sort_by(|a, b| b.1.rank.cmp(&a.1.rank));
        let method = req.method().clone();
        let pick = matching
            .iter()
            .position(|(r, _)| r.method == method)
            .or_else(|| {
                (method == Method::Head)
                    .then(|| matching.iter().position(|(r, _)| r.method == Method::Get))
                    .flatten()
            });
        match pick {
            Some(i) => {
                let (route, m) = matching.swap_remove(i);
                req.set_params(m.params);
                (route.handler)(req)
            }
            None => {
                let mut allowed: Vec<&str> =
                    matching.iter().map(|(r, _)| r.method.as_str()).collect();
                if allowed.contains(&"GET") {
                    allowed.push("HEAD");
                }
                let allowed = dedup(allowed).join(", ");
                Error::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "method not allowed: {} {} accepts {allowed}",
                        req.method(),
                        req.path()
                    ),
                )
                .into_response()
                .with_header("allow", allowed)
            }
        }
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    let mut seen = Vec::new();
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
    v
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
    if !pattern.starts_with('/') {
        return Err("a pattern starts with `/`".into());
    }
    let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if let Some(inner) = part.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!("`{part}` opens `{{` without closing it"));
            };
            if let Some(rest) = name.strip_prefix('*') {
                if rest.is_empty() {
                    return Err("`{*}` needs a name, e.g. `{*path}`".into());
                }
                if i + 1 != parts.len() {
                    return Err(format!(
                        "`{{*{rest}}}` takes the rest of the path, so it comes last"
                    ));
                }
                out.push(Segment::Rest(rest.to_string()));
            } else if name.is_empty() {
                return Err("`{}` needs a name, e.g. `{id}`".into());
            } else {
                out.push(Segment::Param(name.to_string()));
            }
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "`{part}` mixes text and a parameter; a parameter is a whole segment"
            ));
        } else {
            out.push(Segment::Literal(part.to_string()));
        }
    }
    Ok(out)
}

/// How `segments` matches `path`, if it does.
fn match_segments(segments: &[Segment], path: &[&str]) -> Option<Match> {
    let mut params = Vec::new();
    let mut rank = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Rest(name) => {
                params.push((name.clone(), path.get(i..).unwrap_or(&[]).join("/")));
                rank.push(0);
                return Some(Match { params, rank });
            }
            Segment::Literal(l) => {
                if path.get(i) != Some(&l.as_str()) {
                    return None;
                }
                rank.push(2);
            }
            Segment::Param(name) => {
                let value = path.get(i)?;
                params.push((name.clone(), (*value).to_string()));
                rank.push(1);
            }
        }
    }
    (path.len() == segments.len()).then_some(Match { params, rank })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zeroproxy::{Body, Headers};

    fn req(method: Method, path: &str) -> Request {
        Request::new(method, path, Headers::new(), vec![])
    }

    fn text(r: &Response) -> String {
        match r.body() {
            Body::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    fn router() -> Router {
        Router::new()
            .get("/", |_: &mut Request| "list")
            .post("/", |_: &mut Request| (StatusCode::CREATED, "created"))
            .get("/{id}", |r: &mut Request| {
                format!("todo {}", r.param("id").unwrap_or("?"))
            })
            .delete("/{id}", |r: &mut Request| {
                r.param_as::<i64>("id").map(|id| format!("deleted {id}"))
            })
            .get("/new", |_: &mut Request| "the form")
            .get("/files/{*path}", |r: &mut Request| {
                format!("file {}", r.param("path").unwrap_or("?"))
            })
    }

    #[test]
    fn matches_literals_params_and_rest() {
        let r = router();
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/"))), "list");
        assert_eq!(text(&r.handle(&mut req(Method::Get, ""))), "list");
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/7"))), "todo 7");
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/7/"))), "todo 7");
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/7?x=1"))), "todo 7");
        // A literal wins over a parameter declared before it.
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/new"))), "the form");
        assert_eq!(
            text(&r.handle(&mut req(Method::Get, "/files/a/b.txt"))),
            "file a/b.txt"
        );
        assert_eq!(text(&r.handle(&mut req(Method::Get, "/files"))), "file ");
        let created = r.handle(&mut req(Method::Post, "/"));
        assert_eq!(created.status(), StatusCode::CREATED);
        // HEAD is served by GET.
        assert_eq!(
            r.handle(&mut req(Method::Head, "/7")).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405_with_allow() {
        let r = router();
        let nf = r.handle(&mut req(Method::Get, "/7/comments"));
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        assert!(
            text(&nf).contains("GET /7/comments matches no route"),
            "{}",
            text(&nf)
        );
        let na = r.handle(&mut req(Method::Put, "/7"));
        assert_eq!(na.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(na.headers().get("allow"), Some("GET, DELETE, HEAD"));
        assert!(
            text(&na).contains("PUT /7 accepts GET, DELETE, HEAD"),
            "{}",
            text(&na)
        );
        let bad = r.handle(&mut req(Method::Delete, "/x"));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(
            text(&bad).contains("`x` is not a valid id"),
            "{}",
            text(&bad)
        );
        assert_eq!(text(&r.handle(&mut req(Method::Delete, "/3"))), "deleted 3");
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        let r = Router::new().get("/{id", |_: &mut Request| "x");
        let resp = r.handle(&mut req(Method::Get, "/1"));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            text(&resp).contains("invalid route pattern `/{id`"),
            "{}",
            text(&resp)
        );
        assert!(
            parse_pattern("todos")
                .unwrap_err()
                .contains("starts with `/`")
        );
        assert!(
            parse_pattern("/{id")
                .unwrap_err()
                .contains("without closing")
        );
        assert!(parse_pattern("/{}").unwrap_err().contains("needs a name"));
        assert!(
            parse_pattern("/{*rest}/x")
                .unwrap_err()
                .contains("comes last")
        );
        assert!(
            parse_pattern("/a{id}")
                .unwrap_err()
                .contains("whole segment")
        );
        assert_eq!(
            parse_pattern("/todos/{id}/{*rest}").unwrap(),
            vec![
                Segment::Literal("todos".into()),
                Segment::Param("id".into()),
                Segment::Rest("rest".into())
            ]
        );
    }
}
