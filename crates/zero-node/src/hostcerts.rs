//! Tenants' certificates for their hosts (`zero tls put HOST`), served by the HTTP listener
//! by SNI beside the node's default certificate ([`zeroproxy::tls::SniCerts`]).
//!
//! **Which tenant a name belongs to** is decided by the Admin's host grants alone
//! ([`owner_of_name`]): the tenant holding the most specific grant covering the name (an
//! exact grant, then the wildcard `*.D` with the longest `D`); a name two tenants hold
//! equally belongs to neither. A tenant installs a certificate for an exact host only if the
//! host belongs to it, and for a wildcard `*.D` only if its grant is the most specific one
//! covering every name below `D` ([`owner_of_wildcard`]); a wildcard certificate is then not
//! served for a name below `D` that belongs to another tenant (an exact grant carved out of
//! the wildcard). The table the listener reads is rebuilt from the records and the grants on
//! every change ([`HostCerts::publish`]), so a grant the Admin takes away stops its
//! certificates at the next handshake.
//!
//! **Storage**: `DATA_DIR/state/tls/TENANT/HOST.crt` and `HOST.key` (a wildcard `*.D` is
//! stored as `_.D`; `_` is never part of a host), the directory mode 0700 and the key 0600,
//! written to a temporary file and renamed. The key is read back only to serve it; no API
//! returns it. `HOST` and `TENANT` are validated names (letters, digits, `-`, `.`), never
//! paths from a client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::json;
use sha2::Digest;
use zeroproxy::tls::{HostTable, LoadedCert, SniCerts};

use crate::apps::Refusal;
use crate::state::TenantRecord;

/// Largest `zero tls put` body (certificate chain and key, as PEM in JSON).
pub const MAX_PUT_BYTES: usize = 64 << 10;

/// Most certificates in one chain.
pub const MAX_CHAIN: usize = 8;

/// A certificate host: an exact name (`acme.example`) or a wildcard (`*.acme.example`),
/// lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertHost {
    /// One name.
    Exact(String),
    /// `*.D`: the names one label below `D`.
    Wildcard(String),
}

impl CertHost {
    /// Parses `HOST` or `*.DOMAIN` (a host name of letters, digits, `-` and `.`, no port).
    pub fn parse(s: &str) -> Result<CertHost, String> {
        let bad = || {
            format!(
                "`{}` is not a certificate host: write a host name such as `acme.example`, or \
                 `*.acme.example` for its subdomains (letters, digits, `-` and `.`, no port)",
                s.escape_debug()
            )
        };
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.ends_with('.') {
            return Err(bad());
        }
        let name = zeroproxy::tls::normalize_host(name).ok_or_else(bad)?;
        if wild && !name.contains('.') {
            return Err(format!(
                "`{s}` would cover every name under a top-level domain; a wildcard certificate \
                 host needs at least two labels after `*.` (e.g. `*.acme.example`)"
            ));
        }
        Ok(if wild {
            CertHost::Wildcard(name)
        } else {
            CertHost::Exact(name)
        })
    }

    /// `acme.example` or `*.acme.example`.
    pub fn text(&self) -> String {
        match self {
            CertHost::Exact(h) => h.clone(),
            CertHost::Wildcard(d) => format!("*.{d}"),
        }
    }

    /// The file stem on disk: the host, a wildcard's `*` written `_`.
    fn stem(&self) -> String {
        match self {
            CertHost::Exact(h) => h.clone(),
            CertHost::Wildcard(d) => format!("_.{d}"),
        }
    }

    fn from_stem(stem: &str) -> Option<CertHost> {
        let text = match stem.strip_prefix("_.") {
            Some(d) => format!("*.{d}"),
            None => stem.to_string(),
        };
        CertHost::parse(&text).ok().filter(|h| h.stem() == stem)
    }
}

/// The Admin's host grants of every tenant, indexed for ownership questions.
struct Grants<'a> {
    exact: HashMap<String, Vec<&'a str>>,
    wildcard: HashMap<String, Vec<&'a str>>,
}

impl<'a> Grants<'a> {
    fn of(tenants: &'a [TenantRecord]) -> Grants<'a> {
        let mut g = Grants {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for t in tenants {
            for h in &t.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(d) => g.wildcard.entry(d.to_string()).or_default().push(&t.name),
                    None => g.exact.entry(h).or_default().push(&t.name),
                }
            }
        }
        for v in g.exact.values_mut().chain(g.wildcard.values_mut()) {
            v.sort_unstable();
            v.dedup();
        }
        g
    }

