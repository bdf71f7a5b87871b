//! HTTP/2 (the listener speaks h2c with prior knowledge): rapid reset (CVE-2023-44487), a
//! CONTINUATION flood and an oversized header block, SETTINGS and PING floods, more streams
//! than `[http] max_concurrent_streams`, and an idle connection. Well-formed traffic comes from
//! the `h2` crate (the version hyper uses), malformed frames are written byte by byte.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use hyper::http;
use tokio::io::AsyncWriteExt;

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const REFUSED_STREAM: u32 = 7;

/// One frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET http://test{path}` (static-table names, literal values).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 4]);
    b.extend_from_slice(b"test");
    b
}

struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: bytes[3],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
            payload: bytes[9..9 + len].to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    out
}

/// The error code of the GOAWAY among `frames`, if any.
fn goaway(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

type H2 = ::h2::client::SendRequest<Bytes>;

async fn h2_client(src: Ipv4Addr, to: SocketAddr) -> H2 {
    let s = connect_from(src, to).await.unwrap();
    let (client, conn) = ::h2::client::handshake(s).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// GET `path` over HTTP/2: status, body and latency.
async fn h2_get(client: &H2, path: &str) -> Result<(u16, String, Duration), ::h2::Error> {
    let t = Instant::now();
    let mut c = client.clone().ready().await?;
    let req = http::Request::get(format!("http://test{path}")).body(()).unwrap();
    let (resp, _) = c.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&got).into_owned(), t.elapsed()))
}

async fn h2_healthy_p50(client: &H2, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let (status, body, took) = h2_get(client, "/").await.expect("healthy h2 request");
        assert_eq!((status, body.as_str()), (200, "Hello, World!\n"));
        times.push(took);
    }
    times.sort();
    times[n / 2]
}

/// Rapid reset: one connection opens streams and resets each at once, by the thousand. The
/// work the node does for a stream the client cancels is bounded, and a healthy HTTP/2 client
/// on another connection is served during and after.
#[test]
fn rapid_reset_is_bounded_and_the_healthy_client_is_served() {
    let node = hello_node("abuse-h2-rapid-reset", "");
    let (addr, pid) = (node.addr, node.child.id());
    rt().block_on(async {
        let healthy = h2_client(HEALTHY, addr).await;
        let quiet = h2_healthy_p50(&healthy, 20).await;
        let attacker = h2_client(Ipv4Addr::new(127, 0, 0, 60), addr).await;
        let cpu0 = cpu_ticks(pid);
        let t0 = Instant::now();
        let healthy_during = {
            let healthy = healthy.clone();
            tokio::spawn(async move { h2_healthy_p50(&healthy, 50).await })
        };
        let mut sent = 0u32;
        let mut ended = None;
        for _ in 0..20_000 {
            let mut c = match attacker.clone().ready().await {
                Ok(c) => c,
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            };
            let req = http::Request::get("http://test/").body(()).unwrap();
            match c.send_request(req, false) {
                Ok((_resp, mut stream)) => {
                    stream.send_reset(::h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
            if sent % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let flood_time = t0.elapsed();
        let during = healthy_during.await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
        let after = h2_healthy_p50(&healthy, 20).await;
        eprintln!(
            "rapid reset: {sent} streams opened and reset in {flood_time:?}, ended by {ended:?}; \
             node CPU {cpu:.2} s ({:.0} µs a stream); healthy h2 p50 quiet {quiet:?}, during \
             {during:?}, after {after:?}; VmHWM {} MiB",
            cpu * 1e6 / f64::from(sent.max(1)),
            proc_status_kib(pid, "VmHWM:") / 1024
        );
        // h2 counts the streams the client resets and ends the connection with
        // GOAWAY(ENHANCE_YOUR_CALM) long before the 20 000th.
        let e = ended.expect("the node let 20 000 streams be opened and reset");
        assert!(e.is_go_away() && e.is_remote(), "{e:?}");
        assert_eq!(e.reason(), Some(::h2::Reason::ENHANCE_YOUR_CALM), "{e:?}");
        assert!(sent < 5_000, "{sent} streams reset before the GOAWAY");
    });
}
