//! `hello-p3`: the minimal zerocore app built for WASI 0.3 (the `wasi:http/service` world, with the
//! `wasip3` crate). Its async `handle` answers every request with `Hello, World!` and a
//! `content-type` header; the body is written by a task the guest spawns after it returned the
//! response, so it streams.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
        let (mut body_tx, body_rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        drop(trailers_tx);
        wit_bindgen::spawn_local(async move {
            body_tx.write_all(b"Hello, World!\n".to_vec()).await;
        });
        Ok(response)
    }
}
