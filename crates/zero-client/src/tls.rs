//! TLS to a node's management API (`https://` in `--api`): rustls with the ring provider,
//! TLS 1.2 and 1.3, trusting the public web roots (webpki-roots) by default, or only the
//! certificates of a PEM file given with `--ca FILE` (`ZERO_CA`): the node's own self-signed
//! certificate, or the authority that issued it. A certificate problem is reported as what it
//! is (not trusted, expired, for another name) with what to do about it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Why a TLS connection to the node failed, in words (carried inside the transport error).
#[derive(Debug)]
pub struct TlsProblem(pub String);

impl std::fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsProblem {}

/// The roots an agent trusts and where they came from (for the errors).
pub(crate) struct Connector {
    config: Result<Arc<ClientConfig>, String>,
    /// The `--ca` file, when one was given.
    ca: Option<String>,
}

fn config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

impl Connector {
    /// Trusting the public web roots.
    pub(crate) fn web_roots() -> Connector {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Connector {
            config: config(roots),
            ca: None,
        }
    }

    /// Trusting only the certificates in the PEM file `path` (a node's self-signed
    /// certificate, or a certificate authority).
    pub(crate) fn from_ca_file(path: &Path) -> anyhow::Result<Connector> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the CA file {shown}: {e} (--ca / ZERO_CA names a PEM file holding the \
                 node's certificate or the authority that issued it)"
            )
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("the CA file {shown} is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            anyhow::bail!(
                "the CA file {shown} holds no certificate (expected -----BEGIN CERTIFICATE-----; \
                 give the node's certificate, e.g. its [admin] tls_cert, not its key)"
            );
        }
        let mut roots = RootCertStore::empty();
        for (i, c) in certs.into_iter().enumerate() {
            roots.add(c).map_err(|e| {
                anyhow::anyhow!(
                    "certificate {} in the CA file {shown} cannot be trusted: {e}",
                    i + 1
                )
            })?;
        }
        Ok(Connector {
            config: Ok(config(roots).map_err(anyhow::Error::msg)?),
            ca: Some(shown),
        })
    }

    /// What went wrong with the node's certificate, and what to do.
    fn explain(&self, host: &str, e: &rustls::Error) -> String {
        let trust = match &self.ca {
            Some(f) => format!("the certificates in {f} (--ca)"),
            None => "the public certificate authorities".to_string(),
        };
        let fix_trust = match &self.ca {
            Some(_) => "give --ca the node's own certificate or the authority that issued it",
            None => {
                "if the node's certificate is self-signed or from a private authority, pass it \
                 with --ca FILE (or set ZERO_CA=FILE)"
            }
        };
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the node's certificate is not trusted: it is not issued by {trust}; {fix_trust}"
                ),
                CertificateError::Expired => "the node's certificate has expired; the node's \
                     operator renews [admin] tls_cert"
                    .to_string(),
                CertificateError::ExpiredContext { time, not_after } => format!(
                    "the node's certificate expired {} days ago; the node's operator renews \
                     [admin] tls_cert",
                    time.as_secs().saturating_sub(not_after.as_secs()) / 86_400
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the node's certificate is not valid yet; check this machine's clock"
                        .to_string()
                }
                CertificateError::NotValidForName => format!(
                    "the node's certificate is not valid for `{host}`; use an --api address with \
                     a name the certificate is for"
                ),
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "the node's certificate is for {presented:?}, not `{host}`; use an --api \
                     address with one of those names (an IP address must be in the \
                     certificate as an IP address)"
                ),
                other => format!("the node's certificate was refused: {other:?}; {fix_trust}"),
            },
            rustls::Error::InvalidMessage(_) => format!(
                "the node at {host} did not answer TLS ({e}); if its management API serves \
                 cleartext, use an http:// --api address"
            ),
            other => format!("the TLS handshake with the node at {host} failed: {other}"),
        }
    }
}

/// A TLS connection under ureq.
struct TlsStream(rustls::StreamOwned<rustls::ClientConnection, Box<dyn ureq::ReadWrite>>);

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsStream").finish()
    }
}

impl ureq::ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn problem(kind: io::ErrorKind, text: String) -> ureq::Error {
    io::Error::new(kind, TlsProblem(text)).into()
}

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let config = self
            .config
            .as_ref()
            .map_err(|e| problem(io::ErrorKind::Other, e.clone()))?;
        let host = dns_name
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(dns_name);
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            problem(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a host name or IP address for TLS: {e}"),
            )
        })?;
        let mut conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| {
            problem(
                io::ErrorKind::Other,
                format!("cannot start TLS to {host}: {e}"),
            )
        })?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut io) {
                let text = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => self.explain(host, tls),
                    None => format!(
                        "the TLS handshake with the node at {host} failed: {e} (is --api an \
                         https:// address of a listener serving TLS?)"
                    ),
                };
                return Err(problem(e.kind(), text));
            }
        }
        Ok(Box::new(TlsStream(rustls::StreamOwned::new(conn, io))))
    }
}
