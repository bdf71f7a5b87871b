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
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
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

pub(super) async fn client(src: Ipv4Addr, to: SocketAddr) -> H2 {
    let s = connect_from(src, to).await.unwrap();
    let (client, conn) = ::h2::client::handshake(s).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// GET `path` over HTTP/2: status, body and latency.
pub(super) async fn get(client: &H2, path: &str) -> Result<(u16, String, Duration), ::h2::Error> {
    let t = Instant::now();
    let mut c = client.clone().ready().await?;
    let req = http::Request::get(format!("http://test{path}"))
        .body(())
        .unwrap();
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
    Ok((
        status,
        String::from_utf8_lossy(&got).into_owned(),
        t.elapsed(),
    ))
}

async fn h2_healthy_p50(client: &H2, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let (status, body, took) = get(client, "/").await.expect("healthy h2 request");
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
        let healthy = client(HEALTHY, addr).await;
        let quiet = h2_healthy_p50(&healthy, 20).await;
        let attacker = client(Ipv4Addr::new(127, 0, 0, 60), addr).await;
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
            if sent.is_multiple_of(256) {
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
        // GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets") long before the 20 000th (the client
        // sees the GOAWAY, or only the closed connection when it was still writing).
        let e = ended.expect("the node let 20 000 streams be opened and reset");
        assert!(
            (e.is_go_away()
                && e.is_remote()
                && e.reason() == Some(::h2::Reason::ENHANCE_YOUR_CALM))
                || e.is_io(),
            "{e:?}"
        );
        assert!(sent < 5_000, "{sent} streams reset before the GOAWAY");
    });
}

/// Starts a raw HTTP/2 connection from `src`: the preface and an empty SETTINGS.
async fn raw_h2(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(src, to).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// A CONTINUATION flood (a header block that never ends) is ended with a GOAWAY after a few
/// frames, not buffered; a header block over hyper's 16 KiB `max_header_list_size` gets a 431
/// on its stream; the healthy client is served.
#[test]
fn continuation_floods_are_cut_and_oversized_header_blocks_get_431() {
    let node = hello_node("abuse-h2-headers", "");
    let (addr, pid) = (node.addr, node.child.id());
    let attacker = Ipv4Addr::new(127, 0, 0, 61);
    rt().block_on(async {
        let healthy = client(HEALTHY, addr).await;
        let hwm0 = proc_status_kib(pid, "VmHWM:");
        let mut s = raw_h2(attacker, addr).await;
        s.write_all(&frame(HEADERS, 0, 1, &get_block("/")))
            .await
            .unwrap();
        // 16 MiB of header fields `x: y`, 16 KiB a frame, never END_HEADERS.
        let field = [0x00, 0x01, b'x', 0x01, b'y'];
        let payload: Vec<u8> = field.iter().copied().cycle().take(16_380).collect();
        let one = frame(CONTINUATION, 0, 1, &payload);
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            for _ in 0..1024 {
                if w.write_all(&one).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got))
            .await
            .is_ok();
        let sent = writer.await.unwrap();
        let frames = parse_frames(&got);
        let reason = goaway(&frames);
        let grew = proc_status_kib(pid, "VmHWM:").saturating_sub(hwm0);
        eprintln!(
            "h2 CONTINUATION flood: {sent} of 1024 frames of 16 KiB written, GOAWAY {reason:?}, \
             closed {closed}, VmHWM grew {grew} KiB"
        );
        assert!(closed, "the connection stayed open");
        assert_eq!(reason, Some(0xb), "GOAWAY(ENHANCE_YOUR_CALM) expected");
        assert!(
            grew < 16 << 10,
            "the node buffered the flood: VmHWM grew {grew} KiB"
        );

        // One header of 20 KiB, well-formed: the stream is answered 431.
        let c = client(attacker, addr).await;
        let mut c = c.ready().await.unwrap();
        let req = http::Request::get("http://test/")
            .header("x-big", "b".repeat(20 << 10))
            .body(())
            .unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = resp.await.expect("a response");
        assert_eq!(resp.status().as_u16(), 431);
        eprintln!("h2 header block of 20 KiB: 431");
        assert_eq!(h2_healthy_p50(&healthy, 10).await.as_secs(), 0);
    });
}

