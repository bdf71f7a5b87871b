//! `firehose`: a test component that answers 200 and streams N MiB (`?mib=N`, default 64) of bytes as
//! the response body in 64 KiB chunks, so the host can check streaming and backpressure.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1024 * 1024;
const DEFAULT_MIB: u64 = 64;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let Some(mib) = mib_param(request.path_with_query().as_deref().unwrap_or("/")) else {
            let response = OutgoingResponse::new(Fields::new());
            response.set_status_code(400).expect("valid status");
            let body = response.body().expect("outgoing body");
            ResponseOutparam::set(response_out, Ok(response));
            {
                let out = body.write().expect("outgoing stream");
                let _ = out.blocking_write_and_flush(b"mib must be a non-negative integer\n");
            }
            OutgoingBody::finish(body, None).expect("finish body");
            return;
        };
        let total = mib.saturating_mul(MIB);

        let headers = Fields::from_list(&[
            (
                "content-type".to_string(),
                b"application/octet-stream".to_vec(),
            ),
            ("content-length".to_string(), total.to_string().into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));

        let chunk: Vec<u8> = (0..CHUNK).map(|i| b'a' + (i % 26) as u8).collect();
        let ok = {
            let out = body.write().expect("outgoing stream");
            let mut left = total;
            let mut ok = true;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                if write_all(&out, &chunk[..n]).is_err() {
                    ok = false;
                    break;
                }
                left -= n as u64;
            }
            ok && out.blocking_flush().is_ok()
        };
        if ok {
            OutgoingBody::finish(body, None).expect("finish body");
        }
        // On error (client gone) the body is dropped unfinished.
    }
}

/// `mib` from the query string; `None` when present but not a number.
fn mib_param(path_with_query: &str) -> Option<u64> {
    let query = path_with_query.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("mib=") {
            return value.parse().ok();
        }
    }
    Some(DEFAULT_MIB)
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
