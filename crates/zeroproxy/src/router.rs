//! Routing by host and path prefix.
//!
//! A route names an optional host (exact, case-insensitive, port ignored) and a path prefix
//! matched on segment boundaries: `/api` matches `/api` and `/api/x` but not `/apix`. Routes with
//! a host win over host-less ones; among those, the longest prefix wins.

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

/// Two apps claim the same route.
#[derive(Debug, thiserror::Error)]
#[error(
    "route `{route}` is claimed by both `{first}` and `{second}`; give one of them another path or host"
)]
pub struct RouteConflict {
    /// The contested route.
    pub route: String,
    /// The app that had it first (as `tenant/app`).
    pub first: String,
    /// The app that also wants it.
    pub second: String,
}

/// The routing table.
#[derive(Default)]
pub struct Router {
    entries: Vec<(Route, Arc<HttpApp>)>,
}

impl Router {
    /// Builds a table, refusing duplicate routes.
    pub fn build(apps: Vec<Arc<HttpApp>>) -> Result<Router, RouteConflict> {
        let mut entries: Vec<(Route, Arc<HttpApp>)> = Vec::new();
        for app in apps {
            for route in &app.routes {
                if let Some((_, other)) = entries.iter().find(|(r, _)| r == route) {
                    return Err(RouteConflict {
                        route: route.to_string(),
                        first: format!("{}/{}", other.tenant, other.name),
                        second: format!("{}/{}", app.tenant, app.name),
                    });
                }
                entries.push((route.clone(), app.clone()));
            }
        }
        entries.sort_by(|(a, _), (b, _)| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        Ok(Router { entries })
    }

    /// Finds the app for a request.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Arc<HttpApp>> {
        self.route(host, path).map(|(app, _)| app)
    }

    /// The app serving `host` and `path`, with the length of the matched path prefix (0 for a
    /// route on `/`): what follows it is the path within the app.
    pub fn route(&self, host: &str, path: &str) -> Option<(Arc<HttpApp>, usize)> {
        self.entries
            .iter()
            .find(|(r, _)| r.matches(host, path))
            .map(|(r, app)| {
                let prefix = if r.path_prefix == "/" {
                    0
                } else {
                    r.path_prefix.len()
                };
                (app.clone(), prefix)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpApp;
    use zero_provider::AppSettings;

    fn app(tenant: &str, name: &str, routes: &[&str]) -> Arc<HttpApp> {
        Arc::new(HttpApp::new(
            tenant,
            name,
            routes.iter().map(|r| Route::parse(r).unwrap()).collect(),
            AppSettings::default(),
            Err("not loaded in this test".into()),
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
    }

    #[test]
    fn no_route_no_app() {
        let router = Router::build(vec![app("t", "api", &["/api"])]).unwrap();
        assert!(router.lookup("h", "/other").is_none());
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
