//! Routing by host and path prefix, and who owns which routes.
//!
//! A route names an optional host (exact, case-insensitive, port ignored) and a path prefix
//! matched on segment boundaries: `/api` matches `/api` and `/api/x` but not `/apix`. Routes with
//! a host win over host-less ones; among those, the longest prefix wins.
//!
//! **Routes are owned by tenants.** Within one host scope (host-less, or one host), a tenant's
//! prefix owns everything under it: another tenant's route that is equal to it, above it or
//! below it at a segment boundary is a [`RouteConflict`], so a tenant can never receive a request
//! addressed to a path another tenant serves (a route on `/` owns every path of its scope).
//! One tenant may nest its own routes (`/` and `/api`), and the longest prefix wins among them.
//! Host routes are only shadowing host-less ones for requests naming that host; who may claim a
//! host is decided before a table is built (the Admin grants hosts to tenants).

use std::collections::HashMap;
use std::sync::Arc;

use crate::HttpApp;

/// Where an app is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host to match (lowercase, without port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
}

impl Route {
    /// Parses `PATH` or `HOST/PATH` (e.g. `/api` or `example.com/api`), with clear errors.
    pub fn parse(s: &str) -> Result<Route, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a route cannot be empty: use `/` to mount an app at the root".into());
        }
        let (host, path) = match s.find('/') {
            Some(0) => (None, s),
            Some(i) => (Some(&s[..i]), &s[i..]),
            None => {
                return Err(format!(
                    "route `{s}` has no path: write `/path` or `host/path` (e.g. `{s}/`)"
                ));
            }
        };
        if let Some(h) = host
            && (h.contains(':')
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(format!(
                "route `{s}`: `{h}` is not a host name (letters, digits, `-` and `.` only, no port)"
            ));
        }
        if path.contains("//") || path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!(
                "route `{s}`: the path must not contain empty, `.` or `..` segments"
            ));
        }
        // A request path never holds whitespace or control characters (HTTP sends them
        // percent-encoded), so a route holding one could never match; and since a route's
        // text is trimmed when parsed, one ending in whitespace would not read back the same.
        if let Some(c) = path.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "route `{s}`: the path contains {c:?}, which no request path holds; \
                 percent-encode it (e.g. `%20` for a space)"
            ));
        }
        if path.contains(['?', '#', '*']) {
            return Err(format!(
                "route `{s}`: a route is a plain path prefix; `?`, `#` and `*` are not allowed"
            ));
        }
        let mut prefix = path.to_string();
        if prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        Ok(Route {
            host: host.map(|h| h.to_ascii_lowercase()),
            path_prefix: prefix,
        })
    }

    /// Whether this route serves `host` and `path` (the rule [`Router::route`] implements with
    /// hash lookups; kept as the reference its tests compare against).
    #[cfg(test)]
    fn matches(&self, host: &str, path: &str) -> bool {
        if let Some(h) = &self.host
            && !h.eq_ignore_ascii_case(host)
        {
            return false;
        }
        let p = &self.path_prefix;
        p == "/" || path == p || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{h}{}", self.path_prefix),
            None => f.write_str(&self.path_prefix),
        }
    }
}

/// Two apps claim the same route, or overlapping routes of different tenants.
#[derive(Debug, thiserror::Error)]
#[error(
    "route `{route}` of `{second}` overlaps route `{existing}` of `{first}`; give one of them another path or host"
)]
pub struct RouteConflict {
    /// The route that was refused.
    pub route: String,
    /// The route it overlaps (equal to it, above or below it).
    pub existing: String,
    /// The app that had it first (as `tenant/app`).
    pub first: String,
    /// The app that also wants it.
    pub second: String,
}

impl Route {
    /// The prefixes of this route's path at segment boundaries, from `/` down to the path
    /// itself: `/a/b` gives `/`, `/a`, `/a/b`.
    fn ancestors(&self) -> impl Iterator<Item = &str> {
        let p = self.path_prefix.as_str();
        std::iter::once("/").chain(
            p.char_indices()
                .filter(|&(i, c)| c == '/' && i > 0)
                .map(move |(i, _)| &p[..i])
                .chain((p != "/").then_some(p)),
        )
    }
}

