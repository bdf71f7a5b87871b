//! counter: each request counts itself in the tenant's cache (`counter:hits`) and answers the
//! count with the label read from the tenant's file `/config/label.txt` (seeded from
//! `config/label.txt` by `zero up`). Two capabilities: files under `/config` and cache keys
//! starting with `counter:`.

use zerosdk::cache;
use zerosdk::zeroproxy::{self, Error, Request};

#[zeroproxy::handler]
pub fn handler(_req: &mut Request) -> Result<String, Error> {
    let label = std::fs::read_to_string("/config/label.txt")
        .map_err(|e| Error::internal(format!("cannot read /config/label.txt: {e}")))?;
    let n = cache::increment("counter:hits", 1, None)?;
    Ok(shared::signed("counter", &format!("{n} {}", label.trim())))
}
