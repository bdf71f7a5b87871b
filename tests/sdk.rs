//! End-to-end tests of zerosdk (the guest SDK) through a real node, for what only runs in wasm:
//! a panic becomes a 500 whose fault log line carries the message, an async handler waits on
//! the reactor, bodies of several MiB stream both ways in a guest memory smaller than they
//! are, the router's 404 and 405, a bad JSON body's 400, and the path within the app. The
//! component is `guest/components/sdkprobe`; the examples' own tests cover the db, cache and
//! chrono clients. (Included from `http.rs`, so it runs in `e2e_http`.)

use std::time::{Duration, Instant};

use crate::support::*;

fn msg(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn send(method: &str, url: &str, body: Option<&str>) -> (u16, Option<String>, String) {
    let req = agent().request(method, url);
    let r = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (
            r.status(),
            r.header("allow").map(str::to_string),
            r.into_string().unwrap_or_default(),
        ),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[test]
fn sdk_panic_is_a_500_whose_fault_log_line_carries_the_message() {
    let dir = test_dir("sdk-panic");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("probe", "sdkprobe", &["/probe"]),
                App::new("raw", "panic", &["/raw"]),
            ],
        ),
    );
    for (path, app, text, at) in [
        (
            "/probe/panic",
            "probe",
            "sdkprobe: the todo list is on fire",
            "(at components/sdkprobe/src/lib.rs:",
        ),
        // A component on the raw ABI (no SDK) gets the same: the node reads the standard
        // panic message from the guest's stderr.
        (
            "/raw",
            "raw",
            "intentional panic from the panic test component",
            "(at components/panic/src/lib.rs:",
        ),
    ] {
        let r = get(&node.url(path));
        assert_eq!(r.status, 500, "{path}: {}", r.body);
        let rid = r.request_id.clone().expect("request id");
        assert!(r.body.contains(&rid), "{path}: {}", r.body);
        assert!(
            !r.body.contains(text),
            "the client is not shown the panic message: {}",
            r.body
        );
        let line = node.wait_log(&format!("fault line of {path}"), |v| {
            v["request_id"] == rid.as_str() && v["fault"].is_string()
        });
        assert_eq!(line["fault"], "panic", "{line}");
        assert_eq!(line["app"], app, "{line}");
        let m = msg(&line);
        assert!(
            m.contains(&format!("guest panicked: {text} {at}")),
            "the fault line carries the message and where: {line}"
        );
    }
    // The app keeps serving.
    assert_eq!(get(&node.url("/probe/items/1")).status, 200);
}