/// The routing table: the routes of each host scope by path prefix, so that a lookup costs a
/// few hash lookups (one per segment of the request path) however many apps are deployed.
#[derive(Default)]
pub struct Router {
    /// Routes naming a host, by host (lowercase) and prefix.
    hosts: HashMap<String, HashMap<String, Arc<HttpApp>>>,
    /// Host-less routes, by prefix.
    any_host: HashMap<String, Arc<HttpApp>>,
}

type Claims<'a> = std::collections::BTreeMap<(Option<&'a str>, &'a str), &'a Arc<HttpApp>>;

/// The first claim that `route` of `app` may not coexist with: the same route of another app,
/// or another tenant's route above or below it in the same host scope.
fn conflict<'a>(
    claims: &Claims<'a>,
    route: &'a Route,
    app: &Arc<HttpApp>,
) -> Option<(String, &'a Arc<HttpApp>)> {
    let host = route.host.as_deref();
    let other_tenant = |other: &Arc<HttpApp>| other.tenant != app.tenant;
    let path = route.path_prefix.as_str();
    if let Some(other) = claims.get(&(host, path)) {
        return Some((path.to_string(), other));
    }
    for above in route.ancestors() {
        if let Some(other) = claims.get(&(host, above)).filter(|o| other_tenant(o)) {
            return Some((above.to_string(), other));
        }
    }
    // Everything below `path` sorts between `path/` and `path0` (`0` follows `/` in ASCII); on
    // `/` that is every other path.
    let (low, high) = if path == "/" {
        ("/".to_string(), "0".to_string())
    } else {
        (format!("{path}/"), format!("{path}0"))
    };
    claims
        .range((host, low.as_str())..(host, high.as_str()))
        .find(|(_, o)| other_tenant(o))
        .map(|((_, p), o)| (p.to_string(), *o))
}

impl Router {
    /// Builds a table, refusing the same route twice and overlapping routes of different
    /// tenants in one host scope (see the module documentation).
    pub fn build(apps: Vec<Arc<HttpApp>>) -> Result<Router, RouteConflict> {
        let mut claims: Claims = Claims::new();
        for app in &apps {
            for route in &app.routes {
                if let Some((existing, other)) = conflict(&claims, route, app) {
                    return Err(RouteConflict {
                        route: route.to_string(),
                        existing: match &route.host {
                            Some(h) => format!("{h}{existing}"),
                            None => existing,
                        },
                        first: format!("{}/{}", other.tenant, other.name),
                        second: format!("{}/{}", app.tenant, app.name),
                    });
                }
                claims.insert((route.host.as_deref(), route.path_prefix.as_str()), app);
            }
        }
        let mut router = Router::default();
        for app in &apps {
            for route in &app.routes {
                let scope = match &route.host {
                    Some(h) => router.hosts.entry(h.clone()).or_default(),
                    None => &mut router.any_host,
                };
                scope.insert(route.path_prefix.clone(), app.clone());
            }
        }
        Ok(router)
    }

    /// Finds the app for a request.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Arc<HttpApp>> {
        self.route(host, path).map(|(app, _)| app)
    }

    /// The app serving `host` and `path`, with the length of the matched path prefix (0 for a
    /// route on `/`): what follows it is the path within the app.
    ///
    /// A route naming the host wins over a host-less one; within a scope the longest prefix at
    /// a segment boundary wins (`/api` serves `/api` and `/api/x`, not `/apix`).
    pub fn route(&self, host: &str, path: &str) -> Option<(Arc<HttpApp>, usize)> {
        if !self.hosts.is_empty() {
            let scope = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.hosts.get(&host.to_ascii_lowercase())
            } else {
                self.hosts.get(host)
            };
            if let Some(found) = scope.and_then(|routes| longest_prefix(routes, path)) {
                return Some(found);
            }
        }
        longest_prefix(&self.any_host, path)
    }
}

