//! End-to-end tests of transport security: a real `zero` node process serving TLS on loopback
//! with certificates made in the test (rcgen), and a real TLS client (tokio-rustls with the
//! test's own certificate authority as the only root).

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use zero_client::Client;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "zerocore test CA");
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names`, written to `dir/NAME.crt` and `dir/NAME.key`; returns the paths
    /// and the leaf's DER.
    fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        write_atomic(&c, cert.pem().as_bytes());
        write_atomic(&k, key.serialize_pem().as_bytes());
        (c, k, cert.der().to_vec())
    }

    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(c))
    }
}

fn write_atomic(p: &Path, bytes: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What one HTTPS GET saw.
struct Seen {
    alpn: Option<Vec<u8>>,
    version: http::Version,
    status: u16,
    body: String,
    /// The server's leaf certificate.
    leaf: Vec<u8>,
    /// Whether the TLS session was resumed (from a ticket of an earlier connection).
    resumed: bool,
}

/// GET `path` over TLS from `addr`, with SNI `name` and ALPN `alpn`.
async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> std::io::Result<Seen> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let sni = ServerName::try_from(name.to_string()).unwrap();
    let tls = connector.connect(sni, tcp).await?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c: &CertificateDer| c.to_vec())
        .unwrap_or_default();
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let io = TokioIo::new(tls);
    let req = http::Request::get(format!("https://{name}{path}"))
        .header("host", name)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        send.send_request(req)
            .await
            .map_err(std::io::Error::other)?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        send.send_request(req)
            .await
            .map_err(std::io::Error::other)?
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Seen {
        alpn,
        version,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        leaf,
        resumed,
    })
}

fn tls_http(cert: &Path, key: &Path) -> String {
    format!(
        "[http]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[test]
fn https_hello_over_h1_and_h2_and_the_redirect_listener() {
    let dir = test_dir("tls-hello");
    let ca = Ca::new();
    let (c, k, _) = ca.issue(&dir, "node", &["localhost"]);
    let node = config(
        &node_data_dir(),
        &format!("{}redirect_listen = \"127.0.0.1:0\"\n", tls_http(&c, &k)),
        &[App::new("hello", "hello", &["/"])],
    )
    .start(&dir);
    node.wait_log("https listening", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("zeroproxy listening on https://"))
    });
    let rt = rt();
    let h2 = rt
        .block_on(https_get(
            &ca.client(&[b"h2", b"http/1.1"]),
            node.addr,
            "localhost",
            "/",
        ))
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!((h2.status, h2.body.as_str()), (200, "Hello, World!\n"));
    assert!(!h2.resumed);
    let h1_client = ca.client(&[b"http/1.1"]);
    let h1 = rt
        .block_on(https_get(&h1_client, node.addr, "localhost", "/"))
        .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.version, http::Version::HTTP_11);
    assert_eq!((h1.status, h1.body.as_str()), (200, "Hello, World!\n"));
    // A second connection of the same client resumes its session.
    let again = rt
        .block_on(https_get(&h1_client, node.addr, "localhost", "/"))
        .unwrap();
    assert!(again.resumed, "the session was not resumed");
    assert_eq!(again.status, 200);
    // No ALPN at all: HTTP/1.1.
    let plain = rt
        .block_on(https_get(&ca.client(&[]), node.addr, "localhost", "/"))
        .unwrap();
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "Hello, World!\n")
    );

    // Cleartext HTTP to the TLS port is not served.
    let r = agent().get(&node.url("/")).call();
    assert!(r.is_err(), "cleartext to the TLS port must not be answered");

    // The redirect listener sends every request to HTTPS, path and query kept.
    let redirect: SocketAddr = node.wait_log("redirect listener", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("zeroproxy redirecting"))
    })["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = ureq::AgentBuilder::new()
        .redirects(0)
        .build()
        .get(&format!("http://{redirect}/a/b?c=d"))
        .set("host", "example.test:8080")
        .call()
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.test:{}/a/b?c=d", node.addr.port()).as_str())
    );
}

#[test]
fn a_slow_tls_handshake_is_closed_at_the_first_request_deadline() {
    let dir = test_dir("tls-slowloris");
    let ca = Ca::new();
    let (c, k, _) = ca.issue(&dir, "node", &["localhost"]);
    let node = config(
        &node_data_dir(),
        &format!("{}header_read_timeout_ms = 500\n", tls_http(&c, &k)),
        &[App::new("hello", "hello", &["/"])],
    )
    .start(&dir);
    // The first bytes of a TLS record header, then nothing.
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sends nothing to an unfinished handshake");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "closed after {took:?}, not at the 500 ms deadline"
    );
    node.wait_log("closed for the deadline", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no complete request head (or TLS handshake)"))
    });
    // An honest client is still served.
    let seen = rt()
        .block_on(https_get(&ca.client(&[b"h2"]), node.addr, "localhost", "/"))
        .unwrap();
    assert_eq!(seen.status, 200);
}

#[test]
fn a_certificate_replaced_on_disk_is_served_without_a_restart_and_a_bad_one_is_not() {
    let dir = test_dir("tls-reload");
    let ca = Ca::new();
    let (c, k, first) = ca.issue(&dir, "node", &["localhost"]);
    let node = config(
        &node_data_dir(),
        &tls_http(&c, &k),
        &[App::new("hello", "hello", &["/"])],
    )
    .start(&dir);
    let rt = rt();
    // A new client each time: a resumed session would show the certificate it began with.
    let get = || {
        rt.block_on(https_get(
            &ca.client(&[b"http/1.1"]),
            node.addr,
            "localhost",
            "/",
        ))
        .unwrap()
    };
    assert_eq!(get().leaf, first);

    // A new pair written over the old files.
    let other = tempfile::tempdir().unwrap();
    let (c2, k2, second) = ca.issue(other.path(), "node", &["localhost", "www.localhost"]);
    assert_ne!(first, second);
    write_atomic(&k, &std::fs::read(&k2).unwrap());
    write_atomic(&c, &std::fs::read(&c2).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = get();
        if seen.leaf == second {
            assert_eq!(seen.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A key that does not belong to the certificate: logged, the previous pair kept.
    let (_, k3, _) = ca.issue(other.path(), "stray", &["localhost"]);
    write_atomic(&k, &std::fs::read(&k3).unwrap());
    node.wait_log("refused reload", |v| {
        v["message"].as_str().is_some_and(|m| {
            m.contains("kept its previous TLS certificate") && m.contains("does not belong")
        })
    });
    assert_eq!(get().leaf, second);
}

/// Runs `zero serve` on `config` until it exits (it must refuse to start); its stderr.
fn refused_start(dir: &Path, config: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("zerocore.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = std::process::Command::new(zero_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_management_api_off_loopback_without_tls_is_refused_before_binding() {
    let dir = test_dir("tls-admin-refused");
    // 0.0.0.0 only here: the node refuses at the configuration check, before any bind.
    let cfg = NodeConfig::new(&dir.join("data"))
        .with("[admin]\nlisten = \"0.0.0.0:0\"\n")
        .to_string();
    let err = refused_start(&dir, &cfg);
    assert!(
        err.contains("not a loopback address") && err.contains("[admin] tls_cert"),
        "{err}"
    );
}

#[test]
fn missing_expired_and_mismatched_certificates_stop_the_node_with_clear_errors() {
    let dir = test_dir("tls-bad-files");
    let ca = Ca::new();
    let (c, k, _) = ca.issue(&dir, "node", &["localhost"]);
    let (_, k2, _) = ca.issue(&dir, "other", &["localhost"]);
    let base = NodeConfig::new(&dir.join("data"));
    let missing = dir.join("absent.crt");
    let err = refused_start(
        &dir,
        &base.clone().with(&tls_http(&missing, &k)).to_string(),
    );
    assert!(err.contains("cannot read the certificate file"), "{err}");
    let err = refused_start(&dir, &base.clone().with(&tls_http(&c, &k2)).to_string());
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (oc, ok) = (dir.join("old.crt"), dir.join("old.key"));
    write_atomic(&oc, old.pem().as_bytes());
    write_atomic(&ok, key.serialize_pem().as_bytes());
    let err = refused_start(&dir, &base.clone().with(&tls_http(&oc, &ok)).to_string());
    assert!(err.contains("expired"), "{err}");
    let err = refused_start(
        &dir,
        &base
            .clone()
            .with(&format!(
                "[http]\ntls_cert = {:?}\n",
                c.display().to_string()
            ))
            .to_string(),
    );
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
}

#[test]
fn the_management_api_serves_tls_when_configured() {
    let dir = test_dir("tls-admin");
    let ca = Ca::new();
    let (c, k, _) = ca.issue(&dir, "admin", &["localhost"]);
    let node = config(
        &node_data_dir(),
        &format!(
            "[admin]\ntls_cert = {:?}\ntls_key = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        ),
        &[],
    )
    .start(&dir);
    let seen = rt()
        .block_on(https_get(
            &ca.client(&[b"h2", b"http/1.1"]),
            node.admin,
            "localhost",
            "/v1/node",
        ))
        .unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert!(seen.body.contains("did:key:"), "{}", seen.body);
    // Cleartext to the TLS management port is not answered.
    assert!(
        agent()
            .get(&format!("http://{}/v1/node", node.admin))
            .call()
            .is_err()
    );
}

#[test]
fn zero_serve_prints_https_addresses_for_listeners_that_serve_tls() {
    let dir = test_dir("tls-banner");
    let ca = Ca::new();
    let (c, k, _) = ca.issue(&dir, "both", &["localhost"]);
    let cfg = config(
        &node_data_dir(),
        &format!(
            "{}[admin]\ntls_cert = {:?}\ntls_key = {:?}\n",
            tls_http(&c, &k),
            c.display().to_string(),
            k.display().to_string()
        ),
        &[],
    );
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("zerocore.toml");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut child = std::process::Command::new(zero_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.len() < 2 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("zero node ready: curl https://"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("management API: https://"),
        "{lines:?}"
    );
}

/// One node's end of the peer channels, accepting `peers`.
fn channel(
    key: &zero_auth::Keypair,
    peers: &[&zero_auth::Keypair],
) -> zero_node::peer::PeerChannel {
    let set = zero_node::peer::Peers::new(peers.iter().map(|k| k.did().clone()));
    zero_node::peer::PeerChannel::new(key, set).unwrap()
}

/// `client` connects to `server` over loopback TCP; each side's result (the peer DID it
/// authenticated, or its error), after a byte each way when both accepted.
fn peer_handshake(
    server: &zero_node::peer::PeerChannel,
    client: &zero_node::peer::PeerChannel,
) -> (Result<String, String>, Result<String, String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = server.clone();
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut tls, did) = server.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(b"!").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(did.to_string())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connected = async {
            let (mut tls, did) = client.connect(tcp).await.map_err(|e| e.to_string())?;
            tls.write_all(b"?").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            assert_eq!(&b, b"!");
            Ok::<_, String>(did.to_string())
        }
        .await;
        let accepted = tokio::time::timeout(Duration::from_secs(10), accepted)
            .await
            .expect("the server side finished")
            .unwrap();
        (accepted, connected)
    })
}

#[test]
fn two_delegated_nodes_establish_a_channel_and_an_undelegated_third_is_refused_both_ways() {
    let (a, b, c) = (
        zero_auth::Keypair::generate().unwrap(),
        zero_auth::Keypair::generate().unwrap(),
        zero_auth::Keypair::generate().unwrap(),
    );
    let node_a = channel(&a, &[&a, &b]);
    let node_b = channel(&b, &[&a, &b]);
    // A and B: each authenticates the other's DID.
    let (server_saw, client_saw) = peer_handshake(&node_a, &node_b);
    assert_eq!(server_saw.unwrap(), b.did().to_string());
    assert_eq!(client_saw.unwrap(), a.did().to_string());

    // C is not delegated. It trusts everyone, so the refusal is A's own check.
    let node_c = channel(&c, &[&a, &b, &c]);
    // C connects to A: A (the server) refuses C.
    let (server_saw, client_saw) = peer_handshake(&node_a, &node_c);
    let e = server_saw.unwrap_err();
    assert!(e.contains("is not a node delegated by the Admin"), "{e}");
    assert!(client_saw.is_err());
    // A connects to C: A (the client) refuses C.
    let (server_saw, client_saw) = peer_handshake(&node_c, &node_a);
    let e = client_saw.unwrap_err();
    assert!(e.contains("is not a node delegated by the Admin"), "{e}");
    assert!(server_saw.is_err());
}

#[test]
fn a_certificate_claiming_a_delegated_did_with_another_key_is_refused() {
    let (b, c) = (
        zero_auth::Keypair::generate().unwrap(),
        zero_auth::Keypair::generate().unwrap(),
    );
    // C forges a certificate naming B's DID, signed with (and holding) C's own key.
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(c.pkcs8_der().to_vec()),
        &rcgen::PKCS_ED25519,
    )
    .unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::Ia5String::try_from(b.did().to_string()).unwrap(),
    )];
    let forged = p.self_signed(&signer).unwrap();
    let e = zero_node::peer::peer_did(forged.der()).unwrap_err();
    assert!(e.contains("its key is not that DID's key"), "{e}");
    // The genuine certificate of B binds B.
    let (cert, _) = zero_node::peer::node_certificate(&b).unwrap();
    assert_eq!(zero_node::peer::peer_did(&cert).unwrap(), *b.did());
}

// --- Tenants' certificates chosen by SNI (`zero tls put`) -------------------------------

/// Accepts any server certificate and keeps it: to see which certificate the node serves
/// for a name, including the default one that is not valid for it. The handshake's
/// signatures are still verified.
#[derive(Debug)]
struct Observer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Observer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate the node at `addr` serves for SNI `name` (a fresh session each time).
fn served_leaf(addr: SocketAddr, name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Observer(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sni = ServerName::try_from(name.to_string()).unwrap();
        let tls = connector.connect(sni, tcp).await.unwrap();
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    })
}

/// A certificate of the test CA for `names`: its PEM, its key's PEM and its DER.
fn pem_pair(ca: &Ca, names: &[&str]) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (
        format!("{}{}", cert.pem(), ca.cert.pem()),
        key.serialize_pem(),
        cert.der().to_vec(),
    )
}

/// `[[app]]` hello on `/` of tenant t1 (from the config file), with shared artifacts.
fn hello_app() -> String {
    let dir = shared_artifact_dir();
    format!(
        "[engine]\nartifact_dir = {:?}\nartifact_key = {:?}\n[[app]]\ntenant = \"t1\"\nname = \"hello\"\ncomponent = {:?}\nroutes = [\"/\"]\n",
        dir.display().to_string(),
        dir.with_extension("key").display().to_string(),
        guest_wasm("hello").display().to_string()
    )
}

/// A world whose HTTP listener serves TLS with a default certificate for `localhost`; acme
/// is granted `acme.example` and `*.acme.example`, beta `beta.example` and
/// `shop.acme.example` (carved out of acme's wildcard).
fn tls_world(name: &str, extra: &str) -> (World, Ca, Vec<u8>, PathBuf) {
    let certs = test_dir(&format!("{name}-certs"));
    let ca = Ca::new();
    let (c, k, default) = ca.issue(&certs, "default", &["localhost"]);
    let w = World::spec(name)
        .with(&tls_http(&c, &k))
        .with(&hello_app())
        .with(extra)
        .hosts("acme", &["acme.example", "*.acme.example"])
        .hosts("beta", &["beta.example", "shop.acme.example"])
        .start();
    (w, ca, default, certs)
}

fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn sni_selects_each_tenants_certificate_for_its_granted_hosts_and_the_default_otherwise() {
    let (w, ca, default, _certs) = tls_world("tls-sni", "");
    let addr = w.node.addr;
    let (exact_c, exact_k, exact) = pem_pair(&ca, &["acme.example"]);
    let (wild_c, wild_k, wild) = pem_pair(&ca, &["*.acme.example"]);
    let (shop_c, shop_k, shop) = pem_pair(&ca, &["shop.acme.example"]);
    let mut acme = w.owner(&w.acme);
    let put = acme
        .tls_put("acme", "acme.example", &exact_c, &exact_k)
        .unwrap();
    assert_eq!(put["host"], "acme.example");
    assert_eq!(put["sha256"], fingerprint(&exact));
    assert_eq!(put["served"], true);
    assert!(put["days_left"].as_u64().unwrap() > 300, "{put}");
    acme.tls_put("acme", "*.acme.example", &wild_c, &wild_k)
        .unwrap();

    assert_eq!(served_leaf(addr, "acme.example"), exact);
    assert_eq!(served_leaf(addr, "www.acme.example"), wild);
    assert_eq!(served_leaf(addr, "WWW.ACME.EXAMPLE"), wild);
    // A wildcard covers one label; a name below that, another tenant's carved-out host,
    // a host with no certificate and an unknown name get the default.
    assert_eq!(served_leaf(addr, "a.b.acme.example"), default);
    assert_eq!(served_leaf(addr, "shop.acme.example"), default);
    assert_eq!(served_leaf(addr, "beta.example"), default);
    assert_eq!(served_leaf(addr, "localhost"), default);
    assert_eq!(served_leaf(addr, "unknown.test"), default);

    // beta's own certificate for the host carved out of acme's wildcard.
    w.owner(&w.beta)
        .tls_put("beta", "shop.acme.example", &shop_c, &shop_k)
        .unwrap();
    assert_eq!(served_leaf(addr, "shop.acme.example"), shop);

    // A real client trusting only the test CA: verified, and the request is served.
    let seen = rt()
        .block_on(https_get(
            &ca.client(&[b"h2", b"http/1.1"]),
            addr,
            "www.acme.example",
            "/",
        ))
        .unwrap();
    assert_eq!((seen.status, seen.body.as_str()), (200, "Hello, World!\n"));
    assert_eq!(seen.leaf, wild);

    // The owner lists its own; the Admin lists everyone's. No key ever.
    let mine = acme.tls_list(Some("acme")).unwrap();
    let hosts: Vec<&str> = mine["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["acme.example", "*.acme.example"]);
    let mut admin = Client::new(&w.api, copy_key(&w.admin), vec![]);
    let all = admin.tls_list(None).unwrap();
    assert_eq!(all["certificates"].as_array().unwrap().len(), 3, "{all}");
    for v in [&mine, &all] {
        assert!(!v.to_string().contains("PRIVATE KEY"), "{v}");
    }

    // The Admin takes the wildcard away: its certificate stops at once; given back, it serves.
    admin
        .create_tenant_with_hosts("acme", w.acme.owner.did(), &["acme.example".into()])
        .unwrap();
    assert_eq!(served_leaf(addr, "www.acme.example"), default);
    assert_eq!(served_leaf(addr, "acme.example"), exact);
    let listed = acme.tls_list(Some("acme")).unwrap();
    let wild_row = listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["host"] == "*.acme.example")
        .unwrap();
    assert_eq!(wild_row["host"], "*.acme.example");
    assert_eq!(wild_row["served"], false);
    assert!(
        wild_row["reason"]
            .as_str()
            .unwrap()
            .contains("no longer grants"),
        "{listed}"
    );
    admin
        .create_tenant_with_hosts(
            "acme",
            w.acme.owner.did(),
            &["acme.example".into(), "*.acme.example".into()],
        )
        .unwrap();
    assert_eq!(served_leaf(addr, "www.acme.example"), wild);

    // Removed: the default again; removing it twice is a clear 404.
    acme.tls_remove("acme", "acme.example").unwrap();
    assert_eq!(served_leaf(addr, "acme.example"), default);
    let e = refused(acme.tls_remove("acme", "acme.example"));
    assert_eq!((e.status, e.error.as_str()), (404, "UnknownCertificate"));

    // Kept across a restart, keys readable only by the node.
    let w = w.restart();
    assert_eq!(served_leaf(w.node.addr, "www.acme.example"), wild);
    assert_eq!(served_leaf(w.node.addr, "shop.acme.example"), shop);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = w.data.join("state/tls/acme");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("_.acme.example.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&w.data.join("state/tls")), 0o700);
    }
}

#[test]
fn certificates_for_hosts_not_granted_bad_pairs_and_floods_are_refused() {
    let (w, ca, default, _certs) = tls_world("tls-refused", "[admin]\nmax_certs_per_tenant = 3\n");
    let addr = w.node.addr;
    let mut acme = w.owner(&w.acme);
    let mut beta = w.owner(&w.beta);

    // Another tenant's host, a wildcard over it, a wildcard over a whole domain: refused
    // without naming the tenant that holds them.
    for (host, names) in [
        ("acme.example", vec!["acme.example"]),
        ("www.acme.example", vec!["www.acme.example"]),
        ("*.acme.example", vec!["*.acme.example"]),
        ("*.example", vec!["*.example"]),
        ("other.test", vec!["other.test"]),
    ] {
        let (c, k, _) = pem_pair(&ca, &names);
        let r = beta.tls_put("beta", host, &c, &k);
        let e = refused(r);
        if host == "*.example" {
            assert_eq!(
                (e.status, e.error.as_str()),
                (400, "InvalidArgs"),
                "{host}: {e}"
            );
            assert!(e.message.contains("top-level domain"), "{e}");
            continue;
        }
        assert_eq!(
            (e.status, e.error.as_str()),
            (403, "HostNotGranted"),
            "{host}: {e}"
        );
        assert!(!e.message.contains("tenant `acme`"), "{e}");
    }
    // acme's wildcard grant covers shop.acme.example, but beta holds it more specifically.
    let (c, k, _) = pem_pair(&ca, &["shop.acme.example"]);
    let e = refused(acme.tls_put("acme", "shop.acme.example", &c, &k));
    assert_eq!((e.status, e.error.as_str()), (403, "HostNotGranted"), "{e}");
    assert!(!e.message.contains("beta"), "{e}");
    // The apex is not covered by the wildcard grant of another tenant, nor a bare `*.`.
    // An owner cannot act in another tenant at all.
    let (c, k, _) = pem_pair(&ca, &["beta.example"]);
    let e = refused(acme.tls_put("beta", "beta.example", &c, &k));
    assert_eq!(e.status, 403, "{e}");
    let e = refused(acme.tls_remove("beta", "beta.example"));
    assert_eq!(e.status, 403, "{e}");
    let e = refused(acme.tls_list(Some("beta")));
    assert_eq!(e.status, 403, "{e}");
    let e = refused(acme.tls_list(None));
    assert_eq!(e.status, 403, "{e}");

    // Pairs that cannot be served: another name, expired, a key of another certificate,
    // garbage, an oversized PEM.
    let (c, k, _) = pem_pair(&ca, &["other.test"]);
    let e = refused(acme.tls_put("acme", "acme.example", &c, &k));
    assert_eq!((e.status, e.error.as_str()), (400, "InvalidCertificate"));
    assert!(e.message.contains("does not cover `acme.example`"), "{e}");
    let (c, k, _) = pem_pair(&ca, &["*.acme.example"]);
    let e = refused(acme.tls_put("acme", "acme.example", &c, &k));
    assert!(e.message.contains("does not cover"), "{e}");
    let (c, _, _) = pem_pair(&ca, &["acme.example"]);
    let (_, k, _) = pem_pair(&ca, &["acme.example"]);
    let e = refused(acme.tls_put("acme", "acme.example", &c, &k));
    assert_eq!(e.error, "InvalidCertificate");
    assert!(
        e.message.contains("does not belong to the certificate"),
        "{e}"
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["acme.example".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let e = refused(acme.tls_put("acme", "acme.example", &old.pem(), &key.serialize_pem()));
    assert_eq!(e.error, "InvalidCertificate");
    assert!(e.message.contains("expired"), "{e}");
    let e = refused(acme.tls_put("acme", "acme.example", "hello", "world"));
    assert!(e.message.contains("holds no certificate"), "{e}");
    let (c, k, _) = pem_pair(&ca, &["acme.example"]);
    let padded = format!("{c}{}", "# padding\n".repeat(7000));
    let e = refused(acme.tls_put("acme", "acme.example", &padded, &k));
    assert_eq!((e.status, e.error.as_str()), (413, "TooLarge"), "{e}");

    // Hosts that are paths or odd bytes never reach the disk.
    for host in [
        "../../admin.key",
        "../acme/acme.example",
        "a/b",
        "acme.example\0",
        "acme.example:443",
        "_.acme.example",
        "*",
        "..acme.example",
    ] {
        let e = refused(acme.tls_put("acme", host, &c, &k));
        assert_eq!(
            (e.status, e.error.as_str()),
            (400, "InvalidArgs"),
            "{host:?}: {e}"
        );
    }
    let tls_dir = w.data.join("state/tls");
    let stored: Vec<_> = std::fs::read_dir(&tls_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(stored.is_empty(), "nothing stored yet: {stored:?}");

    // The tenant's cap: three certificates, the fourth refused naming the setting; replacing
    // one still works; the other tenant is unaffected.
    for host in ["acme.example", "*.acme.example", "a.acme.example"] {
        let (c, k, _) = pem_pair(&ca, &[host]);
        acme.tls_put("acme", host, &c, &k).unwrap();
    }
    let (c, k, _) = pem_pair(&ca, &["b.acme.example"]);
    let e = refused(acme.tls_put("acme", "b.acme.example", &c, &k));
    assert_eq!((e.status, e.error.as_str()), (409, "TooManyCertificates"));
    assert!(e.message.contains("max_certs_per_tenant = 3"), "{e}");
    let (c, k, replaced) = pem_pair(&ca, &["a.acme.example"]);
    acme.tls_put("acme", "a.acme.example", &c, &k).unwrap();
    assert_eq!(served_leaf(addr, "a.acme.example"), replaced);
    let (c, k, beta_leaf) = pem_pair(&ca, &["beta.example"]);
    beta.tls_put("beta", "beta.example", &c, &k).unwrap();
    assert_eq!(served_leaf(addr, "beta.example"), beta_leaf);

    // SNI with odd bytes: rustls refuses a name that is not a DNS name with an alert; the
    // node goes on serving.
    for sni in [
        &b"acme.example\0"[..],
        b"\xff\xfe.acme.example",
        b"*.acme.example",
        b"a b.acme.example",
        &[b'a'; 300][..],
    ] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&client_hello(sni)).unwrap();
        let mut first = [0u8; 1];
        let n = s.read(&mut first).unwrap_or(0);
        assert!(
            n == 0 || first[0] == 0x15 || first[0] == 0x16,
            "{sni:?}: answered {first:?}"
        );
        if sni.contains(&0) || sni.contains(&0xff) {
            assert_eq!((n, first[0]), (1, 0x15), "{sni:?}: an alert");
        }
    }
    assert_eq!(served_leaf(addr, "localhost"), default);
    assert_eq!(
        get_status_over_tls(&ca, addr, "www.acme.example"),
        200,
        "the node still serves"
    );
}

/// A TLS 1.3 ClientHello naming `sni` in its server_name extension, byte by byte (a real
/// client refuses to send names that are not DNS names).
fn client_hello(sni: &[u8]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut names = vec![0u8];
    names.extend((sni.len() as u16).to_be_bytes());
    names.extend(sni);
    let mut server_name = (names.len() as u16).to_be_bytes().to_vec();
    server_name.extend(names);
    let mut exts = Vec::new();
    ext(&mut exts, 0x0000, &server_name);
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x1d]);
    ext(&mut exts, 0x000d, &[0, 6, 4, 3, 8, 4, 8, 7]);
    ext(&mut exts, 0x002b, &[2, 3, 4]);
    let mut share = vec![0, 36, 0, 0x1d, 0, 32];
    share.extend([9u8; 32]);
    ext(&mut exts, 0x0033, &share);
    let mut body = vec![3, 3];
    body.extend([1u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 3, 1];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

fn get_status_over_tls(ca: &Ca, addr: SocketAddr, name: &str) -> u16 {
    rt().block_on(https_get(&ca.client(&[b"http/1.1"]), addr, name, "/"))
        .map(|s| s.status)
        .unwrap_or(0)
}

/// Runs the `zero` CLI with `ZERO_CA` set to `ca` (or unset).
fn zero_with_ca(args: &[&str], ca: Option<&Path>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(zero_bin());
    cmd.args(args).env_remove("ZERO_CA");
    if let Some(ca) = ca {
        cmd.env("ZERO_CA", ca);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_manages_a_node_over_a_tls_management_api_trusting_its_self_signed_certificate() {
    let dir = test_dir("tls-cli");
    let certs = test_dir("tls-cli-certs");
    // The management API's own self-signed certificate, as an operator would make one.
    let own = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (admin_c, admin_k) = (certs.join("admin.crt"), certs.join("admin.key"));
    write_atomic(&admin_c, own.cert.pem().as_bytes());
    write_atomic(&admin_k, own.key_pair.serialize_pem().as_bytes());
    let ca = Ca::new();
    let (c, k, default) = ca.issue(&certs, "default", &["localhost"]);
    let data = dir.join("data");
    let node = NodeConfig::new(&data)
        .with(&tls_http(&c, &k))
        .with(&format!(
            "[admin]\ntls_cert = {:?}\ntls_key = {:?}\n",
            admin_c.display().to_string(),
            admin_k.display().to_string()
        ))
        .start(&dir);
    node.wait_log("management API over TLS", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("management API listening on https://"))
    });
    let api = format!("https://localhost:{}", node.admin.port());
    let admin_key = data.join("admin.key");
    let owner_key = certs.join("owner.key");
    let chain = certs.join("acme.ucan");
    let s = |p: &Path| p.display().to_string();
    let (code, owner_did, err) = zero(&["key", "new", "-o", &s(&owner_key)]);
    assert_eq!(code, 0, "{err}");

    // No trust given: the node's self-signed certificate is refused, saying what to do.
    let (code, _, err) = zero_with_ca(
        &["tls", "list", "--api", &api, "--key", &s(&admin_key)],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("not trusted") && err.contains("--ca FILE") && err.contains("ZERO_CA"),
        "{err}"
    );
    // Trusting another certificate: refused too.
    let (code, _, err) = zero_with_ca(
        &[
            "tls",
            "list",
            "--api",
            &api,
            "--key",
            &s(&admin_key),
            "--ca",
            &s(&c),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("not trusted") && err.contains(&s(&c)), "{err}");
    // The right certificate under a name it is not for.
    let by_ip = format!("https://127.0.0.1:{}", node.admin.port());
    let (code, _, err) = zero_with_ca(
        &["tls", "list", "--api", &by_ip, "--key", &s(&admin_key)],
        Some(&admin_c),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("`127.0.0.1`") && err.contains("--api address"),
        "{err}"
    );
    // Cleartext to the TLS listener, and a CA file that holds a key.
    let plain = format!("http://localhost:{}", node.admin.port());
    let (code, _, err) = zero_with_ca(
        &["tls", "list", "--api", &plain, "--key", &s(&admin_key)],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("use https://"), "{err}");
    let (code, _, err) = zero_with_ca(
        &[
            "tls",
            "list",
            "--api",
            &api,
            "--key",
            &s(&admin_key),
            "--ca",
            &s(&admin_k),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("holds no certificate"), "{err}");

    // With --ca: the Admin creates the tenant with its host.
    let (code, out, err) = zero_with_ca(
        &[
            "tenant",
            "create",
            "acme",
            "--owner",
            owner_did.trim(),
            "--host",
            "acme.example",
            "--key",
            &s(&admin_key),
            "-o",
            &s(&chain),
            "--api",
            &api,
            "--ca",
            &s(&admin_c),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme.example"), "{out}");
    // With ZERO_CA: the owner installs its certificate and lists it.
    let (tc, tk, leaf) = ca.issue(&certs, "acme", &["acme.example"]);
    let owner_auth = [
        "--api",
        &api,
        "--key",
        &s(&owner_key),
        "--proof",
        &s(&chain),
    ];
    let (tc_s, tk_s) = (s(&tc), s(&tk));
    let mut args = vec![
        "tls",
        "put",
        "acme.example",
        "--tenant",
        "acme",
        "--cert",
        &tc_s,
        "--cert-key",
        &tk_s,
    ];
    args.extend(owner_auth);
    let (code, out, err) = zero_with_ca(&args, Some(&admin_c));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&fingerprint(&leaf)), "{out}");
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert_eq!(served_leaf(node.addr, "acme.example"), leaf);
    assert_eq!(served_leaf(node.addr, "localhost"), default);
    let mut args = vec!["tls", "list", "--tenant", "acme"];
    args.extend(owner_auth);
    let (code, out, err) = zero_with_ca(&args, Some(&admin_c));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("SHA256"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("acme.example") && lines[1].contains(&fingerprint(&leaf)),
        "{out}"
    );
    assert!(lines[1].trim_end().ends_with("yes"), "{out}");
    // The Admin sees every tenant's; the owner cannot.
    let (code, out, err) = zero_with_ca(
        &["tls", "list", "--api", &api, "--key", &s(&admin_key)],
        Some(&admin_c),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("acme.example") && out.contains("acme"),
        "{out}"
    );
    let mut args = vec!["tls", "list"];
    args.extend(owner_auth);
    let (code, _, err) = zero_with_ca(&args, Some(&admin_c));
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    // Removed over the CLI: the default is served again.
    let mut args = vec!["tls", "remove", "acme.example", "--tenant", "acme"];
    args.extend(owner_auth);
    let (code, _, err) = zero_with_ca(&args, Some(&admin_c));
    assert_eq!(code, 0, "{err}");
    assert_eq!(served_leaf(node.addr, "acme.example"), default);
}
