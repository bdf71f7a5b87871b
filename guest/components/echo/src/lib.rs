//! `echo`: a streaming echo test component. It sends the response head (200, the request's
//! `content-type` if any) BEFORE reading the request body, then copies the request body to the
//! response body in chunks of at most 64 KiB, so arbitrarily large bodies stream through without
//! being buffered.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

const CHUNK: u64 = 64 * 1024;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::new();
        for value in request.headers().get("content-type") {
            headers
                .append("content-type", &value)
                .expect("append content-type");
        }
        let response = OutgoingResponse::new(headers);
        let out_body = response.body().expect("outgoing body");
        // The response head goes out first: the client sees 200 before we read a single byte.
        ResponseOutparam::set(response_out, Ok(response));

        let in_body = request.consume().expect("incoming body");
        let ok = {
            let input = in_body.stream().expect("incoming stream");
            let output = out_body.write().expect("outgoing stream");
            let ok = copy(&input, &output);
            if ok {
                let _ = output.blocking_flush();
            }
            ok
            // `input` and `output` (child resources) are dropped here, before their bodies.
        };
        drop(IncomingBody::finish(in_body));
        if ok {
            OutgoingBody::finish(out_body, None).expect("finish body");
        }
        // On error the outgoing body is dropped unfinished, which tells the host the body is broken.
    }
}

/// Copies `input` to `output` chunk by chunk; false when either side failed.
fn copy(input: &wasi::io::streams::InputStream, output: &OutputStream) -> bool {
    loop {
        match input.blocking_read(CHUNK) {
            Ok(chunk) => {
                if write_all(output, &chunk).is_err() {
                    return false;
                }
            }
            Err(StreamError::Closed) => return true,
            Err(StreamError::LastOperationFailed(_)) => return false,
        }
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
