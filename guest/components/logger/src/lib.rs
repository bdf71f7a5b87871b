//! `logger`: a test component that writes one line to stdout and one to stderr, then answers 200
//! `logged`, so the host can check that guest output becomes tagged log lines.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
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
