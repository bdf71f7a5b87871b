//! End-to-end tests of operating a node: `/metrics` (Prometheus text, the `/node/metrics`
//! capability) and the log and event streams (`zero logs`), on a real node process.
//!
//! Each capability is paired with its refusal: a tenant owner cannot scrape the node or read
//! its events, and never reads another tenant's logs; requests to hosts and paths no app serves
//! cannot grow the metrics' label sets.

mod support;
mod traces;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::*;
use zero_auth::{Delegation, Keypair, Policy};
use zero_client::Client;

/// The value of the series `name` whose labels include every one of `labels` (`k="v"`), or
/// `None` when the scrape has no such series.
fn value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labelset, v) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|want| labelset.split(',').any(|have| have == *want))
            .then(|| v.trim().parse().ok())?
    })
}

/// The label sets of the series `name` in a scrape.
fn series(scrape: &str, name: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|r| r.split_once('}').map(|(l, _)| l.to_string()))
        .collect()
}

/// GET `path` of the management API with `t`'s owner's invocation of `command` whose
/// arguments name its own tenant (which its chain's policy allows).
fn with_tenant_args(w: &World, t: &Tenant, path: &str, command: &str) -> Reply {
    let args = std::collections::BTreeMap::from([(
        "tenant".to_string(),
        zero_auth::Ipld::String(t.name.clone()),
    )]);
    let inv = w.owner(t).invocation(command, args).unwrap();
    let proofs: Vec<String> = t.chain.iter().map(|d| d.to_base64()).collect();
    get_with_headers(
        &format!("{}{path}", w.api),
        &[
            ("authorization", &format!("Bearer {}", inv.to_base64())),
            ("ucan-proofs", &proofs.join(",")),
        ],
    )
}

fn admin(w: &World) -> Client {
    Client::new(&w.api, copy_key(&w.admin), vec![])
}

/// `wasm` signed by `t`'s owner with `/` (no capability is used by these guests).
fn signed_by(t: &Tenant, wasm: &str) -> Vec<u8> {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    zero_client::sign_component(&bytes, &t.owner, &t.chain, &grant("/", "[]", None)).unwrap()
}

fn deploy(w: &World, t: &Tenant, app: &str, wasm: &str, route: &str) {
    w.owner(t)
        .deploy(&t.name, app, &[route.to_string()], &[], &signed_by(t, wasm))
        .unwrap();
}

