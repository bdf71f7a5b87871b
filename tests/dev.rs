//! End to end: the developer loop. `zero new`, `zero build`, `zero up` (a real local node
//! child process, watching files) and `zero deploy` from a manifest, with real cargo builds for
//! wasm32-wasip2. The builds share one target directory (`target/dev-e2e`), so the SDK's
//! dependencies compile once for all these tests.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{NodeConfig, get, repo_root, zero_bin};

/// The target directory all these builds share.
fn shared_target() -> PathBuf {
    repo_root().join("target/dev-e2e")
}

/// A `zero` command for a developer whose home is `home`, building into the shared target.
fn zero(home: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(zero_bin());
    c.current_dir(cwd)
        .env("ZERO_HOME", home)
        .env("CARGO_TARGET_DIR", shared_target())
        .env("NO_COLOR", "1")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().expect("run zero");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "zero failed:\n{text}");
    text
}

/// A running `zero up`: its output lines (stdout and stderr), stopped with SIGINT on drop.
struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(home: &Path, dir: &Path) -> Up {
        let mut child = zero(home, dir)
            .args(["up", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zero up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Up { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a line containing `needle` among those after the first `skip`; returns it
    /// and its index.
    fn wait_line(&self, needle: &str, skip: usize, timeout: Duration) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((i, l)) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .skip(skip)
                .find(|(_, l)| l.contains(needle))
            {
                return (i, l.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no line with `{needle}` from zero up; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL `zero up` printed for `app` (its first route).
    fn url(&self, app: &str) -> String {
        let (_, line) = self.wait_line(&format!("{app} http://"), 0, Duration::from_secs(480));
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string()
    }

    /// SIGINT (Ctrl-C), then waits for a clean exit.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc_kill(self.child.id() as i32, 2) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "zero up did not stop on Ctrl-C; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc_kill(self.child.id() as i32, 2) };
            std::thread::sleep(Duration::from_secs(1));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `url` until its body satisfies `pred`.
fn wait_body(url: &str, what: &str, up: &Up, pred: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let reply = match support::agent().get(url).call() {
            Ok(r) => Some(r),
            Err(ureq::Error::Status(_, r)) => Some(r),
            Err(_) => None,
        };
        if let Some(r) = reply {
            let status = r.status();
            let body = r.into_string().unwrap_or_default();
            if pred(status, &body) {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {what}; zero up said:\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn new_hello_up_serves_rebuilds_on_change_and_keeps_serving_through_a_broken_build() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out = run_ok({
        let mut c = zero(&home, tmp.path());
        c.args(["new", "hello"]);
        c
    });
    assert!(out.contains("zero up"), "{out}");
    let dir = tmp.path().join("hello");
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "zero.toml",
        ".gitignore",
        ".zero/sdk/zerosdk/Cargo.toml",
    ] {
        assert!(dir.join(f).exists(), "zero new wrote no {f}");
    }

    let mut up = Up::start(&home, &dir);
    let url = up.url("hello");
    let body = wait_body(&url, "Hello, World!", &up, |s, b| {
        s == 200 && b.contains("Hello, World!")
    });
    assert_eq!(body.trim(), "Hello, World!");
    assert!(
        up.output()
            .contains(&home.join("dev").display().to_string()),
        "zero up says where the development keys live:\n{}",
        up.output()
    );

    // An edit is rebuilt and redeployed.
    let lib = dir.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, src.replace("Hello, World!", "Hello, again!")).unwrap();
    wait_body(&url, "the edited text", &up, |s, b| {
        s == 200 && b.contains("Hello, again!")
    });

    // A broken edit shows the compiler's error and the last good version keeps serving.
    let seen = up.lines.lock().unwrap().len();
    std::fs::write(&lib, "this is not rust\n").unwrap();
    up.wait_line(
        "the compiler's output is above",
        seen,
        Duration::from_secs(120),
    );
    let out = up.output();
    assert!(out.contains("error"), "{out}");
    assert_eq!(get(&url).body.trim(), "Hello, again!");

    // The app's requests show in the stream of logs.
    assert!(up.output().contains("[hello] GET / 200"), "{}", up.output());

    let status = up.interrupt();
    assert!(
        status.success(),
        "zero up exited with {status}:\n{}",
        up.output()
    );
    assert!(up.output().contains("stopped"), "{}", up.output());
    // The node is gone with it.
    let port_closed = ureq::get(&url)
        .timeout(Duration::from_secs(2))
        .call()
        .is_err();
    assert!(port_closed, "the local node still answers after Ctrl-C");
}

#[test]
fn new_todo_template_serves_the_todo_api() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    run_ok({
        let mut c = zero(&home, tmp.path());
        c.args(["new", "todo", "--template", "todo"]);
        c
    });
    let up = Up::start(&home, &tmp.path().join("todo"));
    let url = up.url("todo");
    assert!(url.ends_with("/todos"), "{url}");
    wait_body(&url, "an empty list", &up, |s, b| {
        s == 200 && b.trim() == "[]"
    });
    let resp = ureq::post(&url)
        .send_string(r#"{"title": "milk"}"#)
        .expect("POST /todos");
    assert_eq!(resp.status(), 201);
    let created: serde_json::Value = resp.into_json().unwrap();
    let id = created["id"].as_i64().expect("an id");
    let list: serde_json::Value = serde_json::from_str(&get(&url).body).unwrap();
    assert_eq!(
        list,
        serde_json::json!([{"id": id, "title": "milk", "done": false}])
    );
    let one = get(&format!("{url}/{id}"));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(get(&format!("{url}/999")).status, 404);
}

/// Copies the mono-repo example to `to`, pointing it at this repository's SDK.
fn copy_monorepo(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name == "target" || name == ".zero" || name.to_string_lossy().ends_with(".zero.wasm")
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(&name));
            } else {
                std::fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    copy(&repo_root().join("examples/monorepo"), to);
    let cargo = to.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo).unwrap();
    let sdk = repo_root().join("guest/zerosdk");
    let patched = text.replace(
        "\"../../guest/zerosdk\"",
        &format!("{:?}", sdk.display().to_string()),
    );
    assert_ne!(
        text, patched,
        "the mono-repo names the SDK as ../../guest/zerosdk"
    );
    std::fs::write(&cargo, patched).unwrap();
}

#[test]
fn a_monorepo_builds_both_apps_serves_them_and_deploys_them_from_the_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let repo = tmp.path().join("monorepo");
    copy_monorepo(&repo);

    // `zero build` at the root builds and signs each app.
    let out = run_ok({
        let mut c = zero(&home, &repo);
        c.arg("build");
        c
    });
    let greeter = repo.join("apps/greeter/greeter.zero.wasm");
    let counter = repo.join("apps/counter/counter.zero.wasm");
    assert!(greeter.exists() && counter.exists(), "{out}");
    let inspect = run_ok({
        let mut c = zero(&home, &repo);
        c.arg("inspect").arg(&counter);
        c
    });
    assert!(
        inspect.contains("/cache"),
        "counter is signed with its cache grant:\n{inspect}"
    );
    assert!(inspect.contains("counter:*"), "{inspect}");
    assert!(
        inspect.contains("/fs/read") && inspect.contains("/config"),
        "counter is signed with its file grant too:\n{inspect}"
    );

    // `zero up` serves both on their routes.
    let mut up = Up::start(&home, &repo);
    let g = up.url("greeter");
    let c = up.url("counter");
    let body = wait_body(&format!("{g}?name=zero"), "a greeting", &up, |s, _| {
        s == 200
    });
    assert_eq!(body, "Hello, zero! (from greeter)\n");
    let first = wait_body(&c, "a count", &up, |s, _| s == 200);
    assert!(first.ends_with("hits (from counter)\n"), "{first}");
    assert!(up.interrupt().success(), "{}", up.output());

    // `zero deploy` without a file deploys both from their manifests to another node.
    let node_dir = tmp.path().join("node");
    let node = NodeConfig::new(&node_dir.join("data")).start(&node_dir);
    let admin_key = node_dir.join("data/admin.key");
    let owner = zero_auth::Keypair::generate().unwrap();
    let owner_key = tmp.path().join("owner.key");
    owner.save(&owner_key).unwrap();
    let chain = tmp.path().join("acme.ucan");
    run_ok({
        let mut c = zero(&home, &repo);
        c.args(["tenant", "create", "acme", "--owner", owner.did().as_ref()])
            .arg("--key")
            .arg(&admin_key)
            .arg("-o")
            .arg(&chain)
            .args(["--api", &format!("http://{}", node.admin)]);
        c
    });
    let out = run_ok({
        let mut c = zero(&home, &repo);
        c.args([
            "deploy",
            "--tenant",
            "acme",
            "--api",
            &format!("http://{}", node.admin),
        ])
        .arg("--key")
        .arg(&owner_key)
        .arg("--proof")
        .arg(&chain)
        .arg("--seed");
        c
    });
    assert!(
        out.contains("deployed") && out.contains("greeter") && out.contains("counter"),
        "{out}"
    );
    assert_eq!(
        get(&node.url("/greet")).body,
        "Hello, World! (from greeter)\n"
    );
    assert_eq!(get(&node.url("/count")).body, "1 hits (from counter)\n");
}

#[test]
fn manifest_errors_name_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    run_ok({
        let mut c = zero(&home, tmp.path());
        c.args(["new", "bad"]);
        c
    });
    let dir = tmp.path().join("bad");
    let manifest = dir.join("zero.toml");
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/secret.txt"), "not for the node").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("link")).unwrap();
    for (text, want) in [
        (
            "[app]\nroutes = [\"/\"]\n\n[capabilities.files]\nread = [\"site\"]\n",
            ":5: [capabilities.files] read: `site` is not an absolute path",
        ),
        (
            "[app]\nroutes = [\"/\"]\n[capabilities.cache]\nwrtie = [\"a:\"]\n",
            ":4: unknown field `wrtie`, expected `read` or `write`",
        ),
        (
            "[app]\nroutes = [\"/\"]\n[[schedule]]\nname = \"t\"\ncron = \"every day\"\n",
            ":5: [[schedule]] cron: ",
        ),
        // A manifest cannot seed files from outside its project (a cloned repository's
        // zero.toml reaching for the developer's home), not even through a link inside it.
        (
            "[app]\nroutes = [\"/\"]\n\n[[seed]]\nfrom = \"../outside\"\nto = \"/x\"\n",
            ":5: [[seed]] from: ",
        ),
        (
            "[app]\nroutes = [\"/\"]\n[[seed]]\nfrom = \"link\"\nto = \"/x\"\n",
            ":4: [[seed]] from: ",
        ),
    ] {
        std::fs::write(&manifest, text).unwrap();
        let out = zero(&home, &dir).arg("build").output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}{want}", manifest.display());
        assert!(err.contains(&want), "want `{want}` in:\n{err}");
        if text.contains("[[seed]]") {
            assert!(err.contains("is outside the project"), "{err}");
        }
    }
}

#[test]
fn a_missing_wasm_target_says_how_to_install_it() {
    // rustc pointed at a sysroot without the wasm32-wasip2 standard library fails exactly as
    // on a toolchain where the target was never added.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bare");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"bare\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(dir.join("zero.toml"), "[app]\nroutes = [\"/\"]\n").unwrap();
    let empty_sysroot = tmp.path().join("sysroot");
    std::fs::create_dir_all(&empty_sysroot).unwrap();
    let out = zero(&tmp.path().join("home"), &dir)
        .arg("build")
        .env("CARGO_TARGET_DIR", tmp.path().join("target"))
        .env(
            "RUSTFLAGS",
            format!("--sysroot {}", empty_sysroot.display()),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: the wasm32-wasip2 target is not installed for this Rust toolchain: run `rustup target add wasm32-wasip2`"),
        "{err}"
    );
}

#[test]
fn new_cron_template_ticks_and_shows_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    run_ok({
        let mut c = zero(&home, tmp.path());
        c.args(["new", "ticks", "--template", "cron"]);
        c
    });
    let up = Up::start(&home, &tmp.path().join("ticks"));
    let url = up.url("ticks");
    wait_body(&url, "a count", &up, |s, b| {
        s == 200 && b.ends_with("ticks so far\n")
    });
    // Run the schedule now, as the developer (the keys zero up created), and see it counted.
    let (_, line) = up.wait_line("management API http://", 0, Duration::from_secs(10));
    let api = line
        .split("management API ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap()
        .to_string();
    let before: u64 = get(&url)
        .body
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    run_ok({
        let mut c = zero(&home, tmp.path());
        c.args([
            "schedules",
            "run",
            "tick",
            "--tenant",
            "dev",
            "--app",
            "ticks",
            "--api",
            &api,
        ])
        .arg("--key")
        .arg(home.join("dev/developer.key"))
        .arg("--proof")
        .arg(home.join("dev/dev.ucan"));
        c
    });
    let after: u64 = get(&url)
        .body
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after > before,
        "the tick was not counted: {before} then {after}"
    );
    assert!(up.output().contains("[ticks] tick "), "{}", up.output());
}

