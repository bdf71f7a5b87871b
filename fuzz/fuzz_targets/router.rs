//! Route patterns and the routing table. Parsing arbitrary route text never panics; a table
//! built from arbitrary apps of three tenants either refuses with a conflict or routes every
//! request exactly as a reference written from the rules does (a route with a matching host
//! beats host-less ones, then the longest prefix at a segment boundary wins; the reference is
//! `crates/zeroproxy/tests/reference/mod.rs`, shared with the property test there), and never
//! routes a request to a tenant while another tenant's route in the same host scope also
//! matches it (routes are owned). Whether a table builds does not depend on the order apps are given in.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zerocore::App;
use zeroproxy::HttpApp;
use zeroproxy::{Route, Router};

#[path = "../../crates/zeroproxy/tests/reference/mod.rs"]
mod reference;

use reference::{matches, prefix_len};

const HOSTS: &[Option<&str>] = &[
    None,
    None,
    Some("example.com"),
    Some("Example.COM"),
    Some("x.org"),
];
const SEGMENTS: &[&str] = &["a", "b", "ab", "a.b", "A", "-", "_", "%2F", "ä"];
const TENANTS: &[&str] = &["acme", "beta", "gamma"];

fn path(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return String::arbitrary(u);
    }
    let n = u.int_in_range(0..=3)?;
    let mut p = String::new();
    for _ in 0..n {
        p.push('/');
        p.push_str(u.choose(SEGMENTS)?);
    }
    if p.is_empty() || u.ratio(1, 6)? {
        p.push('/');
    }
    Ok(p)
}

fn route_text(u: &mut Unstructured<'_>) -> Result<String> {
    let host = *u.choose(HOSTS)?;
    Ok(format!("{}{}", host.unwrap_or(""), path(u)?))
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let _ = Route::parse(&String::arbitrary(u)?);
    let count = u.int_in_range(1..=6)?;
    let mut apps = Vec::new();
    for i in 0..count {
        let tenant = *u.choose(TENANTS)?;
        let mut routes = Vec::new();
        for _ in 0..u.int_in_range(1..=3)? {
            if let Ok(r) = Route::parse(&route_text(u)?) {
                let again = Route::parse(&r.to_string()).expect("a route's text parses");
                assert_eq!(again, r, "route text round trip");
                routes.push(r);
            }
        }
        let app = Arc::new(App::failed(tenant, &format!("app{i}"), "fuzz"));
        apps.push(Arc::new(HttpApp::new(app, routes, 1)));
    }
    let built = Router::build(apps.clone());
    let reversed = Router::build(apps.iter().rev().cloned().collect());
    assert_eq!(
        built.is_ok(),
        reversed.is_ok(),
        "building must not depend on order"
    );
    let Ok(router) = built else {
        return Ok(());
    };
    let all: Vec<(Route, usize)> = apps
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.routes.iter().map(move |r| (r.clone(), i)))
        .collect();
    for _ in 0..8 {
        let host = u.choose(&["example.com", "EXAMPLE.com", "x.org", "other.net", ""])?;
        let path = path(u)?;
        let got = router.route(host, &path);
        let want = reference::best(&all, host, &path);
        match (got, want) {
            (None, None) => {}
            (Some((app, len)), Some((route, i))) => {
                assert!(
                    Arc::ptr_eq(&app, &apps[*i]),
                    "{host}{path}: routed to the wrong app"
                );
                assert_eq!(
                    len,
                    prefix_len(route),
                    "{host}{path}: matched prefix length"
                );
                let scope = route.host.is_some();
                for (other, j) in &all {
                    if other.host.is_some() == scope && matches(other, host, &path) {
                        assert_eq!(
                            apps[*j].app.tenant, app.app.tenant,
                            "{host}{path}: another tenant's route {other} also matches"
                        );
                    }
                }
            }
            (got, want) => panic!(
                "{host}{path}: routed to {:?}, the reference says {:?}",
                got.map(|(a, _)| a.app.name.to_string()),
                want.map(|(r, _)| r.to_string())
            ),
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