/// Scrapes until `ready` holds (an access line is counted when its response body is dropped,
/// just after the client has read it).
fn scrape_until(c: &mut Client, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.metrics().unwrap();
        if ready(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed; last scrape:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_requests_faults_and_deploys_and_only_the_node_may_scrape_them() {
    let w = world("observe-metrics");
    deploy(&w, &w.acme, "logger", "logger", "/logger");
    deploy(&w, &w.acme, "trap", "trap", "/trap");
    deploy(&w, &w.beta, "spin", "spin", "/spin");
    for _ in 0..3 {
        assert_eq!(get(&w.node.url("/logger")).status, 200);
    }
    assert_eq!(get(&w.node.url("/trap")).status, 500);
    // A guest spinning past its CPU limit (300 ms in the tests' limits).
    assert!(get(&w.node.url("/spin")).status >= 500);

    let mut admin = admin(&w);
    let s = scrape_until(&mut admin, "the trap's 5xx and the spin's CPU", |s| {
        value(s, "zerocore_cpu_seconds_total", &[r#"tenant="beta""#]).is_some_and(|v| v >= 0.2)
            && value(
                s,
                "zeroproxy_http_requests_total",
                &[r#"tenant="acme""#, r#"app="trap""#, r#"class="5xx""#],
            ) == Some(1.0)
            && value(
                s,
                "zeroproxy_http_requests_total",
                &[r#"app="logger""#, r#"class="2xx""#],
            ) == Some(3.0)
    });
    let acme = r#"tenant="acme""#;
    assert_eq!(
        value(
            &s,
            "zeroproxy_http_request_duration_seconds_count",
            &[acme, r#"app="logger""#]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &s,
            "zerocore_faults_total",
            &[acme, r#"app="trap""#, r#"kind="trap""#]
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(value(&s, "zero_node_deploys_total", &[acme]), Some(2.0));
    let beta = r#"tenant="beta""#;
    assert_eq!(
        value(
            &s,
            "zerocore_faults_total",
            &[beta, r#"app="spin""#, r#"kind="cpu_limit""#]
        ),
        Some(1.0),
        "{s}"
    );
    // The spinning guest was charged its CPU limit (at least most of it), to beta only.
    let beta_cpu = value(&s, "zerocore_cpu_seconds_total", &[beta]).unwrap();
    assert!(beta_cpu >= 0.2, "beta charged {beta_cpu} s");
    let acme_cpu = value(&s, "zerocore_cpu_seconds_total", &[acme]).unwrap_or(0.0);
    assert!(acme_cpu < 0.2, "acme charged {acme_cpu} s");
    let compiled = value(&s, "zerocore_components_compiled_total", &[]).unwrap()
        + value(&s, "zerocore_components_baseline_compiled_total", &[]).unwrap();
    assert!(compiled >= 3.0, "three components compiled: {s}");
    assert!(value(&s, "zerocore_instances_started_total", &[]).unwrap() >= 5.0);
    assert!(value(&s, "zerocore_instances_in_flight", &[]).is_some());
    assert!(
        value(&s, "zerofs_tenant_bytes", &[acme]).unwrap() > 0.0,
        "deployed code is in zerofs"
    );
    assert!(value(&s, "zerocache_hits_total", &[]).is_some());

    // Another deploy moves the deploy counter.
    deploy(&w, &w.acme, "logger", "logger", "/logger");
    let s = admin.metrics().unwrap();
    assert_eq!(value(&s, "zero_node_deploys_total", &[acme]), Some(3.0));

    // Removing an app removes its series.
    w.owner(&w.acme).remove_app("acme", "trap").unwrap();
    let s = admin.metrics().unwrap();
    assert!(!s.contains(r#"app="trap""#), "{s}");

    // The Admin may delegate `/node/metrics` to an operator's key.
    let operator = Keypair::generate().unwrap();
    let delegation = Delegation::builder(
        operator.did().clone(),
        zero_auth::Command::parse("/node/metrics").unwrap(),
        None,
    )
    .subject(w.admin.did().clone())
    .policy(Policy::new(vec![]))
    .sign(&w.admin)
    .unwrap();
    let mut op = Client::new(&w.api, copy_key(&operator), vec![delegation]);
    assert!(
        op.metrics()
            .unwrap()
            .contains("zeroproxy_http_requests_total")
    );

    // Refused: a tenant owner (whose chain grants `/` within its tenant), with or without
    // arguments naming its tenant, and a request with no invocation.
    for t in [&w.acme, &w.beta] {
        let e = refused(w.owner(t).metrics());
        assert_eq!(e.status, 403, "{e}");
        let r = with_tenant_args(&w, t, "/metrics", "/node/metrics");
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("node administration"), "{}", r.body);
    }
    let r = get(&format!("{}/metrics", w.api));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains("zeroproxy"), "{}", r.body);

    // The CLI prints the scrape with the Admin's key.
    let key = w.dir.join("admin-copy.key");
    w.admin.save(&key).unwrap();
    let (code, out, err) = zero(&["metrics", "--key", key.to_str().unwrap(), "--api", &w.api]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# TYPE zeroproxy_http_requests_total counter"),
        "{out}"
    );
}

#[test]
fn requests_to_unknown_hosts_and_paths_cannot_grow_the_label_sets() {
    let w = world("observe-labels");
    deploy(&w, &w.acme, "logger", "logger", "/logger");
    assert_eq!(get(&w.node.url("/logger")).status, 200);
    let mut admin = admin(&w);
    let before = scrape_until(&mut admin, "the first request", |s| {
        value(s, "zeroproxy_http_requests_total", &[r#"app="logger""#]).is_some()
    });
    let names = [
        "zeroproxy_http_requests_total",
        "zeroproxy_http_request_duration_seconds_count",
        "zerocore_faults_total",
        "zerocore_cpu_seconds_total",
    ];
    let sets: Vec<_> = names.iter().map(|n| series(&before, n)).collect();

    // The attack: many distinct hosts and paths, unrouted and under the app's route.
    for i in 0..40 {
        let r = get_with(
            &w.node.url(&format!("/nope-{i}")),
            "host",
            &format!("h{i}.attacker.example"),
        );
        assert_eq!(r.status, 404);
        assert_eq!(get(&w.node.url(&format!("/nope-{i}"))).status, 404);
        assert_eq!(
            get(&w.node.url(&format!("/logger/deep-{i}?q={i}"))).status,
            200
        );
    }
    let after = scrape_until(&mut admin, "the unrouted requests", |s| {
        value(
            s,
            "zeroproxy_http_unrouted_requests_total",
            &[r#"class="4xx""#],
        )
        .is_some_and(|v| v >= 80.0)
            && value(s, "zeroproxy_http_requests_total", &[r#"app="logger""#])
                .is_some_and(|v| v >= 41.0)
    });
    for (n, set) in names.iter().zip(&sets) {
        assert_eq!(&series(&after, n), set, "{n} grew");
    }
    assert_eq!(
        series(&after, "zeroproxy_http_unrouted_requests_total").len(),
        1,
        "one series per status class"
    );
    for leak in ["nope-", "attacker", "deep-"] {
        assert!(!after.contains(leak), "`{leak}` became a label:\n{after}");
    }
}

/// Follows `tenant`'s stream with `client` on a thread; its lines arrive on the channel.
fn follow(mut client: Client, tenant: &'static str) -> mpsc::Receiver<Json> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = client.stream_logs(Some(tenant), None, true, |v| tx.send(v).is_ok());
    });
    rx
}

#[test]
fn an_owner_follows_their_own_apps_lines_and_never_another_tenants() {
    let w = world("observe-logs");
    deploy(&w, &w.acme, "logger", "logger", "/acme-logger");
    deploy(&w, &w.beta, "logger", "logger", "/beta-logger");
    deploy(&w, &w.acme, "trap", "trap", "/acme-trap");
    let lines = follow(w.owner(&w.acme), "acme");
    // The follower is subscribed once the node answered its headers; the recent lines cover
    // any line written before that anyway.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&w.node.url("/beta-logger")).status, 200);
    assert_eq!(get(&w.node.url("/acme-logger")).status, 200);
    assert_eq!(get(&w.node.url("/acme-trap")).status, 500);

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let done = |seen: &[Json]| {
        let has = |kind: &str, app: &str| seen.iter().any(|v| v["kind"] == kind && v["app"] == app);
        has("guest", "logger") && has("access", "logger") && has("fault", "trap")
    };
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(v) => seen.push(v),
            Err(_) => panic!("the follower did not get acme's lines; got {seen:#?}"),
        }
    }
    let stdout = seen
        .iter()
        .find(|v| v["kind"] == "guest" && v["stream"] == "stdout")
        .unwrap();
    assert_eq!(stdout["message"], "stdout line from logger");
    assert!(stdout["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let access = seen.iter().find(|v| v["kind"] == "access").unwrap();
    assert_eq!(access["path"], "/acme-logger");
    assert_eq!(access["status"], 200);
    // Never beta's: not its lines, not its paths.
    for v in &seen {
        assert_eq!(v["tenant"], "acme", "{v}");
        assert!(!v.to_string().contains("beta"), "{v}");
    }

    // Without follow: the recent lines, then the end; with `app`: that app's only.
    let mut recent = Vec::new();
    w.owner(&w.acme)
        .stream_logs(Some("acme"), Some("trap"), false, |v| {
            recent.push(v);
            true
        })
        .unwrap();
    assert!(!recent.is_empty());
    assert!(recent.iter().all(|v| v["app"] == "trap"), "{recent:#?}");

    // The attack: beta's owner asks for acme's lines, with acme in the arguments or not.
    let e = refused(
        w.owner(&w.beta)
            .stream_logs(Some("acme"), None, false, |_| true),
    );
    assert_eq!(e.status, 403, "{e}");
    // An owner cannot read the node's events.
    let e = refused(w.owner(&w.acme).stream_logs(None, None, false, |_| true));
    assert_eq!(e.status, 403, "{e}");
    let r = with_tenant_args(&w, &w.acme, "/v1/node/events", "/node/events");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("node administration"), "{}", r.body);
    // The paired legitimate read: the Admin reads the node's events (deploys and the fault).
    let mut events = Vec::new();
    admin(&w)
        .stream_logs(None, None, false, |v| {
            events.push(v);
            true
        })
        .unwrap();
    let has = |event: &str, tenant: &str| {
        events
            .iter()
            .any(|v| v["event"] == event && v["tenant"] == tenant)
    };
    assert!(
        has("deploy", "acme") && has("deploy", "beta"),
        "{events:#?}"
    );
    assert!(has("tenant", "acme") && has("fault", "acme"), "{events:#?}");

    // The CLI: `zero logs --tenant acme --follow` prints acme's lines as they come.
    let key = w.dir.join("acme.key");
    let chain = w.dir.join("acme.ucan");
    w.acme.owner.save(&key).unwrap();
    zero_client::write_chain(&chain, &w.acme.chain).unwrap();
    let mut child = Command::new(zero_bin())
        .args([
            "logs", "--tenant", "acme", "--app", "logger", "--follow", "--key",
        ])
        .arg(&key)
        .arg("--proof")
        .arg(&chain)
        .args(["--api", &w.api])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let marker = "/acme-logger?cli-follow";
    assert_eq!(get(&w.node.url(marker)).status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("/acme-logger") && l.contains(" 200 "))
    {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => printed.push(l),
            Err(_) => panic!("zero logs --follow printed no access line; got {printed:#?}"),
        }
    }
    assert!(
        printed
            .iter()
            .any(|l| l.contains("stdout: stdout line from logger")),
        "{printed:#?}"
    );
    assert!(printed.iter().all(|l| !l.contains("trap")), "{printed:#?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_follower_that_stops_reading_misses_lines_and_is_told_while_the_node_goes_on() {
    use std::io::{Read, Write};
    let w = world("observe-slow");
    deploy(&w, &w.acme, "logger", "logger", "/acme-logger");
    deploy(&w, &w.beta, "logger", "logger", "/beta-logger");
    // acme's follower sends its request and then reads nothing.
    let args = std::collections::BTreeMap::from([(
        "tenant".to_string(),
        zero_auth::Ipld::String("acme".into()),
    )]);
    let inv = w.owner(&w.acme).invocation("/log/read", args).unwrap();
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let mut slow = std::net::TcpStream::connect(w.node.admin).unwrap();
    write!(
        slow,
        "GET /v1/tenants/acme/logs?follow HTTP/1.1\r\nhost: node\r\nauthorization: Bearer {}\r\nucan-proofs: {}\r\n\r\n",
        inv.to_base64(),
        proofs.join(",")
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // acme writes far more than the follower's backlog and its socket buffers hold (each
    // request: 256 KiB of 100-byte lines on each stream, the per-request budget); its
    // requests, and beta's, are answered meanwhile.
    for _ in 0..10 {
        assert_eq!(
            get(&w.node.url("/acme-logger?flood=1&stream=both")).status,
            200
        );
    }
    let t = Instant::now();
    assert_eq!(get(&w.node.url("/beta-logger")).status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "beta waited {:?}",
        t.elapsed()
    );
    // Another acme reader is not held back either.
    let mut recent = 0;
    w.owner(&w.acme)
        .stream_logs(Some("acme"), None, false, |_| {
            recent += 1;
            true
        })
        .unwrap();
    assert_eq!(recent, 200, "the recent lines");

    // The slow follower reads at last: what was buffered, then how many lines it missed.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let needle = b"\"kind\":\"dropped\"";
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        assert!(
            Instant::now() < deadline,
            "no dropped line after {} bytes",
            seen.len()
        );
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended without a dropped line");
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = seen.windows(needle.len()).position(|w| w == needle)
            && seen[at..].contains(&b'\n')
        {
            break at;
        }
    };
    let tail = String::from_utf8_lossy(&seen[found.saturating_sub(200)..]).into_owned();
    let line = tail
        .lines()
        .find(|l| l.contains("\"kind\":\"dropped\""))
        .unwrap();
    let v: Json = serde_json::from_str(line.trim()).unwrap();
    // How many depends on how much the sockets held when the follower fell behind; the
    // first report may be one of several.
    assert!(v["dropped"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("lines were dropped"),
        "{v}"
    );
}

#[test]
fn an_idle_follower_outlives_the_request_timeout_and_still_gets_later_lines() {
    // An answer that sends nothing for `request_timeout_ms` is a stalled client; a follow that
    // waits for lines sends a blank line every third of it instead.
    let w = world_with("observe-idle", "[admin]\nrequest_timeout_ms = 1500\n");
    deploy(&w, &w.acme, "logger", "logger", "/acme-logger");
    let lines = follow(w.owner(&w.acme), "acme");
    // Drain what the deploy left (nothing yet: no request ran), then stay idle past the limit.
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(get(&w.node.url("/acme-logger")).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(v) if v["kind"] == "access" => break,
            Ok(_) => {}
            Err(e) => panic!("the idle follower got nothing after the request: {e}"),
        }
    }
}

#[test]
fn each_providers_counters_move_with_its_work() {
    let w = world("observe-providers");
    let mut acme = w.owner(&w.acme);
    let mut admin = admin(&w);
    // zerodb: statements by tenant and outcome, and their latency.
    acme.db_query("acme", "app", "CREATE TABLE t (x INTEGER)", &[])
        .unwrap();
    acme.db_query("acme", "app", "INSERT INTO t VALUES (1)", &[])
        .unwrap();
    refused(acme.db_query("acme", "app", "SELECT nope FROM missing", &[]));
    // zerocache: a hit and a miss.
    acme.cache_set("acme", "k", b"v", None).unwrap();
    assert!(acme.cache_get("acme", "k").unwrap().is_some());
    assert!(acme.cache_get("acme", "absent").unwrap().is_none());
    // zerochrono: a run on request.
    let ticker = signed(
        &w,
        "ticker",
        &grant("/cache", r#"[["==", ".key", "ticker:last"]]"#, None),
    );
    acme.deploy_with_schedules(
        "acme",
        "ticker",
        &["/ticker".into()],
        &[],
        &["beat=0 0 0 1 1 *".into()],
        &ticker,
    )
    .unwrap();
    assert_eq!(
        acme.run_schedule("acme", "ticker", "beat").unwrap()["ok"],
        true
    );

    let s = admin.metrics().unwrap();
    let acme_l = r#"tenant="acme""#;
    assert!(
        value(&s, "zerodb_statements_total", &[acme_l, r#"outcome="ok""#]).unwrap() >= 2.0,
        "{s}"
    );
    assert!(
        value(
            &s,
            "zerodb_statements_total",
            &[acme_l, r#"outcome="error""#]
        )
        .unwrap()
            >= 1.0,
        "{s}"
    );
    assert!(value(&s, "zerodb_statement_duration_seconds_count", &[acme_l]).unwrap() >= 3.0);
    assert!(
        value(&s, "zerocache_hits_total", &[]).unwrap() >= 1.0,
        "{s}"
    );
    assert!(
        value(&s, "zerocache_misses_total", &[]).unwrap() >= 1.0,
        "{s}"
    );
    assert_eq!(
        value(&s, "zerochrono_runs_total", &[acme_l, r#"outcome="done""#]),
        Some(1.0),
        "{s}"
    );
    // Nothing of acme's work is counted for beta.
    assert!(!s.contains(r#"tenant="beta""#), "{s}");
}
