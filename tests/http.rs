//! End-to-end tests of the HTTP slice: a real `zero` node process on a loopback port, real
//! components built in `guest/`, real HTTP.

mod support;

/// The guest SDK's end-to-end tests.
#[path = "sdk.rs"]
mod sdk;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use support::*;

fn msg(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

#[test]
fn hello_world_with_request_id_and_access_log() {
    let dir = test_dir("hello");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[App::new("hello", "hello", &["/"])],
        ),
    );
    let r = get(&node.url("/"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "Hello, World!\n");
    let rid = r.request_id.expect("x-request-id header");
    assert_eq!(rid.len(), 16);
    let line = node.wait_log("access log line", |v| {
        v["target"] == "access" && v["request_id"] == rid.as_str()
    });
    assert_eq!(line["status"], 200);
    assert_eq!(line["tenant"], "t1");
    assert_eq!(line["app"], "hello");
    assert!(line["duration_ms"].as_f64().is_some());
    // A response sent whole is logged as complete (it was "incomplete" when hyper stopped
    // polling a body at its declared length, before the body saw its end).
    assert_eq!(line["outcome"], "complete", "{line}");
    assert_eq!(line["bytes"], 14, "{line}");
    // Requests ids are unique.
    assert_ne!(get(&node.url("/x")).request_id.unwrap(), rid);
}

#[test]
fn routes_by_host_and_path_prefix() {
    let dir = test_dir("routes");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("hello", "hello", &["/hello"]),
                App::new("hosted", "newer_wasi", &["site.test/"]),
            ],
        ),
    );
    assert_eq!(get(&node.url("/hello/deep/path")).status, 200);
    let r = get(&node.url("/hellox"));
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no app is routed"), "{}", r.body);
    let r = get_with(&node.url("/anything"), "host", "site.test");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("0.2.13"));
}

/// Copying 10 MiB takes real CPU, more than the fault tests' deliberately tight 300 ms budget
/// leaves on a slow or loaded machine.
const ECHO_LIMITS: &str = "[limits]\ncpu_time_ms = 5000\nwall_time_ms = 20000\n";

#[test]
fn streaming_echo_of_a_10_mib_body() {
    let dir = test_dir("echo");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            ECHO_LIMITS,
            &[App::new("echo", "echo", &["/echo"])],
        ),
    );
    let mut body = vec![0u8; 10 << 20];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    let expected = Sha256::digest(&body);
    let (status, got) = post_streaming(&node.url("/echo"), body);
    assert_eq!(status, 200);
    assert_eq!(got.len(), 10 << 20);
    assert_eq!(Sha256::digest(&got), expected);
}

#[test]
fn bad_components_are_refused_at_load_with_the_reason() {
    let dir = test_dir("refused");
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not webassembly at all").unwrap();
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::file("core", guest_p1("p1-command"), &["/core"]),
                App::file("garbage", garbage, &["/garbage"]),
                App::new("unknown", "unknown_import", &["/unknown"]),
                App::new("hello", "hello", &["/"]),
            ],
        ),
    );
    let refused = |app: &str| {
        node.wait_log(&format!("refusal of {app}"), |v| {
            v["app"] == app && msg(v).starts_with("refused app")
        })
    };
    let core = refused("core");
    assert!(msg(&core).contains("core module"), "{core}");
    assert!(msg(&core).contains("zero convert"), "{core}");
    assert!(msg(&core).contains("wasm32-wasip2"), "{core}");
    let garbage = refused("garbage");
    assert!(
        msg(&garbage).contains("not a WebAssembly binary"),
        "{garbage}"
    );
    let unknown = refused("unknown");
    assert!(
        msg(&unknown).contains("`zero:nonexistent/thing@1.0.0`"),
        "{unknown}"
    );
    assert!(msg(&unknown).contains("does not provide"), "{unknown}");

    for path in ["/core", "/garbage", "/unknown"] {
        let r = get(&node.url(path));
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(r.body.contains("failed to load"), "{}", r.body);
        assert!(
            !r.body.contains("nonexistent"),
            "reasons stay in the log: {}",
            r.body
        );
    }
    assert_eq!(get(&node.url("/")).status, 200);
}

