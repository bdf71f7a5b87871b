//! `sleepy`: a test component that blocks for 60 s on a monotonic-clock pollable (no CPU used) and
//! then answers 200, so the host can check the wall-clock timeout.

use wasi::clocks::monotonic_clock;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const SLEEP_NS: u64 = 60 * 1_000_000_000;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        monotonic_clock::subscribe_duration(SLEEP_NS).block();

        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("outgoing stream");
            out.blocking_write_and_flush(b"slept 60 s\n")
                .expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
