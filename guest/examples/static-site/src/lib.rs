//! `static-site`: a tiny static site host. It serves `GET /<path>` (and `HEAD`) from the `/site`
//! directory of its tenant's zerofs, which it sees as a preopen (plain `std::fs`) when signed
//! with a `/fs/read` grant on `/site`:
//! - the path is the path within the app (mounted at `/docs`, `GET /docs/a.html` serves
//!   `/site/a.html`);
//! - a directory serves its `index.html`;
//! - `content-type` follows the file extension;
//! - a missing or unreadable file answers `404`, a method other than GET/HEAD `405`;
//! - the body streams in 64 KiB chunks, so the file is never held in memory whole.

use zerosdk::zeroproxy::{self, Method, Request, Response, StatusCode};

/// The directory served.
const ROOT: &str = "/site";

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Maps the request path to a file under [`ROOT`], refusing `..` and escape tricks.
fn file_for(request_path: &str) -> Option<String> {
    let mut out = String::from(ROOT);
    for seg in request_path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
    {
        if seg == ".." || seg.contains('\\') || seg.contains('%') {
            return None;
        }
        out.push('/');
        out.push_str(seg);
    }
    match std::fs::metadata(&out) {
        Ok(m) if m.is_dir() => Some(format!("{out}/index.html")),
        _ => Some(out),
    }
}

fn not_found() -> Response {
    Response::text("not found\n").with_status(StatusCode::NOT_FOUND)
}

#[zeroproxy::handler]
fn handler(req: &mut Request) -> Response {
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            return Response::text("method not allowed\n")
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
                .with_header("allow", "GET, HEAD");
        }
    };
    let Some(path) = file_for(req.path()) else {
        return not_found();
    };
    let (file, len) = match std::fs::File::open(&path).and_then(|f| {
        let len = f.metadata()?.len();
        Ok((f, len))
    }) {
        Ok(x) => x,
        Err(_) => return not_found(),
    };
    let response = if head {
        Response::new(StatusCode::OK)
    } else {
        Response::from_reader(file)
    };
    response
        .with_header("content-type", content_type(&path))
        .with_header("content-length", len.to_string())
}
