//! Oversized and malformed HTTP/1.1: each is refused by hyper's parser with a status (or, for a
//! body error, by closing the connection) and the connection is closed, so nothing after the
//! bad bytes is read as a request; a request smuggled behind a `content-length` that
//! `transfer-encoding: chunked` overrides never reaches an app.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One malformed request and the status hyper answers it with (`None`: no response at all).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    status: Option<u16>,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, status: Option<u16>) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        status,
    }
}

fn cases() -> Vec<Case> {
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nhost: test\r\n\r\n",
        "a".repeat(70 << 10)
    );
    let huge_headers = format!(
        "GET / HTTP/1.1\r\nhost: test\r\n{}\r\n",
        (0..50)
            .map(|i| format!("x-big-{i}: {}\r\n", "b".repeat(10 << 10)))
            .collect::<String>()
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nhost: test\r\n{}\r\n",
        (0..120)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    vec![
        case("URI of 70 KiB", long_uri, Some(414)),
        case("500 KiB of headers", huge_headers, Some(431)),
        case("120 headers", many_headers, Some(431)),
        case(
            "two different content-lengths",
            "POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabc",
            Some(400),
        ),
        case(
            "content-length not a number",
            "POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 3x\r\n\r\nabc",
            Some(400),
        ),
        case(
            "transfer-encoding not ending in chunked",
            "POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            Some(400),
        ),
        case(
            "transfer-encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            Some(400),
        ),
        case(
            "space before the colon (obfuscated transfer-encoding)",
            "POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
            Some(400),
        ),
        case(
            "NUL in a header value",
            "GET / HTTP/1.1\r\nhost: test\r\nx-a: b\0c\r\n\r\n",
            Some(400),
        ),
        case(
            "bare CR in a header value",
            "GET / HTTP/1.1\r\nhost: test\r\nx-a: b\rc\r\n\r\n",
            Some(400),
        ),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nhost: test\r\nx-a: b\r\n  folded\r\n\r\n",
            Some(400),
        ),
        case("HTTP/0.9", "GET /\r\n\r\n", Some(400)),
        case(
            "unknown version",
            "GET / HTTP/7.1\r\nhost: test\r\n\r\n",
            Some(400),
        ),
        case(
            "space in the method",
            "G T / HTTP/1.1\r\nhost: test\r\n\r\n",
            Some(400),
        ),
        case(
            "a TLS ClientHello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n".to_vec(),
            Some(400),
        ),
        case(
            "binary garbage",
            (0u8..=255).cycle().take(4096).collect::<Vec<u8>>(),
            Some(400),
        ),
        // The node's own refusal (a well-framed request) with `connection: close` asked for.
        case(
            "no Host header",
            "GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
            Some(400),
        ),
    ]
}

#[test]
fn malformed_http1_is_refused_and_the_connection_closed() {
    let node = hello_node("abuse-malformed", "");
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 50);
    rt().block_on(async {
        let mut keep = client_from(HEALTHY, addr).await;
        for c in cases() {
            let s = connect_from(attacker, addr).await.unwrap();
            // Read while writing: a refusal comes (and the connection closes) before all of a
            // large request is written.
            let (mut r, mut w) = s.into_split();
            let bytes = c.bytes.clone();
            let writer = tokio::spawn(async move {
                let _ = w.write_all(&bytes).await;
                w
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let closed = loop {
                match tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
                    Err(_) => break false,
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                }
            };
            drop(writer.await);
            let text = String::from_utf8_lossy(&got);
            assert!(closed, "{}: the connection stayed open", c.name);
            assert_eq!(status_of(&got), c.status, "{}: {text}", c.name);
            if c.name == "no Host header" {
                assert!(text.contains("the request has no Host header"), "{text}");
            }
            // Exactly one response: nothing after the bad bytes was taken as a request.
            assert!(responses(&text) <= 1, "{}: {text}", c.name);
            eprintln!("malformed: {}: {:?}, then closed", c.name, c.status);
            let (status, _, _) = send(&mut keep, "/").await;
            assert_eq!(status, 200, "the healthy client after {}", c.name);
        }
    });
}

/// A body error (a chunk size that is not hex) after a valid head: the app sees its body fail
/// and the connection is closed.
#[test]
fn a_bad_chunk_size_fails_the_body_and_closes_the_connection() {
    let node = hello_node("abuse-bad-chunk", "");
    let addr = node.addr;
    rt().block_on(async {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 51), addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nGET /smuggled HTTP/1.1\r\nhost: test\r\n\r\n",
        )
        .await
        .unwrap();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(closed, "{text}");
        // hyper ends the connection at the bad chunk: before the app's answer (nothing is
        // sent), or after echo's 200 head (it answers before reading), whose body then breaks
        // off unfinished. Never a second response.
        if !got.is_empty() {
            assert_eq!(status_of(&got), Some(200), "{text}");
            assert!(!text.ends_with("0\r\n\r\n"), "the body must not end cleanly: {text:?}");
        }
        assert!(responses(&text) <= 1, "{text}");
        eprintln!(
            "malformed: bad chunk size: connection closed ({})",
            if got.is_empty() { "before the answer" } else { "200 head, body cut" }
        );
        let mut keep = client_from(HEALTHY, addr).await;
        assert_eq!(send(&mut keep, "/").await.0, 200);
        assert_never_ran(&node, &mut keep).await;
    });
}

/// Request smuggling: `content-length` and `transfer-encoding: chunked` together. hyper takes
/// the chunked framing (RFC 9112 §6.3) and closes the connection after the response, so what a
/// front end framing by `content-length` would have passed on as a body never runs as a second
/// request.
#[test]
fn a_request_smuggled_behind_conflicting_framing_never_runs() {
    let node = hello_node("abuse-smuggling", "");
    let addr = node.addr;
    rt().block_on(async {
        let smuggled = "GET /smuggled HTTP/1.1\r\nhost: test\r\n\r\n";
        for order in [
            format!(
                "POST / HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
            format!(
                "POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\ncontent-length: {}\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
            // The reverse: a front end that framed by chunks, a back end by content-length.
            format!(
                "POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ] {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 52), addr).await.unwrap();
            s.write_all(order.as_bytes()).await.unwrap();
            let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            let text = String::from_utf8_lossy(&got);
            assert!(closed, "the connection stayed open after conflicting framing: {text}");
            assert_eq!(status_of(&got), Some(200), "{text}");
            assert_eq!(responses(&text), 1, "{text}");
        }
        let mut keep = client_from(HEALTHY, addr).await;
        assert_never_ran(&node, &mut keep).await;
        eprintln!("smuggling: content-length + chunked answered once and closed; /smuggled never ran");
    });
}

/// The number of status lines in `text`.
fn responses(text: &str) -> usize {
    text.split('\n')
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .count()
}

/// No access-log line for `/smuggled`, checked after a later request's line is in the log.
async fn assert_never_ran(node: &NodeProc, keep: &mut Sender) {
    let (status, _, _) = send(keep, "/marker").await;
    assert_eq!(status, 200);
    node.wait_log("the marker request", |v| {
        v["target"] == "access" && v["path"] == "/marker"
    });
    let ran: Vec<_> = node
        .log_json()
        .into_iter()
        .filter(|v| v["target"] == "access" && v["path"] == "/smuggled")
        .collect();
    assert!(ran.is_empty(), "a smuggled request ran: {ran:?}");
}
