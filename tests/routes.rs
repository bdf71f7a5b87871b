//! End-to-end tests of route ownership on a real node, written as the attacks a tenant would try:
//! a route under, over or equal to another tenant's route, a host route that would shadow every
//! host-less route, an owner granting itself a host, and a config-file app's routes. Each attack
//! is paired with the legitimate use that keeps working. Also: a refused deploy leaves no code
//! behind, and a revoked token stops config-file apps too.

mod support;

use support::*;
use zero_client::Client;

const HELLO: &str = "Hello, World!\n";
const NEWER: &str = "hello from wasi 0.2.13\n";

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(guest_wasm(name)).unwrap()
}

#[test]
fn a_route_equal_to_above_or_below_another_tenants_route_is_refused() {
    let w = world("routes-owned");
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    acme.deploy("acme", "site", &["/hello".into()], &[], &wasm("hello"))
        .unwrap();

    // The attack seen: beta mounts `/hello/login` under acme's `/hello` to receive acme's
    // login POSTs. Also equal and above (a root would catch everything acme does not serve).
    for route in ["/hello/login", "/hello", "/", "/hello/a/b/c"] {
        let e = refused(beta.deploy("beta", "grab", &[route.into()], &[], &wasm("newer_wasi")));
        assert_eq!(
            (e.status, e.error.as_str()),
            (409, "RouteConflict"),
            "{route}: {}",
            e.message
        );
        assert!(
            !e.message.contains("acme") && e.message.contains(route),
            "{route}: the refusal names the route but not the other tenant: {}",
            e.message
        );
    }
    // One of several routes overlapping refuses the whole deploy.
    let e = refused(beta.deploy(
        "beta",
        "grab",
        &["/beta".into(), "/hello/x".into()],
        &[],
        &wasm("newer_wasi"),
    ));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);
    assert_eq!(
        get(&w.node.url("/beta")).status,
        404,
        "nothing was installed"
    );

    // acme still receives everything under its prefix.
    for path in ["/hello", "/hello/login", "/hello/a/b/c"] {
        assert_eq!(get(&w.node.url(path)).body, HELLO, "{path}");
    }

    // Legitimate: beta's own prefixes beside acme's, including look-alikes that are not below
    // `/hello` at a segment boundary.
    beta.deploy(
        "beta",
        "site",
        &["/hellothere".into(), "/hello-world".into(), "/beta".into()],
        &[],
        &wasm("newer_wasi"),
    )
    .unwrap();
    for path in ["/hellothere", "/hello-world/x", "/beta"] {
        assert_eq!(get(&w.node.url(path)).body, NEWER, "{path}");
    }
    assert_eq!(get(&w.node.url("/hello/x")).body, HELLO);

    // acme nests its own routes freely (the longest prefix wins), but not over beta's.
    acme.deploy(
        "acme",
        "api",
        &["/hello/api".into()],
        &[],
        &wasm("newer_wasi"),
    )
    .unwrap();
    assert_eq!(get(&w.node.url("/hello/api/v1")).body, NEWER);
    assert_eq!(get(&w.node.url("/hello/other")).body, HELLO);
    let e = refused(acme.deploy("acme", "root", &["/".into()], &[], &wasm("hello")));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);
    // Within a tenant, the same route twice names the tenant's own app.
    let e = refused(acme.deploy("acme", "again", &["/hello/api".into()], &[], &wasm("hello")));
    assert_eq!(e.error, "RouteConflict");
    assert!(e.message.contains("acme/api"), "{}", e.message);

    // Once acme removes its app, its paths are free for anyone.
    acme.remove_app("acme", "api").unwrap();
    acme.remove_app("acme", "site").unwrap();
    beta.deploy("beta", "grab", &["/hello".into()], &[], &wasm("newer_wasi"))
        .unwrap();
    assert_eq!(get(&w.node.url("/hello/login")).body, NEWER);
}