#[test]
fn faults_get_a_5xx_within_their_limit_while_others_keep_being_served() {
    let dir = test_dir("faults");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("hello", "hello", &["/"]),
                App::new("trap", "trap", &["/trap"]),
                App::new("panic", "panic", &["/panic"]),
                App::new("spin", "spin", &["/spin"]),
                App::new("membomb", "membomb", &["/membomb"]),
                App::new("stack", "stackoverflow", &["/stack"]),
                App::new("sleepy", "sleepy", &["/sleepy"]),
            ],
        ),
    );
    let node = Arc::new(node);
    // A healthy app is hammered from two threads for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let healthy: Vec<_> = (0..2)
        .map(|_| {
            let (node, stop, ok) = (node.clone(), stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = get(&node.url("/"));
                    if r.status == 200 && r.body == "Hello, World!\n" {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push((r.status, r.body));
                    }
                }
                failures
            })
        })
        .collect();

    let cases = [
        ("/trap", 500, "trap"),
        ("/panic", 500, "panic"),
        ("/spin", 500, "cpu_limit"),
        ("/membomb", 500, "memory_limit"),
        ("/stack", 500, "stack_overflow"),
        ("/sleepy", 504, "wall_timeout"),
    ];
    let workers: Vec<_> = cases
        .iter()
        .map(|&(path, status, kind)| {
            let node = node.clone();
            std::thread::spawn(move || {
                for _ in 0..2 {
                    let r = get(&node.url(path));
                    assert_eq!(r.status, status, "{path}: {}", r.body);
                    let rid = r.request_id.clone().expect("request id");
                    assert!(
                        r.body.contains(&rid),
                        "{path}: body names the request id: {}",
                        r.body
                    );
                    let line = node.wait_log(&format!("fault log for {path}"), |v| {
                        v["request_id"] == rid.as_str() && v["fault"].is_string()
                    });
                    assert_eq!(line["fault"], kind, "{path}: {line}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("fault case");
    }
    stop.store(true, Ordering::Relaxed);
    for h in healthy {
        let failures = h.join().unwrap();
        assert!(failures.is_empty(), "healthy requests failed: {failures:?}");
    }
    assert!(ok.load(Ordering::Relaxed) > 0);
    // The panic message itself is in the log, tagged.
    node.wait_log("panic message", |v| {
        v["app"] == "panic" && v["stream"] == "stderr" && msg(v).contains("intentional panic")
    });
    assert_eq!(get(&node.url("/")).status, 200);
}

#[test]
fn guest_stdout_and_stderr_become_tagged_log_lines() {
    let dir = test_dir("logger");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[App::new("logger", "logger", &["/"])],
        ),
    );
    let r = get(&node.url("/"));
    assert_eq!(r.status, 200);
    let rid = r.request_id.unwrap();
    for (stream, text) in [
        ("stdout", "stdout line from logger"),
        ("stderr", "stderr line from logger"),
    ] {
        let line = node.wait_log(stream, |v| {
            v["request_id"] == rid.as_str() && v["stream"] == stream
        });
        assert_eq!(msg(&line), text);
        assert_eq!(line["tenant"], "t1");
        assert_eq!(line["app"], "logger");
    }
}

#[test]
fn outgoing_http_is_denied_unless_the_host_is_allowed() {
    let up = upstream("upstream says hi");
    let dir = test_dir("outgoing");
    let mut allowed = App::new("allowed", "outgoing", &["/allowed"]);
    allowed.outbound = vec![up.to_string()];
    // The upstream is on loopback, which components reach only when the operator lists it.
    let extra = format!("{TEST_LIMITS}\n[outbound]\nallow_private = [\"{up}\"]\n");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            &extra,
            &[App::new("denied", "outgoing", &["/denied"]), allowed],
        ),
    );
    let target = format!("http://{up}/");
    let r = get_with(&node.url("/denied"), "x-target", &target);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    node.wait_log("denial", |v| {
        v["app"] == "denied" && msg(v).contains("outgoing HTTP request denied")
    });
    let r = get_with(&node.url("/allowed"), "x-target", &target);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "upstream says hi");
}

