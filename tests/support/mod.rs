//! Test support: starts real `zero` node processes on loopback ports and talks to them over real
//! HTTP. Nothing here mocks a zerocore component.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zero_auth::{Delegation, Keypair};
use zero_client::{Client, Grant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The `zero` binary under test.
pub fn zero_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zero"))
}

/// A guest artifact built by scripts/build-guests.sh.
pub fn guest_wasm(name: &str) -> PathBuf {
    let p = repo_root()
        .join("guest/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-guests.sh first",
        p.display()
    );
    p
}

/// The wasm32-wasip1 core module built by scripts/build-guests.sh.
pub fn guest_p1(name: &str) -> PathBuf {
    let p = repo_root()
        .join("guest/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-guests.sh first",
        p.display()
    );
    p
}

/// A preview1 probe of another toolchain (`c-probe`, `as-probe`) built by
/// scripts/build-wasip1.sh (which scripts/build-guests.sh runs).
pub fn guest_wasip1(name: &str) -> PathBuf {
    let p = repo_root()
        .join("guest/target/wasip1")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-guests.sh first",
        p.display()
    );
    p
}

/// A running node process; killed on drop.
pub struct NodeProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
    /// While set, the node's stderr is not read (a log sink that stopped: the pipe fills).
    pub logs_paused: Arc<std::sync::atomic::AtomicBool>,
}

impl NodeProc {
    /// Starts `zero serve` with `config` (written to `dir/zerocore.toml`), JSON logs, and waits
    /// until it listens.
    pub fn start(dir: &Path, config: impl std::fmt::Display) -> NodeProc {
        NodeProc::start_with_env(dir, config, &[])
    }

    /// Same, with `env` added to the node's environment.
    pub fn start_with_env(
        dir: &Path,
        config: impl std::fmt::Display,
        env: &[(String, String)],
    ) -> NodeProc {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("zerocore.toml");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let mut child = Command::new(zero_bin())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zero");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logs_paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (logs, paused) = (logs.clone(), logs_paused.clone());
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stderr).lines();
                loop {
                    while paused.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let Some(Ok(line)) = lines.next() else { break };
                    if line.contains("zeroproxy listening") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node did not start; log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["addr"].as_str().unwrap().parse().unwrap();
        let admin = logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("management API listening"))
            })
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
            .expect("management API address in the log");
        NodeProc {
            child,
            addr,
            admin,
            logs,
            dir: dir.to_path_buf(),
            logs_paused,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// All log lines so far, parsed.
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until a log line satisfies `pred` (logs are asynchronous).
    pub fn wait_log(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.log_json().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line for {what}; log:\n{}",
                    self.logs.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(mut self) {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP agent that returns 4xx/5xx responses instead of errors.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// Status, headers we care about and body of a GET.
pub struct Reply {
    pub status: u16,
    pub request_id: Option<String>,
    pub body: String,
}

fn into_reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let request_id = resp.header("x-request-id").map(str::to_string);
    let mut body = String::new();
    let _ = resp.into_reader().read_to_string(&mut body);
    Reply {
        status,
        request_id,
        body,
    }
}

/// GET a URL.
pub fn get(url: &str) -> Reply {
    into_reply(agent().get(url).call())
}

/// GET with one extra header.
pub fn get_with(url: &str, header: &str, value: &str) -> Reply {
    get_with_headers(url, &[(header, value)])
}

/// GET with extra headers.
pub fn get_with_headers(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_reply(req.call())
}

/// A tiny HTTP/1.1 server on loopback answering every request with `body` (an upstream for
/// outgoing-HTTP tests).
pub fn upstream(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = s.write_all(resp.as_bytes());
            });
        }
    });
    addr
}

/// One `[[app]]` of a test configuration.
pub struct App<'a> {
    pub name: &'a str,
    pub tenant: &'a str,
    pub component: PathBuf,
    pub routes: &'a [&'a str],
    pub outbound: Vec<String>,
}

