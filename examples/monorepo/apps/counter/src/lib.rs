//! counter: each request counts itself in the tenant's cache (`counter:hits`) and answers the
//! count.

use zerosdk::cache;
use zerosdk::zeroproxy::{self, Error, Request};

#[zeroproxy::handler]
pub fn handler(_req: &mut Request) -> Result<String, Error> {
    let n = cache::increment("counter:hits", 1, None)?;
    Ok(shared::signed("counter", &format!("{n} hits")))
}
