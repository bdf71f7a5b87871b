//! `panic`: a test component that panics on every request (a Rust panic aborts, i.e. traps, in wasm),
//! so the host can check that the panic message reaches the logs and the client gets a 5xx.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        panic!("intentional panic from the panic test component")
    }
}