/// SETTINGS and PING floods from a client that never reads the answers: h2 keeps at most one
/// PING answer and one SETTINGS acknowledgement pending and stops reading while it cannot send
/// them, so the flood is held back by TCP instead of growing the node's memory (it costs the
/// node CPU at the rate the attacker sends, a few hundred thousand frames a second).
#[test]
fn settings_and_ping_floods_stay_bounded() {
    let node = hello_node("abuse-h2-ping", "");
    let (addr, pid) = (node.addr, node.child.id());
    let attacker = Ipv4Addr::new(127, 0, 0, 62);
    rt().block_on(async {
        let healthy = client(HEALTHY, addr).await;
        let quiet = h2_healthy_p50(&healthy, 10).await;
        let hwm0 = proc_status_kib(pid, "VmHWM:");
        let cpu0 = cpu_ticks(pid);
        for (name, one) in [
            ("PING", frame(PING, 0, 0, &[7u8; 8])),
            ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
        ] {
            let s = raw_h2(attacker, addr).await;
            let (r, mut w) = s.into_split();
            let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
            let t0 = Instant::now();
            let mut frames = 0usize;
            let mut stalls = 0;
            let mut ended = "still open";
            while t0.elapsed() < Duration::from_secs(3) {
                match tokio::time::timeout(Duration::from_millis(500), w.write_all(&batch)).await {
                    Ok(Ok(())) => frames += 4096,
                    Ok(Err(_)) => {
                        ended = "closed by the node";
                        break;
                    }
                    Err(_) => stalls += 1,
                }
            }
            let during = h2_healthy_p50(&healthy, 10).await;
            drop(r);
            eprintln!(
                "h2 {name} flood (never reading the answers): {frames} frames written in 3 s, \
                 {stalls} writes held back 500 ms by TCP, {ended}; healthy h2 p50 {during:?} \
                 (quiet {quiet:?})"
            );
        }
        let grew = proc_status_kib(pid, "VmHWM:").saturating_sub(hwm0);
        let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
        eprintln!("h2 SETTINGS/PING floods: node VmHWM grew {grew} KiB, CPU {cpu:.2} s");
        assert!(grew < 16 << 10, "VmHWM grew {grew} KiB");
        assert_eq!(h2_healthy_p50(&healthy, 10).await.as_secs(), 0);
    });
}

/// Streams past `[http] max_concurrent_streams` are refused (RST_STREAM REFUSED_STREAM) while
/// those within it are served; an HTTP/2 connection that sends nothing after its preface is
/// sent a GOAWAY at `header_read_timeout_ms`, and one idle after its requests at
/// `idle_timeout_ms` (and cut a second later if it does not close).
#[test]
fn h2_streams_are_capped_and_idle_connections_get_a_goaway() {
    let node = hello_node(
        "abuse-h2-streams",
        "max_concurrent_streams = 4\nheader_read_timeout_ms = 1000\nidle_timeout_ms = 1500\n",
    );
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 63);
    rt().block_on(async {
        // Eight POSTs whose bodies never come: the echo app answers each at once and then
        // waits, so all four allowed streams stay open.
        let mut s = raw_h2(attacker, addr).await;
        let mut post = vec![0x83, 0x86, 0x04, 5];
        post.extend_from_slice(b"/echo");
        post.extend_from_slice(&[0x01, 4]);
        post.extend_from_slice(b"test");
        for id in (1..=15).step_by(2) {
            s.write_all(&frame(HEADERS, END_HEADERS, id, &post))
                .await
                .unwrap();
        }
        let (got, _) = read_until_closed(&mut s, Duration::from_millis(1500)).await;
        let frames = parse_frames(&got);
        let mut answered: Vec<u32> = frames
            .iter()
            .filter(|f| f.kind == HEADERS)
            .map(|f| f.stream)
            .collect();
        answered.sort();
        let mut refused: Vec<u32> = frames
            .iter()
            .filter(|f| {
                f.kind == RST_STREAM
                    && u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                        == REFUSED_STREAM
            })
            .map(|f| f.stream)
            .collect();
        refused.sort();
        eprintln!(
            "h2 streams: answered {answered:?}, refused {refused:?} (max_concurrent_streams = 4)"
        );
        assert_eq!(answered, vec![1, 3, 5, 7]);
        assert_eq!(refused, vec![9, 11, 13, 15]);
        drop(s);

        // Nothing after the preface: closed at the header timeout, with a GOAWAY.
        let mut s = raw_h2(attacker, addr).await;
        let t0 = Instant::now();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let silent = t0.elapsed();
        assert!(closed, "a silent h2 connection stayed open");
        assert_eq!(goaway(&parse_frames(&got)), Some(0));
        // One request, then idle: closed at the idle timeout, with a GOAWAY.
        let mut s = raw_h2(attacker, addr).await;
        s.write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &get_block("/"),
        ))
        .await
        .unwrap();
        let t0 = Instant::now();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let idle = t0.elapsed();
        let frames = parse_frames(&got);
        assert!(closed, "an idle h2 connection stayed open");
        assert!(frames.iter().any(|f| f.kind == HEADERS && f.stream == 1));
        assert_eq!(goaway(&frames), Some(0));
        eprintln!("h2 idle: silent connection closed after {silent:?}, idle one after {idle:?}");
        // The GOAWAY goes out at the deadline; h2 then waits for the client to acknowledge its
        // PING, which this one never does: the node cuts the connection a second later.
        assert!(
            silent >= Duration::from_millis(900) && silent < Duration::from_millis(3000),
            "{silent:?}"
        );
        assert!(
            idle >= Duration::from_millis(1400) && idle < Duration::from_millis(3500),
            "{idle:?}"
        );
        node.wait_log("idle close", |v| {
            msg(v).contains("[http] idle_timeout_ms (1500 ms)")
        });
        let healthy = client(HEALTHY, addr).await;
        assert_eq!(h2_healthy_p50(&healthy, 5).await.as_secs(), 0);
    });
}

