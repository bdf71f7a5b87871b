//! `static-site`: a tiny static site host. A `wasi:http/incoming-handler` component that serves
//! `GET /<path>` (and `HEAD`) from the `/site` directory of its tenant's zerofs, which it sees
//! as a preopen when signed with a `/fs/read` grant on `/site`:
//! - a directory serves its `index.html`;
//! - `content-type` follows the file extension;
//! - a missing or unreadable file answers `404`, a method other than GET/HEAD `405`;
//! - the body streams in 64 KiB chunks, so the file is never held in memory whole.

use std::io::Read;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

struct Component;

wasi::http::proxy::export!(Component);

/// The directory served.
const ROOT: &str = "/site";
/// Bytes read from the file and written to the response per step.
const CHUNK: usize = 64 * 1024;

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

/// Maps the request path to a file under [`ROOT`], refusing `..` and empty tricks.
fn file_for(request_path: &str) -> Option<String> {
    let path = request_path.split(['?', '#']).next().unwrap_or("/");
    let mut out = String::from(ROOT);
    for seg in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
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

fn respond(out: ResponseOutparam, status: u16, ctype: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[ctype.as_bytes().to_vec()]);
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if !body.is_empty()
        && let Ok(stream) = outgoing.write()
    {
        let _ = write_all(&stream, body);
        let _ = flush(&stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Writes everything, waiting for the host to accept more when its buffer is full.
fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), ()> {
    while !data.is_empty() {
        let permitted = stream.check_write().map_err(|_| ())? as usize;
        if permitted == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = permitted.min(data.len());
        stream.write(&data[..n]).map_err(|_| ())?;
        data = &data[n..];
    }
    Ok(())
}

fn flush(stream: &OutputStream) -> Result<(), ()> {
    stream.flush().map_err(|_| ())?;
    loop {
        if stream.check_write().map_err(|_| ())? > 0 {
            return Ok(());
        }
        stream.subscribe().block();
    }
}

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let head = match request.method() {
            Method::Get => false,
            Method::Head => true,
            _ => {
                return respond(response_out, 405, "text/plain", b"method not allowed\n");
            }
        };
        // The path within the app: the node strips the route prefix it matched (an app mounted
        // at `/docs` serves `/docs/a.html` from `/site/a.html`) and passes the rest in
        // `zero-path-info`; without it (another host), the whole request path.
        let path_info = request
            .headers()
            .get("zero-path-info")
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok());
        let request_path = path_info
            .unwrap_or_else(|| request.path_with_query().unwrap_or_else(|| "/".to_string()));
        let Some(path) = file_for(&request_path) else {
            return respond(response_out, 404, "text/plain", b"not found\n");
        };
        let (mut file, len) = match std::fs::File::open(&path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        }) {
            Ok(x) => x,
            Err(_) => return respond(response_out, 404, "text/plain", b"not found\n"),
        };

        let headers = Fields::new();
        let _ = headers.set("content-type", &[content_type(&path).as_bytes().to_vec()]);
        let _ = headers.set("content-length", &[len.to_string().into_bytes()]);
        let response = OutgoingResponse::new(headers);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if !head && let Ok(stream) = outgoing.write() {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if write_all(&stream, &buf[..n]).is_err() {
                            return;
                        }
                    }
                    // The headers are out; a failed read can only cut the body short, which
                    // the client sees as a length mismatch.
                    Err(_) => return,
                }
            }
            let _ = flush(&stream);
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
