//! `trap`: a test component that executes the wasm `unreachable` instruction on every request, so the
//! host can check that a trap ends the request with a 5xx and never harms the node.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        core::arch::wasm32::unreachable()
    }
}
