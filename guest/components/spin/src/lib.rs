//! `spin`: a test component that burns CPU forever on every request, so the host can check that the
//! CPU deadline (epoch interruption) stops it.

use core::hint::black_box;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut counter: u64 = 0;
        loop {
            // `black_box` keeps the optimizer from proving the loop side-effect free.
            counter = black_box(counter.wrapping_add(1));
        }
    }
}
