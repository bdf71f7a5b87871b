//! `p3-unsupported`: a WASI 0.3 HTTP component that imports `wasi:filesystem/preopens@0.3`,
//! which the node does not link (files go through zerofs' 0.2 interfaces), so its deploy is
//! refused with that import named.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_future;

wasip3::http::service::export!(Unsupported);

struct Unsupported;

impl wasip3::exports::http::handler::Guest for Unsupported {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let dirs = wasip3::filesystem::preopens::get_directories();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        drop(trailers_tx);
        let (response, _sent) = Response::new(Fields::new(), None, trailers_rx);
        response
            .set_status_code(if dirs.is_empty() { 204 } else { 200 })
            .map_err(|()| ErrorCode::InternalError(None))?;
        Ok(response)
    }
}
