//! `hotpath HELLO_WASM [--requests N] [--apps N] [--aot DIR]`: starts a node in this process (the real
//! `zero_node::Node`, every provider, on loopback), deploys the hello component as `--apps` apps
//! (`/app0`, `/app1`, …, default 1) and sends `--requests` GETs (default 200) to the last one
//! over one keep-alive connection, all on one thread (a current-thread tokio runtime: the
//! client, hyper, zeroproxy, the core and the guest run on it in turn).
//!
//! `benches/callgrind.sh` runs it under callgrind collecting only inside [`measured`], so that
//! the instruction count divided by the number of requests is the cost of one request through
//! the node, client included, start-up and warm-up excluded. `--aot DIR` keeps the compiled
//! component (and its key) in `DIR` across runs, so that only the first run compiles it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests sent before measuring (the first instantiations, connection set-up).
const WARMUP: usize = 20;

struct Args {
    hello: PathBuf,
    requests: usize,
    apps: usize,
    aot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut hello = None;
    let mut requests = 200;
    let mut apps = 1;
    let mut aot = None;
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{name} needs a positive whole number"))
        };
        match a.as_str() {
            "--requests" => requests = number("--requests")?,
            "--apps" => apps = number("--apps")?,
            "--aot" => aot = Some(PathBuf::from(args.next().ok_or("--aot needs a directory")?)),
            _ if a.starts_with("--") => return Err(format!("unknown option `{a}`")),
            _ => hello = Some(PathBuf::from(a)),
        }
    }
    let hello = hello.ok_or("give the hello component (guest/target/.../hello.wasm)")?;
    let hello = std::fs::canonicalize(&hello)
        .map_err(|e| format!("cannot read {}: {e}", hello.display()))?;
    Ok(Args {
        hello,
        requests,
        apps,
        aot,
    })
}

/// The node's configuration: a data directory under `dir`, ephemeral loopback ports, a small
/// pool (the address space reserved for the default pool is more than valgrind can map), and
/// `apps` copies of hello.
fn write_config(dir: &Path, args: &Args) -> std::io::Result<PathBuf> {
    let mut toml = format!(
        "[node]\ndata_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_requests = 16\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data")
    );
    // The steady state is measured: Cranelift's code from the start, never Winch's first tier.
    toml.push_str("[engine]\ntiered_compilation = false\n");
    if let Some(aot) = &args.aot {
        std::fs::create_dir_all(aot)?;
        let aot = std::fs::canonicalize(aot)?;
        toml.push_str(&format!(
            "artifact_dir = {:?}\nartifact_key = {:?}\n",
            aot.join("aot"),
            aot.join("artifact.key")
        ));
    }
    let (hello, apps) = (&args.hello, args.apps);
    for i in 0..apps {
        toml.push_str(&format!(
            "[[app]]\ntenant = \"bench\"\nname = \"app{i}\"\ncomponent = {hello:?}\nroutes = [\"/app{i}\"]\n"
        ));
    }
    let path = dir.join("zerocore.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Sends `n` requests for `path` on `stream`, reading each answer whole; fails on a non-200.
async fn requests(stream: &mut TcpStream, path: &str, n: usize) -> Result<(), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..n {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        buf.clear();
        read_response(stream, &mut buf).await?;
        if !buf.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "the node answered: {}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ));
        }
    }
    Ok(())
}

/// Reads one response (headers, then a `content-length` or chunked body) into `buf`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = complete(buf) {
            if end != buf.len() {
                return Err("the node sent more than one answer".into());
            }
            return Ok(());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the node closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the complete response at the start of `buf`, if it is complete.
fn complete(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if let Some(len) = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return (buf.len() >= head + len).then_some(head + len);
    }
    // Chunked: complete at the terminating zero-length chunk.
    let body = &buf[head..];
    let mut at = 0;
    loop {
        let line_end = body[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[at..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        at = line_end + 2 + size + 2;
        if body.len() < at {
            return None;
        }
        if size == 0 {
            return Some(head + at);
        }
    }
}

/// The measured part: callgrind collects inside this function only.
#[inline(never)]
fn measured(
    rt: &tokio::runtime::Runtime,
    stream: &mut TcpStream,
    path: &str,
    n: usize,
) -> Result<(), String> {
    rt.block_on(requests(stream, path, n))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: hotpath HELLO_WASM [--requests N] [--apps N]");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("zero-hotpath-{}", std::process::id()));
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = write_config(dir, args).map_err(|e| e.to_string())?;
    zero_node::init_logging(zero_node::LogFormat::Text, "warn").map_err(|e| e.to_string())?;
    let config = zero_node::NodeConfig::load(&config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let node = rt
        .block_on(zero_node::Node::start(config))
        .map_err(|e| format!("the node did not start: {e:#}"))?;
    let path = format!("/app{}", args.apps - 1);
    let mut stream = rt
        .block_on(TcpStream::connect(node.http_addr()))
        .map_err(|e| format!("cannot connect to the node: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    rt.block_on(requests(&mut stream, &path, WARMUP))?;
    measured(&rt, &mut stream, &path, args.requests)?;
    println!("requests: {}", args.requests);
    drop(stream);
    rt.block_on(node.shutdown())
        .map_err(|e| format!("shutdown failed: {e:#}"))
}
