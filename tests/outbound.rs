//! End-to-end tests of components' outgoing HTTP (SSRF and denial of service): a real node,
//! the `outgoing` test component, and upstream servers on loopback. Every destination here is
//! on loopback; refusals of other ranges are unit tests of the address rule
//! (`zeroproxy::outbound::addr`), which never send traffic.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use zero_client::Client;

fn msg(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// What a stalling upstream saw of one connection: when the request head arrived and when
/// the node closed the connection.
#[derive(Debug, Clone, Copy)]
struct Stalled {
    head_at: Instant,
    closed_at: Option<Instant>,
}

/// An upstream on loopback that reads the request, then sends `prefix` (nothing, or a response
/// head and part of a body) and stalls, recording when the node gives up the connection.
fn stalling_upstream(prefix: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Stalled>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                if !read_head(&mut s) {
                    return;
                }
                let i = {
                    let mut v = seen.lock().unwrap();
                    v.push(Stalled {
                        head_at: Instant::now(),
                        closed_at: None,
                    });
                    v.len() - 1
                };
                let _ = s.write_all(prefix.as_bytes());
                let mut buf = [0u8; 1024];
                // Anything but more data means the node closed (or reset) the connection.
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                seen.lock().unwrap()[i].closed_at = Some(Instant::now());
            });
        }
    });
    (addr, log)
}

/// GET `/fetch` on the node with `x-target` and extra headers.
fn fetch(node: &NodeProc, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("x-target", target)];
    all.extend_from_slice(headers);
    get_with_headers(&node.url("/fetch"), &all)
}

/// An app of the `outgoing` component at `/fetch` that the deployer allowed to reach any host.
fn star_app() -> App<'static> {
    let mut app = App::new("fetcher", "outgoing", &["/fetch"]);
    app.outbound = vec!["*".into()];
    app
}

/// The attack: a tenant allowed `*` points its component at the node's own management API and
/// at a service on loopback, spelled every way a URL can spell loopback. Each is refused
/// before any connection is made (the upstream counts none), the guest gets
/// `DestinationIpProhibited`, and the node log names the address, its range and the knob.
#[test]
fn outbound_to_loopback_is_refused_before_connecting_even_when_star_is_allowed() {
    let (up, connections) = counting_upstream("internal secret");
    let dir = test_dir("outbound-ssrf");
    let node = NodeProc::start(&dir, config(&node_data_dir(), TEST_LIMITS, &[star_app()]));
    let port = up.port();
    let targets = [
        format!("http://{}/v1/node", node.admin),
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://127.1.2.3:{port}/"),
    ];
    for target in &targets {
        let r = fetch(&node, target, &[]);
        assert_eq!(r.status, 502, "{target}: {}", r.body);
        assert!(
            r.body.contains("DestinationIpProhibited"),
            "{target}: {}",
            r.body
        );
        let rid = r.request_id.unwrap();
        let line = node.wait_log("refusal", |v| {
            v["request_id"] == rid.as_str() && msg(v).contains("refused before connecting")
        });
        let m = msg(&line);
        let explained = if target.contains(&node.admin.to_string()) {
            m.contains("management API, which components can never reach")
        } else {
            m.contains("[outbound] allow_private")
                && (m.contains("loopback") || m.contains("unspecified"))
        };
        assert!(explained, "{target}: {m}");
        assert_eq!(line["app"], "fetcher");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no refused request may reach the upstream"
    );
    // The management API itself is up: only the component is kept out.
    assert_eq!(get(&format!("http://{}/v1/node", node.admin)).status, 200);
}

