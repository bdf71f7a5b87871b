//! The developer loop of zerocore, behind the `zero` commands that work on a project:
//!
//! - [`new`]: `zero new NAME [--template http|todo|cron]` writes a project that builds, with the
//!   SDK embedded in this binary;
//! - [`project`]: finds the apps of a project (one package, or a cargo workspace of several,
//!   each with its `zero.toml`);
//! - [`build`]: `zero build` compiles them for wasm32-wasip2 and signs each with exactly the
//!   capabilities its manifest names;
//! - [`up`]: `zero up` runs a local node, deploys, watches, rebuilds and redeploys, and streams
//!   the apps' logs;
//! - [`deploy`]: deploying built apps (and seeding their files) to any node.
//!
//! The developer's keys for local nodes live in `$ZERO_HOME/dev/` (default `~/.zero/dev/`),
//! see [`home`]. Progress goes to stderr ([`ui`]).

#![deny(missing_docs)]

pub mod build;
pub mod deploy;
pub mod home;
pub mod new;
pub mod project;
pub mod ui;
pub mod up;

use std::path::Path;

/// `zero deploy` without a file: builds the project in `dir`, signs with `signer`, seeds when
/// asked and deploys every app into `tenant` through `client`.
pub fn deploy_project(
    dir: &Path,
    signer: &build::Signer,
    client: &mut zero_client::Client,
    tenant: &str,
    seed: bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let project = project::discover(dir)?;
    let built = build::build(&project, signer)?;
    let mut answers = Vec::new();
    for (app, b) in project.apps.iter().zip(&built) {
        if seed {
            deploy::seed(client, tenant, &project.root, app)?;
        }
        answers.push(deploy::deploy(client, tenant, app, b)?);
    }
    Ok(answers)
}
