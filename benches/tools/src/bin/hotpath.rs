//! `hotpath COMPONENT [--requests N] [--apps N] [--aot DIR] [--deploy ROUTE --grant CMD POLICY]
//! [--post PATH BODY] [--path PATH]`: starts a node in this process (the real `zero_node::Node`,
//! every provider, on loopback) and sends `--requests` GETs (default 200) over one keep-alive
//! connection, all on one thread (a current-thread tokio runtime: the client, hyper, zeroproxy,
//! the core and the guest run on it in turn).
//!
//! By default the component is configured as `--apps` apps (`/app0`, `/app1`, …, default 1)
//! and the GETs go to the last one. With `--deploy ROUTE --grant CMD POLICY` it is instead
//! signed with that one capability (e.g. `--grant /db '[["==", ".db", "todo"]]'`) by the owner
//! of a new tenant `bench` and deployed at `ROUTE` through the management API, as `zero sign`
//! and `zero deploy` do: the way a component that reaches a provider is served. `--post PATH
//! BODY` sends one POST before the warm-up (to seed a database), and `--path PATH` is the path
//! the GETs ask for (by default the last app's route).
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
    component: PathBuf,
    requests: usize,
    apps: usize,
    aot: Option<PathBuf>,
    /// Deployed through the management API at this route, signed with this grant.
    deploy: Option<(String, String, String)>,
    /// One POST (path, body) before the warm-up.
    post: Option<(String, String)>,
    /// The path of the measured GETs.
    path: Option<String>,
}

const USAGE: &str = "usage: hotpath COMPONENT [--requests N] [--apps N] [--aot DIR] \
                     [--deploy ROUTE --grant CMD POLICY] [--post PATH BODY] [--path PATH]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut component = None;
    let mut requests = 200;
    let mut apps = 1;
    let mut aot = None;
    let (mut route, mut grant, mut post, mut path) = (None, None, None, None);
    while let Some(a) = args.next() {
        let mut value = |what: &str| -> Result<String, String> {
            args.next().ok_or_else(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--deploy" => {
                route = Some(value("a route (e.g. /todos)")?);
                continue;
            }
            "--grant" => {
                grant = Some((value("a command and a policy")?, value("a policy (JSON)")?));
                continue;
            }
            "--post" => {
                post = Some((value("a path and a body")?, value("a body")?));
                continue;
            }
            "--path" => {
                path = Some(value("a path (e.g. /todos/1)")?);
                continue;
            }
            _ => {}
        }
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
            _ => component = Some(PathBuf::from(a)),
        }
    }
    let component = component.ok_or("give the component (e.g. guest/target/.../hello.wasm)")?;
    let component = std::fs::canonicalize(&component)
        .map_err(|e| format!("cannot read {}: {e}", component.display()))?;
    let deploy = match (route, grant) {
        (Some(route), Some((cmd, policy))) => {
            if apps != 1 {
                return Err("--deploy deploys one app; leave out --apps".into());
            }
            Some((route, cmd, policy))
        }
        (None, None) => None,
        _ => return Err("--deploy ROUTE and --grant CMD POLICY go together".into()),
    };
    Ok(Args {
        component,
        requests,
        apps,
        aot,
        deploy,
        post,
        path,
    })
}

/// The node's configuration: a data directory under `dir`, ephemeral loopback ports, a small
/// pool (the address space reserved for the default pool is more than valgrind can map), and
/// `apps` copies of the component (none when it is deployed through the management API).
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
    let component = &args.component;
    let apps = if args.deploy.is_some() { 0 } else { args.apps };
    for i in 0..apps {
        toml.push_str(&format!(
            "[[app]]\ntenant = \"bench\"\nname = \"app{i}\"\ncomponent = {component:?}\nroutes = [\"/app{i}\"]\n"
        ));
    }
    let path = dir.join("zerocore.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Sends `n` requests for `path` on `stream`, reading each answer whole; fails on a non-200.
async fn requests(stream: &mut TcpStream, path: &str, n: usize) -> Result<(), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    send(stream, &request, n, b"HTTP/1.1 200").await
}

