//! TLS on the node's listeners (`[http]` and `[admin]`): a certificate and key read from PEM
//! files, checked (readable, parseable, not expired, the key belonging to the certificate),
//! and reloaded when the files change on disk, without a restart: a new pair that does not
//! pass the checks leaves the previous one serving, and the log says why.
//!
//! The HTTP listener also serves tenants' certificates for their own hosts ([`SniCerts`]):
//! the certificate is chosen by the name the client sends (SNI), the exact host first, then a
//! wildcard for it, else the listener's default pair. Which tenant's certificate may be
//! served for which name is decided by the node (its host grants) when it builds the
//! [`HostTable`]; this module only looks names up.
//!
//! The server configuration is rustls' with the ring provider: TLS 1.2 and 1.3 only, rustls'
//! default (modern, forward-secret AEAD) cipher suites, session resumption by tickets (TLS
//! 1.3 and 1.2) and the session cache, and ALPN offering `h2` then `http/1.1`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// A certificate expiring within this long is logged as a warning (at load and every day).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate chain and its private key, checked.
#[derive(Clone)]
pub struct LoadedCert {
    /// The chain and the signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// When the leaf certificate stops being valid.
    pub not_after: SystemTime,
    /// The DNS names the leaf certificate is valid for (its subject alternative names).
    pub names: Vec<String>,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The ring provider the listeners use.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key (from files named `cert_name` and `key_name`
/// in the errors) and checks them: at least one certificate, a private key of a supported type
/// (RSA, ECDSA P-256/P-384, Ed25519; PKCS#8, PKCS#1 or SEC1), the key belonging to the first
/// certificate, and that certificate within its validity dates.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<LoadedCert, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_name} is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_name} holds no certificate (expected a PEM block -----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!(
            "{key_name} holds no PEM private key ({e}; expected -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    })?;
    let (not_after, names) = leaf_facts(&chain[0], cert_name)?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the private key in {key_name} does not belong to the certificate in {cert_name} \
             (give the key the certificate was issued for)"
        ),
        e => format!("{key_name}: unsupported private key ({e})"),
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
        names,
    })
}

/// The leaf's expiry and DNS names; refuses one outside its validity dates.
fn leaf_facts(
    leaf: &CertificateDer<'_>,
    cert_name: &str,
) -> Result<(SystemTime, Vec<String>), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{cert_name}: the first certificate is not valid X.509 ({e})"))?;
    let validity = cert.validity();
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let not_before = at(validity.not_before.timestamp());
    let not_after = at(validity.not_after.timestamp());
    let now = SystemTime::now();
    if now > not_after {
        return Err(format!(
            "the certificate in {cert_name} expired on {} (renew it)",
            validity.not_after
        ));
    }
    if now < not_before {
        return Err(format!(
            "the certificate in {cert_name} is not valid before {} (check the clock, or wait)",
            validity.not_before
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok((not_after, names))
}

/// Reads and checks the pair in `cert` and `key` ([`parse_pair`]), with errors that name the
/// files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            format!(
                "cannot read the {what} file {}: {e} (check the path and that the node may read it)",
                p.display()
            )
        })
    };
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "private key")?;
    parse_pair(
        &cert_pem,
        &key_pem,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

/// Whether `name` (a host, lowercase) is covered by one of `names` (exact, or a `*.` wildcard
/// for one label).
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n == host
            || n.strip_prefix("*.").is_some_and(|rest| {
                host.split_once('.')
                    .is_some_and(|(label, tail)| !label.is_empty() && tail == rest)
            })
    })
}

/// What identifies a file's version: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A listener's certificate from its PEM files, reloaded when they change.
pub struct CertFiles {
    section: &'static str,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<LoadedCert>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles")
            .field("section", &self.section)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertFiles {
    /// Loads the pair configured in `section` (`"[http]"`), or says why it cannot be served.
    pub fn load(section: &'static str, cert: &Path, key: &Path) -> Result<Arc<CertFiles>, String> {
        let seen = (stamp(cert), stamp(key));
        let loaded =
            load_pair(cert, key).map_err(|e| format!("{section} tls_cert/tls_key: {e}"))?;
        warn_expiry(section, &loaded);
        Ok(Arc::new(CertFiles {
            section,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(loaded),
            seen: Mutex::new(seen),
        }))
    }

    /// The pair being served.
    pub fn current(&self) -> LoadedCert {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the pair if either file changed since it was last read; a pair that does not
    /// pass the checks is logged and the previous one kept. `true` when a new pair is served.
    pub fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(loaded) => {
                tracing::info!(
                    cert = %self.cert.display(),
                    names = ?loaded.names,
                    "{} reloaded its TLS certificate from {}",
                    self.section,
                    self.cert.display()
                );
                warn_expiry(self.section, &loaded);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
                true
            }
            Err(e) => {
                tracing::warn!(
                    cert = %self.cert.display(),
                    error = %e,
                    "{} kept its previous TLS certificate: the changed files cannot be served: {e}",
                    self.section
                );
                false
            }
        }
    }

