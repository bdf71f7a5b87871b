//! Deploying built apps and seeding their files over a node's management API.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use zero_client::Client;

use crate::build::Built;
use crate::project::App;
use crate::ui;

/// Deploys one built app into `tenant` with its manifest's routes, outgoing hosts and
/// schedules, showing the upload and the node's compile as one step.
pub fn deploy(
    client: &mut Client,
    tenant: &str,
    app: &App,
    built: &Built,
) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(&built.path)
        .with_context(|| format!("cannot read {}", built.path.display()))?;
    ui::step(
        "deploy",
        &format!(
            "{} to tenant {tenant} ({}: upload, check, compile)",
            app.name,
            ui::size(bytes.len())
        ),
    );
    let start = Instant::now();
    let v = client
        .deploy_with_schedules(
            tenant,
            &app.name,
            &app.manifest.routes,
            &app.manifest.outbound,
            &app.manifest.schedule_args(),
            &bytes,
        )
        .with_context(|| format!("deploying {}", app.name))?;
    ui::step(
        "deployed",
        &format!("{} in {}", app.name, ui::secs(start.elapsed())),
    );
    Ok(v)
}

/// Uploads an app's `[[seed]]` files (a file, or a directory and everything under it; symbolic
/// links inside are skipped) into `tenant`'s files; returns how many files were written. A
/// seed must lie within the project (`root`): a manifest from a cloned repository cannot make
/// `zero deploy --seed` upload the developer's other files.
pub fn seed(client: &mut Client, tenant: &str, root: &Path, app: &App) -> anyhow::Result<usize> {
    crate::project::check_seeds(root, app)?;
    let mut count = 0;
    for s in &app.manifest.seeds {
        let from = &s
            .from
            .canonicalize()
            .with_context(|| format!("cannot read {}", s.from.display()))?;
        let meta =
            std::fs::metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
        if meta.is_dir() {
            count += seed_dir(client, tenant, from, &s.to)?;
        } else {
            put(client, tenant, from, &s.to)?;
            count += 1;
        }
    }
    if count > 0 {
        ui::step(
            "seeded",
            &format!("{count} files of {} into tenant {tenant}", app.name),
        );
    }
    Ok(count)
}

fn seed_dir(client: &mut Client, tenant: &str, dir: &Path, to: &str) -> anyhow::Result<usize> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut count = 0;
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            anyhow::bail!(
                "{}: a file name that is not UTF-8 cannot be seeded; rename it",
                e.path().display()
            );
        };
        let target = format!("{}/{name}", to.trim_end_matches('/'));
        let ty = e.file_type()?;
        if ty.is_dir() {
            count += seed_dir(client, tenant, &e.path(), &target)?;
        } else if ty.is_file() {
            put(client, tenant, &e.path(), &target)?;
            count += 1;
        }
    }
    Ok(count)
}

fn put(client: &mut Client, tenant: &str, from: &Path, to: &str) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    client
        .fs_put(tenant, to, std::io::BufReader::new(file), true)
        .with_context(|| format!("seeding {} to {tenant}:{to}", from.display()))?;
    Ok(())
}
