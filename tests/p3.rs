//! End-to-end tests of WASI 0.3 (`wasi:http/handler@0.3`) components: a real `zero` node process
//! on a loopback port serving components built with the `wasip3` crate in `guest/`, next to
//! WASI 0.2 ones, through the same request path and under the same limits.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use support::*;

fn msg(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// Copying 10 MiB through guest memory takes real CPU, more than the fault tests' deliberately
/// tight 300 ms budget leaves on a slow or loaded machine.
const ECHO_LIMITS: &str = "[limits]\ncpu_time_ms = 5000\nwall_time_ms = 20000\n";

#[test]
fn a_p3_hello_is_served_beside_a_p2_app_and_unsupported_p3_imports_are_named() {
    let dir = test_dir("p3-hello");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("hello3", "hello_p3", &["/p3"]),
                App::new("hello2", "hello", &["/p2"]),
                App::new("probe", "p3_probe", &["/probe"]),
                App::new("unsupported", "p3_unsupported", &["/unsupported"]),
            ],
        ),
    );
    let r = get(&node.url("/p3"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Hello, World!\n");
    let rid = r.request_id.expect("x-request-id header");
    let line = node.wait_log("access log line", |v| {
        v["target"] == "access" && v["request_id"] == rid.as_str()
    });
    assert_eq!(line["status"], 200);
    assert_eq!(line["tenant"], "t1");
    assert_eq!(line["app"], "hello3");

    // The 0.2 app on the same node.
    let r = get(&node.url("/p2"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Hello, World!\n");

    // A 0.3 guest's stdout becomes a tagged log line, as a 0.2 guest's does.
    let r = get(&node.url("/probe/hi"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hello from wasi 0.3\n");
    let rid = r.request_id.unwrap();
    let line = node.wait_log("p3 stdout", |v| {
        v["request_id"] == rid.as_str() && v["stream"] == "stdout"
    });
    assert_eq!(msg(&line), "p3-probe served /probe/hi");
    assert_eq!(line["app"], "probe");

    // Its 0.3 filesystem import is not linked: the app is refused at load, the import named.
    let refusal = node.wait_log("refusal of the unsupported app", |v| {
        v["app"] == "unsupported" && msg(v).starts_with("refused app")
    });
    let m = msg(&refusal);
    assert!(m.contains("`wasi:filesystem/preopens@0.3"), "{m}");
    assert!(m.contains("does not provide"), "{m}");
    assert!(
        m.contains("wasi:http/types@0.3"),
        "the 0.3 interfaces are listed: {m}"
    );
    let r = get(&node.url("/unsupported"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("failed to load"), "{}", r.body);
    // The others are unaffected.
    assert_eq!(get(&node.url("/p3")).status, 200);
}

#[test]
fn a_streaming_echo_of_10_mib_through_a_p3_component() {
    let dir = test_dir("p3-echo");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            ECHO_LIMITS,
            &[App::new("probe", "p3_probe", &["/probe"])],
        ),
    );
    let mut body = vec![0u8; 10 << 20];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    let expected = Sha256::digest(&body);
    let (status, got) = post_streaming(&node.url("/probe/echo"), body);
    assert_eq!(status, 200);
    assert_eq!(got.len(), 10 << 20);
    assert_eq!(Sha256::digest(&got), expected);
    // A small body too, on the same node.
    let (status, got) = post_streaming(&node.url("/probe/echo"), b"ping".to_vec());
    assert_eq!((status, got.as_slice()), (200, b"ping".as_slice()));
}

#[test]
fn p3_faults_are_cut_at_their_limit_and_logged_while_others_are_served() {
    let dir = test_dir("p3-faults");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("probe", "p3_probe", &["/probe"]),
                App::new("hello3", "hello_p3", &["/p3"]),
            ],
        ),
    );
    for (path, status, kind) in [
        ("/probe/spin", 500, "cpu_limit"),
        ("/probe/trap", 500, "trap"),
        ("/probe/membomb", 500, "memory_limit"),
        ("/probe/sleep", 504, "wall_timeout"),
    ] {
        let started = std::time::Instant::now();
        let r = get(&node.url(path));
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let rid = r.request_id.clone().expect("request id");
        assert!(r.body.contains(&rid), "{path}: {}", r.body);
        let line = node.wait_log(&format!("fault log for {path}"), |v| {
            v["request_id"] == rid.as_str() && v["fault"].is_string()
        });
        assert_eq!(line["fault"], kind, "{path}: {line}");
        if kind == "cpu_limit" {
            // Cut by the CPU budget (300 ms), well before the wall-clock limit (3 s).
            assert!(
                started.elapsed() < std::time::Duration::from_millis(2500),
                "{path} took {:?}",
                started.elapsed()
            );
            assert!(
                msg(&line).contains("CPU time limit of 300 ms exceeded"),
                "{line}"
            );
        }
        // The next request gets a fresh instance and is served.
        let ok = get(&node.url("/probe/again"));
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(get(&node.url("/p3")).body, "Hello, World!\n");
    }
}

#[test]
fn zero_inspect_reports_the_wasi_version_and_world() {
    let p3 = guest_wasm("hello_p3");
    let (code, out, err) = zero(&["inspect", p3.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("world:   wasi:http/service (WASI 0.3."),
        "{out}"
    );
    assert!(out.contains("wasi:http/handler@0.3."), "{out}");
    assert!(out.contains("imports WASI"), "{out}");
    let p2 = guest_wasm("hello");
    let (code, out, err) = zero(&["inspect", p2.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world:   wasi:http/proxy (WASI 0.2."), "{out}");
    assert!(out.contains("wasi:    imports WASI 0.2\n"), "{out}");
}

/// Signs `wasm` for acme with `cmd` scoped by `policy` and deploys it as `name` on `/name`.
fn deploy_acme(w: &World, wasm: &str, name: &str, cmd: &str, policy: &str) {
    let bytes = signed(w, wasm, &grant(cmd, policy, None));
    w.owner(&w.acme)
        .deploy("acme", name, &[format!("/{name}")], &[], &bytes)
        .unwrap();
}

#[test]
fn a_p3_component_reads_the_files_it_is_granted_and_is_refused_the_others() {
    let w = World::spec("p3-files").start();
    let mut acme = w.owner(&w.acme);
    acme.fs_put("acme", "/data/f.txt", &b"file f"[..], true)
        .unwrap();
    acme.fs_put("acme", "/data/g.txt", &b"file g"[..], true)
        .unwrap();
    acme.fs_put("acme", "/secret/key.txt", &b"s3cret"[..], true)
        .unwrap();
    deploy_acme(
        &w,
        "p3_probe",
        "reader",
        "/fs/read",
        r#"[["==", ".path", "/data/f.txt"]]"#,
    );
    let read = |path: &str| {
        let r = get(&w.node.url(&format!("/reader/read?path={path}")));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    };
    // The legitimate use: the granted file.
    assert_eq!(read("/data/f.txt"), "ok: file f");
    // The attack: another file of the same tenant, outside the grant: a sibling is refused, a
    // file elsewhere is not even visible (no preopen reaches it), as for 0.2 components.
    assert_eq!(read("/data/g.txt"), "error: PermissionDenied");
    assert_eq!(read("/data/../secret/key.txt"), "error: PermissionDenied");
    assert_eq!(read("/secret/key.txt"), "error: NotFound");
    // And the granted one still works after the refusal.
    assert_eq!(read("/data/f.txt"), "ok: file f");
}

#[test]
fn a_p3_component_queries_the_tables_it_is_granted_and_is_refused_the_others() {
    let w = World::spec("p3-db").start();
    let mut acme = w.owner(&w.acme);
    for sql in [
        "CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO todos (title) VALUES ('milk')",
        "INSERT INTO users (name) VALUES ('ann')",
    ] {
        acme.db_query("acme", "app", sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    }
    deploy_acme(
        &w,
        "p3_probe",
        "dbreader",
        "/db/read",
        r#"[["==", ".db", "app"], ["==", ".table", "todos"]]"#,
    );
    let ask = |table: &str| {
        let r = get(&w.node.url(&format!("/dbreader/{table}")));
        assert_eq!(r.status, 200, "{table}: {}", r.body);
        r.body
    };
    // The legitimate use: the granted table.
    assert_eq!(ask("todos"), "ok: milk");
    // The attack: another table of the same database, outside the grant.
    let refused = ask("users");
    assert!(
        refused.starts_with("error: permission-denied: "),
        "{refused}"
    );
    assert!(!refused.contains("ann"), "no data leaks: {refused}");
    assert_eq!(ask("todos"), "ok: milk");
}

#[test]
fn a_p3_component_uses_the_cache_keys_it_is_granted_and_is_refused_the_others() {
    let w = World::spec("p3-cache").start();
    deploy_acme(
        &w,
        "p3_probe",
        "counter",
        "/cache",
        r#"[["like", ".key", "session:*"]]"#,
    );
    let count = |key: &str| {
        let r = get(&w.node.url(&format!("/counter/count-{key}")));
        assert_eq!(r.status, 200, "{key}: {}", r.body);
        r.body
    };
    // The legitimate use: a key under the granted prefix.
    assert_eq!(count("session"), "ok: 1");
    // The attack: a key outside it.
    let refused = count("user");
    assert!(
        refused.starts_with("error: permission-denied: "),
        "{refused}"
    );
    assert_eq!(count("session"), "ok: 2");
}

/// Reuse of 0.3 instances: up to 8 requests at once on one instance, 1,000 in its life. Without
/// tiered compilation: the instances belong to one compiled form of the component, so the move
/// from baseline to optimized code would start new ones in the middle of a test.
const REUSE: &str = "[limits]\nmax_concurrent_per_instance = 8\nmax_reuse = 1000\n\
                     instance_idle_timeout_ms = 10000\n[engine]\ntiered_compilation = false\n";

/// `served=S max=M` from p3-probe's `slow`.
fn slow_answer(body: &str) -> (u32, u32) {
    let field = |name: &str| {
        body.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body:?}"))
    };
    (field("served="), field("max="))
}

/// Starts `n` slow requests to `path`, 50 ms apart (each waits 400 ms in the guest, so they
/// overlap), and returns their replies.
fn slow_burst(node: &std::sync::Arc<NodeProc>, path: &str, n: usize) -> Vec<Reply> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (node, path) = (node.clone(), path.to_string());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50 * i as u64));
                get(&node.url(&path))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn one_p3_instance_serves_concurrent_requests_and_a_trap_fails_only_that_instance() {
    let dir = test_dir("p3-reuse");
    let cfg = NodeConfig::new(&node_data_dir())
        .with(TEST_LIMITS)
        .with(REUSE)
        .apps(&[
            App::new("probe", "p3_probe", &["/probe"]),
            App::new("other", "p3_probe", &["/other"]),
            App::new("hello2", "hello", &["/p2"]),
        ]);
    let node = std::sync::Arc::new(cfg.start(&dir));
    // The first request makes the instance.
    let r = get(&node.url("/probe/slow"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(slow_answer(&r.body), (1, 1));

    // Four overlapping requests: the same instance serves them all at once (its counter goes
    // on from 1, and it had all four in flight together).
    let replies = slow_burst(&node, "/probe/slow", 4);
    let mut served = Vec::new();
    let mut max = 0;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
        let (s, m) = slow_answer(&r.body);
        served.push(s);
        max = max.max(m);
    }
    served.sort();
    let bodies: Vec<&str> = replies.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(served, [2, 3, 4, 5], "{bodies:?}");
    assert_eq!(max, 4, "{bodies:?}");

    // Never across apps: the same component deployed as another app has its own instance.
    assert_eq!(slow_answer(&get(&node.url("/other/slow")).body), (1, 1));

    // A trap while three requests are in flight on the instance fails those three with it…
    let in_flight = {
        let node = node.clone();
        std::thread::spawn(move || slow_burst(&node, "/probe/slow", 3))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let trap = get(&node.url("/probe/trap"));
    assert_eq!(trap.status, 500, "{}", trap.body);
    for r in in_flight.join().unwrap() {
        assert_eq!(r.status, 500, "{}", r.body);
        let rid = r.request_id.clone().expect("request id");
        let line = node.wait_log("fault of an in-flight request", |v| {
            v["request_id"] == rid.as_str() && v["fault"].is_string()
        });
        assert_eq!(line["fault"], "trap", "{line}");
    }
    node.wait_log("the instance's failure", |v| {
        v["app"] == "probe" && v["fault"] == "trap" && msg(v).starts_with("instance failed")
    });
    // …and only those: the next request gets a fresh instance, the other app keeps its own,
    // and the 0.2 app is untouched.
    assert_eq!(slow_answer(&get(&node.url("/probe/slow")).body), (1, 1));
    assert_eq!(slow_answer(&get(&node.url("/other/slow")).body), (2, 1));
    assert_eq!(get(&node.url("/p2")).body, "Hello, World!\n");
}

#[test]
fn a_spinning_request_on_a_reused_p3_instance_is_cut_at_the_cpu_limit() {
    let dir = test_dir("p3-reuse-spin");
    let cfg = NodeConfig::new(&node_data_dir())
        .with(TEST_LIMITS)
        .with(REUSE)
        // The wall-clock limit well past the CPU budget, so that a loaded machine (where the
        // budget takes many times its length in wall time) cannot turn the cut into a 504.
        .with("[limits]\nwall_time_ms = 30000\n")
        .apps(&[App::new("probe", "p3_probe", &["/probe"])]);
    let node = cfg.start(&dir);
    assert_eq!(get(&node.url("/probe/hi")).status, 200);
    let r = get(&node.url("/probe/spin"));
    assert_eq!(r.status, 500, "{}", r.body);
    let rid = r.request_id.clone().expect("request id");
    let line = node.wait_log("fault of the spinning request", |v| {
        v["request_id"] == rid.as_str() && v["fault"].is_string()
    });
    assert_eq!(line["fault"], "cpu_limit", "{line}");
    // Cut by the CPU budget (the instance's: one request's for its instantiation plus one per
    // request it accepted, 3 × 300 ms here), not by the wall-clock limit (a 504).
    assert_eq!(get(&node.url("/probe/hi")).status, 200);
}

/// GETs `path` on a raw connection, reads at least `bytes` of the response, then hangs up (the
/// client goes away in the middle of the body). Returns the status line.
fn read_then_hang_up(node: &NodeProc, path: &str, bytes: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while got.len() < bytes {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        got.len() >= bytes,
        "the body stopped at {} bytes",
        got.len()
    );
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_client_going_away_cancels_its_p3_request() {
    // On a reused instance: the guest sees its body stream dropped and ends that task, while
    // the instance lives on (its in-flight counter is back to 0, long before the wall limit).
    let dir = test_dir("p3-cancel");
    let cfg = NodeConfig::new(&node_data_dir())
        .with(TEST_LIMITS)
        .with(REUSE)
        .apps(&[App::new("probe", "p3_probe", &["/probe"])]);
    let node = cfg.start(&dir);
    assert_eq!(get(&node.url("/probe/inflight")).body, "in_flight=0");
    let status = read_then_hang_up(&node, "/probe/forever", 1 << 20);
    assert!(status.contains("200"), "{status}");
    let started = std::time::Instant::now();
    loop {
        let r = get(&node.url("/probe/inflight"));
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body == "in_flight=0" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the cancelled request is still running: {}",
            r.body
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let line = node.wait_log("access line of the cancelled request", |v| {
        v["target"] == "access" && v["path"] == "/probe/forever"
    });
    assert_eq!(line["outcome"], "incomplete", "{line}");
    drop(node);

    // With a fresh instance per request (the default): the request's store is dropped with
    // it, and no wall-clock fault is ever logged for it.
    let dir = test_dir("p3-cancel-fresh");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[App::new("probe", "p3_probe", &["/probe"])],
        ),
    );
    let status = read_then_hang_up(&node, "/probe/forever", 1 << 20);
    assert!(status.contains("200"), "{status}");
    let line = node.wait_log("access line of the cancelled request", |v| {
        v["target"] == "access" && v["path"] == "/probe/forever"
    });
    assert_eq!(line["outcome"], "incomplete", "{line}");
    // Past the 3 s wall-clock limit: nothing was left running to hit it.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(
        !node.log_json().iter().any(|v| v["fault"].is_string()),
        "a fault was logged after the client went away"
    );
    assert_eq!(get(&node.url("/probe/hi")).status, 200);
}

/// An upstream on loopback that reads a request and never answers; it records when the node
/// hangs up each connection.
fn silent_upstream() -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = closed.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                seen.lock().unwrap().push(std::time::Instant::now());
            });
        }
    });
    (addr, closed)
}

