//! {{name}}: a zerocore app. `zero up` serves it on http://127.0.0.1:3000/ and rebuilds it when
//! this file changes.

use zerosdk::zeroproxy::{self, Request, Response};

#[zeroproxy::handler]
pub fn handler(_req: &mut Request) -> impl Response {
    "Hello, World!".into()
}