    /// The one tenant in `holders`, if exactly one.
    fn single(holders: &[&'a str]) -> Option<&'a str> {
        match holders {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The tenant holding the most specific wildcard covering every name below `domain`:
    /// `*.domain` itself, else `*.PARENT` for the nearest parent.
    fn wildcard_owner(&self, domain: &str) -> Option<&'a str> {
        let mut d = domain;
        loop {
            if let Some(holders) = self.wildcard.get(d) {
                return Self::single(holders);
            }
            d = d.split_once('.')?.1;
        }
    }

    /// The tenant a name belongs to: an exact grant of it, else the most specific wildcard.
    fn owner(&self, name: &str) -> Option<&'a str> {
        if let Some(holders) = self.exact.get(name) {
            return Self::single(holders);
        }
        self.wildcard_owner(name.split_once('.')?.1)
    }
}

/// The tenant the name `host` belongs to under the grants of `tenants` (see the module
/// documentation); `None` when no tenant's grant covers it or two hold it equally.
pub fn owner_of_name<'a>(tenants: &'a [TenantRecord], host: &str) -> Option<&'a str> {
    Grants::of(tenants).owner(&host.to_ascii_lowercase())
}

/// The tenant every name one label below `domain` belongs to, as far as wildcard grants go
/// (exact grants of single names below it are carved out when serving).
pub fn owner_of_wildcard<'a>(tenants: &'a [TenantRecord], domain: &str) -> Option<&'a str> {
    Grants::of(tenants).wildcard_owner(&domain.to_ascii_lowercase())
}

/// One installed certificate.
struct Stored {
    /// The checked pair, or why it cannot be served (a file damaged or expired at load).
    cert: Result<LoadedCert, String>,
    /// SHA-256 of the leaf certificate (DER), hex.
    fingerprint: String,
    /// Unix seconds.
    installed_at: u64,
}

/// The tenants' certificates: their records on disk and in memory, and the SNI table built
/// from them.
pub struct HostCerts {
    dir: PathBuf,
    sni: Option<Arc<SniCerts>>,
    max_per_tenant: usize,
    records: Mutex<BTreeMap<(String, CertHost), Stored>>,
}

impl std::fmt::Debug for HostCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCerts")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(500, "Storage", e.to_string())
}

