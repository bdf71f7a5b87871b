//! Finding the apps of a project: one package with a `zero.toml` beside its `Cargo.toml`, a
//! cargo workspace whose member packages have one each (a mono-repo), or a `zero.toml` with a
//! custom `[build] command` and no cargo at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use zero_manifest::{FILE_NAME, Manifest};

/// A cargo package that builds an app.
#[derive(Debug, Clone)]
pub struct Package {
    /// The package name (`cargo build -p NAME`).
    pub name: String,
    /// Its `Cargo.toml`.
    pub manifest_path: PathBuf,
}

/// One app: its manifest and how it is built.
#[derive(Debug, Clone)]
pub struct App {
    /// The app's name (from the manifest or the package).
    pub name: String,
    /// The validated `zero.toml`.
    pub manifest: Manifest,
    /// The cargo package, unless the manifest has a custom build.
    pub package: Option<Package>,
}

impl App {
    /// Where `zero build` writes the signed component: `NAME.zero.wasm` beside `zero.toml`.
    pub fn signed_path(&self) -> PathBuf {
        self.manifest.dir.join(format!("{}.zero.wasm", self.name))
    }
}

/// The apps found from a directory.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project's root: the cargo workspace root, or the manifest's directory.
    pub root: PathBuf,
    /// The workspace's `Cargo.toml`, when cargo builds the apps.
    pub cargo_manifest: Option<PathBuf>,
    /// Cargo's target directory (build output, never watched).
    pub target_dir: Option<PathBuf>,
    /// The apps, in workspace order.
    pub apps: Vec<App>,
}

/// What `cargo` to run: `$CARGO` when set (as under cargo itself), else `cargo` on PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

struct Metadata {
    root: PathBuf,
    target_dir: PathBuf,
    /// Workspace member packages: (name, manifest path, has a cdylib target).
    members: Vec<(String, PathBuf, bool)>,
}

fn metadata(cargo_toml: &Path) -> anyhow::Result<Metadata> {
    let out = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(cargo_toml)
        .output()
        .context("cannot run cargo (is Rust installed? see https://rustup.rs)")?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo cannot read {}:\n{}",
            cargo_toml.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("cargo metadata printed something else than JSON")?;
    let members: Vec<&str> = v["workspace_members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    let mut out_members = Vec::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or("");
        if !members.contains(&id) {
            continue;
        }
        let cdylib = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        });
        out_members.push((
            p["name"].as_str().unwrap_or("").to_string(),
            PathBuf::from(p["manifest_path"].as_str().unwrap_or("")),
            cdylib,
        ));
    }
    Ok(Metadata {
        root: PathBuf::from(v["workspace_root"].as_str().unwrap_or(".")),
        target_dir: PathBuf::from(v["target_directory"].as_str().unwrap_or("target")),
        members: out_members,
    })
}

fn app_for(manifest: Manifest, package: Option<(String, PathBuf, bool)>) -> anyhow::Result<App> {
    let package = match package {
        Some((name, manifest_path, cdylib)) => {
            if manifest.custom_build.is_none() && !cdylib {
                anyhow::bail!(
                    "{}: the package `{name}` does not build a component: add\n\n[lib]\ncrate-type = [\"cdylib\"]\n\nto it",
                    manifest_path.display()
                );
            }
            Some(Package {
                name,
                manifest_path,
            })
        }
        None => None,
    };
    let name = manifest.app_name(package.as_ref().map(|p| p.name.as_str()))?;
    let package = if manifest.custom_build.is_some() {
        None
    } else {
        package
    };
    Ok(App {
        name,
        manifest,
        package,
    })
}

/// Finds the apps from `dir`: its own `zero.toml`, or those of its workspace's members.
pub fn discover(dir: &Path) -> anyhow::Result<Project> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let manifest_path = dir.join(FILE_NAME);
    let cargo_toml = dir.join("Cargo.toml");
    let have_manifest = manifest_path.exists();
    if !cargo_toml.exists() {
        if !have_manifest {
            anyhow::bail!(
                "no {FILE_NAME} in {}: run `zero new NAME` to start a project, or run this in one",
                dir.display()
            );
        }
        let manifest = Manifest::load(&manifest_path)?;
        if manifest.custom_build.is_none() {
            anyhow::bail!(
                "{}: there is no Cargo.toml here, so say how the component is built: [build] command = \"…\" and output = \"…\"",
                manifest_path.display()
            );
        }
        let app = app_for(manifest, None)?;
        check_seeds(&dir, &app)?;
        return Ok(Project {
            root: dir,
            cargo_manifest: None,
            target_dir: None,
            apps: vec![app],
        });
    }
    let meta = metadata(&cargo_toml)?;
    let mut apps = Vec::new();
    if have_manifest {
        let manifest = Manifest::load(&manifest_path)?;
        let package = meta
            .members
            .iter()
            .find(|(_, p, _)| p.canonicalize().ok().as_deref() == Some(cargo_toml.as_path()))
            .cloned();
        if package.is_none() && manifest.custom_build.is_none() {
            anyhow::bail!(
                "{}: {} defines no package to build; put zero.toml beside the Cargo.toml of the app's package",
                manifest_path.display(),
                cargo_toml.display()
            );
        }
        apps.push(app_for(manifest, package)?);
    } else {
        for m in &meta.members {
            let Some(pkg_dir) = m.1.parent() else {
                continue;
            };
            let mp = pkg_dir.join(FILE_NAME);
            if mp.exists() {
                apps.push(app_for(Manifest::load(&mp)?, Some(m.clone()))?);
            }
        }
        if apps.is_empty() {
            anyhow::bail!(
                "no {FILE_NAME} in {} nor beside the Cargo.toml of any of its workspace's members; add one to each app (see `zero new`)",
                dir.display()
            );
        }
    }
    for a in &apps {
        check_seeds(&meta.root, a)?;
    }
    for (i, a) in apps.iter().enumerate() {
        if let Some(b) = apps[..i].iter().find(|b| b.name == a.name) {
            anyhow::bail!(
                "two apps are named `{}` ({} and {}); set [app] name in one of them",
                a.name,
                b.manifest.path.display(),
                a.manifest.path.display()
            );
        }
    }
    Ok(Project {
        cargo_manifest: Some(meta.root.join("Cargo.toml")),
        root: meta.root,
        target_dir: Some(meta.target_dir),
        apps,
    })
}

/// Every `[[seed]]` of `app` exists and lies within the project `root` (after resolving
/// symbolic links): a manifest from a cloned repository cannot make `zero up` or
/// `zero deploy --seed` upload the developer's other files. Returns nothing; errors name the
/// manifest's line.
pub fn check_seeds(root: &Path, app: &App) -> anyhow::Result<()> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    for s in &app.manifest.seeds {
        let at = |why: String| {
            anyhow::anyhow!(
                "{}:{}: [[seed]] from: {why}",
                app.manifest.path.display(),
                s.line
            )
        };
        let real = s
            .from
            .canonicalize()
            .map_err(|e| at(format!("cannot read {}: {e}", s.from.display())))?;
        if !real.starts_with(&root) {
            return Err(at(format!(
                "{} is outside the project ({}); seed only files of the project",
                real.display(),
                root.display()
            )));
        }
    }
    Ok(())
}