#[test]
fn body_size_caps() {
    let dir = test_dir("caps");
    let extra = format!("{TEST_LIMITS}\n");
    let cfg = config(
        &node_data_dir(),
        &extra,
        &[
            App::new("echo", "echo", &["/echo"]),
            App::new("firehose", "firehose", &["/firehose"]),
        ],
    )
    .with("[http]\nmax_request_body = \"1 MiB\"\nmax_response_body = \"2 MiB\"\n");
    let node = NodeProc::start(&dir, &cfg);
    // Declared too large: refused before the app runs.
    let status = post_head_only(node.addr, "/echo", 2 << 20);
    assert!(status.contains(" 413 "), "{status}");
    // A body under the cap streams through.
    let (status, got) = post_streaming(&node.url("/echo"), vec![1u8; 512 << 10]);
    assert_eq!((status, got.len()), (200, 512 << 10));
    // A response larger than the cap is cut, and the log says why.
    let resp = agent()
        .get(&node.url("/firehose?mib=8"))
        .call()
        .expect("headers arrive");
    let mut got = Vec::new();
    let res = resp.into_reader().read_to_end(&mut got);
    assert!(res.is_err() || got.len() < 8 << 20, "the body must be cut");
    assert!(got.len() <= 2 << 20);
    node.wait_log("response cap", |v| {
        msg(v).contains("exceeded the node's limit")
    });
}

/// `hello` is built with the current `wasi` crate (0.14.7, which imports WASI 0.2.12 through
/// `wasip2`); `newer_wasi` is built with wit-bindgen against WIT at 0.2.13 (newer than the node's
/// 0.2.12) and also imports `wasi:cli@0.2.6` through Rust's std (older): both link.
#[test]
fn components_built_against_other_wasi_versions_are_served() {
    let dir = test_dir("versions");
    let node = NodeProc::start(
        &dir,
        config(
            &node_data_dir(),
            TEST_LIMITS,
            &[
                App::new("newer", "newer_wasi", &["/newer"]),
                App::new("current", "hello", &["/current"]),
            ],
        ),
    );
    let r = get(&node.url("/newer"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hello from wasi 0.2.13\n");
    assert_eq!(get(&node.url("/current")).body, "Hello, World!\n");
}

#[test]
fn aot_artifacts_are_reused_after_a_restart() {
    let dir = test_dir("aot");
    let data = dir.join("data");
    // Its own artifact directory (DATA_DIR/aot), not the one shared by the other tests.
    let extra = format!("{TEST_LIMITS}\n[engine]\npooling = true\n");
    let cfg = NodeConfig::new(&data)
        .with(&extra)
        .apps(&[App::new("hello", "hello", &["/"])]);
    let first = NodeProc::start(&dir, &cfg);
    first.wait_log("compile", |v| {
        v["source"] == "compile" && v["app"].as_str().is_some_and(|a| a.contains("t1/hello"))
    });
    assert_eq!(get(&first.url("/")).status, 200);
    first.stop();

    let second = NodeProc::start(&dir, &cfg);
    second.wait_log("aot load", |v| v["source"] == "aot");
    assert!(
        !second.log_json().iter().any(|v| v["source"] == "compile"),
        "the restarted node compiled again"
    );
    assert_eq!(get(&second.url("/")).body, "Hello, World!\n");

    // A corrupted artifact is detected and recompiled, never loaded.
    second.stop();
    let aot = data.join("aot");
    for entry in std::fs::read_dir(&aot).unwrap() {
        let p = entry.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xa5;
        std::fs::write(&p, bytes).unwrap();
    }
    let third = NodeProc::start(&dir, &cfg);
    third.wait_log("rejection", |v| {
        msg(v).contains("precompiled artifact rejected")
    });
    third.wait_log("recompile", |v| v["source"] == "compile");
    assert_eq!(get(&third.url("/")).body, "Hello, World!\n");
}

/// An attacker who can write a shared artifact directory, but cannot read the node's artifact
/// key (mode 0600 in its data dir), cannot make the node load native code of their choosing: a
/// well-formed artifact with an unkeyed checksum is refused and recompiled, and a node with
/// another key keeps its own files beside the first node's.
#[test]
fn a_writable_artifact_dir_cannot_feed_native_code_to_the_node() {
    use sha2::Digest;
    let dir = test_dir("aot-mac");
    let shared = dir.join("shared-aot");
    let extra = format!(
        "{TEST_LIMITS}\n[engine]\npooling = false\nartifact_dir = {:?}\n",
        shared.display().to_string()
    );
    let data = dir.join("data");
    let cfg = NodeConfig::new(&data)
        .with(&extra)
        .apps(&[App::new("hello", "hello", &["/"])]);
    let node = NodeProc::start(&dir, &cfg);
    node.wait_log("compile", |v| v["source"] == "compile");
    node.stop();
    let key = data.join("artifact.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the artifact key is private to the node");
    }
    let artifacts: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    // The attacker replaces the artifact with "their" code and a correct-looking trailer.
    let original = std::fs::read(&artifacts[0]).unwrap();
    let mut body = original[..original.len() - 40].to_vec();
    let mid = body.len() / 2;
    body[mid] ^= 0x5a;
    let mut forged = body.clone();
    forged.extend_from_slice(&sha2::Sha256::digest(&body));
    forged.extend_from_slice(b"ZEROAOT2");
    std::fs::write(&artifacts[0], &forged).unwrap();

    let node = NodeProc::start(&dir, &cfg);
    node.wait_log("rejection", |v| {
        msg(v).contains("precompiled artifact rejected")
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("artifact key"))
    });
    node.wait_log("recompile", |v| v["source"] == "compile");
    assert_eq!(get(&node.url("/")).body, "Hello, World!\n");
    node.stop();
    assert_ne!(
        std::fs::read(&artifacts[0]).unwrap(),
        forged,
        "the forged artifact was replaced by the node's own"
    );

    // A second node with its own key shares the directory but not the artifacts.
    let other_dir = dir.join("other");
    let other = NodeProc::start(
        &other_dir,
        NodeConfig::new(&other_dir.join("data"))
            .with(&extra)
            .apps(&[App::new("hello", "hello", &["/"])]),
    );
    other.wait_log("compile", |v| v["source"] == "compile");
    assert_eq!(get(&other.url("/")).body, "Hello, World!\n");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 2);
}