/// The legitimate use: the operator lists a loopback network in `[outbound] allow_private`
/// and the component reaches its service there; the node's management API stays refused even
/// inside that network, and other spellings of "this host" outside the list stay refused.
#[test]
fn outbound_to_a_destination_the_operator_allows_works_but_never_to_the_management_api() {
    let (up, connections) = counting_upstream("upstream says hi");
    let dir = test_dir("outbound-allowed");
    let extra = format!("{TEST_LIMITS}\n[outbound]\nallow_private = [\"127.0.0.0/8\"]\n");
    let node = NodeProc::start(&dir, config(&node_data_dir(), &extra, &[star_app()]));
    let r = fetch(&node, &format!("http://127.0.0.1:{}/", up.port()), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "upstream says hi"));
    let r = fetch(
        &node,
        &format!("http://[::ffff:127.0.0.1]:{}/", up.port()),
        &[],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "upstream says hi"));
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    let r = fetch(&node, &format!("http://{}/v1/node", node.admin), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("DestinationIpProhibited"), "{}", r.body);
    let rid = r.request_id.unwrap();
    node.wait_log("management API refusal", |v| {
        v["request_id"] == rid.as_str()
            && msg(v).contains("management API, which components can never reach")
    });
    let r = fetch(&node, &format!("http://0.0.0.0:{}/", up.port()), &[]);
    assert!(r.body.contains("DestinationIpProhibited"), "{}", r.body);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// The deployer may not allow more than the operator's ceiling: asking `*` (or another host)