#[test]
fn a_host_route_needs_the_admins_grant_of_that_host() {
    let w = world("routes-hosts");
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    acme.deploy("acme", "site", &["/hello".into()], &[], &wasm("hello"))
        .unwrap();

    // The attack seen: beta claims the host every client uses and answers every host-less
    // request of every tenant.
    for route in ["127.0.0.1/", "localhost/hello", "Other.Example/x"] {
        let e = refused(beta.deploy("beta", "grab", &[route.into()], &[], &wasm("newer_wasi")));
        assert_eq!(
            (e.status, e.error.as_str()),
            (403, "HostNotGranted"),
            "{route}: {}",
            e.message
        );
        assert!(
            e.message.contains("zero tenant create beta") && e.message.contains("--host"),
            "the refusal says how to get the grant: {}",
            e.message
        );
    }
    assert_eq!(get(&w.node.url("/hello")).body, HELLO);

    // An owner cannot grant itself a host: its `/` within the tenant covers
    // `/tenant/create`, but tenant administration is the Admin's.
    let e =
        refused(beta.create_tenant_with_hosts("beta", w.beta.owner.did(), &["localhost".into()]));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "InvalidClaim"),
        "{}",
        e.message
    );
    assert!(e.message.contains("/tenant/create"), "{}", e.message);
    let e = refused(beta.deploy(
        "beta",
        "grab",
        &["localhost/".into()],
        &[],
        &wasm("newer_wasi"),
    ));
    assert_eq!(e.error, "HostNotGranted");

    // Bad host grants are refused with directions.
    let e =
        refused(admin.create_tenant_with_hosts("beta", w.beta.owner.did(), &["bad host".into()]));
    assert_eq!(
        (e.status, e.error.as_str()),
        (400, "InvalidArgs"),
        "{}",
        e.message
    );
    assert!(e.message.contains("acme.example"), "{}", e.message);

    // Legitimate: the Admin grants `localhost` (and subdomains of `beta.test`) to beta.
    let v = admin
        .create_tenant_with_hosts(
            "beta",
            w.beta.owner.did(),
            &["localhost".into(), "*.beta.test".into()],
        )
        .unwrap();
    assert_eq!(v["hosts"], serde_json::json!(["*.beta.test", "localhost"]));
    beta.deploy(
        "beta",
        "hosted",
        &["localhost/".into(), "www.beta.test/".into()],
        &[],
        &wasm("newer_wasi"),
    )
    .unwrap();
    let on = |host: &str, path: &str| get_with(&w.node.url(path), "host", host);
    assert_eq!(
        on("localhost", "/hello").body,
        NEWER,
        "beta owns host localhost"
    );
    assert_eq!(
        get_with(&w.node.url("/x"), "host", "www.beta.test").body,
        NEWER
    );
    // Requests naming any other host still reach acme's host-less route.
    assert_eq!(on("127.0.0.1", "/hello").body, HELLO);
    // A wildcard grant covers subdomains, not the domain itself.
    let e = refused(beta.deploy(
        "beta",
        "apex",
        &["beta.test/".into()],
        &[],
        &wasm("newer_wasi"),
    ));
    assert_eq!(e.error, "HostNotGranted");

    // Another tenant cannot take a granted host's routes either, even with its own grant.
    admin
        .create_tenant_with_hosts("acme", w.acme.owner.did(), &["localhost".into()])
        .unwrap();
    let e = refused(acme.deploy(
        "acme",
        "steal",
        &["localhost/api".into()],
        &[],
        &wasm("hello"),
    ));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);

    // Withdrawing the grant stops beta's host routes at once, and after a restart too.
    admin
        .create_tenant_with_hosts("beta", w.beta.owner.did(), &[])
        .unwrap();
    assert_eq!(on("localhost", "/hello").body, HELLO);
    assert_eq!(
        get_with(&w.node.url("/x"), "host", "www.beta.test").status,
        404
    );
}