#[test]
fn concurrency_is_capped_per_app() {
    let dir = test_dir("concurrency");
    let cfg = config(
        &node_data_dir(),
        TEST_LIMITS,
        &[
            App::new("sleepy", "sleepy", &["/sleepy"]),
            App::new("hello", "hello", &["/"]),
        ],
    )
    .with("[http]\nmax_concurrent_requests_per_app = 2\n");
    let node = Arc::new(NodeProc::start(&dir, &cfg));
    // The app's two slots are taken; another app is not affected.
    assert_concurrency_cap(
        &node,
        2,
        "/sleepy",
        "/sleepy",
        "limit of concurrent requests",
        "/",
    );
}

/// Config-file apps count as their tenant's routes: an operator's file in which one tenant's
/// route lies under another's is refused at start, naming both apps.
#[test]
fn a_config_with_overlapping_routes_of_two_tenants_refuses_to_start() {
    let dir = test_dir("config-overlap");
    let mut other = App::new("grab", "hello", &["/hello/login"]);
    other.tenant = "t2";
    let cfg = config(
        &node_data_dir(),
        TEST_LIMITS,
        &[App::new("hello", "hello", &["/hello"]), other],
    );
    std::fs::write(dir.join("zerocore.toml"), cfg.to_string()).unwrap();
    let out = std::process::Command::new(zero_bin())
        .args(["serve", "--config"])
        .arg(dir.join("zerocore.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/hello/login") && err.contains("t1/hello") && err.contains("t2/grab"),
        "{err}"
    );
}

#[test]
fn concurrency_is_capped_per_tenant() {
    let dir = test_dir("tenant-concurrency");
    let mut other = App::new("other", "hello", &["/other"]);
    other.tenant = "t2";
    let cfg = config(
        &node_data_dir(),
        TEST_LIMITS,
        &[
            App::new("sleepy", "sleepy", &["/sleepy"]),
            App::new("hello", "hello", &["/hello"]),
            other,
        ],
    )
    .with("[http]\nmax_concurrent_requests_per_tenant = 2\n");
    let node = Arc::new(NodeProc::start(&dir, &cfg));
    // Another app of the same tenant is refused while the tenant's two slots are taken, and
    // another tenant is not affected. (t1 cannot hold `/`: t2's `/other` would be under it.)
    assert_concurrency_cap(&node, 2, "/sleepy", "/hello", "tenant", "/other");
}