/// when the ceiling is `["api.example.com"]` is refused at deploy, naming the host and the
/// knob; asking for `api.example.com` is accepted, and the app then still cannot reach
/// anything else.
#[test]
fn deploy_asking_beyond_the_outbound_ceiling_is_refused_and_within_it_accepted() {
    let w = world_with(
        "outbound-ceiling",
        "[outbound]\nallowed_hosts_ceiling = [\"api.example.com\"]\n",
    );
    let mut owner = Client::new(&w.api, copy_key(&w.acme.owner), w.acme.chain.clone());
    let code = std::fs::read(guest_wasm("outgoing")).unwrap();
    let routes = ["/fetch".to_string()];
    for asked in ["*", "evil.example.com", "*.example.com", "127.0.0.1:8081"] {
        let e = refused(owner.deploy("acme", "fetcher", &routes, &[asked.into()], &code));
        assert_eq!(
            (e.status, e.error.as_str()),
            (403, "OutboundHostNotAllowed")
        );
        assert!(
            e.message.contains(&format!("`{asked}`"))
                && e.message.contains("[outbound] allowed_hosts_ceiling")
                && e.message.contains("api.example.com"),
            "{}",
            e.message
        );
    }
    let e = refused(owner.deploy("acme", "fetcher", &routes, &["http://x/".into()], &code));
    assert_eq!((e.status, e.error.as_str()), (400, "InvalidArgs"));
    assert!(e.message.contains("not a host pattern"), "{}", e.message);
    // Nothing was deployed by the refused calls.
    assert_eq!(get(&w.node.url("/fetch")).status, 404);

    owner
        .deploy(
            "acme",
            "fetcher",
            &routes,
            &["api.example.com".into(), "api.example.com:443".into()],
            &code,
        )
        .unwrap();
    let (up, connections) = counting_upstream("nope");
    let r = fetch(&w.node, &format!("http://127.0.0.1:{}/", up.port()), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// Outgoing work is bounded per request: the operator's first-byte and between-bytes timeouts
/// cap what a guest asks for (a guest asking a minute still gives up after 300 ms), and one
/// request may make at most `max_requests_per_invocation` outgoing requests. Paired with the
/// same requests within the bounds.
#[test]
fn outbound_timeouts_and_request_count_are_capped_by_the_operator() {
    let (ok, _) = counting_upstream("fine");
    let (silent, _) = stalling_upstream("");
    let (trickle, _) = stalling_upstream("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf");
    let dir = test_dir("outbound-bounds");
    let extra = format!(
        "{TEST_LIMITS}\n[outbound]\nallow_private = [\"127.0.0.1/32\"]\nfirst_byte_timeout_ms = 300\nbetween_bytes_timeout_ms = 300\nmax_requests_per_invocation = 3\n"
    );
    let node = NodeProc::start(&dir, config(&node_data_dir(), &extra, &[star_app()]));

    let start = Instant::now();
    let r = fetch(
        &node,
        &format!("http://{silent}/"),
        &[("x-first-byte-timeout-ms", "60000")],
    );
    let took = start.elapsed();
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("ConnectionReadTimeout"), "{}", r.body);
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    let start = Instant::now();
    let r = fetch(
        &node,
        &format!("http://{trickle}/"),
        &[("x-between-bytes-timeout-ms", "60000")],
    );
    let took = start.elapsed();
    assert_eq!(r.status, 502, "{}", r.body);
    // "connection read timeout" (with RUST_BACKTRACE=1 the error text also carries a
    // backtrace, whose frames named `...Timeout...`; the check must not depend on it).
    assert!(
        r.body.to_ascii_lowercase().contains("timeout"),
        "{}",
        r.body
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    let r = fetch(&node, &format!("http://{ok}/"), &[("x-repeat", "3")]);
    assert_eq!((r.status, r.body.as_str()), (200, "fine"));
    let r = fetch(&node, &format!("http://{ok}/"), &[("x-repeat", "4")]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("ConnectionLimitReached") && r.body.contains("request 4 of 4"),
        "{}",
        r.body
    );
    let rid = r.request_id.unwrap();
    node.wait_log("count refusal", |v| {
        v["request_id"] == rid.as_str() && msg(v).contains("[outbound] max_requests_per_invocation")
    });
}

/// An outgoing request still waiting when its incoming request ends (here: at the wall-clock
/// limit, before the node's 10 s first-byte timeout) is closed with it; the upstream sees the
/// connection end right after the client got its 504.
#[test]
fn outbound_calls_end_when_the_request_ends() {
    let (silent, seen) = stalling_upstream("");
    let dir = test_dir("outbound-ends");
    let extra = format!("{TEST_LIMITS}\n[outbound]\nallow_private = [\"127.0.0.1/32\"]\n");
    let node = NodeProc::start(&dir, config(&node_data_dir(), &extra, &[star_app()]));
    let r = fetch(&node, &format!("http://{silent}/"), &[]);
    let answered = Instant::now();
    assert_eq!(r.status, 504, "{}", r.body);
    let deadline = answered + Duration::from_secs(5);
    let closed = loop {
        let s = seen.lock().unwrap().first().copied();
        if let Some(Stalled {
            closed_at: Some(at),
            head_at,
        }) = s
        {
            break (head_at, at);
        }
        assert!(
            Instant::now() < deadline,
            "the outgoing connection outlived its request: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (head_at, closed_at) = closed;
    // Closed at the 3 s wall limit, well before the 10 s first-byte timeout.
    assert!(
        closed_at.duration_since(head_at) < Duration::from_secs(6),
        "{:?}",
        closed_at.duration_since(head_at)
    );
    assert!(closed_at <= answered + Duration::from_secs(2));
}

/// https goes through TLS on the checked address with the request's host name as SNI (the
/// certificate is checked against the name, not the address). The loopback "server" only
/// records the ClientHello, whose server-name extension is cleartext, and hangs up, so the
/// guest gets a TLS error.
#[test]
fn https_keeps_tls_and_the_host_name_as_sni_on_the_pinned_address() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut hello = vec![0u8; 4096];
            let n = s.read(&mut hello).unwrap_or(0);
            hello.truncate(n);
            let _ = tx.send(hello);
        }
    });
    let dir = test_dir("outbound-tls");
    let extra =
        format!("{TEST_LIMITS}\n[outbound]\nallow_private = [\"127.0.0.0/8\", \"::1/128\"]\n");
    let node = NodeProc::start(&dir, config(&node_data_dir(), &extra, &[star_app()]));
    let r = fetch(&node, &format!("https://localhost:{port}/"), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("Tls") || r.body.contains("Connection"),
        "{}",
        r.body
    );
    let hello = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a TLS ClientHello");
    assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
    assert!(
        hello.windows(b"localhost".len()).any(|w| w == b"localhost"),
        "the ClientHello names the host (SNI)"
    );
}