#[test]
fn a_custom_build_command_runs_and_its_output_is_signed_with_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("custom");
    std::fs::create_dir_all(&dir).unwrap();
    let src = support::guest_wasm("hello");
    std::fs::write(
        dir.join("zero.toml"),
        format!(
            "[app]\nname = \"custom\"\nroutes = [\"/\"]\n\n[build]\ncommand = \"mkdir -p out && cp {} out/app.wasm\"\noutput = \"out/app.wasm\"\n\n[capabilities.files]\nread = [\"/site\"]\n",
            src.display()
        ),
    )
    .unwrap();
    let out = run_ok({
        let mut c = zero(&home, &dir);
        c.arg("build");
        c
    });
    let signed = dir.join("custom.zero.wasm");
    assert!(signed.exists(), "{out}");
    let inspect = run_ok({
        let mut c = zero(&home, &dir);
        c.arg("inspect").arg(&signed);
        c
    });
    assert!(
        inspect.contains("/fs/read") && inspect.contains("/site"),
        "{inspect}"
    );

    // A failing command is reported as such, with the manifest.
    let manifest = std::fs::read_to_string(dir.join("zero.toml")).unwrap();
    let cmd_line = manifest.lines().find(|l| l.starts_with("command")).unwrap();
    std::fs::write(
        dir.join("zero.toml"),
        manifest.replace(cmd_line, "command = \"exit 3\""),
    )
    .unwrap();
    let out = zero(&home, &dir).arg("build").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[build] command `exit 3` failed"), "{err}");
}
