//! `newer-wasi`: a wasi:http test component built with wit-bindgen (not the `wasi` crate) against WIT
//! whose WASI version (0.2.13) is newer than the host's (0.2.12). It answers 200
//! `hello from wasi 0.2.13\n`, so the host can check how it treats semver-compatible newer imports.

wit_bindgen::generate!({
    path: "wit",
    world: "zero:newer-wasi/newer",
    // Also generate the interfaces `wasi:http/types` pulls in (wasi:io, wasi:clocks).
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("outgoing stream");
            out.blocking_write_and_flush(b"hello from wasi 0.2.13\n")
                .expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
