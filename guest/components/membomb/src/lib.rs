//! `membomb`: a test component that allocates 1 MiB buffers forever, touching every page and keeping
//! them all, so the host can check that the memory cap stops it. It never returns normally.

use core::hint::black_box;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const MIB: usize = 1024 * 1024;
const PAGE: usize = 4096;

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        let mut round: u8 = 0;
        loop {
            // Fresh wasm pages are already zero, so writing every page is what commits the memory.
            let mut block = vec![0u8; MIB];
            round = round.wrapping_add(1);
            for i in (0..MIB).step_by(PAGE) {
                block[i] = round;
            }
            kept.push(black_box(block));
            black_box(&kept);
        }
    }
}
