//! Running a handler: the request in, the response out.

use std::io::{self, Read};

use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingRequest, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use wasip2::io::streams::{OutputStream, StreamError};

use super::body::Body;
use super::request::Request;
use super::response::Response;

/// Runs a sync handler: it runs outside the async reactor (so it may start its own), and only a
/// body written by [`Body::from_writer`] is driven by the reactor.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(&mut Request) -> Response,
) {
    let mut req = Request::from_incoming(request);
    let response = handler(&mut req);
    send(out, response);
    drop(req);
}

/// Runs an async handler on the reactor (wstd's, over `wasi:io` pollables).
pub fn serve_async<F>(request: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: AsyncFnOnce(&mut Request) -> Response,
{
    let mut req = Request::from_incoming(request);
    let response = wstd::runtime::block_on(handler(&mut req));
    send(out, response);
    drop(req);
}

/// Prints on stderr, which the node logs tagged with the request.
fn log(message: &str) {
    eprintln!("zerosdk: {message}");
}

/// Answers a plain 500 when the app's own response cannot be sent; the reason goes to the
/// node's log (stderr), not to the client.
fn internal_error(out: ResponseOutparam, message: &str) {
    log(message);
    let response = OutgoingResponse::new(Fields::new());
    // 500 is always a valid status.
    let _ = response.set_status_code(500);
    let Ok(body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        let _ = write_all(
            &stream,
            b"the app built a response that cannot be sent; the node's log says why\n",
        );
        let _ = flush(&stream);
    }
    finish(body, Ok(()));
}

fn send(out: ResponseOutparam, response: Response) {
    let (status, mut headers, body) = response.into_parts();
    if let Body::Bytes(b) = &body
        && !headers.contains("content-length")
    {
        headers.set("content-length", b.len().to_string());
    }
    let fields = match Fields::from_list(&headers.into_list()) {
        Ok(f) => f,
        Err(HeaderError::Forbidden) => {
            return internal_error(
                out,
                "the response sets a header the host manages itself (connection, keep-alive, transfer-encoding, …); leave it out",
            );
        }
        Err(_) => {
            return internal_error(
                out,
                "the response has an invalid header: names are tokens (a-z, 0-9, -, no spaces), values printable text",
            );
        }
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status.as_u16()).is_err() {
        return internal_error(out, &format!("the status {status} was refused"));
    }
    let Ok(outgoing) = response.body() else {
        return internal_error(out, "the response body was already taken");
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else {
        return log("the response body stream was already taken");
    };
    let written = match body {
        Body::Writer(write) => (write.0)(stream),
        other => {
            let written = match other {
                Body::Bytes(bytes) => write_all(&stream, &bytes).and_then(|()| flush(&stream)),
                Body::Reader(mut reader) => copy(&mut *reader, &stream),
                Body::Empty | Body::Writer(_) => Ok(()),
            };
            // The stream is a child of the body: it goes first.
            drop(stream);
            written
        }
    };
    finish(outgoing, written);
}

/// Finishes the body when it was written whole; otherwise drops it unfinished so that the
/// client sees a broken response rather than a short one that looks complete.
fn finish(outgoing: OutgoingBody, written: io::Result<()>) {
    match written {
        Ok(()) => {
            // (ErrorCode's Debug is large; name the likely cause instead.)
            match OutgoingBody::finish(outgoing, None) {
                Ok(()) => {}
                Err(ErrorCode::HttpResponseBodySize(_)) => log(
                    "the response body's length differs from its content-length header; set the header to the bytes sent, or leave it out",
                ),
                Err(_) => log("the host refused to finish the response body"),
            }
        }
        // A client that went away is not the app's fault; say it once, plainly.
        Err(e) => {
            log(&format!("the response body was cut short: {e}"));
            drop(outgoing);
        }
    }
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the client closed the connection",
        ),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}

/// Writes everything, waiting for the host to accept more when its buffer is full.
fn write_all(stream: &OutputStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let permitted = stream.check_write().map_err(stream_error)?;
        if permitted == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permitted)
            .unwrap_or(usize::MAX)
            .min(data.len());
        stream.write(&data[..n]).map_err(stream_error)?;
        data = &data[n..];
    }
    Ok(())
}

fn flush(stream: &OutputStream) -> io::Result<()> {
    stream.blocking_flush().map_err(stream_error)
}

fn copy(reader: &mut dyn Read, stream: &OutputStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading the response body failed: {e}"),
                ));
            }
        };
        write_all(stream, &buf[..n])?;
    }
    flush(stream)
}