/// SHA-256 of `der`, lowercase hex with `:` between bytes (as `openssl x509 -fingerprint
/// -sha256` prints it, in lowercase).
pub fn fingerprint(der: &[u8]) -> String {
    let d = sha2::Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes `bytes` to `path` with `mode` from its creation, through a temporary file that is
/// fsynced and renamed into place.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HostCerts {
    /// Opens the records under `state_dir/tls` (created mode 0700) and loads them; `sni` is the
    /// HTTP listener's certificates (`None`: it serves cleartext, and certificates cannot be
    /// installed). A record that cannot be served (damaged, expired) is logged and listed with
    /// its error.
    pub fn open(
        state_dir: &Path,
        sni: Option<Arc<SniCerts>>,
        max_per_tenant: usize,
    ) -> anyhow::Result<HostCerts> {
        let dir = state_dir.join("tls");
        private_dir(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let mut records = BTreeMap::new();
        for tenant in std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        {
            let tenant = tenant?;
            let name = tenant.file_name().to_string_lossy().into_owned();
            if !tenant.path().is_dir() || !crate::config::valid_name(&name) {
                continue;
            }
            for file in std::fs::read_dir(tenant.path())? {
                let path = file?.path();
                if path.extension().is_none_or(|x| x != "crt") {
                    continue;
                }
                let Some(host) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(CertHost::from_stem)
                else {
                    continue;
                };
                let key = path.with_extension("key");
                let installed_at = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_or(0, unix_secs);
                // Checked as at install, with errors that name no path of the node's (the
                // owner reads them in `zero tls list`).
                let cert = match (std::fs::read(&path), std::fs::read(&key)) {
                    (Ok(c), Ok(k)) => zeroproxy::tls::parse_pair(
                        &c,
                        &k,
                        "the stored certificate",
                        "the stored key",
                    ),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(file = %path.display(), "cannot read a stored tenant certificate or its key: {e}");
                        Err(format!(
                            "the node cannot read the stored certificate or key ({e}); install it again with `zero tls put`"
                        ))
                    }
                };
                let fingerprint = match &cert {
                    Ok(c) => c
                        .key
                        .end_entity_cert()
                        .map_or(String::new(), |d| fingerprint(d)),
                    Err(_) => String::new(),
                };
                match &cert {
                    Ok(c) => zeroproxy::tls::warn_expiry(
                        &format!("tenant `{name}`, host `{}`", host.text()),
                        c,
                    ),
                    Err(e) => tracing::error!(
                        tenant = %name,
                        host = %host.text(),
                        "the certificate of tenant `{name}` for `{}` is not served: {e}; the owner installs a new one with `zero tls put`",
                        host.text()
                    ),
                }
                records.insert(
                    (name.clone(), host),
                    Stored {
                        cert,
                        fingerprint,
                        installed_at,
                    },
                );
            }
        }
        Ok(HostCerts {
            dir,
            sni,
            max_per_tenant,
            records: Mutex::new(records),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, CertHost), Stored>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the HTTP listener serves TLS (else `TlsNotEnabled`).
    pub fn check_enabled(&self) -> Result<(), Refusal> {
        match self.sni {
            Some(_) => Ok(()),
            None => Err(Refusal::new(
                409,
                "TlsNotEnabled",
                "this node's HTTP listener serves cleartext, so it would never serve this \
                 certificate; the operator enables HTTPS with [http] tls_cert and tls_key first",
            )),
        }
    }

    /// Refuses `host` for `tenant` unless the host belongs to it (see the module
    /// documentation): `HostNotGranted`, never naming another tenant.
    pub fn check_owner(
        tenant: &TenantRecord,
        tenants: &[TenantRecord],
        host: &CertHost,
    ) -> Result<(), Refusal> {
        let owner = match host {
            CertHost::Exact(h) => owner_of_name(tenants, h),
            CertHost::Wildcard(d) => owner_of_wildcard(tenants, d),
        };
        if owner == Some(tenant.name.as_str()) {
            return Ok(());
        }
        let h = host.text();
        Err(Refusal::new(
            403,
            "HostNotGranted",
            format!(
                "a certificate for `{h}` needs the Admin's grant of that host to tenant `{t}` \
                 (a wildcard needs a wildcard grant covering it), and no more specific grant of \
                 it to another tenant; the Admin grants it with `zero tenant create {t} --owner \
                 DID --host {h}`",
                t = tenant.name
            ),
        ))
    }

    /// Refuses a new certificate past `[admin] max_certs_per_tenant` (replacing one always
    /// has room): `TooManyCertificates`.
    pub fn check_room(&self, tenant: &str, host: &CertHost) -> Result<(), Refusal> {
        let records = self.lock();
        self.room(&records, tenant, host)
    }

    fn room(
        &self,
        records: &BTreeMap<(String, CertHost), Stored>,
        tenant: &str,
        host: &CertHost,
    ) -> Result<(), Refusal> {
        let key = (tenant.to_string(), host.clone());
        let held = records.keys().filter(|(t, _)| t == tenant).count();
        if !records.contains_key(&key) && held >= self.max_per_tenant {
            return Err(Refusal::new(
                409,
                "TooManyCertificates",
                format!(
                    "tenant `{tenant}` already has {held} certificates, the most this node takes \
                     ([admin] max_certs_per_tenant = {}); remove one with `zero tls remove HOST`, \
                     replace an existing one, or use a wildcard certificate",
                    self.max_per_tenant
                ),
            ));
        }
        Ok(())
    }

    /// Checks and installs `cert_pem` and `key_pem` for `host` of `tenant` (the caller has
    /// checked ownership), replacing an earlier pair, and serves it from the next handshake.
    pub fn put(
        &self,
        tenant: &str,
        host: &CertHost,
        cert_pem: &[u8],
        key_pem: &[u8],
        tenants: &[TenantRecord],
    ) -> Result<serde_json::Value, Refusal> {
        self.check_enabled()?;
        let invalid = |m: String| Refusal::new(400, "InvalidCertificate", m);
        let chain_len = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem).count()
        };
        if chain_len > MAX_CHAIN {
            return Err(invalid(format!(
                "the certificate chain holds {chain_len} certificates, more than {MAX_CHAIN}; \
                 send the host's certificate and its intermediates only, not the root"
            )));
        }
        let loaded =
            zeroproxy::tls::parse_pair(cert_pem, key_pem, "the `cert` PEM", "the `key` PEM")
                .map_err(invalid)?;
        let h = host.text();
        if !loaded.names.contains(&h)
            && !matches!(host, CertHost::Exact(e) if zeroproxy::tls::covers(&loaded.names, e))
        {
            return Err(invalid(format!(
                "the certificate is for {:?}, which does not cover `{h}` (its subject alternative \
                 names must include `{h}`{}); get a certificate for this host",
                loaded.names,
                if matches!(host, CertHost::Wildcard(_)) {
                    ""
                } else {
                    " or a wildcard covering it"
                }
            )));
        }
        let fingerprint = loaded
            .key
            .end_entity_cert()
            .map(|d| fingerprint(d))
            .map_err(|e| invalid(format!("the certificate chain is empty ({e})")))?;
        let tdir = self.dir.join(tenant);
        let mut records = self.lock();
        self.room(&records, tenant, host)?;
        private_dir(&tdir).map_err(storage)?;
        let stem = host.stem();
        // The key first: a certificate file is only ever next to its own key once renamed.
        write_private(&tdir.join(format!("{stem}.key")), key_pem, 0o600).map_err(storage)?;
        write_private(&tdir.join(format!("{stem}.crt")), cert_pem, 0o644).map_err(storage)?;
        zeroproxy::tls::warn_expiry(&format!("tenant `{tenant}`, host `{h}`"), &loaded);
        let info = describe(tenant, host, &loaded, &fingerprint, None);
        records.insert(
            (tenant.to_string(), host.clone()),
            Stored {
                cert: Ok(loaded),
                fingerprint,
                installed_at: crate::apps::now(),
            },
        );
        self.publish_locked(&records, tenants);
        Ok(info)
    }

    /// Removes the certificate of `host` of `tenant`; `false` when there was none.
    pub fn remove(
        &self,
        tenant: &str,
        host: &CertHost,
        tenants: &[TenantRecord],
    ) -> Result<bool, Refusal> {
        let mut records = self.lock();
        let stem = host.stem();
        let tdir = self.dir.join(tenant);
        let existed = records
            .remove(&(tenant.to_string(), host.clone()))
            .is_some();
        for ext in ["crt", "key"] {
            match std::fs::remove_file(tdir.join(format!("{stem}.{ext}"))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage(e)),
            }
        }
        if existed {
            std::fs::File::open(&tdir)
                .and_then(|d| d.sync_all())
                .map_err(storage)?;
        }
        self.publish_locked(&records, tenants);
        Ok(existed)
    }

    /// The certificates of `tenant` (or every tenant's), for `zero tls list`: host, tenant,
    /// names, not_after, days left, fingerprint, and whether it is served (and why not). Never
    /// a key.
    pub fn list(&self, tenant: Option<&str>, tenants: &[TenantRecord]) -> Vec<serde_json::Value> {
        let records = self.lock();
        let grants = Grants::of(tenants);
        records
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|want| want == t.as_str()))
            .map(|((t, host), stored)| match &stored.cert {
                Ok(c) => {
                    let why_not = unserved(&grants, t, host);
                    let mut v = describe(t, host, c, &stored.fingerprint, why_not);
                    v["installed_at"] = json!(stored.installed_at);
                    v
                }
                Err(e) => json!({
                    "host": host.text(),
                    "tenant": t,
                    "served": false,
                    "reason": e,
                    "installed_at": stored.installed_at,
                }),
            })
            .collect()
    }

    /// Rebuilds the listener's table from the records and the grants of `tenants` (call it
    /// whenever either changes).
    pub fn publish(&self, tenants: &[TenantRecord]) {
        let records = self.lock();
        self.publish_locked(&records, tenants);
    }

    fn publish_locked(
        &self,
        records: &BTreeMap<(String, CertHost), Stored>,
        tenants: &[TenantRecord],
    ) {
        let Some(sni) = &self.sni else { return };
        let grants = Grants::of(tenants);
        // Exact grants by parent domain: the names a wildcard may have to leave out.
        let mut below: HashMap<&str, Vec<&str>> = HashMap::new();
        for name in grants.exact.keys() {
            if let Some((_, parent)) = name.split_once('.') {
                below.entry(parent).or_default().push(name);
            }
        }
        let mut table = HostTable::default();
        let mut unserved_count = 0usize;
        for ((tenant, host), stored) in records {
            let Ok(cert) = &stored.cert else { continue };
            if unserved(&grants, tenant, host).is_some() {
                unserved_count += 1;
                continue;
            }
            match host {
                CertHost::Exact(h) => table.insert_exact(h, cert.key.clone()),
                CertHost::Wildcard(d) => {
                    let excluded: HashSet<String> = below
                        .get(d.as_str())
                        .into_iter()
                        .flatten()
                        .filter(|n| grants.owner(n) != Some(tenant.as_str()))
                        .map(|n| n.to_string())
                        .collect();
                    table.insert_wildcard(d, cert.key.clone(), excluded);
                }
            }
        }
        tracing::debug!(
            served = table.len(),
            unserved = unserved_count,
            "tenant certificates published"
        );
        sni.set_hosts(table);
    }

    /// Warns of every served certificate expiring within
    /// [`zeroproxy::tls::EXPIRY_WARNING`], daily, until `shutdown` turns.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
                _ = shutdown.changed() => return,
            }
            for ((tenant, host), stored) in self.lock().iter() {
                if let Ok(c) = &stored.cert {
                    zeroproxy::tls::warn_expiry(
                        &format!("tenant `{tenant}`, host `{}`", host.text()),
                        c,
                    );
                }
            }
        }
    }
}