/// p3-probe's `fetch` at `prefix` with `x-target` and extra headers.
fn fetch_p3(node: &NodeProc, prefix: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("x-target", target)];
    all.extend_from_slice(headers);
    get_with_headers(&node.url(&format!("{prefix}/fetch")), &all)
}

/// Outgoing HTTP from a 0.3 component (`wasi:http/client@0.3`) goes through the 0.2 rule: the
/// app granted the destination (`allowed_outbound_hosts`) reaches a loopback service the
/// operator allowed (`[outbound] allow_private`); paired refusals: the same component
/// deployed without the grant is denied before any connection (`HttpRequestDenied`),
/// loopback addresses outside the operator's list and the node's management API are refused
/// by the address rule (`DestinationIpProhibited`), each with its log line.
#[test]
fn a_p3_component_reaches_the_hosts_it_is_granted_and_is_refused_the_others() {
    let (up, connections) = counting_upstream("upstream says hi");
    let dir = test_dir("p3-outbound");
    let mut granted = App::new("fetcher", "p3_probe", &["/granted"]);
    granted.outbound = vec!["*".into()];
    let ungranted = App::new("nogrant", "p3_probe", &["/ungranted"]);
    let extra = format!("{TEST_LIMITS}\n[outbound]\nallow_private = [\"127.0.0.1/32\"]\n");
    let node = NodeProc::start(
        &dir,
        config(&node_data_dir(), &extra, &[granted, ungranted]),
    );
    let target = format!("http://127.0.0.1:{}/", up.port());
    let r = fetch_p3(&node, "/granted", &target, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "upstream says hi"));
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let r = fetch_p3(&node, "/ungranted", &target, &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    let rid = r.request_id.unwrap();
    node.wait_log("grant refusal", |v| {
        v["request_id"] == rid.as_str() && msg(v).contains("allowed_outbound_hosts")
    });

    for target in [
        format!("http://127.0.0.2:{}/", up.port()),
        format!("http://[::1]:{}/", up.port()),
        format!("http://{}/v1/node", node.admin),
    ] {
        let r = fetch_p3(&node, "/granted", &target, &[]);
        assert_eq!(r.status, 502, "{target}: {}", r.body);
        assert!(
            r.body.contains("DestinationIpProhibited"),
            "{target}: {}",
            r.body
        );
        let rid = r.request_id.unwrap();
        node.wait_log("address refusal", |v| {
            v["request_id"] == rid.as_str() && msg(v).contains("refused before connecting")
        });
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a refused request connected"
    );
}

