//! Deployed code lives in zerofs, in the owning tenant's namespace, and the node reads it there
//! with the owner's credential (the seed's request path: cache miss → zerofs read with the
//! owner's credential → validate → compile).
//!
//! At deploy, the component is stored under [`code_path`] (content-addressed, so a failed or
//! replaced deploy never disturbs the code of the version that serves), and the deployer's
//! delegation chain is kept with the app record as the owner's credential. Whenever the node
//! needs the code again (a restart, a cache miss), [`fetch`] validates that credential *now*
//! (signatures, time bounds, revocations, the chain back to the Admin) and checks that it still
//! allows `/fs/read` of the code path before reading the bytes and checking their hash. A
//! credential that expired or was revoked refuses the app, with the reason in the log.
//!
//! File capabilities use *directory granularity*: a capability on a directory covers everything
//! under it, and an exclusion of a directory excludes everything under it (the rule of
//! [`zero_auth::ScopedChain`], the one capability checker).

use std::collections::BTreeMap;
use std::sync::Arc;

use zero_auth::{
    Capability, Chain, ChainExpectations, Delegation, Did, Ipld, ScopedChain, Validator,
};
use zerofs::{TenantPath, ZeroFs};

use crate::apps::{Authority, Component, Refusal, now};

/// The directory of a tenant's namespace that holds its deployed code, inside the reserved
/// [`zerofs::RESERVED_DIR`]: components cannot see it, and the owner can only read it.
pub const CODE_DIR: &str = "/.zero/code";

/// The key a component's bytes are stored under: the SHA-256 of the whole file, `ucan`
/// section included (the content hash leaves that section out, so two signings of the same
/// code share a content hash but not a key).
pub fn code_key(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Where the component stored under `key` ([`code_key`]) lives in its tenant's namespace.
pub fn code_path(key: &str) -> String {
    format!("{CODE_DIR}/{key}.wasm")
}

/// Checks `/fs/read` of `path` in `tenant` against `chain`, a validated chain's links (root
/// first), with the one capability checker ([`ScopedChain`]): a grant on a directory covers
/// everything under it and an exclusion of a directory excludes everything under it.
fn read_allowed(
    capabilities: &[Capability],
    tenant: &str,
    path: &TenantPath,
) -> Result<(), zero_auth::Error> {
    let base = BTreeMap::from([("tenant".to_string(), Ipld::String(tenant.to_string()))]);
    ScopedChain::new(Some(capabilities.to_vec()), base, None).allows(
        &zero_auth::Action::Read.command(zerofs::wasi::access::FS_NAMESPACE)?,
        &[("path", path.as_str())],
    )
}

/// The owner's credential kept with a deployed app: who deployed it and the delegation chain
/// (root first) that authorized them.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The deployer's DID.
    pub holder: Did,
    /// Their delegation chain, root first (empty when the Admin deployed directly).
    pub proofs: Vec<Delegation>,
}

impl Credential {
    /// Decodes a stored credential.
    pub fn decode(holder: &str, proofs: &[String]) -> Result<Credential, Refusal> {
        let holder = Did::parse(holder).map_err(|e| {
            Refusal::new(
                500,
                "Storage",
                format!("the stored deployer DID is damaged: {e}"),
            )
        })?;
        let proofs = proofs
            .iter()
            .map(|p| Delegation::from_base64(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Refusal::new(
                    500,
                    "Storage",
                    format!("the stored credential is damaged: {e}"),
                )
            })?;
        Ok(Credential { holder, proofs })
    }

    /// The proofs as stored (standard base64 of each envelope).
    pub fn encoded_proofs(&self) -> Vec<String> {
        self.proofs.iter().map(Delegation::to_base64).collect()
    }

