//! `logger`: a test component that writes one line to stdout and one to stderr, then answers 200
//! `logged`, so the host can check that guest output becomes tagged log lines.
//!
//! With `?flood=MIB` (and `&stream=stdout`, `stderr` or `both`, default `stdout`) it first
//! writes MIB MiB of 100-byte lines to that stream as fast as it can (64 KiB writes), so the
//! host can check that a flood of output is bounded by the per-request log budget.

use std::io::Write;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const MIB: usize = 1024 * 1024;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        };
        if let Some(mib) = param("flood").and_then(|v| v.parse::<usize>().ok()) {
            flood(mib, param("stream").unwrap_or("stdout"));
        }
        println!("stdout line from logger");
        eprintln!("stderr line from logger");

        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("outgoing stream");
            out.blocking_write_and_flush(b"logged").expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

/// Writes `mib` MiB of 100-byte lines to `stream` (`stdout`, `stderr` or `both`).
fn flood(mib: usize, stream: &str) {
    let line = [b"x".repeat(99), b"\n".to_vec()].concat();
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut left = mib.saturating_mul(MIB);
    while left > 0 {
        let n = left.min(chunk.len());
        if stream != "stderr" {
            let _ = out.write_all(&chunk[..n]);
        }
        if stream != "stdout" {
            let _ = err.write_all(&chunk[..n]);
        }
        left -= n;
    }
}