/// The operator's caps hold for a 0.3 component's outgoing requests: the first-byte timeout
/// cuts a silent upstream whatever the guest asks, and one request makes at most
/// `max_requests_per_invocation` outgoing requests — on a fresh instance per request, and on a
/// reused instance, where each request served after another gets its own count (a request
/// past it is refused, the instance serving on).
#[test]
fn a_p3_component_s_outgoing_requests_are_capped_by_the_operator() {
    let (ok, _) = counting_upstream("fine");
    let (silent, _) = silent_upstream();
    let outbound = "[outbound]\nallow_private = [\"127.0.0.1/32\"]\nfirst_byte_timeout_ms = 300\n\
                    max_requests_per_invocation = 3\n";
    for reuse in [false, true] {
        let dir = test_dir(if reuse {
            "p3-outbound-caps-reuse"
        } else {
            "p3-outbound-caps"
        });
        let mut app = App::new("fetcher", "p3_probe", &["/probe"]);
        app.outbound = vec!["*".into()];
        let mut cfg = NodeConfig::new(&node_data_dir())
            .shared_artifacts()
            .with(TEST_LIMITS)
            .with(outbound);
        if reuse {
            cfg = cfg.with(REUSE);
        }
        let node = cfg.apps(&[app]).start(&dir);

        let start = std::time::Instant::now();
        let r = fetch_p3(
            &node,
            "/probe",
            &format!("http://{silent}/"),
            &[("x-first-byte-timeout-ms", "60000")],
        );
        let took = start.elapsed();
        assert_eq!(r.status, 502, "reuse {reuse}: {}", r.body);
        assert!(r.body.contains("Timeout"), "reuse {reuse}: {}", r.body);
        assert!(
            took < std::time::Duration::from_millis(2500),
            "took {took:?}"
        );

        for _ in 0..2 {
            let r = fetch_p3(
                &node,
                "/probe",
                &format!("http://{ok}/"),
                &[("x-repeat", "3")],
            );
            assert_eq!((r.status, r.body.as_str()), (200, "fine"), "reuse {reuse}");
        }
        let r = fetch_p3(
            &node,
            "/probe",
            &format!("http://{ok}/"),
            &[("x-repeat", "4")],
        );
        assert_eq!(r.status, 502, "reuse {reuse}: {}", r.body);
        assert!(
            r.body.contains("ConnectionLimitReached") && r.body.contains("request 4 of 4"),
            "reuse {reuse}: {}",
            r.body
        );
        node.wait_log("count refusal", |v| {
            msg(v).contains("[outbound] max_requests_per_invocation")
        });
        if reuse {
            // One instance served them all, each request with its own count.
            let lines = node.log_json();
            let instances = lines
                .iter()
                .filter(|v| msg(v).starts_with("new instance of a 0.3 app"))
                .count();
            assert_eq!(instances, 1, "one instance served every request");
        }
    }
}