    /// Polls the files every [`RELOAD_POLL`] until `shutdown` turns (and warns daily of a
    /// coming expiry).
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_POLL) => {}
                _ = shutdown.changed() => return,
            }
            ticks += 1;
            self.reload_if_changed();
            if ticks.is_multiple_of(24 * 3600) {
                warn_expiry(self.section, &self.current());
            }
        }
    }
}

/// Logs a warning when `cert` expires within [`EXPIRY_WARNING`].
pub fn warn_expiry(what: &str, cert: &LoadedCert) {
    let left = cert
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if left < EXPIRY_WARNING {
        tracing::warn!(
            names = ?cert.names,
            days_left = left.as_secs() / 86_400,
            "{what}: the TLS certificate for {:?} expires in {} days; renew it",
            cert.names,
            left.as_secs() / 86_400
        );
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

/// The longest host name looked up (DNS names are at most 253 characters).
pub const MAX_HOST_LEN: usize = 253;

/// `name` as a table key: lowercase, without a trailing dot; `None` when it cannot be a DNS
/// host name (empty, too long, empty labels, anything but letters, digits, `-` and `.`, a
/// `*` included), so that a client's odd SNI bytes only ever select the default.
pub fn normalize_host(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty()
        || name.len() > MAX_HOST_LEN
        || name
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// The tenants' certificates of one listener, by host: exact names, and wildcards (`*.D`,
/// serving the names one label below `D`, as a certificate's wildcard does), each wildcard
/// with the names below it that it must not be served for (another tenant's hosts).
#[derive(Default)]
pub struct HostTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, (Arc<CertifiedKey>, HashSet<String>)>,
}

impl std::fmt::Debug for HostTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTable")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HostTable {
    /// Serves `key` for the host `host` (lowercase).
    pub fn insert_exact(&mut self, host: &str, key: Arc<CertifiedKey>) {
        self.exact.insert(host.to_ascii_lowercase(), key);
    }

    /// Serves `key` for every name one label below `domain` (the certificate's `*.domain`),
    /// except the names in `excluded`.
    pub fn insert_wildcard(
        &mut self,
        domain: &str,
        key: Arc<CertifiedKey>,
        excluded: HashSet<String>,
    ) {
        self.wildcard
            .insert(domain.to_ascii_lowercase(), (key, excluded));
    }

    /// Certificates in the table.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether the table holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The certificate for the name a client asked for: the exact host, else the wildcard of
    /// its parent domain (unless the name is excluded from it), else none.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize_host(sni)?;
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        match self.wildcard.get(parent) {
            Some((key, excluded)) if !excluded.contains(&name) => Some(key.clone()),
            _ => None,
        }
    }
}

/// A listener's certificates: its default pair (from its files, reloaded when they change)
/// and the tenants' certificates chosen by SNI ([`HostTable`], replaced as a whole when the
/// node changes it).
pub struct SniCerts {
    default: Arc<CertFiles>,
    hosts: RwLock<Arc<HostTable>>,
}

