//! Tenant-level abuse: deploy floods, a flood of output, every limit tripped at once while a
//! healthy tenant is served.
//!
//! Each test is the attack against a real node (loopback), the refusal it must meet (status,
//! error name, the message naming the limit, the log line), and a healthy tenant (`beta`,
//! serving the hello component) whose requests must all keep succeeding meanwhile. The
//! healthy tenant's latency under abuse is measured by `benches/abuse.sh`, not asserted here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use zero_auth::Keypair;
use zero_client::Client;

use crate::support::*;

/// `bytes` (a component) with a component-level custom section `pad` of `pad` bytes that holds
/// `nonce` first: a new content hash, so the node compiles it again, and a size of our choosing.
fn variant(bytes: &[u8], nonce: &str, pad: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"pad";
    let mut data = nonce.as_bytes().to_vec();
    data.resize(data.len().max(pad), b'.');
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(&data);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

fn hello() -> Vec<u8> {
    std::fs::read(guest_wasm("hello")).unwrap()
}

/// A tenant created by the Admin beside `acme` and `beta`.
fn extra_tenant(w: &World, name: &str) -> Tenant {
    let owner = Keypair::generate().unwrap();
    Client::new(&w.api, copy_key(&w.admin), vec![])
        .create_tenant(name, owner.did())
        .unwrap();
    let chain = vec![zero_client::owner_delegation(&w.admin, name, owner.did(), None).unwrap()];
    Tenant {
        name: name.to_string(),
        owner,
        chain,
    }
}

fn client(w: &World, t: &Tenant) -> Client {
    Client::new(&w.api, copy_key(&t.owner), t.chain.clone())
}

/// `wasm` signed by `t`'s owner with every right in the tenant, deployed at `/route`.
fn deploy_signed(w: &World, t: &Tenant, app: &str, wasm: &str, route: &str) {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    let signed =
        zero_client::sign_component(&bytes, &t.owner, &t.chain, &grant("/", "[]", None)).unwrap();
    client(w, t)
        .deploy(&t.name, app, &[route.to_string()], &[], &signed)
        .unwrap_or_else(|e| panic!("deploying {wasm} for {}: {e:#}", t.name));
}

/// A healthy tenant's traffic: `clients` threads GET `url` one request after another (each
/// over its own keep-alive connection) until stopped, counting answers.
struct Healthy {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    /// The slowest request so far: its time and the request id the node gave it.
    slowest: Arc<Mutex<(Duration, String)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Healthy {
    fn start(url: String, clients: usize) -> Healthy {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let slowest = Arc::new(Mutex::new((Duration::ZERO, String::new())));
        let threads = (0..clients)
            .map(|_| {
                let (url, stop, ok, errors, slowest) = (
                    url.clone(),
                    stop.clone(),
                    ok.clone(),
                    errors.clone(),
                    slowest.clone(),
                );
                std::thread::spawn(move || {
                    let agent = agent();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let r = agent.get(&url).call();
                        let took = started.elapsed();
                        let id = match &r {
                            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                                r.header("x-request-id").unwrap_or_default().to_string()
                            }
                            Err(_) => String::new(),
                        };
                        {
                            let mut slowest = slowest.lock().unwrap();
                            if took > slowest.0 {
                                *slowest = (took, id);
                            }
                        }
                        match r {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.into_string();
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => errors
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Err(ureq::Error::Status(s, r)) => errors.lock().unwrap().push(format!(
                                "status {s}: {}",
                                r.into_string().unwrap_or_default()
                            )),
                            Err(e) => errors.lock().unwrap().push(format!("transport: {e}")),
                        }
                    }
                })
            })
            .collect();
        Healthy {
            stop,
            ok,
            errors,
            slowest,
            threads,
        }
    }

    /// Stops the traffic and asserts every request was answered 200; returns how many were.
    /// On a failure it shows the slowest request and what `node` logged about it.
    fn finish(self, what: &str, node: &NodeProc) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap();
        let ok = self.ok.load(Ordering::Relaxed);
        let (took, id) = self.slowest.lock().unwrap().clone();
        eprintln!("the healthy tenant's slowest request during {what} took {took:?} ({id})");
        if !errors.is_empty() || took > Duration::from_secs(1) {
            let about: Vec<String> = node
                .log_json()
                .into_iter()
                .filter(|v| !id.is_empty() && v["request_id"] == id.as_str())
                .map(|v| v.to_string())
                .collect();
            eprintln!("the node's log about {id}:\n{}", about.join("\n"));
        }
        assert!(
            errors.is_empty(),
            "the healthy tenant saw {} errors ({ok} answered) during {what}: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        assert!(
            ok > 0,
            "the healthy tenant was never answered during {what}"
        );
        ok
    }
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// The compiled artifacts in the node's artifact directory.
fn artifacts(data: &Path) -> usize {
    std::fs::read_dir(data.join("aot"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count()
}

fn hash_of(bytes: &[u8]) -> String {
    zero_component::content_hash(bytes).unwrap().to_string()
}

/// Waits (up to 30 s) until the background optimization of each of `hashes` has ended, i.e.
/// its artifact is where it stays: kept for a component in use, deleted for one replaced or
/// removed meanwhile. A component compiled with Cranelift in its deploy (no baseline line:
/// the queue was full) was done when its deploy answered.
fn await_optimizations(node: &NodeProc, hashes: &[String]) {
    const ENDED: [&str; 4] = [
        "optimized code ready; new requests run it",
        "the component was replaced or removed before its background optimization; skipped",
        "the component was replaced or removed while it was optimized; its artifact is deleted",
        "the optimizing compiler failed; the component keeps its baseline code",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = node.log_json();
        let running: Vec<&String> = hashes
            .iter()
            .filter(|h| {
                let about = |v: &&Json| v["hash"] == h.as_str();
                let baseline = log.iter().filter(about).any(|v| v["tier"] == "baseline");
                let ended = log
                    .iter()
                    .filter(about)
                    .any(|v| ENDED.iter().any(|m| v["message"] == *m));
                baseline && !ended
            })
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "background optimizations of {running:?} did not end within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One tenant deploys as fast as it can from 16 clients at once, every component new (so each
/// would compile), some near `[admin] max_upload`, half replacing one app over and over and half
/// deploying new names. Past one deploy in flight it is refused with `429 TooManyDeploys`, a
/// `retry-after` and the knob to change; new names past the app cap are refused before
/// anything is compiled. Meanwhile another tenant deploys an app and is served without error.
#[test]
fn a_deploy_flood_is_refused_past_the_tenant_limit_while_other_tenants_deploy_and_are_served() {
    let w = World::spec("abuse-deploy-flood")
        // Every client of the test comes from 127.0.0.1, as behind a reverse proxy: the
        // per-client connection cap (min(8, max_connections)) would refuse them before the
        // tenant's deploy limit is reached.
        .with("[admin]\nmax_upload = \"2 MiB\"\nmax_apps_per_tenant = 4\nmax_connections_per_client = 64\n")
        .start();
    let hello = hello();
    client(&w, &w.beta)
        .deploy("beta", "hello", &["/beta".into()], &[], &hello)
        .unwrap();
    // `same` exists before the flood replaces it over and over (on a loaded machine the
    // flood's new names can take the tenant's four apps before any replacement of `same` gets
    // the tenant's one deploy slot, and then nothing was routed at /same).
    client(&w, &w.acme)
        .deploy(
            "acme",
            "same",
            &["/same".into()],
            &[],
            &variant(&hello, "same-first", 0),
        )
        .unwrap();
    let healthy = Healthy::start(w.node.url("/beta"), 2);

    let until = Instant::now() + Duration::from_secs(8);
    let outcomes: Arc<Mutex<Vec<Result<(), zero_client::ApiError>>>> = Arc::default();
    let flood: Vec<_> = (0..16)
        .map(|i| {
            let (api, key, chain) = (w.api.clone(), copy_key(&w.acme.owner), w.acme.chain.clone());
            let (hello, outcomes) = (hello.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&api, key, chain);
                let mut n = 0;
                while Instant::now() < until {
                    n += 1;
                    // Every fourth upload is near the 2 MiB limit.
                    let pad = if n % 4 == 0 {
                        (2 << 20) - hello.len() - 4096
                    } else {
                        0
                    };
                    let bytes = variant(&hello, &format!("flood-{i}-{n}"), pad);
                    let (app, route) = if i % 2 == 0 {
                        ("same".to_string(), "/same".to_string())
                    } else {
                        (format!("new-{i}-{n}"), format!("/new-{i}-{n}"))
                    };
                    let r = c.deploy("acme", &app, &[route], &[], &bytes);
                    outcomes.lock().unwrap().push(r.map(|_| ()).map_err(|e| {
                        e.downcast::<zero_client::ApiError>()
                            .unwrap_or_else(|e| panic!("not a refusal: {e:#}"))
                    }));
                }
            })
        })
        .collect();

    // During the flood, another tenant's deploy (a new component, compiled) goes through.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let during = variant(&hello, "beta-during-the-flood", 0);
    client(&w, &w.beta)
        .deploy("beta", "during", &["/during".into()], &[], &during)
        .expect("another tenant's deploy during the flood");
    let beta_deploy = started.elapsed();
    assert_eq!(get(&w.node.url("/during")).status, 200);

    for t in flood {
        t.join().unwrap();
    }
    let served = healthy.finish("the deploy flood", &w.node);
    let outcomes = outcomes.lock().unwrap();
    let deployed = outcomes.iter().filter(|r| r.is_ok()).count();
    let mut too_many_deploys = 0;
    let mut too_many_apps = 0;
    for e in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        match (e.status, e.error.as_str()) {
            (429, "TooManyDeploys") => {
                assert!(
                    e.message.contains("[admin] max_deploys_per_tenant = 1")
                        && e.message.contains("retry"),
                    "{}",
                    e.message
                );
                assert_eq!(e.retry_after, Some(1), "{}", e.message);
                too_many_deploys += 1;
            }
            (409, "TooManyApps") => {
                assert!(
                    e.message.contains("max_apps_per_tenant = 4"),
                    "{}",
                    e.message
                );
                too_many_apps += 1;
            }
            _ => panic!("unexpected refusal of a flood deploy: {e}"),
        }
    }
    eprintln!(
        "deploy flood: {} deploys in 8 s from 16 clients: {deployed} deployed, \
         {too_many_deploys} TooManyDeploys, {too_many_apps} TooManyApps; beta's deploy during \
         the flood took {beta_deploy:?}; beta's hello answered {served} times without error",
        outcomes.len()
    );
    assert!(deployed >= 1, "no flood deploy went through");
    assert!(too_many_deploys >= 1, "the flood was never refused");
    w.node.wait_log("the refusal's log line", |v| {
        v["error"] == "TooManyDeploys"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_deploys_per_tenant"))
    });
    // Every app the tenant kept is within its cap, and what it serves is one of its deploys.
    let list = client(&w, &w.acme).list_apps("acme").unwrap();
    let apps = list["apps"].as_array().unwrap();
    assert!(apps.len() <= 4, "{list}");
    let same = get(&w.node.url("/same"));
    assert_eq!(same.status, 200, "{}", same.body);
}

/// Replacing an app again and again with new code leaves the code and compiled artifact of
/// the replaced versions behind no longer: the data directory stays the size of what is
/// deployed. A new app past the tenant's cap is refused before it is compiled or stored, and
/// removing an app deletes its artifact.
#[test]
fn replacing_an_app_again_and_again_keeps_the_data_dir_bounded() {
    let w = World::spec("abuse-deploy-disk")
        .with("[admin]\nmax_apps_per_tenant = 2\n")
        .start();
    let hello = hello();
    let mut acme = client(&w, &w.acme);
    let pad = 256 << 10;
    let v0 = variant(&hello, "v0", pad);
    acme.deploy("acme", "same", &["/same".into()], &[], &v0)
        .unwrap();
    // Served at once by the baseline tier; the artifact is written when the background
    // optimization ends.
    assert_eq!(get(&w.node.url("/same")).status, 200);
    await_optimizations(&w.node, &[hash_of(&v0)]);
    assert_eq!(artifacts(&w.data), 1);
    let first = dir_size(&w.data);
    let replacements = 12;
    let mut hashes = vec![hash_of(&v0)];
    for i in 1..=replacements {
        let bytes = variant(&hello, &format!("v{i}"), pad);
        acme.deploy("acme", "same", &["/same".into()], &[], &bytes)
            .unwrap();
        hashes.push(hash_of(&bytes));
    }
    assert_eq!(get(&w.node.url("/same")).status, 200);
    // Every optimization ended, also those that finished after their version was replaced:
    // only the serving version's artifact is left.
    await_optimizations(&w.node, &hashes);
    let after = dir_size(&w.data);
    eprintln!(
        "data dir after the first deploy: {first} bytes; after {replacements} replacements: \
         {after} bytes ({} compiled artifacts)",
        artifacts(&w.data)
    );
    assert_eq!(
        artifacts(&w.data),
        1,
        "replaced versions' artifacts are left"
    );
    // The state journals grow a little with each deploy; the code and artifacts must not.
    assert!(
        after < first + (1 << 20),
        "the data dir grew from {first} to {after} bytes over {replacements} replacements"
    );

    // The cap is checked before the component is compiled.
    let other = variant(&hello, "other", 0);
    acme.deploy("acme", "other", &["/other".into()], &[], &other)
        .unwrap();
    await_optimizations(&w.node, &[hash_of(&other)]);
    let third = variant(&hello, "third", 0);
    let e = refused(acme.deploy("acme", "third", &["/third".into()], &[], &third));
    assert_eq!((e.status, e.error.as_str()), (409, "TooManyApps"), "{e}");
    assert!(e.message.contains("max_apps_per_tenant = 2"), "{e}");
    let third_hash = hash_of(&third);
    assert!(
        !w.node
            .log_json()
            .iter()
            .any(|v| v["hash"] == third_hash.as_str()),
        "the refused component was compiled"
    );
    assert_eq!(artifacts(&w.data), 2);

    // Removing an app deletes its artifact.
    acme.remove_app("acme", "other").unwrap();
    assert_eq!(artifacts(&w.data), 1);
    acme.remove_app("acme", "same").unwrap();
    assert_eq!(artifacts(&w.data), 0);
}

/// The node's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// The guest log lines of one request (by request id), and its truncation warnings.
fn guest_lines(node: &NodeProc, request_id: &str, stream: &str) -> (usize, usize, Vec<Json>) {
    let lines: Vec<Json> = node
        .log_json()
        .into_iter()
        .filter(|v| {
            v["target"] == "guest" && v["request_id"] == request_id && v["stream"] == stream
        })
        .collect();
    let (marks, kept): (Vec<&Json>, Vec<&Json>) = lines.iter().partition(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("log budget"))
    });
    let bytes = kept
        .iter()
        .map(|v| v["message"].as_str().unwrap_or("").len())
        .sum();
    (bytes, kept.len(), marks.into_iter().cloned().collect())
}