#[test]
fn config_file_apps_own_their_routes_and_stop_when_their_token_is_revoked() {
    let w = world("routes-config");
    // acme's owner signs a component; the operator serves it from zerocore.toml.
    let dir = test_dir("routes-config-app");
    let signed_path = dir.join("hello.zero.wasm");
    std::fs::write(
        &signed_path,
        signed(&w, "hello", &grant("/fs/read", "[]", None)),
    )
    .unwrap();
    let World {
        node,
        data,
        admin,
        beta,
        ..
    } = w;
    node.stop();
    let mut app = App::file("cfg", signed_path.clone(), &["/cfg"]);
    app.tenant = "acme";
    let node = World::config(&data).app(&app).start(&dir);
    let api = format!("http://{}", node.admin);
    assert_eq!(get(&node.url("/cfg/x")).body, HELLO);

    // A config-file app's routes are its tenant's routes: beta cannot mount under them.
    let mut beta = Client::new(&api, beta.owner, beta.chain);
    let e = refused(beta.deploy(
        "beta",
        "grab",
        &["/cfg/login".into()],
        &[],
        &wasm("newer_wasi"),
    ));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);
    beta.deploy("beta", "ok", &["/beta".into()], &[], &wasm("newer_wasi"))
        .unwrap();

    // Revoking the token the config app's component carries stops it (503), as for
    // deployed apps; its route stays owned.
    let token = zero_component::custom_sections(&std::fs::read(&signed_path).unwrap())
        .unwrap()
        .into_iter()
        .find(|s| s.name == "ucan")
        .unwrap();
    let bytes = std::fs::read(&signed_path).unwrap();
    let chain = zero_auth::component::decode_section(&bytes[token.data]).unwrap();
    let leaf = chain.last().unwrap().cid().to_string();
    let mut admin = Client::new(&api, admin, vec![]);
    let v = admin.revoke(&leaf).unwrap();
    assert_eq!(v["stopped_apps"], 1, "{v}");
    let r = get(&node.url("/cfg/x"));
    assert_eq!(r.status, 503, "{}", r.body);
    node.wait_log("config app stopped", |v| {
        v["app"] == "cfg"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("was revoked"))
    });
    let e = refused(beta.deploy("beta", "grab", &["/cfg".into()], &[], &wasm("newer_wasi")));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);
    assert_eq!(get(&node.url("/beta")).body, NEWER);
}

#[test]
fn a_refused_deploy_leaves_no_code_behind_and_apps_per_tenant_are_capped() {
    let w = world_with("routes-code", "[admin]\nmax_apps_per_tenant = 2\n");
    let mut acme = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let mut beta = Client::new(&w.api, copy_key(&w.beta.owner), w.beta.chain.clone());
    acme.deploy("acme", "site", &["/site".into()], &[], &wasm("hello"))
        .unwrap();
    beta.deploy("beta", "b0", &["/b0".into()], &[], &wasm("hello"))
        .unwrap();
    let code = |c: &mut Client, t: &str| -> Vec<String> {
        match c.fs_list(t, "/.zero/code") {
            Ok(v) => v["entries"]
                .as_array()
                .map(|a| a.iter().map(|e| e["name"].to_string()).collect())
                .unwrap_or_default(),
            Err(_) => vec![],
        }
    };
    assert_eq!(code(&mut acme, "acme").len(), 1);

    // A deploy refused after its code was stored (here: a route conflict) removes that code,
    // so refused deploys cannot fill the tenant's quota.
    for i in 0..3 {
        let e = refused(beta.deploy(
            "beta",
            &format!("grab{i}"),
            &["/site/x".into()],
            &[],
            &wasm("newer_wasi"),
        ));
        assert_eq!(e.error, "RouteConflict");
    }
    assert_eq!(code(&mut beta, "beta").len(), 1, "only b0's code is stored");
    // A refused redeploy of a serving app keeps the serving version's code.
    let e = refused(acme.deploy(
        "acme",
        "site",
        &["/".into(), "/site".into()],
        &[],
        &wasm("hello"),
    ));
    assert_eq!(e.error, "RouteConflict", "{}", e.message);
    assert_eq!(code(&mut acme, "acme").len(), 1);
    assert_eq!(get(&w.node.url("/site")).body, HELLO);

    // At most two apps per tenant here: a third is refused, a replacement is not.
    acme.deploy("acme", "two", &["/two".into()], &[], &wasm("newer_wasi"))
        .unwrap();
    let e = refused(acme.deploy("acme", "three", &["/three".into()], &[], &wasm("hello")));
    assert_eq!(
        (e.status, e.error.as_str()),
        (409, "TooManyApps"),
        "{}",
        e.message
    );
    assert!(e.message.contains("max_apps_per_tenant"), "{}", e.message);
    acme.deploy("acme", "two", &["/two".into()], &[], &wasm("hello"))
        .unwrap();
    assert_eq!(get(&w.node.url("/two")).body, HELLO);
    assert_eq!(
        code(&mut acme, "acme").len(),
        1,
        "both apps run the same code now"
    );
    // The cap is per tenant: beta is unaffected.
    beta.deploy("beta", "one", &["/b1".into()], &[], &wasm("hello"))
        .unwrap();
    assert_eq!(get(&w.node.url("/b1")).body, HELLO);
}
