//! greeter: `GET /greet?name=zero` answers `Hello, zero! (from greeter)`.

use zerosdk::zeroproxy::{self, Request};

#[zeroproxy::handler]
pub fn handler(req: &mut Request) -> String {
    let name = req.query_param("name").unwrap_or_default();
    shared::signed("greeter", &shared::greeting(&name))
}