impl<'a> App<'a> {
    /// An app of tenant `t1` built from the guest artifact `wasm`.
    pub fn new(name: &'a str, wasm: &str, routes: &'a [&'a str]) -> App<'a> {
        App::file(name, guest_wasm(wasm), routes)
    }

    /// Same, from any file.
    pub fn file(name: &'a str, path: PathBuf, routes: &'a [&'a str]) -> App<'a> {
        App {
            name,
            tenant: "t1",
            component: path,
            routes,
            outbound: vec![],
        }
    }
}

/// Test limits: small enough that faults trip quickly.
pub const TEST_LIMITS: &str = r#"
[limits]
cpu_time_ms = 300
wall_time_ms = 3000
memory = "64 MiB"
"#;

/// The one builder of test node configurations. It starts from a node listening on ephemeral
/// loopback ports with its data in `data_dir`; [`NodeConfig::with`] merges TOML into it (a key
/// given again replaces the earlier value, so a test states only what it changes).
#[derive(Clone)]
pub struct NodeConfig {
    table: toml::Table,
}

impl NodeConfig {
    /// `[node] data_dir`, `[admin]` and `[http]` on `127.0.0.1:0`; every other setting is the
    /// node's default.
    pub fn new(data_dir: &Path) -> NodeConfig {
        NodeConfig {
            table: toml::Table::new(),
        }
        .with(&format!(
            "[node]\ndata_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            data_dir.display().to_string()
        ))
    }

    /// Merges `toml` (whole sections) into the configuration: tables merge key by key, any
    /// other value replaces the one before.
    pub fn with(mut self, toml: &str) -> NodeConfig {
        let add: toml::Table = toml
            .parse()
            .unwrap_or_else(|e| panic!("test configuration is not TOML: {e}\n{toml}"));
        merge(&mut self.table, add);
        self
    }

    /// Compiled artifacts go to the directory shared by every test node
    /// ([`shared_artifact_dir`]), so that each component compiles once.
    pub fn shared_artifacts(self) -> NodeConfig {
        let dir = shared_artifact_dir();
        self.with(&format!(
            "[engine]\nartifact_dir = {:?}\nartifact_key = {:?}\n",
            dir.display().to_string(),
            dir.with_extension("key").display().to_string()
        ))
    }

    /// Adds an `[[app]]`.
    pub fn app(mut self, a: &App) -> NodeConfig {
        let mut t = toml::Table::new();
        t.insert("tenant".into(), a.tenant.into());
        t.insert("name".into(), a.name.into());
        t.insert("component".into(), a.component.display().to_string().into());
        t.insert(
            "routes".into(),
            toml::Value::Array(a.routes.iter().map(|r| (*r).into()).collect()),
        );
        t.insert(
            "allowed_outbound_hosts".into(),
            toml::Value::Array(a.outbound.iter().map(|h| h.as_str().into()).collect()),
        );
        match self
            .table
            .entry("app")
            .or_insert_with(|| toml::Value::Array(vec![]))
        {
            toml::Value::Array(apps) => apps.push(toml::Value::Table(t)),
            other => panic!("`app` is not an array of tables: {other}"),
        }
        self
    }

    /// Adds every app of `apps`.
    pub fn apps(self, apps: &[App]) -> NodeConfig {
        apps.iter().fold(self, |c, a| c.app(a))
    }

    /// Starts a node with this configuration in `dir`.
    pub fn start(&self, dir: &Path) -> NodeProc {
        NodeProc::start(dir, self)
    }
}

impl std::fmt::Display for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = toml::to_string(&self.table).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

fn merge(into: &mut toml::Table, add: toml::Table) {
    for (k, v) in add {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Configuration of a test node with only `extra` (whole TOML sections) and `apps`, compiled
/// artifacts shared ([`NodeConfig::shared_artifacts`]).
pub fn config(data_dir: &Path, extra: &str, apps: &[App]) -> NodeConfig {
    NodeConfig::new(data_dir)
        .shared_artifacts()
        .with(extra)
        .apps(apps)
}

/// Compiled artifacts shared by every test node, so that each component compiles once.
pub fn shared_artifact_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-shared-aot")
}

/// A fresh data directory for one node (a data directory belongs to one node at a time; the
/// file store locks it). Artifacts are shared through [`NodeConfig::shared_artifacts`].
pub fn node_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-data-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sends `body` to `url` with POST over a full-duplex HTTP/1.1 connection (the body is sent
/// while the response streams back, as a browser or curl would) and returns status and body.
pub fn post_streaming(url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let uri: hyper::Uri = url.parse().unwrap();
        let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>,
        >(4);
        let total = body.len();
        tokio::spawn(async move {
            for chunk in body.chunks(64 * 1024) {
                if tx
                    .send(Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(
                        chunk,
                    ))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let req = hyper::Request::post(uri.path())
            .header("host", uri.authority().unwrap().as_str())
            .header("content-length", total)
            .header("content-type", "application/octet-stream")
            .body(http_body_util::StreamBody::new(tokio_stream_from(rx)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .unwrap_or_default();
        (status, bytes)
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends only the request head of a POST declaring `content_length` and returns the status line.
pub fn post_head_only(addr: SocketAddr, path: &str, content_length: u64) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {content_length}\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs the `zero` CLI and returns its exit code, stdout and stderr.
pub fn zero(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(zero_bin())
        .args(args)
        .output()
        .expect("run zero");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Occupies `slots` request slots with requests to `busy_path` (a sleeping app), then asserts
/// that `probe_path` is refused with 503 and a body mentioning `scope`, and that `free_path`
/// still answers 200; the busy requests end with the wall-clock timeout (504).
pub fn assert_concurrency_cap(
    node: &Arc<NodeProc>,
    slots: usize,
    busy_path: &'static str,
    probe_path: &str,
    scope: &str,
    free_path: &str,
) {
    let busy: Vec<_> = (0..slots)
        .map(|_| {
            let node = node.clone();
            std::thread::spawn(move || get(&node.url(busy_path)).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = get(&node.url(probe_path));
    while probe.status != 503 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        probe = get(&node.url(probe_path));
    }
    assert_eq!(probe.status, 503, "{}", probe.body);
    assert!(probe.body.contains(scope), "{}", probe.body);
    assert_eq!(get(&node.url(free_path)).status, 200);
    for b in busy {
        assert_eq!(b.join().unwrap(), 504);
    }
}

/// A tenant of a [`World`]: its owner's key and the Admin's delegation to it.
pub struct Tenant {
    pub name: String,
    pub owner: Keypair,
    pub chain: Vec<Delegation>,
}

/// The one end-to-end set-up with tenants: a node in development mode (its Admin key in the data
/// dir) with tenants `acme` and `beta`, their owners' keys and chains.
pub struct World {
    pub node: NodeProc,
    /// `http://` address of the management API.
    pub api: String,
    /// The test's directory (the node's configuration is `dir/zerocore.toml`).
    pub dir: PathBuf,
    /// The node's data directory.
    pub data: PathBuf,
    pub admin: Keypair,
    pub acme: Tenant,
    pub beta: Tenant,
}

/// How a [`World`] is set up: the node's configuration and the hosts each tenant is granted.
pub struct WorldSpec {
    name: String,
    config: NodeConfig,
    hosts: Vec<(String, Vec<String>)>,
    env: Vec<(String, String)>,
}

impl WorldSpec {
    /// Merges `toml` into the node's configuration ([`NodeConfig::with`]).
    pub fn with(mut self, toml: &str) -> WorldSpec {
        self.config = self.config.with(toml);
        self
    }

    /// Sets `key` to `value` in the node's environment.
    pub fn env(mut self, key: &str, value: &str) -> WorldSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The Admin grants `tenant` the `hosts` when creating it.
    pub fn hosts(mut self, tenant: &str, hosts: &[&str]) -> WorldSpec {
        self.hosts.push((
            tenant.to_string(),
            hosts.iter().map(|h| h.to_string()).collect(),
        ));
        self
    }

    /// Starts the node and creates the tenants.
    pub fn start(self) -> World {
        let dir = test_dir(&self.name);
        let data = dir.join("data");
        let config = self.config.with(&format!(
            "[node]\ndata_dir = {:?}\n",
            data.display().to_string()
        ));
        let node = NodeProc::start_with_env(&dir, &config, &self.env);
        let api = format!("http://{}", node.admin);
        node.wait_log("development mode warning", |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("DEVELOPMENT MODE"))
        });
        let admin = Keypair::load(data.join("admin.key")).unwrap();
        let mut admin_client = Client::new(&api, copy_key(&admin), vec![]);
        let mut tenant = |name: &str| {
            let owner = Keypair::generate().unwrap();
            let hosts = self
                .hosts
                .iter()
                .find(|(t, _)| t == name)
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            if hosts.is_empty() {
                admin_client.create_tenant(name, owner.did()).unwrap();
            } else {
                admin_client
                    .create_tenant_with_hosts(name, owner.did(), &hosts)
                    .unwrap();
            }
            let chain =
                vec![zero_client::owner_delegation(&admin, name, owner.did(), None).unwrap()];
            Tenant {
                name: name.to_string(),
                owner,
                chain,
            }
        };
        let acme = tenant("acme");
        let beta = tenant("beta");
        World {
            node,
            api,
            dir,
            data,
            admin,
            acme,
            beta,
        }
    }
}

impl World {
    /// The configuration every world's node starts from: [`NodeConfig::new`] with
    /// [`TEST_LIMITS`] and no clock skew allowed.
    pub fn config(data_dir: &Path) -> NodeConfig {
        NodeConfig::new(data_dir)
            .with("[node]\nclock_skew_secs = 0\n")
            .with(TEST_LIMITS)
    }

    /// A world named `name` (its directory) to be set up; see [`WorldSpec`].
    pub fn spec(name: &str) -> WorldSpec {
        WorldSpec {
            name: name.to_string(),
            config: World::config(Path::new("data")),
            hosts: vec![],
            env: vec![],
        }
    }

    /// A client of `t`'s owner.
    pub fn owner(&self, t: &Tenant) -> Client {
        Client::new(&self.api, copy_key(&t.owner), t.chain.clone())
    }

    /// Stops the node and starts it again on the same data directory and configuration.
    pub fn restart(self) -> World {
        let config = std::fs::read_to_string(self.dir.join("zerocore.toml")).unwrap();
        let World {
            node,
            dir,
            data,
            admin,
            acme,
            beta,
            ..
        } = self;
        node.stop();
        let node = NodeProc::start(&dir, config);
        let api = format!("http://{}", node.admin);
        World {
            node,
            api,
            dir,
            data,
            admin,
            acme,
            beta,
        }
    }
}

/// A [`World`] with the default configuration.
pub fn world(name: &str) -> World {
    World::spec(name).start()
}

/// A [`World`] with `toml` merged into its node's configuration.
pub fn world_with(name: &str, toml: &str) -> World {
    World::spec(name).with(toml).start()
}

/// A capability for signing or delegating.
pub fn grant(cmd: &str, policy: &str, expires_in: Option<u64>) -> Grant {
    Grant {
        command: cmd.into(),
        policy: zero_client::parse_policy(policy).unwrap(),
        expires_in,
    }
}

/// The guest artifact `wasm` signed by acme's owner with `g`.
pub fn signed(w: &World, wasm: &str, g: &Grant) -> Vec<u8> {
    let bytes = std::fs::read(guest_wasm(wasm)).unwrap();
    zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, g).unwrap()
}

/// A copy of a key (keys are not Clone: their secret is wiped on drop).
pub fn copy_key(k: &Keypair) -> Keypair {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.key");
    k.save(&p).unwrap();
    Keypair::load(&p).unwrap()
}

/// The node's refusal of `r`.
pub fn refused<T: std::fmt::Debug>(r: anyhow::Result<T>) -> zero_client::ApiError {
    let e = r.expect_err("the node must refuse");
    match e.downcast::<zero_client::ApiError>() {
        Ok(api) => api,
        Err(other) => panic!("expected a refusal from the node, got: {other:#}"),
    }
}

/// A value from `/proc/PID/status` (in kB for memory lines).
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// An upstream on loopback that counts the connections it accepts and answers `body`.
pub fn counting_upstream(body: &'static str) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                if read_head(&mut s) {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes());
                }
            });
        }
    });
    (addr, count)
}

/// Reads a request head from `s`; false if the peer closed or failed first.
pub fn read_head(s: &mut std::net::TcpStream) -> bool {
    read_head_bytes(s).is_some()
}

/// Reads a request head (up to and including the blank line, and whatever arrived with it);
/// `None` when the connection ends or fails first.
pub fn read_head_bytes(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}