    /// Validates the credential now and checks that it allows reading `path` of `tenant`.
    /// Returns the validated chain (`None` when the Admin itself is the holder).
    pub fn check_read(
        &self,
        authority: &Authority,
        tenant: &str,
        path: &TenantPath,
    ) -> Result<Option<Arc<Chain>>, Refusal> {
        let owner_refused = |e: zero_auth::Error| {
            Refusal::new(
                403,
                e.name(),
                format!(
                    "the owner's credential no longer covers the app's code ({e}); the owner must \
                     deploy again with a valid credential"
                ),
            )
        };
        if self.proofs.is_empty() {
            return match &authority.options.required_root {
                Some(admin) if *admin == self.holder => Ok(None),
                _ => Err(Refusal::new(
                    403,
                    "UnavailableProof",
                    "the app was deployed without a delegation chain by someone who is not the \
                     Admin; deploy it again with the owner's chain",
                )),
            };
        }
        let chain = Validator::new(&authority.options)
            .with_revocations(&authority.revocations)
            .validate_chain(
                &self.proofs,
                &ChainExpectations {
                    audience: Some(self.holder.clone()),
                    subject: authority.options.required_root.clone(),
                },
                now(),
            )
            .map_err(owner_refused)?;
        read_allowed(chain.capabilities(), tenant, path).map_err(owner_refused)?;
        Ok(Some(Arc::new(chain)))
    }
}

/// Stores a component's bytes at the [`code_path`] of its key in the tenant's namespace (a
/// no-op when those exact bytes are already stored). Durable before it returns.
pub async fn store(fs: &Arc<ZeroFs>, tenant: &str, component: &Component) -> Result<(), Refusal> {
    let fs = fs.clone();
    let tenant = tenant.to_string();
    let path = code_path(&component.key);
    let bytes = component.bytes.clone();
    tokio::task::spawn_blocking(move || {
        if fs.exists(&tenant, &path)? {
            return Ok(());
        }
        fs.write_with(
            &tenant,
            &path,
            bytes.as_slice(),
            zerofs::WriteOptions {
                create_parents: true,
            },
        )
        .map(|_| ())
    })
    .await
    .map_err(|e| Refusal::new(500, "Internal", format!("storing the code failed: {e}")))?
    .map_err(|e| match e {
        zerofs::Error::QuotaExceeded { .. } => Refusal::new(
            507,
            "QuotaExceeded",
            format!("the component does not fit in the tenant's file quota: {e}"),
        ),
        e => Refusal::new(500, "Storage", format!("could not store the code: {e}")),
    })?;
    Ok(())
}

/// Reads a deployed app's code (stored under `key`) from zerofs with the owner's credential:
/// the credential is validated now and must allow `/fs/read` of the code path; the bytes read
/// must still have that key. Returns the component (hashed once) and the owner's validated
/// chain.
pub async fn fetch(
    fs: &Arc<ZeroFs>,
    authority: &Authority,
    tenant: &str,
    key: &str,
    credential: &Credential,
) -> Result<(Component, Option<Arc<Chain>>), Refusal> {
    let path_text = code_path(key);
    let path = TenantPath::parse(&path_text)
        .map_err(|e| Refusal::new(500, "Storage", format!("bad code path: {e}")))?;
    let owner = credential.check_read(authority, tenant, &path)?;
    let fs = fs.clone();
    let t = tenant.to_string();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut reader = fs.open_read(&t, &path_text)?;
        let mut out = Vec::with_capacity(reader.len().min(1 << 30) as usize);
        std::io::Read::read_to_end(&mut reader, &mut out).map_err(|source| zerofs::Error::Io {
            context: "reading the code".to_string(),
            source,
        })?;
        Ok::<_, zerofs::Error>(out)
    })
    .await
    .map_err(|e| Refusal::new(500, "Internal", format!("reading the code failed: {e}")))?
    .map_err(|e| {
        Refusal::new(
            500,
            "Storage",
            format!("the app's code {key} cannot be read from zerofs: {e}"),
        )
    })?;
    let found = code_key(&bytes);
    if found != key {
        return Err(Refusal::new(
            500,
            "HashMismatch",
            format!("the stored code {key} is damaged (its bytes hash to {found}); deploy again"),
        ));
    }
    Ok((Component::with_key(bytes, found)?, owner))
}
