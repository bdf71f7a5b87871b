//! `stackoverflow`: a test component that recurses without bound on every request (non-tail
//! recursion), so the host can check that stack exhaustion traps cleanly.

use core::hint::black_box;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        black_box(recurse(black_box(0)));
    }
}

/// Non-tail recursion whose state lives only in wasm locals (no linear-memory shadow stack), so it
/// exhausts the engine's native wasm stack ("call stack exhausted") rather than running the
/// shadow stack pointer out of linear memory. The starting depth comes through `black_box`, so
/// the optimizer cannot evaluate the (never reached) end of the recursion at compile time, and the
/// work done after the call (not an accumulator pattern) keeps it from becoming a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 1;
    }
    let below = recurse(depth + 1);
    below.rotate_left((depth % 63) as u32) ^ depth.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
