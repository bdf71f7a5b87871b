//! Running a handler under WASI 0.3 (the `p3` feature): the `wasi:http/handler@0.3` request in,
//! the response out, on the component model's async runtime (wit-bindgen's, through `wasip3`).

use std::io::{self, Read};

use wasip3::http::types::{ErrorCode, Fields, HeaderError, Response as P3Response};
use wasip3::{wit_future, wit_stream};

use super::body::Body;
use super::request::Request;
use super::response::Response;

/// The most read from a [`Body::Reader`] at once.
const CHUNK: usize = 64 * 1024;

/// Runs a handler (a sync one is called inside the async closure the macro writes): the request
/// is read whole first, the response's body is written by a task spawned once the response is
/// returned, so it streams.
pub async fn serve_p3<F>(
    request: wasip3::http::types::Request,
    handler: F,
) -> Result<P3Response, ErrorCode>
where
    F: AsyncFnOnce(&mut Request) -> Response,
{
    let mut req = Request::from_p3(request).await;
    let response = handler(&mut req).await;
    drop(req);
    Ok(send(response))
}

/// Prints on stderr, which the node logs tagged with the request.
fn log(message: &str) {
    eprintln!("zerosdk: {message}");
}

/// A response with `status`, `fields` and a body written by a spawned task. A body that
/// breaks off (a failing reader) ends with an error in place of its trailers, so that the
/// client sees a broken response rather than a short one that looks complete.
fn respond(status: u16, fields: Fields, body: Option<Body>) -> P3Response {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let Some(body) = body else {
        drop(trailers_tx);
        let (response, _sent) = P3Response::new(fields, None, trailers_rx);
        // The status was checked by `send` (100..=999 is always accepted).
        let _ = response.set_status_code(status);
        return response;
    };
    let (mut tx, rx) = wit_stream::new();
    let (response, _sent) = P3Response::new(fields, Some(rx), trailers_rx);
    let _ = response.set_status_code(status);
    wasip3::spawn_local(async move {
        let written = match body {
            Body::Bytes(bytes) => {
                if tx.write_all(bytes).await.is_empty() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the client closed the connection",
                    ))
                }
            }
            Body::Reader(mut reader) => copy(&mut *reader, &mut tx).await,
            Body::Empty | Body::Writer(_) => Ok(()),
        };
        drop(tx);
        match written {
            Ok(()) => drop(trailers_tx),
            Err(e) => {
                log(&format!("the response body was cut short: {e}"));
                let _ = trailers_tx
                    .write(Err(ErrorCode::InternalError(Some(e.to_string()))))
                    .await;
            }
        }
    });
    response
}

/// A plain 500 when the app's own response cannot be sent; the reason goes to the node's log.
fn internal_error(message: &str) -> P3Response {
    log(message);
    respond(
        500,
        Fields::new(),
        Some(Body::Bytes(
            b"the app built a response that cannot be sent; the node's log says why\n".to_vec(),
        )),
    )
}

fn send(response: Response) -> P3Response {
    let (status, mut headers, body) = response.into_parts();
    if let Body::Writer(_) = body {
        return internal_error(
            "Body::from_writer and Response::stream need WASI 0.2 in this SDK: build without the `p3` feature, or answer with Body::from_reader or bytes",
        );
    }
    if let Body::Bytes(b) = &body
        && !headers.contains("content-length")
    {
        headers.set("content-length", b.len().to_string());
    }
    let fields = match Fields::from_list(&headers.into_list()) {
        Ok(f) => f,
        Err(HeaderError::Forbidden) => {
            return internal_error(
                "the response sets a header the host manages itself (connection, keep-alive, transfer-encoding, …); leave it out",
            );
        }
        Err(_) => {
            return internal_error(
                "the response has an invalid header: names are tokens (a-z, 0-9, -, no spaces), values printable text",
            );
        }
    };
    if !(100..=999).contains(&status.as_u16()) {
        return internal_error(&format!("the status {status} was refused"));
    }
    let body = match body {
        Body::Empty => None,
        other => Some(other),
    };
    respond(status.as_u16(), fields, body)
}

async fn copy(
    reader: &mut dyn Read,
    tx: &mut wasip3::wit_bindgen::StreamWriter<u8>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading the response body failed: {e}"),
                ));
            }
        };
        if !tx.write_all(buf[..n].to_vec()).await.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the client closed the connection",
            ));
        }
    }
}
