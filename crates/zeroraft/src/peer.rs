//! Node-to-node channels: mutual TLS 1.3 between nodes with no certificate authority. Each
//! node's certificate is self-signed by its node key (Ed25519, the key of its `did:key`) and
//! names that DID in a subject alternative name URI. A peer is accepted only when the DID in
//! its certificate is one of the node DIDs the Admin delegated (the [`Peers`] set, kept by the
//! caller) and the certificate's public key is that DID's key; the handshake itself proves the
//! peer holds the private key (its `CertificateVerify` signature). Both sides check: the
//! server refuses a client that is not a delegated node, the client a server that is not.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use zero_auth::{Did, Keypair};

/// The name a node gives when it connects to a peer (the peer's certificate is checked by its
/// DID, not by this name).
const PEER_NAME: &str = "zerocore-node";

/// The object identifier of Ed25519 keys (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// The node DIDs a node accepts as peers (the nodes the Admin delegated); shared, so that a
/// new delegation or a revocation applies to the next handshake.
#[derive(Debug, Default)]
pub struct Peers {
    allowed: RwLock<HashSet<Did>>,
}

impl Peers {
    /// Accepts exactly `dids`.
    pub fn new(dids: impl IntoIterator<Item = Did>) -> Arc<Peers> {
        Arc::new(Peers {
            allowed: RwLock::new(dids.into_iter().collect()),
        })
    }

    /// Replaces the set.
    pub fn set(&self, dids: impl IntoIterator<Item = Did>) {
        *self.allowed.write().unwrap_or_else(|p| p.into_inner()) = dids.into_iter().collect();
    }

    /// Whether `did` is accepted.
    pub fn contains(&self, did: &Did) -> bool {
        self.allowed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(did)
    }
}

/// The certificate of the node holding `key`: self-signed by it, its DID as a SAN URI and as
/// the common name; with the key in the form rustls takes.
pub fn node_certificate(
    key: &Keypair,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let pkcs8 = PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec());
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| format!("the node key cannot sign a certificate: {e}"))?;
    let did = key.did().as_str().to_string();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("cannot make the node certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, did.clone());
    let uri = rcgen::Ia5String::try_from(did)
        .map_err(|e| format!("the node DID is not an IA5 string: {e}"))?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let cert = params
        .self_signed(&signer)
        .map_err(|e| format!("cannot sign the node certificate: {e}"))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The DID a peer's certificate binds: the `did:key` in its SAN URI, whose Ed25519 key must be
/// the certificate's public key.
pub fn peer_did(cert: &CertificateDer<'_>) -> Result<Did, String> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("the peer's certificate is not valid X.509: {e}"))?;
    let did = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) if u.starts_with("did:key:") => Some(u.to_string()),
                _ => None,
            })
        })
        .ok_or("the peer's certificate names no did:key (not a zerocore node certificate)")?;
    let did = Did::parse(&did).map_err(|e| format!("the peer's certificate DID {did}: {e}"))?;
    let spki = c.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID
        || spki.subject_public_key.data.as_ref() != did.public_key().as_bytes()
    {
        return Err(format!(
            "the peer's certificate claims {did} but its key is not that DID's key"
        ));
    }
    Ok(did)
}

/// Checks peers' certificates against the [`Peers`] set, both as a client and as a server.
#[derive(Debug)]
struct PeerVerifier {
    peers: Arc<Peers>,
    provider: Arc<CryptoProvider>,
}

impl PeerVerifier {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let did = peer_did(cert).map_err(rustls::Error::General)?;
        if !self.peers.contains(&did) {
            return Err(rustls::Error::General(format!(
                "{did} is not a node delegated by the Admin"
            )));
        }
        Ok(())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

fn verifier(peers: Arc<Peers>) -> (Arc<PeerVerifier>, Arc<CryptoProvider>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    (
        Arc::new(PeerVerifier {
            peers,
            provider: provider.clone(),
        }),
        provider,
    )
}

/// Both ends of the node's peer channels: it accepts ([`PeerChannel::accept`]) and makes
/// ([`PeerChannel::connect`]) connections to delegated nodes only.
#[derive(Clone)]
pub struct PeerChannel {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl PeerChannel {
    /// The channels of the node holding `key`, accepting the nodes in `peers`.
    pub fn new(key: &Keypair, peers: Arc<Peers>) -> Result<PeerChannel, String> {
        let (cert, private) = node_certificate(key)?;
        let (verifier, provider) = verifier(peers);
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("cannot build the peer TLS configuration: {e}"))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![cert.clone()], private.clone_key())
            .map_err(|e| format!("the node certificate cannot be served: {e}"))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("cannot build the peer TLS configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![cert], private)
            .map_err(|e| format!("the node certificate cannot be presented: {e}"))?;
        Ok(PeerChannel {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// Completes the server side of a peer's connection; the peer's DID.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<S>, Did)> {
        let tls = self.acceptor.accept(stream).await?;
        let did = authenticated(tls.get_ref().1.peer_certificates())?;
        Ok((tls, did))
    }

    /// Connects to a peer over `stream`; the peer's DID.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<(tokio_rustls::client::TlsStream<S>, Did)> {
        let name = ServerName::try_from(PEER_NAME).map_err(std::io::Error::other)?;
        let tls = self.connector.connect(name, stream).await?;
        let did = authenticated(tls.get_ref().1.peer_certificates())?;
        Ok((tls, did))
    }
}

/// The DID of the peer whose certificate the handshake verified.
fn authenticated(certs: Option<&[CertificateDer<'static>]>) -> std::io::Result<Did> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| std::io::Error::other("the peer presented no certificate"))?;
    peer_did(cert).map_err(std::io::Error::other)
}