#[test]
fn sdk_async_handler_router_errors_json_400_and_path_within_the_app() {
    let dir = test_dir("sdk-api");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[App::new("probe", "sdkprobe", &["/probe"])],
        ),
    );
    let url = |p: &str| node.url(&format!("/probe{p}"));

    // An async handler waits on a wasi:clocks pollable through the reactor.
    let start = Instant::now();
    let r = get(&url("/sleep?ms=150"));
    assert_eq!((r.status, r.body.as_str()), (200, "slept 150 ms"));
    assert!(start.elapsed() >= Duration::from_millis(150));
    let r = get(&url("/sleep"));
    assert_eq!(r.status, 400, "{}", r.body);

    // The router: a path it does not know is 404, a known path with another method 405 with
    // `allow`, both JSON saying what exists; a bad path parameter is 400.
    let (status, _, body) = send("GET", &url("/nope"), None);
    assert_eq!(status, 404, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("GET /nope matches no route")),
        "{body}"
    );
    let (status, allow, body) = send("DELETE", &url("/items"), None);
    assert_eq!(status, 405, "{body}");
    assert_eq!(allow.as_deref(), Some("POST"));
    assert!(body.contains("DELETE /items accepts POST"), "{body}");
    let (status, _, body) = send("GET", &url("/items/x"), None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`x` is not a valid id"), "{body}");
    let (status, _, body) = send("GET", &url("/items/7"), None);
    assert_eq!((status, body.as_str()), (200, r#"{"id":7}"#));

    // Every request gets a fresh instance: the pool recycles a slot's pages in place
    // ([pool] memory_keep_resident), but what one request wrote in globals or on the heap is
    // never seen by the next, sequential or concurrent.
    for _ in 0..10 {
        let r = get(&url("/visits"));
        assert_eq!((r.status, r.body.as_str()), (200, "visits 1, list 1"));
    }
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let u = url("/visits");
            std::thread::spawn(move || get(&u))
        })
        .collect();
    for h in concurrent {
        let r = h.join().expect("a request thread");
        assert_eq!((r.status, r.body.as_str()), (200, "visits 1, list 1"));
    }

    // JSON bodies: a good one parses, a bad one is a 400 that says why.
    let (status, _, body) = send("POST", &url("/items"), Some(r#"{"name":"milk","qty":2}"#));
    assert_eq!((status, body.as_str()), (201, r#"{"name":"milk","qty":2}"#));
    let (status, _, body) = send("POST", &url("/items"), Some(r#"{"name":"milk"}"#));
    assert_eq!(status, 400, "{body}");
    let e = json(&body);
    let e = e["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("not the JSON expected") && e.contains("missing field `qty`"),
        "{body}"
    );
    let (status, _, body) = send("POST", &url("/items"), Some("not json"));
    assert_eq!(status, 400, "{body}");

    // A response the SDK cannot send (a header name with a space) is a plain 500; the reason
    // is in the node's log for the request, not in the answer.
    let r = get(&url("/bad-header"));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("the node's log says why"), "{}", r.body);
    let rid = r.request_id.clone().expect("request id");
    node.wait_log("the invalid header's log line", |v| {
        v["request_id"] == rid.as_str()
            && v["stream"] == "stderr"
            && msg(v).contains("the response has an invalid header")
    });

    // The path within the app and the matched route come from the node, whatever the client
    // sends in those headers.
    let r = get_with_headers(
        &url("/where?x=1"),
        &[
            ("zero-path-info", "/panic"),
            ("zero-matched-route", "/evil"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r.body),
        serde_json::json!({"path": "/where", "route": "/probe", "query": "x=1"})
    );
}

/// Bodies larger than the guest's whole memory, so that only streaming can carry them.
const STREAM_LIMITS: &str =
    "[limits]\ncpu_time_ms = 10000\nwall_time_ms = 30000\nmemory = \"8 MiB\"\n";

#[test]
fn sdk_streams_bodies_of_several_mib_both_ways_in_a_smaller_guest_memory() {
    let dir = test_dir("sdk-stream");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            STREAM_LIMITS,
            &[App::new("probe", "sdkprobe", &["/probe"])],
        ),
    );
    const MIB: usize = 12;
    let pattern: Vec<u8> = (0..MIB << 20).map(|i| (i % 251) as u8).collect();

    // Out: an async writer produces 12 MiB.
    let resp = agent()
        .get(&node.url(&format!("/probe/stream/{MIB}")))
        .call()
        .unwrap();
    assert_eq!(
        resp.header("content-length"),
        Some((MIB << 20).to_string().as_str())
    );
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut got).unwrap();
    assert!(
        got == pattern,
        "the streamed body differs ({} bytes)",
        got.len()
    );

    // In and out: the request body streams back as it arrives.
    let mut body = vec![0u8; MIB << 20];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    let (status, echoed) = post_streaming(&node.url("/probe/echo"), body.clone());
    assert_eq!(status, 200);
    assert!(echoed == body, "the echo differs ({} bytes)", echoed.len());

    // In, read by async chunks.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let (status, counted) = post_streaming(&node.url("/probe/count"), body);
    assert_eq!(status, 200);
    assert_eq!(
        json(&String::from_utf8_lossy(&counted)),
        serde_json::json!({"bytes": MIB << 20, "fnv": format!("{h:016x}")})
    );
}

/// A handler written with zerosdk and built with its `p3` feature (`guest/components/sdk-p3`)
/// is a `wasi:http/handler@0.3` component: `zero inspect` says so, and the node serves it —
/// the router, a JSON body in and out (a bad one a 400), the path within the app, a body
/// streamed from a reader, and the refusal of what needs 0.2 (`Body::from_writer`) with a 500
/// and a log line that says why; with reuse on, one instance serves request after request.
#[test]
fn an_sdk_handler_built_for_wasi_0_3_serves() {
    let wasm = guest_wasm("sdk_p3");
    let (code, out, err) = zero(&["inspect", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("world:   wasi:http/service (WASI 0.3."),
        "{out}"
    );
    let dir = test_dir("sdk-p3");
    let reuse = "[limits]\nmax_concurrent_per_instance = 4\nmax_reuse = 100\n\
                 [engine]\ntiered_compilation = false\n";
    let node = NodeConfig::new(&node_data_dir())
        .shared_artifacts()
        .with(TEST_LIMITS)
        .with(reuse)
        .apps(&[App::new("sdk", "sdk_p3", &["/sdk"])])
        .start(&dir);
    let url = |p: &str| node.url(&format!("/sdk{p}"));
    let r = get(&url("/hello"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello from zerosdk on wasi 0.3")
    );
    let (status, _, body) = send("POST", &url("/items"), Some(r#"{"name":"pen","qty":3}"#));
    assert_eq!((status, body.as_str()), (201, r#"{"name":"pen","qty":3}"#));
    let (status, _, body) = send("POST", &url("/items"), Some(r#"{"name":"pen"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing field `qty`"), "{body}");
    let where_ = json(&get(&url("/where?x=1")).body);
    assert_eq!(
        (&where_["path"], &where_["route"], &where_["query"]),
        (&"/where".into(), &"/sdk".into(), &"x=1".into()),
        "{where_}"
    );
    let r = get(&url("/big/1024"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body.bytes().all(|b| b == b'z'));
    let (status, _, _) = send("GET", &url("/nope"), None);
    assert_eq!(status, 404);

    let r = get(&url("/stream"));
    assert_eq!(r.status, 500, "{}", r.body);
    node.wait_log("the SDK's reason", |v| {
        v["stream"] == "stderr" && msg(v).contains("need WASI 0.2 in this SDK")
    });
    // Reused: one instance counted the requests above and goes on counting.
    let first: u32 = get(&url("/visits"))
        .body
        .strip_prefix("visits ")
        .and_then(|n| n.parse().ok())
        .expect("visits N");
    let second: u32 = get(&url("/visits"))
        .body
        .strip_prefix("visits ")
        .and_then(|n| n.parse().ok())
        .expect("visits N");
    assert!(
        first > 1,
        "one instance served the earlier requests: {first}"
    );
    assert_eq!(second, first + 1);
}

/// The same 0.3 SDK app's `#[zerochrono::handler]` runs its ticks: a schedule declared for it
/// in the configuration file fires on the node's clock, its line tagged with the run.
#[test]
fn an_sdk_app_built_for_wasi_0_3_runs_its_ticks() {
    let dir = test_dir("sdk-p3-ticks");
    let app = format!(
        "[[app]]\ntenant = \"t1\"\nname = \"sdk3\"\ncomponent = {:?}\nroutes = [\"/sdk\"]\n\
         schedules = [{{ name = \"sec\", schedule = \"every 1s\" }}]\n",
        guest_wasm("sdk_p3").display().to_string()
    );
    let node = config(&node_data_dir(), TEST_LIMITS, &[])
        .with(&app)
        .start(&dir);
    let line = node.wait_log("a tick of the 0.3 SDK app", |v| {
        msg(v) == "sdk-p3 tick sec attempt 1"
    });
    assert_eq!(
        (&line["app"], &line["stream"]),
        (&"sdk3".into(), &"stdout".into())
    );
    let run_id = line["request_id"].as_str().unwrap_or_default().to_string();
    node.wait_log("the run's end", |v| {
        v["message"] == "scheduled run finished" && v["run_id"] == run_id.as_str()
    });
    assert_eq!(get(&node.url("/sdk/hello")).status, 200);
}