/// The route of `routes` with the longest prefix of `path` at a segment boundary: `path`
/// itself, then `path` cut before each `/` from the right, then `/`.
fn longest_prefix(
    routes: &HashMap<String, Arc<HttpApp>>,
    path: &str,
) -> Option<(Arc<HttpApp>, usize)> {
    if routes.is_empty() {
        return None;
    }
    if path != "/"
        && let Some(app) = routes.get(path)
    {
        return Some((app.clone(), path.len()));
    }
    let mut rest = path;
    while let Some(i) = rest.rfind('/') {
        rest = &rest[..i];
        if rest.len() <= 1 {
            // `/` (or nothing): the root route, matched below with nothing stripped.
            break;
        }
        if let Some(app) = routes.get(rest) {
            return Some((app.clone(), i));
        }
    }
    routes.get("/").map(|app| (app.clone(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpApp;
    use zerocore::App;

    fn app(tenant: &str, name: &str, routes: &[&str]) -> Arc<HttpApp> {
        Arc::new(HttpApp::new(
            Arc::new(App::failed(tenant, name, "not loaded in this test")),
            routes.iter().map(|r| Route::parse(r).unwrap()).collect(),
            1,
        ))
    }

    #[test]
    fn parses_routes_with_clear_errors() {
        assert_eq!(Route::parse("/").unwrap().path_prefix, "/");
        assert_eq!(Route::parse("/api/").unwrap().path_prefix, "/api");
        let r = Route::parse("Example.com/x").unwrap();
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert!(Route::parse("").unwrap_err().contains("empty"));
        assert!(Route::parse("api").unwrap_err().contains("no path"));
        assert!(Route::parse("/a/../b").unwrap_err().contains(".."));
        assert!(Route::parse("h:80/x").unwrap_err().contains("host"));
        assert!(Route::parse("/x*").unwrap_err().contains("plain path"));
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let router = Router::build(vec![
            app("t", "root", &["/"]),
            app("t", "api", &["/api"]),
            app("t", "hosted", &["example.com/"]),
        ])
        .unwrap();
        let name = |h: &str, p: &str| router.lookup(h, p).map(|a| a.name.to_string());
        assert_eq!(name("localhost", "/api/users").as_deref(), Some("api"));
        assert_eq!(name("localhost", "/api").as_deref(), Some("api"));
        assert_eq!(name("localhost", "/apix").as_deref(), Some("root"));
        assert_eq!(name("EXAMPLE.com", "/api").as_deref(), Some("hosted"));
    }

    #[test]
    fn conflicts_are_refused() {
        let err = Router::build(vec![app("a", "one", &["/x"]), app("b", "two", &["/x/"])])
            .err()
            .unwrap();
        assert!(err.to_string().contains("a/one") && err.to_string().contains("b/two"));
        let err = Router::build(vec![app("t", "one", &["/x"]), app("t", "two", &["/x"])])
            .err()
            .unwrap();
        assert!(err.to_string().contains("t/two"), "{err}");
    }

    #[test]
    fn ancestors_stop_at_segment_boundaries() {
        let r = Route::parse("/a/bc/d").unwrap();
        assert_eq!(
            r.ancestors().collect::<Vec<_>>(),
            ["/", "/a", "/a/bc", "/a/bc/d"]
        );
        let root = Route::parse("/").unwrap();
        assert_eq!(root.ancestors().collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn another_tenants_route_above_below_or_equal_is_a_conflict() {
        let overlaps = |first: &str, second: &str| {
            let a = app("a", "one", &[first]);
            let b = app("b", "two", &[second]);
            let ab = Router::build(vec![a.clone(), b.clone()]).is_err();
            let ba = Router::build(vec![b, a]).is_err();
            assert_eq!(ab, ba, "{first} vs {second}: order must not matter");
            ab
        };
        assert!(overlaps("/hello", "/hello/login"), "below");
        assert!(overlaps("/hello/login", "/hello"), "above");
        assert!(overlaps("/hello", "/hello"), "equal");
        assert!(overlaps("/", "/anything/at/all"), "a root owns its scope");
        assert!(overlaps("/a/b/c", "/"), "a root over another's route");
        assert!(!overlaps("/hello", "/hellothere"), "not a segment boundary");
        assert!(!overlaps("/hello", "/hello-world"), "`-` sorts before `/`");
        assert!(!overlaps("/a/b", "/a/c"), "siblings");
        assert!(!overlaps("x.example/", "/"), "different host scopes");
        assert!(overlaps("x.example/", "x.example/api"), "same host");
        assert!(!overlaps("x.example/", "y.example/"), "different hosts");
    }

    #[test]
    fn one_tenant_nests_its_own_routes() {
        let router = Router::build(vec![
            app("t", "root", &["/"]),
            app("t", "api", &["/api"]),
            app("t", "deep", &["/api/v2"]),
        ])
        .unwrap();
        let name = |p: &str| router.lookup("h", p).map(|a| a.name.to_string());
        assert_eq!(name("/api/v2/x").as_deref(), Some("deep"));
        assert_eq!(name("/api/v1").as_deref(), Some("api"));
        assert_eq!(name("/x").as_deref(), Some("root"));
        // A second tenant under any of them is refused.
        let mut apps = vec![
            app("t", "root", &["/"]),
            app("t", "api", &["/api"]),
            app("u", "intruder", &["/api/v2/login"]),
        ];
        assert!(Router::build(apps.clone()).is_err());
        apps.pop();
        apps.push(app("u", "intruder", &["/elsewhere"]));
        assert!(Router::build(apps).is_err(), "t's `/` owns every path");
    }

    #[test]
    fn no_route_no_app() {
        let router = Router::build(vec![app("t", "api", &["/api"])]).unwrap();
        assert!(router.lookup("h", "/other").is_none());
    }

    #[test]
    fn lookup_agrees_with_the_linear_rule() {
        // The table the old linear scan used: host routes first, then longer prefixes first.
        let apps = vec![
            app("t", "root", &["/"]),
            app("t", "api", &["/api"]),
            app("t", "deep", &["/api/v2/x"]),
            app("t", "hosted", &["example.com/", "example.com/api/v2"]),
            app("u", "other", &["other.example/a"]),
        ];
        let router = Router::build(apps.clone()).unwrap();
        let mut linear: Vec<(Route, Arc<HttpApp>)> = apps
            .iter()
            .flat_map(|a| a.routes.iter().map(|r| (r.clone(), a.clone())))
            .collect();
        linear.sort_by(|(a, _), (b, _)| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        let hosts = [
            "h",
            "example.com",
            "EXAMPLE.COM",
            "other.example",
            "Other.Example",
        ];
        let paths = [
            "/",
            "/api",
            "/api/",
            "/apix",
            "/api/v2",
            "/api/v2/",
            "/api/v2/x",
            "/api/v2/xy",
            "/api/v2/x/y",
            "/a",
            "/a/b",
            "/ab",
            "*",
            "",
            "//",
            "/api//v2",
        ];
        for host in hosts {
            for path in paths {
                let want = linear
                    .iter()
                    .find(|(r, _)| r.matches(host, path))
                    .map(|(r, a)| {
                        let n = if r.path_prefix == "/" {
                            0
                        } else {
                            r.path_prefix.len()
                        };
                        (a.name.to_string(), n)
                    });
                let got = router
                    .route(host, path)
                    .map(|(a, n)| (a.name.to_string(), n));
                assert_eq!(got, want, "{host} {path}");
            }
        }
    }

    #[test]
    fn route_gives_the_matched_prefix_length() {
        let router =
            Router::build(vec![app("t", "root", &["/"]), app("t", "api", &["/api"])]).unwrap();
        let prefix = |p: &str| router.route("any", p).map(|(_, n)| n);
        assert_eq!(prefix("/api/x"), Some(4));
        assert_eq!(prefix("/api"), Some(4));
        assert_eq!(prefix("/other"), Some(0), "a route on / strips nothing");
    }
}
