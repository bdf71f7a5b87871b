//! The node's own key and the Admin DID.
//!
//! The node's key (`DATA_DIR/node.key`, mode 0600) is created on first start. The Admin — the
//! root of authority for tenants and deployments — is `[node] admin` in `zerocore.toml`. When it
//! is not set, the node is in development mode: it creates `DATA_DIR/admin.key` once, uses its
//! DID as the Admin, and says so loudly at every start.

use std::path::{Path, PathBuf};

use zero_auth::{Did, Keypair};

/// Who the node is and whom it obeys.
#[derive(Debug)]
pub struct Identity {
    /// The node's key pair.
    pub node: Keypair,
    /// The Admin DID.
    pub admin: Did,
    /// In development mode, where the generated admin key is.
    pub dev_admin_key: Option<PathBuf>,
}

fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        Keypair::load(path).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        let key = Keypair::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        key.save(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(key)
    }
}

impl Identity {
    /// Loads or creates the node key, and resolves the Admin (from config, or the development
    /// admin key).
    pub fn load(data_dir: &Path, configured_admin: Option<&str>) -> anyhow::Result<Identity> {
        let node = load_or_create(&data_dir.join("node.key"))?;
        match configured_admin {
            Some(admin) => {
                let admin = Did::parse(admin).map_err(|e| {
                    anyhow::anyhow!("[node] admin in zerocore.toml is not a valid did:key: {e}")
                })?;
                Ok(Identity {
                    node,
                    admin,
                    dev_admin_key: None,
                })
            }
            None => {
                let path = data_dir.join("admin.key");
                let key = load_or_create(&path)?;
                Ok(Identity {
                    node,
                    admin: key.did().clone(),
                    dev_admin_key: Some(path),
                })
            }
        }
    }
}
