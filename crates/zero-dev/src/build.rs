//! `zero build`: builds every app of a project for wasm32-wasip2 and signs each component with
//! exactly the capabilities its manifest names, as `NAME.zero.wasm` beside its `zero.toml`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use zero_auth::{Delegation, Keypair};

use crate::project::{App, Project, cargo};
use crate::ui;

/// The target apps are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Who signs the components: a key and the chain it holds.
pub struct Signer {
    /// The key (the holder of `chain`).
    pub key: Keypair,
    /// The chain, root first (for a local node: the dev Admin's delegation).
    pub chain: Vec<Delegation>,
}

/// One built and signed app.
#[derive(Debug, Clone)]
pub struct Built {
    /// The app's name.
    pub name: String,
    /// The signed component (`NAME.zero.wasm`).
    pub path: PathBuf,
    /// Its content hash (the `ucan` section excluded).
    pub hash: String,
}

/// When a failed cargo build's output says the target's standard library is missing, what to
/// do about it.
pub fn missing_target_hint(compiler_output: &str) -> Option<String> {
    let missing_std = compiler_output.contains("can't find crate for `core`")
        || compiler_output.contains("can't find crate for `std`");
    let says_target =
        compiler_output.contains(&format!("the `{TARGET}` target may not be installed"));
    (says_target || (missing_std && compiler_output.contains(TARGET))).then(|| {
        format!(
            "the {TARGET} target is not installed for this Rust toolchain: run `rustup target add {TARGET}`"
        )
    })
}

/// Runs cargo for the cargo apps of `project` (one invocation, so a mono-repo's shared crates
/// compile once) and returns each app's unsigned component by app name.
fn cargo_build(project: &Project, apps: &[&App]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let Some(ws) = &project.cargo_manifest else {
        return Ok(HashMap::new());
    };
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    ui::step(
        "build",
        &format!(
            "{} (cargo build --release --target {TARGET})",
            names.join(", ")
        ),
    );
    let start = Instant::now();
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(ws);
    for a in apps {
        if let Some(p) = &a.package {
            cmd.args(["-p", &p.name]);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("cannot run cargo (is Rust installed? see https://rustup.rs)")?;
    // Cargo's progress and the rendered compiler diagnostics go to our stderr as they come;
    // a copy is kept to recognize a missing target.
    let stderr = child.stderr.take().context("cargo's stderr")?;
    let copier = std::thread::spawn(move || {
        let mut kept = String::new();
        let mut err = std::io::stderr();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(err, "{line}");
            if kept.len() < (1 << 20) {
                kept.push_str(&line);
                kept.push('\n');
            }
        }
        kept
    });
    let mut by_manifest: HashMap<PathBuf, PathBuf> = HashMap::new();
    let stdout = child.stdout.take().context("cargo's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let cdylib = v["target"]["crate_types"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        let wasm = v["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let (true, Some(wasm), Some(manifest)) = (cdylib, wasm, v["manifest_path"].as_str()) {
            by_manifest.insert(PathBuf::from(manifest), PathBuf::from(wasm));
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    let output = copier.join().unwrap_or_default();
    if !status.success() {
        if let Some(hint) = missing_target_hint(&output) {
            anyhow::bail!("{hint}");
        }
        anyhow::bail!(
            "the build of {} failed: the compiler's output is above",
            names.join(", ")
        );
    }
    let mut out = HashMap::new();
    for a in apps {
        let Some(p) = &a.package else { continue };
        let wasm = by_manifest
            .iter()
            .find(|(m, _)| same_file(m, &p.manifest_path))
            .map(|(_, w)| w.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cargo built no component for `{}` ({}): is crate-type = [\"cdylib\"] set under [lib]?",
                    p.name,
                    p.manifest_path.display()
                )
            })?;
        out.insert(a.name.clone(), wasm);
    }
    ui::step("built", &format!("in {}", ui::secs(start.elapsed())));
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
}

fn custom_build(app: &App) -> anyhow::Result<PathBuf> {
    let Some(b) = &app.manifest.custom_build else {
        anyhow::bail!("{} has no custom build", app.name);
    };
    ui::step("build", &format!("{} ({})", app.name, b.command));
    let status = Command::new("sh")
        .arg("-c")
        .arg(&b.command)
        .current_dir(&app.manifest.dir)
        .stdout(Stdio::inherit())
        .status()
        .context("cannot run sh for [build] command")?;
    if !status.success() {
        anyhow::bail!(
            "{}: [build] command `{}` failed ({status}): its output is above",
            app.manifest.path.display(),
            b.command
        );
    }
    if !b.output.exists() {
        anyhow::bail!(
            "{}: [build] command succeeded but wrote no {} ([build] output)",
            app.manifest.path.display(),
            b.output.display()
        );
    }
    Ok(b.output.clone())
}

/// Signs `bytes` with one leaf per grant, each extending `signer`'s chain; no grant means no
/// capability, so the component is left unsigned (the node serves it with nothing).
pub fn sign(
    bytes: &[u8],
    signer: &Signer,
    grants: &[zero_client::Grant],
) -> anyhow::Result<Vec<u8>> {
    if grants.is_empty() {
        zero_component::expect_component(bytes, "the build output")?;
        return Ok(zero_component::strip_custom_section(
            bytes,
            zero_component::UCAN_SECTION,
        )?);
    }
    zero_client::sign_component_grants(bytes, &signer.key, &signer.chain, grants)
}

/// Builds and signs the apps of `project` (all, or those named in `only`).
pub fn build(project: &Project, signer: &Signer) -> anyhow::Result<Vec<Built>> {
    let apps: Vec<&App> = project.apps.iter().collect();
    let cargo_apps: Vec<&App> = apps
        .iter()
        .copied()
        .filter(|a| a.package.is_some())
        .collect();
    let mut wasm = cargo_build(project, &cargo_apps)?;
    for a in apps.iter().filter(|a| a.package.is_none()) {
        wasm.insert(a.name.clone(), custom_build(a)?);
    }
    let mut built = Vec::new();
    for a in &apps {
        let path = &wasm[&a.name];
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let grants = a.manifest.grants()?;
        let signed = sign(&bytes, signer, &grants)?;
        let out = a.signed_path();
        zero_client::write_file_atomically(&out, |f| {
            f.write_all(&signed)?;
            Ok(())
        })?;
        let hash = zero_component::content_hash(&signed)?.to_string();
        let caps = if a.manifest.capabilities.is_empty() {
            "no capabilities, so no token".to_string()
        } else {
            a.manifest
                .capabilities
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        };
        ui::step(
            if a.manifest.capabilities.is_empty() {
                "wrote"
            } else {
                "signed"
            },
            &format!(
                "{} ({}, {caps})",
                relative_to_cwd(&out),
                ui::size(signed.len())
            ),
        );
        built.push(Built {
            name: a.name.clone(),
            path: out,
            hash,
        });
    }
    Ok(built)
}

fn relative_to_cwd(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|d| p.strip_prefix(d).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_target_is_recognized_from_rustc_output() {
        // What rustc 1.95 prints when the target's standard library is not installed.
        let out = "error[E0463]: can't find crate for `core`\n  |\n  = note: the `wasm32-wasip2` target may not be installed\n  = help: consider downloading the target with `rustup target add wasm32-wasip2`\n";
        let hint = missing_target_hint(out).unwrap();
        assert!(hint.contains("rustup target add wasm32-wasip2"), "{hint}");
        let other = "error[E0425]: cannot find value `x` in this scope\n";
        assert_eq!(missing_target_hint(other), None);
    }
}
