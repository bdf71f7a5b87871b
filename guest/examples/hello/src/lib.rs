//! `hello`: the smallest useful zerocore app. A `wasi:http/incoming-handler` component that answers
//! every request with `200`, `content-type: text/plain` and the body `Hello, World!\n`.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("outgoing stream");
            out.blocking_write_and_flush(b"Hello, World!\n")
                .expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
