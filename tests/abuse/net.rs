//! Connection-level abuse: slow clients, connection floods, oversized and malformed HTTP/1.1
//! and HTTP/2, rapid reset.
//!
//! Every test attacks a real node on loopback and checks, beside the refusal, that a healthy
//! client (from its own loopback address: the whole of 127.0.0.0/8 is local, so each party
//! binds its own source address) is answered during and after the attack. The figures each test
//! prints (`--nocapture`) go into `docs/reliability.md`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

mod admin;
mod http2;
mod malformed;

/// The healthy tenant's client address.
const HEALTHY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn msg(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// A connection to `to` from the loopback address `src`.
async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src.into(), 0))?;
    s.connect(to).await
}

/// `n` connections from `src`, opened concurrently (a few at a time), none sending anything.
async fn open_many(src: Ipv4Addr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(tokio::spawn(connect_from(src, to)));
        if pending.len() == 64 || i + 1 == n {
            for p in pending.drain(..) {
                out.push(p.await.unwrap().expect("connect"));
            }
        }
    }
    out
}

/// Reads until the peer closes (EOF or reset) or `within` passes: what arrived, and whether
/// the connection was closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Splits `conns` into those the node holds open (nothing arrives within `wait`) and the
/// responses of those it closed.
async fn held_or_refused(conns: Vec<TcpStream>, wait: Duration) -> (Vec<TcpStream>, Vec<String>) {
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let (got, closed) = read_until_closed(&mut s, wait).await;
                (s, got, closed)
            })
        })
        .collect();
    let (mut held, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        let (s, got, closed) = t.await.unwrap();
        if closed {
            refused.push(String::from_utf8_lossy(&got).into_owned());
        } else {
            assert!(got.is_empty(), "an open connection was sent {got:?}");
            held.push(s);
        }
    }
    (held, refused)
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(resp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(resp.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 client connection from `src`.
async fn client_from(src: Ipv4Addr, to: SocketAddr) -> Sender {
    let stream = connect_from(src, to).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// GET `path` on `sender`: status, body and how long it took.
async fn send(sender: &mut Sender, path: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    sender.ready().await.expect("connection ready");
    let req = hyper::Request::get(path)
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        start.elapsed(),
    )
}

/// One GET of `path` from `src` on a fresh connection: status and latency, or the transport
/// error.
async fn fresh_get(src: Ipv4Addr, to: SocketAddr, path: &str) -> Result<(u16, Duration), String> {
    let start = Instant::now();
    let mut s = connect_from(src, to).await.map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    if !closed {
        return Err("no complete answer within 10 s".into());
    }
    let status = status_of(&got).ok_or_else(|| format!("not an HTTP response: {got:?}"))?;
    Ok((status, start.elapsed()))
}

/// Retries [`fresh_get`] for up to 5 s until it answers 200 (the node frees slots as it sees
/// closed connections, a moment after the client closed them).
async fn served_again(src: Ipv4Addr, to: SocketAddr) -> Duration {
    let start = Instant::now();
    loop {
        match fresh_get(src, to, "/").await {
            Ok((200, _)) => return start.elapsed(),
            other if start.elapsed() > Duration::from_secs(5) => {
                panic!("the healthy client is still not served after the attack: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `n` requests on the healthy keep-alive connection, every one 200: their median latency.
async fn healthy_p50(sender: &mut Sender, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body, took) = send(sender, "/").await;
        assert_eq!((status, body.as_str()), (200, "Hello, World!\n"));
        times.push(took);
    }
    times.sort();
    times[n / 2]
}

/// The process's user + system CPU time, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn hello_node(name: &str, http: &str) -> NodeProc {
    let dir = test_dir(name);
    config(
        &node_data_dir(),
        TEST_LIMITS,
        &[
            App::new("hello", "hello", &["/"]),
            App::new("echo", "echo", &["/echo"]),
            App::new("firehose", "firehose", &["/firehose"]),
            App::new("sleepy", "sleepy", &["/sleepy"]),
        ],
    )
    .with(&format!("[http]\n{http}"))
    .start(&dir)
}

/// Thousands of connections: past `[http] max_connections_per_client` one client's further
/// connections get a `503` naming the cause and are closed, and other clients are still
/// admitted; past `max_connections` every new connection is shed the same way while those
/// already open (the healthy client's keep-alive connection, and the attacker's own) are still
/// served; once the flood closes, new connections are served again.
#[test]
fn a_connection_flood_is_shed_past_the_caps_while_admitted_connections_are_served() {
    let node = hello_node(
        "abuse-conn-flood",
        "max_connections = 1000\nmax_connections_per_client = 500\nheader_read_timeout_ms = 20000\n",
    );
    let (addr, pid) = (node.addr, node.child.id());
    let attacker_a = Ipv4Addr::new(127, 0, 0, 10);
    let attacker_b = Ipv4Addr::new(127, 0, 0, 11);
    let latecomer = Ipv4Addr::new(127, 0, 0, 12);
    let rss_before = proc_status_kib(pid, "VmRSS:");
    rt().block_on(async {
        let mut keep = client_from(HEALTHY, addr).await;
        let quiet = healthy_p50(&mut keep, 20).await;

        // One client opens 1500 connections: 500 are held, 1000 refused by the per-client cap.
        let cpu0 = cpu_ticks(pid);
        let flood_a = open_many(attacker_a, addr, 1500).await;
        let flood_cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
        let (mut held_a, refused_a) = held_or_refused(flood_a, Duration::from_millis(1500)).await;
        assert_eq!((held_a.len(), refused_a.len()), (500, 1000));
        for r in &refused_a {
            assert_eq!(status_of(r.as_bytes()), Some(503), "{r}");
            assert!(
                r.contains("connection: close") && r.contains("retry-after: 1"),
                "{r}"
            );
            assert!(
                r.contains("this client has too many connections open"),
                "{r}"
            );
        }
        let line = node.wait_log("per-client refusal", |v| {
            msg(v).contains("[http] max_connections_per_client (500)")
        });
        assert_eq!(line["client"], attacker_a.to_string());
        // Another client is not locked out.
        let (status, _) = fresh_get(HEALTHY, addr, "/").await.unwrap();
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;

        // A second client fills the node: 499 more fit beside the 500 and the healthy one.
        let flood_b = open_many(attacker_b, addr, 600).await;
        let (held_b, refused_b) = held_or_refused(flood_b, Duration::from_millis(1500)).await;
        assert_eq!((held_b.len(), refused_b.len()), (499, 101));
        for r in &refused_b {
            assert_eq!(status_of(r.as_bytes()), Some(503), "{r}");
            assert!(
                r.contains("the node is at its limit of open connections"),
                "{r}"
            );
        }
        node.wait_log("node-wide refusal", |v| {
            msg(v).contains("[http] max_connections (1000)")
        });
        // A newcomer is shed, cheaply, while the node is full...
        let mut late = connect_from(latecomer, addr).await.unwrap();
        let (got, closed) = read_until_closed(&mut late, Duration::from_secs(2)).await;
        assert!(closed && status_of(&got) == Some(503), "{got:?}");
        // ...and those already admitted are served: the healthy keep-alive connection, and an
        // attacker's connection that finally sends a request.
        let full = healthy_p50(&mut keep, 20).await;
        let s = &mut held_a[0];
        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_closed(s, Duration::from_secs(5)).await;
        assert_eq!(
            status_of(&got),
            Some(200),
            "{}",
            String::from_utf8_lossy(&got)
        );
        let rss_full = proc_status_kib(pid, "VmRSS:");

        drop(held_a);
        drop(held_b);
        let back = served_again(latecomer, addr).await;
        let after = healthy_p50(&mut keep, 20).await;
        let hwm = proc_status_kib(pid, "VmHWM:");
        eprintln!(
            "connection flood: 2101 connections opened, 1000 held; node CPU {flood_cpu:.2} s to \
             accept 1500 and shed 1000 of them; healthy p50 quiet {quiet:?}, node full \
             {full:?}, after {after:?}; new connections served again {back:?} after the flood \
             closed; node RSS {} MiB before, {} MiB with 1000 held, VmHWM {} MiB",
            rss_before / 1024,
            rss_full / 1024,
            hwm / 1024
        );
        // 1000 idle connections cost the node little memory (hyper allocates buffers lazily).
        assert!(
            hwm < rss_before + 64 * 1024,
            "the node's peak memory rose by {} KiB with 1000 connections held",
            hwm - rss_before
        );
    });
}

/// With its file descriptors exhausted, `accept` fails with EMFILE and the listener stays
/// readable: the node backs off (no hot loop, one rate-limited warning), keeps serving the
/// connections it has, and accepts again once descriptors are free.
#[test]
fn out_of_file_descriptors_the_node_backs_off_and_keeps_serving() {
    let node = hello_node(
        "abuse-emfile",
        "max_connections = 4000\nmax_connections_per_client = 4000\nheader_read_timeout_ms = 30000\n",
    );
    let (addr, pid) = (node.addr, node.child.id());
    let attacker = Ipv4Addr::new(127, 0, 0, 20);
    rt().block_on(async {
        let mut keep = client_from(HEALTHY, addr).await;
        let quiet = healthy_p50(&mut keep, 10).await;
        let limit = open_fds(pid) + 32;
        let out = std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={limit}:{limit}"))
            .output()
            .expect("prlimit (util-linux)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // More connections than descriptors: the kernel completes them all (they wait in the
        // listen backlog), the node accepts 32 and then gets EMFILE.
        let t = Instant::now();
        let flood = open_many(attacker, addr, 1000).await;
        let opened = t.elapsed();
        node.wait_log("accept failure", |v| {
            msg(v).starts_with("accepting connections failed; backing off")
        });
        let warned = |node: &NodeProc| {
            node.log_json()
                .iter()
                .filter(|v| msg(v).starts_with("accepting connections failed"))
                .count()
        };
        let (cpu0, warn0, t0) = (cpu_ticks(pid), warned(&node), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu1, warn1) = (cpu_ticks(pid), warned(&node));
        let secs = t0.elapsed().as_secs_f64();
        let busy = (cpu1 - cpu0) as f64 / 100.0 / secs;
        assert!(
            open_fds(pid) >= limit - 1,
            "the node is not out of descriptors"
        );
        // The connection it holds is served meanwhile.
        let during = healthy_p50(&mut keep, 10).await;
        eprintln!(
            "EMFILE: 1000 connections opened in {opened:?}; node at its descriptor limit \
             ({limit}) for {secs:.1} s used {:.1}% of a core, logged {} warning(s); healthy p50 \
             quiet {quiet:?}, during {during:?}",
            busy * 100.0,
            warn1 - warn0
        );
        assert!(
            busy < 0.1,
            "the node spins on accept: {:.0}% of a core",
            busy * 100.0
        );
        assert!(warn1 - warn0 <= 1, "the accept warning is not rate-limited");
        // The listen backlog holds the burst: connecting did not wait for SYN retransmissions.
        assert!(
            opened < Duration::from_secs(1),
            "connecting took {opened:?}"
        );

        drop(flood);
        let back = served_again(HEALTHY, addr).await;
        eprintln!("EMFILE: a new connection was served {back:?} after the flood closed");
        assert_eq!(healthy_p50(&mut keep, 5).await.as_secs(), 0);
    });
}

/// Slowloris: heads trickled a byte every 100 ms are cut at `[http] header_read_timeout_ms` in
/// total (the timer is not reset by each byte), and so are connections that send nothing at
/// all, or a partial HTTP/2 preface (hyper's own timer starts only once the protocol is known:
/// the node times the first request from the accept), and keep-alive connections idle after a
/// response; the healthy client is served throughout.
#[test]
fn slow_and_idle_connections_are_cut_at_the_header_timeout() {
    let node = hello_node(
        "abuse-slowloris",
        "header_read_timeout_ms = 1000\nidle_timeout_ms = 5000\n",
    );
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 30);
    rt().block_on(async {
        let start_kind = |kind: &'static str| {
            tokio::spawn(async move {
                let mut s = connect_from(attacker, addr).await.unwrap();
                let t0 = Instant::now();
                let mut from = t0;
                match kind {
                    "trickle" => {
                        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: ")
                            .await
                            .unwrap();
                        loop {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if s.write_all(b"a").await.is_err() {
                                break;
                            }
                            let mut b = [0u8; 64];
                            if let Ok(r) =
                                tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
                            {
                                assert!(matches!(r, Ok(0) | Err(_)), "answered {r:?}");
                                break;
                            }
                            if t0.elapsed() > Duration::from_secs(10) {
                                panic!("a trickling head was held for 10 s");
                            }
                        }
                        return (kind, t0.elapsed(), Vec::new());
                    }
                    "silent" => {}
                    "h2-preface" => s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
                    "keep-alive" => {
                        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
                            .await
                            .unwrap();
                        let mut got = Vec::new();
                        let mut b = [0u8; 1024];
                        while !String::from_utf8_lossy(&got).contains("Hello, World!") {
                            let n = s.read(&mut b).await.unwrap();
                            assert!(n > 0, "closed before the answer");
                            got.extend_from_slice(&b[..n]);
                        }
                        from = Instant::now();
                    }
                    _ => unreachable!(),
                }
                let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
                assert!(closed, "{kind}: still open after 10 s");
                (kind, from.elapsed(), got)
            })
        };
        let mut attacks = Vec::new();
        for kind in ["trickle", "silent", "h2-preface", "keep-alive"] {
            for _ in 0..20 {
                attacks.push(start_kind(kind));
            }
        }
        // The healthy client meanwhile, on fresh connections.
        let mut healthy = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            let (status, took) = fresh_get(HEALTHY, addr, "/").await.unwrap();
            assert_eq!(status, 200);
            healthy.push(took);
        }
        let mut closed_after: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
        for a in attacks {
            let (kind, after, got) = a.await.unwrap();
            assert!(
                got.is_empty(),
                "{kind}: answered {:?}",
                String::from_utf8_lossy(&got)
            );
            closed_after.entry(kind).or_default().push(after);
        }
        for (kind, times) in &closed_after {
            let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
            eprintln!(
                "slowloris: {} {kind} connections closed after {min:?} to {max:?}",
                times.len()
            );
            assert!(
                *min >= Duration::from_millis(900) && *max <= Duration::from_millis(2500),
                "{kind}: closed after {min:?}..{max:?}, not at the 1000 ms header timeout"
            );
        }
        healthy.sort();
        eprintln!(
            "slowloris: healthy p50 {:?} over {} requests meanwhile",
            healthy[healthy.len() / 2],
            healthy.len()
        );
        node.wait_log("header timeout", |v| {
            msg(v).contains("[http] header_read_timeout_ms (1000 ms)")
        });
        served_again(HEALTHY, addr).await;
    });
}

/// A request body trickled a byte every 100 ms never trips a between-bytes timeout, but the
/// request is bounded as a whole by `[limits] wall_time_ms` (it holds its request slot only
/// that long: the app's run, body reading included, is cut there); a body the app does not
/// read ends with the response (hyper closes the connection rather than drain it).
#[test]
fn a_trickled_body_is_cut_at_the_requests_wall_clock_limit() {
    let node = hello_node("abuse-body-trickle", "");
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 40);
    rt().block_on(async {
        let trickle = |path: &'static str| {
            tokio::spawn(async move {
                let mut s = connect_from(attacker, addr).await.unwrap();
                let t0 = Instant::now();
                s.write_all(
                    format!("POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 100000\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let (mut r, mut w) = s.into_split();
                let writer = tokio::spawn(async move {
                    while w.write_all(b"x").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    match tokio::time::timeout(Duration::from_secs(15), r.read(&mut b)).await {
                        Err(_) => panic!("{path}: a trickled body held the request for 15 s"),
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
                    }
                }
                writer.abort();
                (t0.elapsed(), String::from_utf8_lossy(&got).into_owned())
            })
        };
        let echo: Vec<_> = (0..4).map(|_| trickle("/echo")).collect();
        let unread = trickle("/");
        let mut keep = client_from(HEALTHY, addr).await;
        let during = healthy_p50(&mut keep, 20).await;
        let (took, got) = unread.await.unwrap();
        assert_eq!(status_of(got.as_bytes()), Some(200), "{got}");
        assert!(
            took < Duration::from_secs(2),
            "an unread body held the connection {took:?}"
        );
        for e in echo {
            let (took, got) = e.await.unwrap();
            // The echo app answers 200 before reading; its body is cut at the wall-clock limit.
            assert_eq!(status_of(got.as_bytes()), Some(200), "{got}");
            assert!(
                took >= Duration::from_millis(2900) && took < Duration::from_millis(5000),
                "cut after {took:?}, not at the 3000 ms wall-clock limit"
            );
            eprintln!("body trickle: cut after {took:?} (wall_time_ms = 3000)");
        }
        node.wait_log("wall-clock fault", |v| {
            v["app"] == "echo" && v["fault"] == "wall_timeout"
        });
        eprintln!("body trickle: healthy p50 {during:?} meanwhile");
        assert_eq!(healthy_p50(&mut keep, 5).await.as_secs(), 0);
    });
}

/// A client that stops reading its response: hyper takes no more of the body while it cannot
/// write, so without a deadline the connection (and what it buffered) would be held forever.
/// With no response progress for `idle_timeout_ms` (at least the wall-clock limit and a second)
/// the node cuts the connection; the healthy client is served meanwhile.
#[test]
fn a_client_that_stops_reading_its_response_is_cut() {
    let node = hello_node("abuse-slow-read", "idle_timeout_ms = 2000\n");
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 41);
    rt().block_on(async {
        let mut readers = Vec::new();
        for _ in 0..8 {
            let mut s = connect_from(attacker, addr).await.unwrap();
            s.write_all(b"GET /firehose?mib=64 HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .unwrap();
            let mut first = vec![0u8; 64 << 10];
            s.read_exact(&mut first).await.unwrap();
            assert_eq!(status_of(&first), Some(200));
            readers.push(s);
        }
        let t0 = Instant::now();
        let mut keep = client_from(HEALTHY, addr).await;
        let during = healthy_p50(&mut keep, 20).await;
        // The wall-clock limit (3 s) ends the app blocked on its write; the stall deadline
        // (max(2 s, 3 s + 1 s)) then ends the connection, while the client still reads nothing.
        node.wait_log("stall close", |v| {
            msg(v).starts_with("closed connections whose responses made no progress")
        });
        let cut = t0.elapsed();
        // Each response is dropped (its access line written, "incomplete") with its connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        let dropped = || {
            node.log_json()
                .iter()
                .filter(|v| v["target"] == "access" && v["path"] == "/firehose")
                .map(|v| v["outcome"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        while dropped().len() < 8 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all = t0.elapsed();
        assert_eq!(
            dropped(),
            vec!["incomplete"; 8],
            "not every stalled response was cut"
        );
        for mut s in readers {
            let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            assert!(
                closed && rest.len() < 64 << 20,
                "{} bytes, closed {closed}",
                rest.len()
            );
        }
        eprintln!(
            "slow read: 8 connections that stopped reading cut {cut:?} to {all:?} after they \
             stopped (stall deadline 4 s); healthy p50 {during:?} meanwhile"
        );
        assert!(cut < Duration::from_secs(6), "cut after {cut:?}");
        // (The healthy keep-alive connection has itself been idle past 2 s by now.)
        served_again(HEALTHY, addr).await;
    });
}

/// A log sink that stops reading (the node's stderr is a pipe nobody reads: a stuck
/// collector, a paused terminal) does not stop the node: its log lines are written by a thread
/// of their own, through a buffer, so requests are answered while the pipe is full, and every
/// line is written once the sink reads again. (Before, each thread that logged blocked on the
/// full pipe: under a tenant's flood of refused requests, every tenant waited for the log.)
#[test]
fn a_log_sink_that_stops_reading_does_not_stop_the_node() {
    use std::sync::atomic::Ordering;
    let node = hello_node("abuse-log-stall", "");
    let before = node.log_json().len();
    node.logs_paused.store(true, Ordering::Relaxed);
    // Far more access lines than a pipe holds (64 KiB, about 200 lines).
    let (clients, each) = (4, 500);
    let t0 = Instant::now();
    let answered: Vec<usize> = (0..clients)
        .map(|_| {
            let url = node.url("/");
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                // A client stops at its first request left unanswered.
                (0..each)
                    .take_while(|_| match agent.get(&url).call() {
                        Ok(r) => r.status() == 200 && r.into_string().is_ok(),
                        Err(_) => false,
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let took = t0.elapsed();
    let read_while_paused = node.log_json().len() - before;
    node.logs_paused.store(false, Ordering::Relaxed);
    assert_eq!(
        answered,
        vec![each; clients],
        "requests went unanswered while the node's stderr was not read"
    );
    // Nothing was lost: every request's access line arrives once stderr is read again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let access = || {
        node.log_json()
            .iter()
            .filter(|v| v["target"] == "access" && v["path"] == "/")
            .count()
    };
    while access() < clients * each && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "log sink stalled: {} requests answered in {took:?} with the node's stderr unread \
         ({read_while_paused} lines read meanwhile, from the reader's own buffer); {} access \
         lines once it read again",
        clients * each,
        access()
    );
    assert_eq!(access(), clients * each, "access lines were lost");
    assert!(
        node.log_json()
            .iter()
            .all(|v| !msg(v).starts_with("log lines were dropped")),
        "lines were dropped though the buffer holds them"
    );
}

/// The connection driver replaced hyper-util's graceful shutdown: on SIGTERM the node stops
/// accepting, lets the request in flight finish (its body still arriving), closes the idle
/// connection, and exits.
#[test]
fn on_shutdown_requests_in_flight_finish_and_idle_connections_close() {
    let mut node = hello_node("abuse-shutdown", "");
    let addr = node.addr;
    rt().block_on(async {
        let mut idle = client_from(HEALTHY, addr).await;
        assert_eq!(send(&mut idle, "/").await.0, 200);
        let mut s = connect_from(HEALTHY, addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\nhello")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(status_of(&head), Some(200));
        let term = std::process::Command::new("kill")
            .args(["-TERM", &node.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        node.wait_log("shutdown", |v| {
            msg(v).starts_with("zeroproxy stopped accepting")
        });
        // The idle connection is closed (the connection tasks learn of the shutdown as the
        // listener stops, so on a loaded machine the close may trail the log line: wait for it,
        // while the request in flight still waits for its body); no new connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !idle.is_closed() {
            assert!(
                Instant::now() < deadline,
                "the idle connection stayed open 10 s into the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            idle.ready().await.is_err(),
            "the idle connection stayed open"
        );
        assert!(fresh_get(HEALTHY, addr, "/").await.is_err());
        // The request in flight gets the rest of its body and finishes.
        s.write_all(b" node").await.unwrap();
        let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(closed, "{rest}");
        assert!(
            rest.ends_with("5\r\nhello\r\n5\r\n node\r\n0\r\n\r\n"),
            "{rest}"
        );
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the node did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One client's requests in flight are capped over all its connections (and HTTP/2 streams):
/// past `[http] max_concurrent_requests_per_client` it gets `503` naming the cause, while
/// another client is served.
#[test]
fn one_client_cannot_take_every_request_slot() {
    let node = hello_node(
        "abuse-client-requests",
        "max_concurrent_requests_per_client = 3\n",
    );
    let addr = node.addr;
    let attacker = Ipv4Addr::new(127, 0, 0, 70);
    rt().block_on(async {
        let busy: Vec<_> = (0..3)
            .map(|_| tokio::spawn(async move { fresh_get(attacker, addr, "/sleepy").await }))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Over HTTP/1.1 and HTTP/2 alike, the fourth is refused.
        let mut s = connect_from(attacker, addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got);
        assert_eq!(status_of(&got), Some(503), "{text}");
        assert!(
            text.contains("this client has too many requests in flight"),
            "{text}"
        );
        let h2 = http2::client(attacker, addr).await;
        let (status, body, _) = http2::get(&h2, "/").await.unwrap();
        assert_eq!(status, 503, "{body}");
        node.wait_log("per-client request refusal", |v| {
            msg(v).contains("[http] max_concurrent_requests_per_client (3)")
        });
        // Another client is served meanwhile.
        let mut keep = client_from(HEALTHY, addr).await;
        let during = healthy_p50(&mut keep, 10).await;
        for b in busy {
            assert_eq!(b.await.unwrap().map(|r| r.0), Ok(504));
        }
        // Its slots are back once its requests ended.
        let (status, _) = fresh_get(attacker, addr, "/").await.unwrap();
        assert_eq!(status, 200);
        eprintln!("per-client requests: 3 held, the 4th refused (503); healthy p50 {during:?}");
    });
}
