//! `outgoing`: a test component for `wasi:http/outgoing-handler`. It reads the request header
//! `x-target` (a full URL such as `http://127.0.0.1:1234/path`), makes an outgoing GET to it and
//! answers 200 with the upstream body, or 502 `outgoing request failed: {error-code:?}` when the
//! request fails (for instance `HttpRequestDenied` when the host refuses it). A missing or
//! malformed `x-target` answers 400.
//!
//! Optional headers: `x-repeat: N` makes the GET N times in a row (answering with the last body,
//! or with the first failure and its number), and `x-first-byte-timeout-ms: MS` and
//! `x-between-bytes-timeout-ms: MS` ask for those timeouts in the request options.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

const CHUNK: u64 = 64 * 1024;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request
            .headers()
            .get("x-target")
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok());
        let Some(target) = target else {
            return respond(response_out, 400, b"missing x-target header\n");
        };
        let Some((scheme, authority, path)) = parse_url(&target) else {
            return respond(response_out, 400, b"x-target is not an http(s) URL\n");
        };
        let number = |name: &str| {
            request
                .headers()
                .get(name)
                .into_iter()
                .next()
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let repeat = number("x-repeat").unwrap_or(1).max(1);
        let timeouts = (
            number("x-first-byte-timeout-ms"),
            number("x-between-bytes-timeout-ms"),
        );
        let mut last = Vec::new();
        for n in 1..=repeat {
            match fetch(scheme.clone(), authority, path, timeouts) {
                Ok(body) => last = body,
                Err(code) => {
                    return respond(
                        response_out,
                        502,
                        format!("outgoing request failed: {code:?} (request {n} of {repeat})")
                            .as_bytes(),
                    );
                }
            }
        }
        respond(response_out, 200, &last)
    }
}

/// Splits `http://host:port/path?query` into its scheme, authority and path-with-query.
fn parse_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return None;
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// Sends a GET and returns the whole upstream body. `timeouts` are the first-byte and
/// between-bytes timeouts to ask for, in milliseconds.
fn fetch(
    scheme: Scheme,
    authority: &str,
    path: &str,
    timeouts: (Option<u64>, Option<u64>),
) -> Result<Vec<u8>, ErrorCode> {
    let invalid = |what: &str| ErrorCode::InternalError(Some(format!("invalid {what}")));
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    req.set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;

    let options = match timeouts {
        (None, None) => None,
        (first, between) => {
            let o = RequestOptions::new();
            let ns = |ms: u64| ms.saturating_mul(1_000_000);
            if let Some(ms) = first {
                o.set_first_byte_timeout(Some(ns(ms)))
                    .map_err(|()| invalid("first-byte timeout"))?;
            }
            if let Some(ms) = between {
                o.set_between_bytes_timeout(Some(ns(ms)))
                    .map_err(|()| invalid("between-bytes timeout"))?;
            }
            Some(o)
        }
    };
    let future = outgoing_handler::handle(req, options)?;
    let response: IncomingResponse = loop {
        match future.get() {
            Some(Ok(result)) => break result?,
            Some(Err(())) => return Err(invalid("state: response already taken")),
            None => future.subscribe().block(),
        }
    };

    let body = response
        .consume()
        .map_err(|()| invalid("state: body already taken"))?;
    let mut data = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| invalid("state: stream already taken"))?;
        loop {
            match stream.blocking_read(CHUNK) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(ErrorCode::InternalError(Some(e.to_debug_string())));
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(data)
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("valid status");
    let out_body = response.body().expect("outgoing body");
    ResponseOutparam::set(response_out, Ok(response));
    let ok = {
        let out = out_body.write().expect("outgoing stream");
        write_all(&out, body).is_ok() && out.blocking_flush().is_ok()
    };
    if ok {
        OutgoingBody::finish(out_body, None).expect("finish body");
    }
}

/// Writes all of `buf`, waiting for write permits with `check-write` + `subscribe`.
fn write_all(output: &OutputStream, mut buf: &[u8]) -> Result<(), StreamError> {
    while !buf.is_empty() {
        let permit = output.check_write()?;
        if permit == 0 {
            output.subscribe().block();
            continue;
        }
        let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
        output.write(&buf[..n])?;
        buf = &buf[n..];
    }
    Ok(())
}