impl std::fmt::Debug for SniCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCerts")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl SniCerts {
    /// Serves `default` until a table of hosts is set.
    pub fn new(default: Arc<CertFiles>) -> Arc<SniCerts> {
        Arc::new(SniCerts {
            default,
            hosts: RwLock::new(Arc::new(HostTable::default())),
        })
    }

    /// The default pair.
    pub fn default_files(&self) -> &Arc<CertFiles> {
        &self.default
    }

    /// Replaces the tenants' certificates; the next handshake uses the new table.
    pub fn set_hosts(&self, table: HostTable) {
        *self.hosts.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// The certificate served for SNI `name` (`None`: no SNI).
    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let table = self.hosts.read().unwrap_or_else(|p| p.into_inner()).clone();
        name.and_then(|n| table.lookup(n))
            .unwrap_or_else(|| self.default.current().key)
    }
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// A server configuration for the node's listeners serving the certificates `resolver` picks:
/// TLS 1.2 and 1.3, rustls' default suites, ALPN `h2` and `http/1.1`, session tickets.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("cannot build the TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| format!("cannot start TLS session tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// The acceptor of a listener serving the certificates `resolver` picks (a [`CertFiles`] or
/// a [`SniCerts`]).
pub fn acceptor(resolver: Arc<dyn ResolvesServerCert>) -> Result<TlsAcceptor, String> {
    Ok(TlsAcceptor::from(server_config(resolver)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn a_good_pair_loads_with_its_names() {
        let (c, k) = pair(&["example.test", "*.apps.test"]);
        let l = parse_pair(c.as_bytes(), k.as_bytes(), "c.pem", "k.pem").unwrap();
        assert_eq!(l.names, ["example.test", "*.apps.test"]);
        assert!(covers(&l.names, "example.test"));
        assert!(covers(&l.names, "a.apps.test"));
        assert!(!covers(&l.names, "a.b.apps.test"));
        assert!(!covers(&l.names, "other.test"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (c, _) = pair(&["a.test"]);
        let (_, k) = pair(&["a.test"]);
        let e = parse_pair(c.as_bytes(), k.as_bytes(), "c.pem", "k.pem").unwrap_err();
        assert!(e.contains("does not belong to the certificate"), "{e}");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let c = p.self_signed(&key).unwrap();
        let e = parse_pair(
            c.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            "c.pem",
            "k.pem",
        )
        .unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn garbage_and_missing_files_are_named() {
        let (c, k) = pair(&["a.test"]);
        let e = parse_pair(b"hello", k.as_bytes(), "c.pem", "k.pem").unwrap_err();
        assert!(e.contains("c.pem holds no certificate"), "{e}");
        let e = parse_pair(c.as_bytes(), b"nope", "c.pem", "k.pem").unwrap_err();
        assert!(e.contains("k.pem holds no PEM private key"), "{e}");
        let e = load_pair(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(
            e.contains("cannot read the certificate file /nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn sni_picks_the_exact_host_then_the_wildcard_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c, k) = pair(&["default.test"]);
        std::fs::write(&cp, c).unwrap();
        std::fs::write(&kp, k).unwrap();
        let certs = SniCerts::new(CertFiles::load("[http]", &cp, &kp).unwrap());
        let load = |names: &[&str]| {
            let (c, k) = pair(names);
            parse_pair(c.as_bytes(), k.as_bytes(), "c", "k")
                .unwrap()
                .key
        };
        let (exact, wild) = (load(&["www.acme.test"]), load(&["*.acme.test"]));
        let mut t = HostTable::default();
        t.insert_exact("www.acme.test", exact.clone());
        t.insert_wildcard(
            "acme.test",
            wild.clone(),
            HashSet::from(["shop.acme.test".to_string()]),
        );
        certs.set_hosts(t);
        let default = certs.default_files().current().key;
        let is = |name: Option<&str>, want: &Arc<CertifiedKey>| {
            assert!(Arc::ptr_eq(&certs.pick(name), want), "{name:?}");
        };
        is(Some("www.acme.test"), &exact);
        is(Some("WWW.Acme.Test."), &exact);
        is(Some("api.acme.test"), &wild);
        // The wildcard covers one label, and not the names excluded from it.
        is(Some("a.b.acme.test"), &default);
        is(Some("acme.test"), &default);
        is(Some("shop.acme.test"), &default);
        is(None, &default);
        // Odd names never select a tenant's certificate.
        for odd in [
            "",
            ".",
            "..acme.test",
            "*.acme.test",
            "a\0.acme.test",
            "a b.acme.test",
            "a/../acme.test",
            "é.acme.test",
            ".acme.test",
            "a..acme.test",
        ] {
            is(Some(odd), &default);
        }
        let long = format!("{}.acme.test", "a".repeat(300));
        is(Some(&long), &default);
        assert!(normalize_host("ok.test").is_some());
        assert!(normalize_host(&"a.".repeat(128)).is_none());
    }

    #[test]
    fn a_changed_pair_is_reloaded_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c, k) = pair(&["one.test"]);
        std::fs::write(&cp, c).unwrap();
        std::fs::write(&kp, k).unwrap();
        let files = CertFiles::load("[http]", &cp, &kp).unwrap();
        assert!(!files.reload_if_changed());
        // A certificate whose key is not there yet: refused, the old one kept.
        let (c2, k2) = pair(&["two.test", "x.two.test"]);
        std::fs::write(&cp, &c2).unwrap();
        assert!(!files.reload_if_changed());
        assert_eq!(files.current().names, ["one.test"]);
        std::fs::write(&kp, &k2).unwrap();
        assert!(files.reload_if_changed());
        assert_eq!(files.current().names, ["two.test", "x.two.test"]);
    }
}
