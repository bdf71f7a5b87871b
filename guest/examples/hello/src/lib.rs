//! `hello`: the smallest useful zerocore app. It answers every request with `200`,
//! `content-type: text/plain; charset=utf-8` and the body `Hello, World!\n`.

use zerosdk::zeroproxy::{self, Request, Response};

#[zeroproxy::handler]
pub fn handler(_req: &mut Request) -> impl Response {
    "Hello, World!\n".into()
}
