//! `zero up`: a local node for the project. It starts `zero serve` as a child process on the
//! embedded default with its own data directory (`.zero/up/` at the project root), trusting
//! the developer's local Admin key; creates the `dev` tenant; seeds, builds, signs and deploys
//! every app; prints their URLs; streams their logs; rebuilds and redeploys when a watched file
//! changes (after a short quiet period); and stops the node on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::{EventKind, RecursiveMode, Watcher};
use zero_client::Client;

use crate::build::{self, Built, Signer};
use crate::deploy;
use crate::home::{DEV_TENANT, DevIdentity};
use crate::project::{self, Project};
use crate::ui;

/// How long the files must stay quiet before a rebuild starts.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What `zero up` is asked.
pub struct UpOptions {
    /// The project directory.
    pub dir: PathBuf,
    /// The HTTP address of the local node (port 0: any free port).
    pub listen: SocketAddr,
    /// The `zero` binary that runs the node (normally this one).
    pub zero_bin: PathBuf,
}

enum Event {
    Changed(Vec<PathBuf>),
    NodeExited,
    Stop,
}

struct NodeChild {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
}

impl NodeChild {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeChild {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_config(admin_did: &str, listen: SocketAddr) -> String {
    format!(
        "# Written by `zero up` at each start: the local development node.\n\
         [node]\ndata_dir = \"data\"\nadmin = \"{admin_did}\"\n\n\
         [http]\nlisten = \"{listen}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [log]\nformat = \"json\"\n"
    )
}

fn start_node(
    opts: &UpOptions,
    dir: &Path,
    admin_did: &str,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<NodeChild> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("zerocore.toml");
    std::fs::write(&config, node_config(admin_did, opts.listen))
        .with_context(|| format!("cannot write {}", config.display()))?;
    ui::step(
        "start",
        &format!("a local node (data in {})", dir.join("data").display()),
    );
    let mut cmd = Command::new(&opts.zero_bin);
    cmd.args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .stdin(Stdio::null());
    // Its own process group: Ctrl-C in the terminal reaches `zero up` only, which then stops
    // the node (deploys in flight finish first), instead of both racing to exit.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", opts.zero_bin.display()))?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let stderr = child.stderr.take().context("the node's stderr")?;
    let (ready_tx, ready_rx) = mpsc::channel::<(Option<SocketAddr>, Option<SocketAddr>)>();
    std::thread::spawn(move || {
        let (mut http, mut admin) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let addr_after = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|r| r.split(['/', ' ']).next())
                    .and_then(|a| a.parse().ok())
            };
            http = http.or(addr_after("zero node ready: curl http://"));
            admin = admin.or(addr_after("management API: http://"));
            if http.is_some() && admin.is_some() {
                let _ = ready_tx.send((http, admin));
                break;
            }
        }
        drop(ready_tx);
        for _ in lines {}
        let _ = events.send(Event::NodeExited);
    });
    // The node's log: rendered for the developer once it runs; kept for the report if it
    // fails to start.
    let (early_tx, early_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = early_tx.send(line.clone());
            if let Some(out) = ui::render_node_log(&line) {
                anstream::println!("{out}");
            }
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(120)) {
        Ok((Some(http), Some(admin))) => Ok(NodeChild { child, http, admin }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            let log: Vec<String> = early_rx.try_iter().collect();
            anyhow::bail!(
                "the local node did not start:\n{}",
                log.iter()
                    .filter_map(|l| ui::render_node_log(l).or(Some(l.clone())))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }
}

/// Whether a change at `path` should rebuild: not build output, not our own files.
fn relevant(project: &Project, path: &Path) -> bool {
    if let Some(t) = &project.target_dir
        && path.starts_with(t)
    {
        return false;
    }
    let within = path.strip_prefix(&project.root).unwrap_or(path);
    if within.components().any(|c| {
        let c = c.as_os_str();
        c == ".zero" || c == ".git" || c == "target"
    }) {
        return false;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    !(name.ends_with(".zero.wasm")
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name == "4913")
}

/// What to watch: the manifests' `[build] watch` lists when every app has one, else the
/// project root itself (its files) and each of its directories recursively, except build
/// output, `.git` and `.zero` (so a large `target/` is never watched).
fn watch_roots(project: &Project) -> Vec<(PathBuf, RecursiveMode)> {
    let mode = |p: &Path| {
        if p.is_dir() {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        }
    };
    let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    if project.apps.iter().all(|a| !a.manifest.watch.is_empty()) {
        for a in &project.apps {
            for w in a.manifest.watch.iter().chain([&a.manifest.path]) {
                roots.push((w.clone(), mode(w)));
            }
        }
    } else {
        roots.push((project.root.clone(), RecursiveMode::NonRecursive));
        if let Ok(entries) = std::fs::read_dir(&project.root) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() && relevant(project, &p.join("x")) {
                    roots.push((p, RecursiveMode::Recursive));
                }
            }
        }
    }
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    roots.dedup_by(|a, b| a.0 == b.0);
    roots
}

fn watch_all(watcher: &mut notify::RecommendedWatcher, roots: &[(PathBuf, RecursiveMode)]) {
    for (r, mode) in roots {
        if let Err(e) = watcher.watch(r, *mode) {
            ui::warn(&format!("cannot watch {}: {e}", r.display()));
        }
    }
}

struct Session {
    signer: Signer,
    client: Client,
    deployed: std::collections::HashMap<String, String>,
    base: String,
}