/// A component writes 1 GiB to stdout, and to stderr, as fast as it can. The node keeps the
/// first `[limits] guest_log_bytes` of each stream of the request, then one line saying that
/// the rest is dropped and naming the limit; writing on is not an error, so the request goes
/// on until its CPU time (`[limits] cpu_time_ms`, 300 ms here) is spent and ends as a CPU-limit
/// fault. Nothing is buffered: the node's peak memory hardly moves. A flood that fits the CPU
/// time (1 MiB to each stream) is answered 200 with the same truncated log. The healthy tenant is served
/// throughout.
#[test]
fn a_gigabyte_of_output_is_cut_at_the_log_budget_without_buffering() {
    // The wall-clock limit well past the CPU time, so that on a loaded machine the flood still
    // ends at its CPU time (a 500), not at the wall-clock limit (a 504).
    let w = World::spec("abuse-stdout")
        .with("[limits]\nguest_log_bytes = \"64 KiB\"\nwall_time_ms = 30000\n")
        .start();
    let budget = 64 << 10;
    client(&w, &w.acme)
        .deploy(
            "acme",
            "logger",
            &["/logger".into()],
            &[],
            &std::fs::read(guest_wasm("logger")).unwrap(),
        )
        .unwrap();
    client(&w, &w.beta)
        .deploy("beta", "hello", &["/beta".into()], &[], &hello())
        .unwrap();
    // Warm both (first instantiations), then take the node's peak as the baseline.
    assert_eq!(get(&w.node.url("/logger")).status, 200);
    assert_eq!(get(&w.node.url("/beta")).status, 200);
    let pid = w.node.child.id();
    let base = peak_rss_kib(pid);
    let healthy = Healthy::start(w.node.url("/beta"), 2);

    for stream in ["stdout", "stderr"] {
        let started = Instant::now();
        let r = get(&w.node.url(&format!("/logger?flood=1024&stream={stream}")));
        let took = started.elapsed();
        let id = r.request_id.clone().expect("x-request-id");
        assert_eq!(r.status, 500, "{}", r.body);
        assert!(r.body.contains("CPU time limit"), "{}", r.body);
        let fault = w.node.wait_log("the flood's fault line", |v| {
            v["request_id"] == id.as_str() && v["fault"] == "cpu_limit"
        });
        let (bytes, lines, marks) = guest_lines(&w.node, &id, stream);
        eprintln!(
            "1 GiB to {stream}: ended after {took:?} with {} ({}); {lines} lines, {bytes} bytes \
             logged; node peak RSS {base} KiB before, {} KiB after",
            r.status,
            fault["message"],
            peak_rss_kib(pid)
        );
        assert!(
            bytes <= budget,
            "{bytes} bytes logged, over the {budget} budget"
        );
        assert!(
            bytes > budget - 200,
            "only {bytes} of {budget} bytes logged"
        );
        assert_eq!(marks.len(), 1, "{marks:?}");
        let mark = marks[0]["message"].as_str().unwrap();
        assert!(
            mark.contains("[limits] guest_log_bytes") && mark.contains("65536 bytes"),
            "{mark}"
        );
        // The request ends by its CPU time (300 ms of it; the 500 and its `cpu_limit` fault
        // above), long before its wall-clock limit (30 s). Alone on this 2-core machine it
        // takes 0.7-1.1 s, even beside three CPU hogs; beside the rest of the suite, up to 3 s.
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    // Both streams at once, within the CPU time: 200, each stream cut at its budget.
    let r = get(&w.node.url("/logger?flood=1&stream=both"));
    assert_eq!((r.status, r.body.as_str()), (200, "logged"));
    let id = r.request_id.unwrap();
    for stream in ["stdout", "stderr"] {
        let (bytes, _, marks) = guest_lines(&w.node, &id, stream);
        assert!(bytes <= budget && bytes > budget - 200, "{stream}: {bytes}");
        assert_eq!(marks.len(), 1, "{stream}: {marks:?}");
    }
    let peak = peak_rss_kib(pid);
    assert!(
        peak < base + (32 << 10),
        "the node's peak memory grew from {base} KiB to {peak} KiB with the output flood"
    );
    healthy.finish("the output flood", &w.node);
}

/// Abusive tenants hit every limit at once — CPU (spin), memory (membomb), output (logger
/// flood), their concurrency cap (sleepy, twice the cap in flight), a deploy flood, heavy SQL
/// (a recursive query that runs until the CPU time is spent) and a cache fill (until its quota)
/// — while the healthy tenant's hello is requested without pause: it sees no error.
#[test]
fn every_limit_tripped_at_once_leaves_the_healthy_tenant_without_errors() {
    let cap = 3;
    let w = World::spec("abuse-all-at-once")
        .with(&format!(
            "[http]\nmax_concurrent_requests = 64\nmax_concurrent_requests_per_tenant = {cap}\n\
             [cache]\ntenant_quota = \"1 MiB\"\n"
        ))
        // Well under what the flood writes within its CPU time even on a loaded machine (at
        // the default, a slow run ended every flood at the CPU limit before its budget line).
        .with("[limits]\nguest_log_bytes = \"64 KiB\"\n")
        .start();
    client(&w, &w.beta)
        .deploy("beta", "hello", &["/beta".into()], &[], &hello())
        .unwrap();
    let abusers: Vec<(&str, &str, &str, Option<&str>)> = vec![
        // (tenant, component, route, body to POST)
        ("cpu", "spin", "/cpu", None),
        ("mem", "membomb", "/mem", None),
        ("out", "logger", "/out?flood=1024&stream=both", None),
        ("conc", "sleepy", "/conc", None),
        (
            "sql",
            "dbprobe",
            "/sql",
            Some(
                r#"{"db": "d", "op": "query", "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "params": []}"#,
            ),
        ),
        ("fill", "cacheprobe", "/fill", None),
    ];
    for (tenant, wasm, route, _) in &abusers {
        let t = extra_tenant(&w, tenant);
        let path = route.split('?').next().unwrap();
        deploy_signed(&w, &t, wasm, wasm, path);
    }
    let flooder = extra_tenant(&w, "deployer");
    // Warm every app once (first instantiation) outside the measurement.
    assert_eq!(get(&w.node.url("/beta")).status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<String, BTreeMap<u16, usize>>>> = Arc::default();
    // Statements zerodb interrupted at its time or CPU limit: dbprobe answers those 200 with
    // the `limit-exceeded` error the guest got.
    let sql_limited = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for (tenant, _, route, body) in &abusers {
        // Twice the tenant's concurrency cap: the rest is refused with 503.
        for _ in 0..2 * cap {
            let (url, body, stop, statuses, tenant, sql_limited) = (
                w.node.url(route),
                body.map(str::to_string),
                stop.clone(),
                statuses.clone(),
                tenant.to_string(),
                sql_limited.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let agent = agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = match (&body, tenant.as_str()) {
                        (Some(b), _) => agent.post(&url).send_string(b),
                        (None, "fill") => agent.post(&url).send_string(
                            &json!({"op": "set", "key": format!("k{i}"), "value": "x".repeat(60_000)})
                                .to_string(),
                        ),
                        _ => agent.get(&url).call(),
                    };
                    let status = match r {
                        Ok(r) => {
                            let s = r.status();
                            let answer: Json = r.into_json().unwrap_or(Json::Null);
                            if answer["error"]["kind"] == "limit-exceeded"
                                && answer["error"]["limit_kind"] == "time"
                            {
                                sql_limited.fetch_add(1, Ordering::Relaxed);
                            }
                            s
                        }
                        Err(ureq::Error::Status(s, r)) => {
                            let _ = r.into_string();
                            s
                        }
                        Err(_) => 0,
                    };
                    *statuses
                        .lock()
                        .unwrap()
                        .entry(tenant.clone())
                        .or_default()
                        .entry(status)
                        .or_default() += 1;
                }
            }));
        }
    }
    let deploys = Arc::new(AtomicUsize::new(0));
    for i in 0..4 {
        let (api, key, chain, stop, deploys) = (
            w.api.clone(),
            copy_key(&flooder.owner),
            flooder.chain.clone(),
            stop.clone(),
            deploys.clone(),
        );
        let hello = hello();
        threads.push(std::thread::spawn(move || {
            let mut c = Client::new(&api, key, chain);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let bytes = variant(&hello, &format!("all-{i}-{n}"), 0);
                let _ = c.deploy("deployer", "flood", &["/flood".into()], &[], &bytes);
                deploys.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let healthy = Healthy::start(w.node.url("/beta"), 2);
    std::thread::sleep(Duration::from_secs(10));
    let served = healthy.finish("every limit tripped at once", &w.node);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let statuses = statuses.lock().unwrap();
    eprintln!(
        "every limit at once for 10 s: the healthy tenant was answered {served} times without \
         error; abusers' answers by status: {statuses:?}; {} deploy attempts; {} statements \
         stopped at zerodb's time or CPU limit",
        deploys.load(Ordering::Relaxed),
        sql_limited.load(Ordering::Relaxed)
    );
    // Each abuse met its limit.
    let saw = |tenant: &str, status: u16| statuses[tenant].get(&status).copied().unwrap_or(0) > 0;
    // A spinning request ends at its CPU time (500) or, when the machine's cores are shared
    // by many such requests, at its wall time first (504); both are limits.
    for tenant in ["cpu", "out"] {
        assert!(
            saw(tenant, 500) || saw(tenant, 504),
            "{tenant}: {statuses:?}"
        );
    }
    // The runaway query ends at zerodb's statement time or the request's CPU budget (the
    // guest gets `limit-exceeded`), or at the request's CPU or wall time.
    let sql_limited = sql_limited.load(Ordering::Relaxed);
    assert!(
        sql_limited > 0 || saw("sql", 500) || saw("sql", 504),
        "sql never met a limit: {statuses:?}"
    );
    assert!(saw("mem", 500), "{statuses:?}");
    for tenant in ["cpu", "mem", "out", "conc", "sql", "fill"] {
        assert!(
            saw(tenant, 503),
            "{tenant} never met its concurrency cap: {statuses:?}"
        );
    }
    assert!(saw("conc", 504), "{statuses:?}");
    assert!(
        deploys.load(Ordering::Relaxed) > 1,
        "the deploy flood did not run"
    );
    w.node
        .wait_log("a refused deploy", |v| v["error"] == "TooManyDeploys");
    for kind in ["memory_limit", "wall_timeout"] {
        w.node
            .wait_log(kind, |v| v["fault"] == kind && v["tenant"] != "beta");
    }
    // As above: on shared cores a spin may reach its wall time before its CPU time.
    w.node.wait_log("the spin's CPU or wall-time fault", |v| {
        v["tenant"] == "cpu" && (v["fault"] == "cpu_limit" || v["fault"] == "wall_timeout")
    });
    w.node.wait_log("the log budget line", |v| {
        v["target"] == "guest"
            && v["tenant"] == "out"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("guest_log_bytes"))
    });
    // The node is still whole: the abusers' apps answer again once the abuse stops.
    assert_eq!(get(&w.node.url("/beta")).status, 200);
    assert_eq!(get(&w.node.url("/out")).status, 200);
}

/// A deploy refused with `429 TooManyDeploys` before its upload is read still gets the refusal
/// when its upload is large (more than the sockets buffer): the node reads and discards the
/// body (within `[admin] max_upload`) before answering, rather than closing the connection
/// mid-upload (a reset the client sees as `Broken pipe`). Once the deploy in flight is done,
/// the same upload deploys.
#[test]
fn a_large_deploy_refused_before_its_upload_is_read_gets_the_refusal() {
    use std::io::{Read, Write};
    let w = World::spec("abuse-deploy-refused-large")
        .with("[admin]\nmax_upload = \"16 MiB\"\n")
        .start();
    let hello = hello();
    let mut acme = client(&w, &w.acme);
    // A deploy in flight: its head sent, its body held back, so it keeps the tenant's one place.
    let held = variant(&hello, "held", 0);
    let args = BTreeMap::from([
        ("tenant".to_string(), zero_auth::Ipld::String("acme".into())),
        ("app".to_string(), zero_auth::Ipld::String("held".into())),
        (
            "routes".to_string(),
            zero_auth::Ipld::List(vec![zero_auth::Ipld::String("/held".into())]),
        ),
        (
            "allowed_outbound_hosts".to_string(),
            zero_auth::Ipld::List(vec![]),
        ),
        (
            "component".to_string(),
            zero_auth::Ipld::String(hash_of(&held)),
        ),
    ]);
    let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
    let hold = |acme: &mut Client| {
        let inv = acme.invocation("/app/deploy", args.clone()).unwrap();
        let mut slow = std::net::TcpStream::connect(w.node.admin).unwrap();
        write!(
            slow,
            "PUT /v1/tenants/acme/apps/held HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
             ucan-proofs: {}\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\n\r\n",
            w.node.admin,
            inv.to_base64(),
            proofs.join(","),
            held.len()
        )
        .unwrap();
        slow.flush().unwrap();
        slow
    };
    // Once its handler holds the place, a small deploy is refused. Until then one may go
    // through (and the held one, come second, be refused and wait for its body to drain it):
    // then hold again on a new connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut slow = hold(&mut acme);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let small = variant(&hello, &format!("small-{:?}", Instant::now()), 0);
        match acme.deploy("acme", "small", &["/small".into()], &[], &small) {
            Err(e) => {
                let e = refused::<Json>(Err(e));
                assert_eq!(e.error, "TooManyDeploys", "{e}");
                break;
            }
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the held deploy never held its place"
                );
                slow = hold(&mut acme);
            }
        }
    }
    // 12 MiB refused before a byte of it is read: the answer is the refusal, not a reset.
    let big = variant(&hello, "big", 12 << 20);
    let e = refused(acme.deploy("acme", "big", &["/big".into()], &[], &big));
    assert_eq!((e.status, e.error.as_str()), (429, "TooManyDeploys"), "{e}");
    assert!(
        e.message.contains("[admin] max_deploys_per_tenant = 1"),
        "{e}"
    );
    assert_eq!(e.retry_after, Some(1), "{e}");

    // The held deploy completes; then the large upload deploys and is served.
    slow.write_all(&held).unwrap();
    let mut answer = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !answer.contains("\r\n\r\n") {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "the held deploy got no answer: {answer}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    acme.deploy("acme", "big", &["/big".into()], &[], &big)
        .unwrap();
    assert_eq!(get(&w.node.url("/big")).status, 200);
    assert_eq!(get(&w.node.url("/held")).status, 200);
}
