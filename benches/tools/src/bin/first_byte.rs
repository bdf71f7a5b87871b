//! `first-byte URL SINCE_NS [TIMEOUT_MS]`: waits until `URL` answers a `GET` with a 2xx status
//! and prints the milliseconds from `SINCE_NS` (nanoseconds since the Unix epoch, as
//! `date +%s%N` prints them) to the first byte of that answer.
//!
//! `benches/run.sh` uses it for "deploy → first byte" and "restart → first byte": it records the
//! time, starts the deploy or the node, and runs this, which polls every 200 µs (a refused
//! connection or a non-2xx answer is retried) — finer than a loop of `curl` processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Splits `http://HOST:PORT/PATH` into the socket address, the host header and the path.
fn parse(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` resolves to no address"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// One attempt: `Some(true)` for a 2xx answer, `Some(false)` for another answer, `None` when
/// nothing answered.
fn attempt(addr: &SocketAddr, host: &str, path: &str) -> Option<(bool, u128)> {
    let mut stream = TcpStream::connect_timeout(addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    let mut got = 0;
    let mut first = None;
    while got < head.len() {
        let n = stream.read(&mut head[got..]).ok()?;
        if n == 0 {
            return None;
        }
        first.get_or_insert_with(now_ns);
        got += n;
    }
    let ok = head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2");
    Some((ok, first?))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(since)) = (args.first(), args.get(1)) else {
        eprintln!("usage: first-byte URL SINCE_NS [TIMEOUT_MS]");
        return ExitCode::from(2);
    };
    let Ok(since) = since.parse::<u128>() else {
        eprintln!("error: SINCE_NS `{since}` is not a number of nanoseconds (use `date +%s%N`)");
        return ExitCode::from(2);
    };
    let timeout_ms = match args.get(2).map(|t| t.parse::<u128>()) {
        None => 30_000,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            eprintln!("error: TIMEOUT_MS must be a whole number of milliseconds");
            return ExitCode::from(2);
        }
    };
    let (addr, host, path) = match parse(url) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    loop {
        if let Some((true, first)) = attempt(&addr, &host, &path) {
            println!("{:.2}", first.saturating_sub(since) as f64 / 1e6);
            return ExitCode::SUCCESS;
        }
        if now_ns().saturating_sub(since) > timeout_ms * 1_000_000 {
            eprintln!("error: {url} gave no 2xx answer within {timeout_ms} ms");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
