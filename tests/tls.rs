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
