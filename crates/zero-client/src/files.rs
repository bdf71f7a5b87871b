//! Key files, chain files and tenant file addresses on the caller's machine.

use std::path::Path;

use zero_auth::{Delegation, Keypair};

/// Loads a key file, with the path in the error.
pub fn load_key(path: &Path) -> anyhow::Result<Keypair> {
    Keypair::load(path).map_err(|e| anyhow::anyhow!("key {}: {e}", path.display()))
}

/// Reads a chain file.
pub fn read_chain(path: &Path) -> anyhow::Result<Vec<Delegation>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the chain file {}: {e}", path.display()))?;
    let mut chain = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        chain.push(Delegation::from_base64(line).map_err(|e| {
            anyhow::anyhow!("{} line {}: not a delegation: {e}", path.display(), i + 1)
        })?);
    }
    if chain.is_empty() {
        anyhow::bail!("{} holds no delegation", path.display());
    }
    Ok(chain)
}

/// Reads a delegation chain from a chain file, or from the `ucan` section of a signed
/// component (a file that starts with the WebAssembly magic bytes) that carries one chain.
pub fn read_chain_or_component(path: &Path) -> anyhow::Result<Vec<Delegation>> {
    let mut chains = read_chains_or_component(path)?;
    match chains.pop() {
        Some(chain) if chains.is_empty() => Ok(chain),
        _ => anyhow::bail!(
            "{} carries {} capability chains, not one; see them with `zero inspect`",
            path.display(),
            chains.len() + 1
        ),
    }
}

/// Reads the delegation chains of a chain file (one chain), or of the `ucan` section of a
/// signed component (a file that starts with the WebAssembly magic bytes; one chain per
/// capability it was signed with).
pub fn read_chains_or_component(path: &Path) -> anyhow::Result<Vec<Vec<Delegation>>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        return Ok(vec![read_chain(path)?]);
    }
    let sections = zero_component::custom_sections(&bytes)?;
    let section = sections
        .iter()
        .find(|s| s.name == zero_component::UCAN_SECTION)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} carries no capability token (no `ucan` section)",
                path.display()
            )
        })?;
    let data = bytes
        .get(section.data.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: the `ucan` section is cut short", path.display()))?;
    zero_auth::component::decode_chains(data)
        .map_err(|e| anyhow::anyhow!("{}: the embedded token is unreadable: {e}", path.display()))
}

/// Writes a chain file.
pub fn write_chain(path: &Path, chain: &[Delegation]) -> anyhow::Result<()> {
    let mut text = String::from(
        "# zerocore delegation chain, root first (one base64 DAG-CBOR envelope per line)\n",
    );
    for d in chain {
        text.push_str(&d.to_base64());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Splits `TENANT:/path` into the tenant and the path.
pub fn parse_remote(remote: &str) -> anyhow::Result<(&str, &str)> {
    match remote.split_once(':') {
        Some((tenant, path)) if !tenant.is_empty() && path.starts_with('/') => Ok((tenant, path)),
        _ => anyhow::bail!(
            "`{remote}` is not a tenant file: write TENANT:/path, for example acme:/site/index.html"
        ),
    }
}

/// Writes `path` through `fill` into a temporary file next to it, renamed into place only when
/// `fill` succeeds: an interrupted download never leaves a partial file.
pub fn write_file_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.part{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    let filled = fill(&mut file).and_then(|()| {
        file.sync_all()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))
    });
    if let Err(e) = filled {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Keypair::generate().unwrap();
        let owner = Keypair::generate().unwrap();
        let d = crate::owner_delegation(&admin, "acme", owner.did(), Some(60)).unwrap();
        let p = dir.path().join("owner.ucan");
        write_chain(&p, std::slice::from_ref(&d)).unwrap();
        let back = read_chain(&p).unwrap();
        assert_eq!(back[0].cid(), d.cid());
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(
            read_chain(&p)
                .unwrap_err()
                .to_string()
                .contains("no delegation")
        );
        std::fs::write(&p, "not base64!\n").unwrap();
        assert!(read_chain(&p).unwrap_err().to_string().contains("line 1"));
    }
}