impl Session {
    /// Builds everything, deploys what changed; on a failed build the previous version keeps
    /// serving.
    fn cycle(&mut self, project: &Project, seed_changed: bool) -> anyhow::Result<()> {
        if seed_changed {
            for app in &project.apps {
                deploy::seed(&mut self.client, DEV_TENANT, &project.root, app)?;
            }
        }
        let built: Vec<Built> = build::build(project, &self.signer)?;
        for (app, b) in project.apps.iter().zip(&built) {
            if self.deployed.get(&app.name) == Some(&b.hash) {
                continue;
            }
            deploy::deploy(&mut self.client, DEV_TENANT, app, b)?;
            self.deployed.insert(app.name.clone(), b.hash.clone());
            for r in &app.manifest.routes {
                anstream::println!(
                    "{}{:>9}{:#} {}",
                    ui::APP,
                    app.name,
                    ui::APP,
                    url(&self.base, r)
                );
            }
        }
        Ok(())
    }
}

fn url(base: &str, route: &str) -> String {
    match route.split_once('/') {
        Some(("", _)) => format!("{base}{route}"),
        Some((host, path)) => {
            let port = base.rsplit(':').next().unwrap_or("80");
            format!(
                "http://{host}:{port}/{path} (a host route: send Host: {host}, e.g. curl --connect-to {host}:{port}:{})",
                base.trim_start_matches("http://")
            )
        }
        None => format!("{base}{route}"),
    }
}

/// Runs `zero up` until Ctrl-C (or the node stops).
pub fn up(opts: UpOptions) -> anyhow::Result<()> {
    let identity = DevIdentity::load_or_create()?;
    let mut project = project::discover(&opts.dir)?;
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        ctrlc::set_handler(move || {
            let _ = tx.send(Event::Stop);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let node_dir = project.root.join(".zero").join("up");
    let mut node = start_node(&opts, &node_dir, identity.admin.did().as_ref(), tx.clone())?;
    let base = format!("http://{}", node.http);
    let api = format!("http://{}", node.admin);

    let mut hosts: Vec<String> = project
        .apps
        .iter()
        .flat_map(|a| a.manifest.routes.iter())
        .filter_map(|r| r.split_once('/').map(|(h, _)| h.to_string()))
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut admin = Client::new(&api, identity.admin.clone(), vec![]);
    admin
        .create_tenant_with_hosts(DEV_TENANT, identity.developer.did(), &hosts)
        .context("creating the dev tenant on the local node")?;
    let mut session = Session {
        signer: Signer {
            key: identity.developer.clone(),
            chain: identity.chain.clone(),
        },
        client: Client::new(&api, identity.developer.clone(), identity.chain.clone()),
        deployed: Default::default(),
        base: base.clone(),
    };
    ui::step(
        "serving",
        &format!("{base} (management API {api}, tenant {DEV_TENANT})"),
    );
    if let Err(e) = session.cycle(&project, true) {
        ui::error(&format!("{e:#}"));
        ui::warn("fix it and save: zero up rebuilds on every change");
    }

    let mut watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                )
            {
                let _ = tx.send(Event::Changed(ev.paths));
            }
        })
        .context("cannot watch the project's files")?
    };
    let mut roots = watch_roots(&project);
    watch_all(&mut watcher, &roots);
    ui::step("watching", "for changes (Ctrl-C stops)");

    while let Ok(first) = rx.recv() {
        let mut changed = match first {
            Event::Stop => break,
            Event::NodeExited => {
                node.stop();
                anyhow::bail!("the local node stopped (its log is above)");
            }
            Event::Changed(p) => p,
        };
        // Debounce: wait until the files have been quiet for DEBOUNCE.
        let mut stop = false;
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(Event::Changed(p)) => changed.extend(p),
                Ok(Event::Stop) => {
                    stop = true;
                    break;
                }
                Ok(Event::NodeExited) => {
                    node.stop();
                    anyhow::bail!("the local node stopped (its log is above)");
                }
                Err(_) => break,
            }
        }
        if stop {
            break;
        }
        changed.retain(|p| relevant(&project, p));
        if changed.is_empty() {
            continue;
        }
        changed.sort();
        changed.dedup();
        let shown: Vec<String> = changed
            .iter()
            .take(3)
            .map(|p| {
                p.strip_prefix(&project.root)
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        ui::step("changed", &shown.join(", "));
        match project::discover(&opts.dir) {
            Ok(p) => project = p,
            Err(e) => {
                ui::error(&format!("{e:#}"));
                continue;
            }
        }
        let seed_changed = changed.iter().any(|c| {
            project
                .apps
                .iter()
                .any(|a| a.manifest.seeds.iter().any(|s| c.starts_with(&s.from)))
        });
        if let Err(e) = session.cycle(&project, seed_changed) {
            ui::error(&format!("{e:#}"));
            ui::warn("the previous version keeps serving; fix it and save");
        }
        let new_roots = watch_roots(&project);
        if new_roots != roots {
            for (r, _) in &roots {
                let _ = watcher.unwatch(r);
            }
            watch_all(&mut watcher, &new_roots);
            roots = new_roots;
        }
    }
    node.stop();
    ui::step("stopped", "the local node");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_get_a_usable_url() {
        assert_eq!(
            url("http://127.0.0.1:3000", "/hello"),
            "http://127.0.0.1:3000/hello"
        );
        assert!(url("http://127.0.0.1:3000", "a.example/x").starts_with("http://a.example:3000/x"));
    }

    #[test]
    fn the_node_config_parses() {
        let cfg = node_config(
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
            "127.0.0.1:0".parse().unwrap(),
        );
        let v: toml::Table = toml::from_str(&cfg).unwrap();
        assert_eq!(v["node"]["data_dir"].as_str(), Some("data"));
    }
}
