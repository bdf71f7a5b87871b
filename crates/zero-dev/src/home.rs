//! The developer's identity for local nodes: a local Admin key (the root a `zero up` node
//! trusts), the developer's own key, and the Admin's delegation of the `dev` tenant to it.
//! Created on first use under `$ZERO_HOME/dev/` (default `~/.zero/dev/`), keys of mode 0600.

use std::path::{Path, PathBuf};

use anyhow::Context;
use zero_auth::{Delegation, Keypair};

/// The tenant `zero up` deploys into.
pub const DEV_TENANT: &str = "dev";

/// `$ZERO_HOME`, else `~/.zero`.
pub fn zero_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("ZERO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "neither ZERO_HOME nor HOME is set: set ZERO_HOME to a directory for zero's keys"
            )
        })?;
    Ok(PathBuf::from(home).join(".zero"))
}

/// The developer's keys and chain for local nodes.
pub struct DevIdentity {
    /// Where they live (`$ZERO_HOME/dev`).
    pub dir: PathBuf,
    /// The local Admin (trusted by `zero up`'s node only).
    pub admin: Keypair,
    /// The developer's key: signs components and deploys.
    pub developer: Keypair,
    /// Admin → developer, everything within tenant `dev`.
    pub chain: Vec<Delegation>,
}

impl DevIdentity {
    /// Loads the identity, creating it on first use (and saying where).
    pub fn load_or_create() -> anyhow::Result<DevIdentity> {
        Self::load_or_create_in(&zero_home()?.join("dev"))
    }

    /// As [`DevIdentity::load_or_create`], in `dir`.
    pub fn load_or_create_in(dir: &Path) -> anyhow::Result<DevIdentity> {
        let admin_path = dir.join("admin.key");
        let dev_path = dir.join("developer.key");
        let chain_path = dir.join("dev.ucan");
        if !admin_path.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let admin = Keypair::generate()?;
            let developer = Keypair::generate()?;
            let d = zero_client::owner_delegation(&admin, DEV_TENANT, developer.did(), None)?;
            developer.save(&dev_path)?;
            zero_client::write_chain(&chain_path, std::slice::from_ref(&d))?;
            // The Admin key last: its presence marks a complete identity.
            admin.save(&admin_path)?;
            crate::ui::step(
                "created",
                &format!(
                    "your local development keys in {} (developer {}; set ZERO_HOME to keep them elsewhere)",
                    dir.display(),
                    developer.did()
                ),
            );
        }
        Ok(DevIdentity {
            dir: dir.to_path_buf(),
            admin: zero_client::load_key(&admin_path)?,
            developer: zero_client::load_key(&dev_path)?,
            chain: zero_client::read_chain(&chain_path)?,
        })
    }
}
