//! The web console: a single-page application served at `/console/` on the management
//! listener, from files embedded in the binary at build time (`console/dist`, built from
//! `console/` with vite; see `build.rs`).
//!
//! The console holds no authority of its own: the page signs a UCAN invocation for every call
//! it makes to the management API, with a key that stays in the browser, exactly as the `zero`
//! CLI does. These routes serve static files only and need no invocation.
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts, styles and connections
//! from this origin only, no inline script, no framing), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`; no cookie is ever set.
//! `index.html` is `Cache-Control: no-cache`; the content-hashed files under `assets/` are
//! cached for a year (`immutable`). A path that is not one of the embedded files, spelled
//! exactly, is `404` (so no `..`, no percent-encoded trick reaches anything else).

use axum::response::IntoResponse;
use http::{HeaderValue, StatusCode, Uri, header};

use crate::api::{Resp, full_body};

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// The Content-Security-Policy of every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The embedded file at `path` (relative to `/console/`), if there is one.
fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

/// The content type of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn secure(resp: &mut Resp) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn serve(path: &str) -> Resp {
    let Some(bytes) = file(path) else {
        let mut r = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the console; open /console/\n",
        )
            .into_response();
        secure(&mut r);
        return r;
    };
    let mut r = Resp::new(full_body(bytes));
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(&mut r);
    r
}

/// `GET /console` and `/console/` (the API reads both as `/console`): the page.
pub(crate) async fn index() -> Resp {
    serve("index.html")
}

/// `GET /console/{path}`: one embedded file, by its exact path as requested (not decoded).
pub(crate) async fn asset(uri: Uri) -> Resp {
    let path = uri.path().strip_prefix("/console/").unwrap_or_default();
    serve(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded_with_their_types() {
        assert!(file("index.html").is_some());
        let assets: Vec<&str> = FILES
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| p.starts_with("assets/"))
            .collect();
        assert!(assets.iter().any(|p| p.ends_with(".js")), "{assets:?}");
        assert!(assets.iter().any(|p| p.ends_with(".css")), "{assets:?}");
        for p in assets {
            assert_ne!(content_type(p), "application/octet-stream", "{p}");
        }
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert!(file("../index.html").is_none());
        assert!(file("assets/../index.html").is_none());
        assert!(file("").is_none());
    }
}