/// Sends `request` `n` times on `stream`, reading each answer whole; fails on an answer that
/// does not start with `expect`.
async fn send(
    stream: &mut TcpStream,
    request: &str,
    n: usize,
    expect: &[u8],
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..n {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        buf.clear();
        read_response(stream, &mut buf).await?;
        if !buf.starts_with(expect) {
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
            eprintln!("error: {e}\n{USAGE}");
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
    let _log =
        zero_node::init_logging(zero_node::LogFormat::Text, "warn").map_err(|e| e.to_string())?;
    let config = zero_node::NodeConfig::load(&config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let node = rt
        .block_on(zero_node::Node::start(config))
        .map_err(|e| format!("the node did not start: {e:#}"))?;
    let mut path = format!("/app{}", args.apps - 1);
    if let Some((route, cmd, policy)) = &args.deploy {
        let (data, api) = (dir.join("data"), format!("http://{}", node.admin_addr()));
        path = route.clone();
        let (component, route) = (args.component.clone(), route.clone());
        let (cmd, policy) = (cmd.clone(), policy.clone());
        // The management client blocks; it runs on the blocking pool while this thread serves.
        rt.block_on(
            rt.spawn_blocking(move || deploy(&data, &api, &component, &route, &cmd, &policy)),
        )
        .map_err(|e| format!("the deploy task failed: {e}"))??;
    }
    let mut stream = rt
        .block_on(TcpStream::connect(node.http_addr()))
        .map_err(|e| format!("cannot connect to the node: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    if let Some((post, body)) = &args.post {
        let request = format!(
            "POST {post} HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        rt.block_on(send(&mut stream, &request, 1, b"HTTP/1.1 2"))
            .map_err(|e| format!("POST {post}: {e}"))?;
    }
    if let Some(p) = &args.path {
        path = p.clone();
    }
    rt.block_on(requests(&mut stream, &path, WARMUP))?;
    measured(&rt, &mut stream, &path, args.requests)?;
    println!("requests: {}", args.requests);
    drop(stream);
    rt.block_on(node.shutdown())
        .map_err(|e| format!("shutdown failed: {e:#}"))
}

/// A management call's error, saying which step failed.
fn fail(what: &'static str) -> impl Fn(anyhow::Error) -> String {
    move |e| format!("{what}: {e:#}")
}

/// Creates tenant `bench` with a new owner (signed by the development Admin key the node wrote
/// into `data`), signs `component` with the one grant `cmd` under `policy` as that owner, and
/// deploys it as app `bench` at `route`.
fn deploy(
    data: &Path,
    api: &str,
    component: &Path,
    route: &str,
    cmd: &str,
    policy: &str,
) -> Result<(), String> {
    let admin = zero_client::load_key(&data.join("admin.key"))
        .map_err(fail("the node's development Admin key"))?;
    let owner = zero_auth::Keypair::generate().map_err(|e| format!("a new key: {e}"))?;
    let delegation = zero_client::owner_delegation(&admin, "bench", owner.did(), None)
        .map_err(fail("the owner's delegation"))?;
    zero_client::Client::new(api, admin, vec![])
        .create_tenant("bench", owner.did())
        .map_err(fail("creating tenant bench"))?;
    let bytes = std::fs::read(component)
        .map_err(|e| format!("cannot read {}: {e}", component.display()))?;
    let grant = zero_client::Grant {
        command: cmd.to_owned(),
        policy: zero_client::parse_policy(policy).map_err(fail("--grant's policy"))?,
        expires_in: None,
    };
    let chain = std::slice::from_ref(&delegation);
    let signed = zero_client::sign_component(&bytes, &owner, chain, &grant)
        .map_err(fail("signing the component"))?;
    zero_client::Client::new(api, owner, vec![delegation])
        .deploy("bench", "bench", &[route.to_owned()], &[], &signed)
        .map_err(fail("deploying the component"))?;
    Ok(())
}
