//! A reference router written from the routing rules (shared by the property test
//! `tests/routing.rs` and the fuzz target `fuzz/fuzz_targets/router.rs`): a route with a
//! matching host (case-insensitive) beats host-less ones, then the longest path prefix that
//! matches at a segment boundary wins (`/api` matches `/api` and `/api/x`, not `/apix`; `/`
//! matches every path).

use zeroproxy::Route;

/// Whether `route` matches a request for `host` and `path`.
pub fn matches(route: &Route, host: &str, path: &str) -> bool {
    if route
        .host
        .as_deref()
        .is_some_and(|h| !h.eq_ignore_ascii_case(host))
    {
        return false;
    }
    let p = route.path_prefix.as_str();
    p == "/"
        || path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The winning route among `routes` (each with its app's index) for `host` and `path`.
pub fn best<'a>(
    routes: &'a [(Route, usize)],
    host: &str,
    path: &str,
) -> Option<&'a (Route, usize)> {
    routes
        .iter()
        .filter(|(r, _)| matches(r, host, path))
        .max_by_key(|(r, _)| (r.host.is_some(), r.path_prefix.len()))
}

/// The length of the matched prefix the router reports: what follows it is the path within
/// the app (0 for a route on `/`).
pub fn prefix_len(route: &Route) -> usize {
    if route.path_prefix == "/" {
        0
    } else {
        route.path_prefix.len()
    }
}