/// A 0.3 component that exports `zero:chrono/tick-handler` (sync) beside its async HTTP
/// handler deploys with schedules and runs their ticks: on request (`zero schedules run`) and
/// on its own, with its stdout tagged by the run, its cache grant in force, and a returned
/// error reported as the app's; HTTP reaches the same app.
#[test]
fn a_p3_component_runs_its_schedule_ticks() {
    let w = world_with("p3-ticks", "");
    let mut acme = w.owner(&w.acme);
    let code = signed(
        &w,
        "p3_probe",
        &grant("/cache", r#"[["==", ".key", "ticks:hits"]]"#, None),
    );
    let schedules = [
        "beat=0 0 0 1 1 *".to_string(),
        "fail=0 0 0 1 1 *".to_string(),
        "sec=every 1s".to_string(),
    ];
    acme.deploy_with_schedules(
        "acme",
        "ticker3",
        &["/ticker3".into()],
        &[],
        &schedules,
        &code,
    )
    .unwrap();
    let run = acme.run_schedule("acme", "ticker3", "beat").unwrap();
    assert_eq!(run["ok"], true, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let line = w.node.wait_log("the tick's stdout", |v| {
        v["request_id"] == run_id.as_str() && v["stream"] == "stdout"
    });
    assert_eq!(msg(&line), "p3-probe tick beat attempt 1", "{line}");
    assert_eq!(line["app"], "ticker3", "{line}");

    let fail = acme.run_schedule("acme", "ticker3", "fail").unwrap();
    assert_eq!(fail["fault"], "app_error", "{fail}");
    assert!(
        fail["message"]
            .as_str()
            .unwrap_or_default()
            .contains("p3-probe was told to fail"),
        "{fail}"
    );
    // The 1 s schedule fires by itself.
    w.node.wait_log("a tick on the node's clock", |v| {
        msg(v) == "p3-probe tick sec attempt 1"
    });
    // Every tick counted through the cache grant; HTTP bumps it once more.
    let r = get(&w.node.url("/ticker3/count-ticks"));
    assert_eq!(r.status, 200, "{}", r.body);
    let n: u64 = r
        .body
        .strip_prefix("ok: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.body));
    assert!(n >= 4, "beat, fail, one sec tick and this request: {n}");
}

/// Writes `raw` on a new connection to the node and reads until the node closes it.
fn raw_exchange(node: &NodeProc, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// POSTs `hello` with the trailer `x-req-sum: 42` to `path` over h2 (prior knowledge) and
/// returns the status, the body and the response's trailers.
fn h2_post_with_trailers(
    node: &NodeProc,
    path: &str,
) -> (u16, String, Option<hyper::header::HeaderMap>) {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut trailers = hyper::header::HeaderMap::new();
        trailers.insert("x-req-sum", hyper::header::HeaderValue::from_static("42"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(
                b"hello",
            ))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        let req = hyper::Request::post(format!("http://{}{path}", node.addr))
            .body(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            )))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        (status, body, trailers)
    })
}

/// Trailers both ways on HTTP/1.1 (chunked) and h2: the request's trailers reach the 0.3 guest,
/// and the trailers it sends after its body reach the client (an HTTP/1.1 one that said `te:
/// trailers`); without `te: trailers` the HTTP/1.1 client gets the body and no trailers. On a
/// fresh and on a reused instance.
#[test]
fn p3_trailers_reach_the_guest_and_the_client() {
    for reuse in [false, true] {
        let dir = test_dir(if reuse {
            "p3-trailers-reuse"
        } else {
            "p3-trailers"
        });
        let mut cfg = NodeConfig::new(&node_data_dir())
            .shared_artifacts()
            .with(TEST_LIMITS);
        if reuse {
            cfg = cfg.with(REUSE);
        }
        let node = cfg
            .apps(&[App::new("probe", "p3_probe", &["/probe"])])
            .start(&dir);
        let request = b"POST /probe/trailers HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
                        te: trailers\r\ntransfer-encoding: chunked\r\ntrailer: x-req-sum\r\n\r\n\
                        5\r\nhello\r\n0\r\nx-req-sum: 42\r\n\r\n";
        let reply = raw_exchange(&node, request);
        assert!(reply.starts_with("HTTP/1.1 200"), "reuse {reuse}: {reply}");
        assert!(
            reply.contains("body=5 trailers=[x-req-sum: 42]"),
            "reuse {reuse}: the guest did not see the request trailers: {reply}"
        );
        let (_, tail) = reply
            .split_once("\r\n0\r\n")
            .unwrap_or_else(|| panic!("reuse {reuse}: not a chunked body: {reply}"));
        assert!(
            tail.contains("x-body-length: 5\r\n"),
            "reuse {reuse}: {reply}"
        );
        assert!(tail.contains("x-probe: done\r\n"), "reuse {reuse}: {reply}");

        // Over h2 (prior knowledge), both ways.
        let (status, body, trailers) = h2_post_with_trailers(&node, "/probe/trailers");
        assert_eq!(status, 200, "reuse {reuse}: {body}");
        assert_eq!(body, "body=5 trailers=[x-req-sum: 42]", "reuse {reuse}");
        let trailers = trailers.unwrap_or_else(|| panic!("reuse {reuse}: no h2 trailers"));
        assert_eq!(
            trailers.get("x-body-length").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert_eq!(
            trailers.get("x-probe").map(|v| v.as_bytes()),
            Some(&b"done"[..])
        );

        // A client that did not ask for trailers gets none (and the whole body).
        let request = b"POST /probe/trailers HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
                        content-length: 3\r\n\r\nabc";
        let reply = raw_exchange(&node, request);
        assert!(reply.starts_with("HTTP/1.1 200"), "reuse {reuse}: {reply}");
        assert!(
            reply.contains("body=3 trailers=[]"),
            "reuse {reuse}: {reply}"
        );
        assert!(!reply.contains("x-probe: done"), "reuse {reuse}: {reply}");
    }
}

/// An outgoing request of a 0.3 component still waiting when its incoming request ends (at the
/// 3 s wall-clock limit, before the node's 10 s first-byte timeout) is closed with it: on a
/// fresh instance the store is dropped with the request; a reused instance busy past the limit
/// is dropped from outside its event loop, its connections with it.
#[test]
fn a_p3_component_s_outgoing_requests_end_when_its_request_ends() {
    for reuse in [false, true] {
        let (silent, closed) = silent_upstream();
        let dir = test_dir(if reuse {
            "p3-outbound-ends-reuse"
        } else {
            "p3-outbound-ends"
        });
        let mut app = App::new("fetcher", "p3_probe", &["/probe"]);
        app.outbound = vec!["*".into()];
        let mut cfg = NodeConfig::new(&node_data_dir())
            .shared_artifacts()
            .with(TEST_LIMITS)
            .with("[outbound]\nallow_private = [\"127.0.0.1/32\"]\n");
        if reuse {
            cfg = cfg.with(REUSE);
        }
        let node = cfg.apps(&[app]).start(&dir);
        let r = fetch_p3(&node, "/probe", &format!("http://{silent}/"), &[]);
        let answered = std::time::Instant::now();
        assert_eq!(r.status, 504, "reuse {reuse}: {}", r.body);
        let deadline = answered + std::time::Duration::from_secs(5);
        let at = loop {
            if let Some(at) = closed.lock().unwrap().first().copied() {
                break at;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reuse {reuse}: the outgoing connection outlived its request"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            at <= answered + std::time::Duration::from_secs(2),
            "reuse {reuse}: closed {:?} after the 504",
            at.saturating_duration_since(answered)
        );
        // The app serves on.
        assert_eq!(get(&node.url("/probe/hi")).status, 200, "reuse {reuse}");
    }
}