/// Why the certificate of `tenant` for `host` is not served under `grants`, or `None`.
fn unserved(grants: &Grants<'_>, tenant: &str, host: &CertHost) -> Option<&'static str> {
    let owner = match host {
        CertHost::Exact(h) => grants.owner(h),
        CertHost::Wildcard(d) => grants.wildcard_owner(d),
    };
    (owner != Some(tenant)).then_some("the Admin no longer grants this host to the tenant")
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn describe(
    tenant: &str,
    host: &CertHost,
    c: &LoadedCert,
    fingerprint: &str,
    why_not: Option<&str>,
) -> serde_json::Value {
    let not_after = unix_secs(c.not_after);
    let days_left = c
        .not_after
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs() / 86_400);
    let mut v = json!({
        "host": host.text(),
        "tenant": tenant,
        "names": c.names,
        "not_after": utc(not_after),
        "not_after_unix": not_after,
        "days_left": days_left,
        "sha256": fingerprint,
        "served": why_not.is_none(),
    });
    if let Some(r) = why_not {
        v["reason"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, hosts: &[&str]) -> TenantRecord {
        TenantRecord {
            name: name.into(),
            owner: String::new(),
            created_at: 0,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn a_name_belongs_to_the_most_specific_grant_and_a_tie_to_nobody() {
        let ts = [
            t("acme", &["acme.example", "*.acme.example"]),
            t("beta", &["shop.acme.example", "beta.example"]),
            t("gamma", &["*.deep.acme.example", "both.example"]),
            t("delta", &["both.example"]),
        ];
        assert_eq!(owner_of_name(&ts, "acme.example"), Some("acme"));
        assert_eq!(owner_of_name(&ts, "www.acme.example"), Some("acme"));
        assert_eq!(owner_of_name(&ts, "a.b.acme.example"), Some("acme"));
        assert_eq!(owner_of_name(&ts, "shop.acme.example"), Some("beta"));
        assert_eq!(owner_of_name(&ts, "x.deep.acme.example"), Some("gamma"));
        assert_eq!(owner_of_name(&ts, "deep.acme.example"), Some("acme"));
        assert_eq!(owner_of_name(&ts, "both.example"), None);
        assert_eq!(owner_of_name(&ts, "other.example"), None);
        assert_eq!(owner_of_wildcard(&ts, "acme.example"), Some("acme"));
        assert_eq!(owner_of_wildcard(&ts, "sub.acme.example"), Some("acme"));
        assert_eq!(owner_of_wildcard(&ts, "deep.acme.example"), Some("gamma"));
        // beta's exact grant does not make `*.example` or `*.acme.example` beta's.
        assert_eq!(owner_of_wildcard(&ts, "example"), None);
    }

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn certificate_hosts_are_names_never_paths() {
        assert_eq!(
            CertHost::parse("Acme.Example").unwrap(),
            CertHost::Exact("acme.example".into())
        );
        assert_eq!(
            CertHost::parse("*.acme.example").unwrap(),
            CertHost::Wildcard("acme.example".into())
        );
        for bad in [
            "",
            "*",
            "*.",
            "*.com",
            "../../admin",
            "a/b",
            "acme.example:443",
            "acme..example",
            ".acme.example",
            "acme.example.",
            "*.*.acme.example",
            "a*.acme.example",
            "_.acme.example",
            "acme\0.example",
            "acme example",
            "é.example",
        ] {
            assert!(CertHost::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            CertHost::from_stem("_.acme.example"),
            Some(CertHost::Wildcard("acme.example".into()))
        );
        assert_eq!(
            CertHost::from_stem("acme.example"),
            Some(CertHost::Exact("acme.example".into()))
        );
        assert_eq!(CertHost::from_stem("ACME.example"), None);
    }
}
