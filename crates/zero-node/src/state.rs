//! The node's persistent management state: tenants, deployed apps (with the owner's credential)
//! and the revocations (one record each), under `DATA_DIR/state`; the replay journal is
//! `DATA_DIR/state/replay.redb` (see [`crate::revocation`]). Deployed code itself lives in zerofs (see
//! [`crate::code`]).
//!
//! Every write goes to a temporary file that is fsynced and renamed into place (and the
//! directory fsynced), so a crash never leaves a half-written record, and a deploy is visible
//! only once it is durable. (The records move into the replicated store with the cluster
//! work.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::revocation::RevocationRecord;

/// A tenant and its owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantRecord {
    /// Tenant name.
    pub name: String,
    /// The owner's DID.
    pub owner: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The hosts the Admin granted to the tenant: its apps may claim routes on them (`acme.example`,
    /// or `*.acme.example` for every subdomain). Host-less routes need no grant.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl TenantRecord {
    /// Whether the Admin granted `host` (lowercase, no port) to this tenant.
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|granted| host_grant_covers(granted, host))
    }
}

/// Whether a host grant (`acme.example`, or `*.acme.example` for its subdomains, not itself)
/// covers `host`. Both are compared case-insensitively.
pub fn host_grant_covers(granted: &str, host: &str) -> bool {
    match granted.strip_prefix("*.") {
        Some(suffix) => host.len().checked_sub(suffix.len() + 1).is_some_and(|cut| {
            host.is_char_boundary(cut)
                && host[cut..].starts_with('.')
                && host[cut + 1..].eq_ignore_ascii_case(suffix)
                && cut > 0
        }),
        None => granted.eq_ignore_ascii_case(host),
    }
}

/// A deployed app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRecord {
    /// Tenant.
    pub tenant: String,
    /// App name.
    pub name: String,
    /// Routes (`/path` or `host/path`).
    pub routes: Vec<String>,
    /// Content hash of the component (`sha256:…`).
    pub component: String,
    /// Hosts the app may reach with outgoing HTTP.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Unix seconds.
    pub deployed_at: u64,
    /// The key of the stored code in the tenant's files (see `code::code_key`).
    #[serde(default)]
    pub code: String,
    /// The DID that deployed the app (the owner, or someone the owner delegated to).
    #[serde(default)]
    pub holder: String,
    /// The deployer's delegation chain (standard base64 envelopes, root first): the owner's
    /// credential the node presents to zerofs to read the code.
    #[serde(default)]
    pub credential: Vec<String>,
    /// The app's schedules (zerochrono).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<zerochrono::ScheduleDecl>,
}

/// The on-disk state.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_json_dir<T: for<'de> Deserialize<'de>>(dir: &Path) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = fs::read(&p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        let v = serde_json::from_slice(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is damaged ({e}); restore it from a backup or remove it",
                p.display()
            )
        })?;
        out.push(v);
    }
    Ok(out)
}

impl StateStore {
    /// Opens the state under `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<StateStore> {
        let root = data_dir.join("state");
        for d in [root.join("tenants"), root.join("apps")] {
            fs::create_dir_all(&d)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
        }
        Ok(StateStore { root })
    }

    /// All tenants.
    pub fn tenants(&self) -> anyhow::Result<Vec<TenantRecord>> {
        read_json_dir(&self.root.join("tenants"))
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> anyhow::Result<Option<TenantRecord>> {
        Ok(self.tenants()?.into_iter().find(|t| t.name == name))
    }

    /// Records a tenant.
    pub fn put_tenant(&self, t: &TenantRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
        write_atomic(
            &self.root.join("tenants").join(format!("{}.json", t.name)),
            &bytes,
        )
    }

    /// All deployed apps.
    pub fn apps(&self) -> anyhow::Result<Vec<AppRecord>> {
        let mut out = Vec::new();
        let dir = self.root.join("apps");
        for entry in
            fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        {
            let entry = entry?;
            if entry.path().is_dir() {
                out.extend(read_json_dir::<AppRecord>(&entry.path())?);
            }
        }
        Ok(out)
    }

    /// Records an app (replacing a previous version).
    pub fn put_app(&self, a: &AppRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(a).map_err(std::io::Error::other)?;
        write_atomic(
            &self
                .root
                .join("apps")
                .join(&a.tenant)
                .join(format!("{}.json", a.name)),
            &bytes,
        )
    }

    /// Removes an app; `false` if there was none.
    pub fn remove_app(&self, tenant: &str, name: &str) -> std::io::Result<bool> {
        let p = self
            .root
            .join("apps")
            .join(tenant)
            .join(format!("{name}.json"));
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(d) = p.parent() {
                    fs::File::open(d)?.sync_all()?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The stored revocations: one record per file under `revocations/`, plus the CIDs of
    /// the list `revocations.json` written by earlier versions (read, never rewritten).
    pub fn revocations(&self) -> anyhow::Result<Vec<RevocationRecord>> {
        let p = self.root.join("revocations.json");
        let legacy: Vec<String> = match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{} is damaged ({e})", p.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", p.display())),
        };
        let mut out: Vec<RevocationRecord> = legacy
            .into_iter()
            .map(|cid| RevocationRecord {
                cid,
                revoker: String::new(),
                principal: String::new(),
                forget_after: None,
                revoked_at: 0,
            })
            .collect();
        out.extend(read_json_dir::<RevocationRecord>(
            &self.root.join("revocations"),
        )?);
        Ok(out)
    }

    /// Records one revocation (its own file; nothing else is rewritten).
    pub fn put_revocation(&self, r: &RevocationRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        write_atomic(&self.revocation_path(&r.cid)?, &bytes)
    }

    /// Deletes the record of a revocation that no longer matters (its delegation expired).
    pub fn remove_revocation(&self, cid: &str) -> std::io::Result<()> {
        match fs::remove_file(self.revocation_path(cid)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn revocation_path(&self, cid: &str) -> std::io::Result<PathBuf> {
        // A CID in its base32 text form is lowercase letters and digits only.
        if cid.is_empty() || !cid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(std::io::Error::other(format!("`{cid}` is not a CID")));
        }
        Ok(self.root.join("revocations").join(format!("{cid}.json")))
    }

    /// The directory of the state (for the replay journal).
    pub fn dir(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::host_grant_covers;

    #[test]
    fn host_grants() {
        assert!(host_grant_covers("acme.example", "acme.example"));
        assert!(host_grant_covers("acme.example", "ACME.example"));
        assert!(!host_grant_covers("acme.example", "www.acme.example"));
        assert!(host_grant_covers("*.acme.example", "www.acme.example"));
        assert!(host_grant_covers("*.acme.example", "a.b.acme.example"));
        assert!(!host_grant_covers("*.acme.example", "acme.example"));
        assert!(!host_grant_covers("*.acme.example", "evilacme.example"));
        assert!(!host_grant_covers("*.acme.example", ".acme.example"));
        assert!(!host_grant_covers("*.acme.example", "é.acme.example.x"));
    }
}