/// A zero flow-control window: the client sets `SETTINGS_INITIAL_WINDOW_SIZE` to 0 and never
/// sends a WINDOW_UPDATE, so no response body can be sent. Each response makes no progress:
/// the app blocks on its writes (hyper takes nothing from it) until its wall-clock limit, and
/// the connection, with the memory and request slots it held, is cut at the stall deadline
/// (`idle_timeout_ms`, at least the wall-clock limit and a second). A healthy HTTP/2 client is
/// served meanwhile, and the attacker's address is served again afterwards.
#[test]
fn h2_with_a_zero_window_is_cut_at_the_stall_deadline() {
    let node = hello_node("abuse-h2-zero-window", "idle_timeout_ms = 2000\n");
    let (addr, pid) = (node.addr, node.child.id());
    let attacker = Ipv4Addr::new(127, 0, 0, 64);
    let hwm_before = proc_status_kib(pid, "VmHWM:");
    rt().block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut s = connect_from(attacker, addr).await.unwrap();
            let mut hello = PREFACE.to_vec();
            // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
            hello.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
            for id in (1..=15).step_by(2) {
                hello.extend(frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    id,
                    &get_block("/firehose?mib=64"),
                ));
            }
            s.write_all(&hello).await.unwrap();
            conns.push(s);
        }
        let t0 = Instant::now();
        let healthy = client(HEALTHY, addr).await;
        let during = h2_healthy_p50(&healthy, 20).await;
        let readers: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(12)).await;
                    (parse_frames(&got), closed, t0.elapsed())
                })
            })
            .collect();
        for r in readers {
            let (frames, closed, took) = r.await.unwrap();
            let answered = frames
                .iter()
                .filter(|f| f.kind == HEADERS && f.stream % 2 == 1)
                .count();
            let data: usize = frames
                .iter()
                .filter(|f| f.kind == 0)
                .map(|f| f.payload.len())
                .sum();
            assert!(closed, "a zero-window connection was held {took:?}");
            assert_eq!(data, 0, "DATA sent past a zero window");
            assert!(answered > 0, "no response headers");
            // The stall deadline is max(2 s, 3 s + 1 s) from the requests; a second of slack.
            assert!(
                took >= Duration::from_millis(3500) && took < Duration::from_secs(8),
                "cut after {took:?}"
            );
        }
        let cut = t0.elapsed();
        node.wait_log("stall close", |v| {
            msg(v).starts_with("closed connections whose responses made no progress")
        });
        let hwm = proc_status_kib(pid, "VmHWM:");
        eprintln!(
            "h2 zero window: 4 connections x 8 firehose streams cut by {cut:?} (stall deadline \
             4 s); healthy h2 p50 {during:?} meanwhile; node VmHWM {} -> {} MiB",
            hwm_before / 1024,
            hwm / 1024
        );
        // Nothing of the 32 × 64 MiB responses is buffered: the apps block on their writes.
        assert!(
            hwm < hwm_before + 128 * 1024,
            "the node's peak memory rose by {} KiB",
            hwm - hwm_before
        );
        let again = client(attacker, addr).await;
        assert_eq!(h2_healthy_p50(&again, 3).await.as_secs(), 0);
    });
}
