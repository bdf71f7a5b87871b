//! The management API's listener under attack: one client holding every connection it can
//! with slow heads and trickled bodies, with or without a token, while another client reads
//! `/v1/node` and deploys; and refusals (`503`, `413`) reaching a client that is still sending.

use std::collections::BTreeMap;

use zero_auth::Ipld;

use super::*;

/// The attacker's address (the test's own `zero_client` calls come from it too, before the
/// attack).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// The head of a deploy of `component` as `t`'s app `app` at `/app`, signed now (the token is
/// single-use), to send by hand.
fn deploy_head(w: &World, t: &Tenant, app: &str, component: &[u8]) -> String {
    deploy_head_of_length(w, t, app, component, component.len())
}

/// [`deploy_head`] with a `content-length` of `len`.
fn deploy_head_of_length(w: &World, t: &Tenant, app: &str, component: &[u8], len: usize) -> String {
    let hash = zero_component::content_hash(component).unwrap().to_string();
    let args = BTreeMap::from([
        ("tenant".to_string(), Ipld::String(t.name.clone())),
        ("app".to_string(), Ipld::String(app.into())),
        (
            "routes".to_string(),
            Ipld::List(vec![Ipld::String(format!("/{app}"))]),
        ),
        ("allowed_outbound_hosts".to_string(), Ipld::List(vec![])),
        ("component".to_string(), Ipld::String(hash)),
    ]);
    let inv = w.owner(t).invocation("/app/deploy", args).unwrap();
    let proofs: Vec<String> = t.chain.iter().map(|d| d.to_base64()).collect();
    format!(
        "PUT /v1/tenants/{}/apps/{app} HTTP/1.1\r\nhost: node\r\nauthorization: Bearer {}\r\n\
         ucan-proofs: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        t.name,
        inv.to_base64(),
        proofs.join(","),
        len
    )
}

/// `t`'s owner's signature on the `hello` guest.
fn hello_for(t: &Tenant) -> Vec<u8> {
    let bytes = std::fs::read(guest_wasm("hello")).unwrap();
    zero_client::sign_component(&bytes, &t.owner, &t.chain, &grant("/", "[]", None)).unwrap()
}

/// Sends `head`, then `body` in `chunk`-byte pieces every `every` (stopping quietly if the
/// node closes), and reads the answer: status and text, and how long it took.
async fn paced(
    src: Ipv4Addr,
    to: SocketAddr,
    head: String,
    body: Vec<u8>,
    chunk: usize,
    every: Duration,
) -> (Option<u16>, String, Duration) {
    let start = Instant::now();
    let s = connect_from(src, to).await.unwrap();
    let (mut r, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for c in body.chunks(chunk.max(1)) {
            wr.write_all(c).await?;
            tokio::time::sleep(every).await;
        }
        std::io::Result::Ok(wr)
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got)).await;
    writer.abort();
    (
        status_of(&got),
        String::from_utf8_lossy(&got).into_owned(),
        start.elapsed(),
    )
}

/// One GET of `/v1/node` from `src`: its status.
async fn node_info(src: Ipv4Addr, to: SocketAddr) -> Result<u16, String> {
    let mut s = connect_from(src, to).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /v1/node HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    if !closed {
        return Err("no complete answer within 5 s".into());
    }
    status_of(&got).ok_or_else(|| format!("not an HTTP response: {got:?}"))
}

/// One client cannot take the management API: past `[admin] max_connections_per_client` its
/// connections get a `503` naming the limit; those it holds with a slow head are closed at
/// `header_read_timeout_ms` from the accept, and those trickling a body (without a token, or
/// with one) at `min_body_rate`; meanwhile another client reads `/v1/node` and deploys, and a
/// slow but steady upload (above the rate) deploys too.
#[test]
fn one_client_cannot_hold_the_management_api_and_a_slow_steady_deploy_still_works() {
    let w = world_with(
        "abuse-admin-conns",
        "[admin]\nmax_connections = 16\nmax_connections_per_client = 4\n\
         header_read_timeout_ms = 2000\nmin_body_rate = \"8 KiB\"\n",
    );
    let api = w.node.admin;
    let healthy_deploy = deploy_head(&w, &w.acme, "healthy", &hello_for(&w.acme));
    let slow_ok = deploy_head(&w, &w.acme, "steady", &hello_for(&w.acme));
    let trickled = deploy_head(&w, &w.beta, "trickled", &hello_for(&w.beta));
    let hello = hello_for(&w.acme);
    // The set-up's own connections (from the attacker's address) have closed.
    std::thread::sleep(Duration::from_millis(300));
    rt().block_on(async {
        // The attacker opens 12: 4 are held, 8 refused at once with the limit's name.
        let conns = open_many(ATTACKER, api, 12).await;
        let (mut held, refused) = held_or_refused(conns, Duration::from_millis(700)).await;
        assert_eq!((held.len(), refused.len()), (4, 8));
        for r in &refused {
            assert_eq!(status_of(r.as_bytes()), Some(503), "{r}");
            assert!(r.contains("connection: close") && r.contains("retry-after: 1"), "{r}");
            assert!(r.contains("this client has too many connections open"), "{r}");
        }
        let line = w.node.wait_log("per-client refusal", |v| {
            msg(v).contains("[admin] max_connections_per_client (4)")
        });
        assert_eq!(line["client"], ATTACKER.to_string());
        // Two send a head a byte at a time; two send an unauthenticated upload's head and
        // trickle its body.
        let opened = Instant::now();
        let mut tricklers = Vec::new();
        for (i, mut s) in held.drain(..).enumerate() {
            tricklers.push(tokio::spawn(async move {
                // A head a byte at a time, or an upload's head and then its body 8 bytes at a
                // time; five sends a second.
                let pieces: Box<dyn Iterator<Item = Vec<u8>> + Send> = if i < 2 {
                    let head = b"GET /v1/node HTTP/1.1\r\nhost: node\r\nx-slow: ";
                    Box::new(head.iter().map(|b| vec![*b]).chain(std::iter::repeat(b"a".to_vec())))
                } else {
                    let head = b"PUT /v1/tenants/acme/apps/x HTTP/1.1\r\nhost: node\r\ncontent-length: 1000000\r\n\r\n";
                    Box::new(std::iter::once(head.to_vec()).chain(std::iter::repeat(vec![b'x'; 8])))
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for piece in pieces {
                    if s.write_all(&piece).await.is_err() || opened.elapsed() > Duration::from_secs(15) {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                (i, String::from_utf8_lossy(&got).into_owned(), opened.elapsed())
            }));
        }
        // Meanwhile the healthy client is served: `/v1/node`, and a deploy.
        let healthy = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(node_info(healthy, api).await, Ok(200));
        let (status, text, _) = paced(healthy, api, healthy_deploy, hello.clone(), 64 << 10, Duration::ZERO).await;
        assert_eq!(status, Some(200), "{text}");
        // The attacker's connections are closed: slow heads at the header timeout (2 s from
        // the accept, a second's grace for the close), trickled bodies once they fall behind
        // 8 KiB/s after a 2 s grace (refused for their missing token).
        for t in tricklers {
            let (i, got, took) = t.await.unwrap();
            assert!(took < Duration::from_secs(8), "attacker connection {i} held for {took:?}: {got}");
            if i >= 2 {
                assert_eq!(status_of(got.as_bytes()), Some(401), "{got}");
            }
            eprintln!("admin attacker connection {i} closed after {took:?}");
        }
        // An upload with a valid token trickled below the rate: 408 SlowBody.
        let (status, text, took) =
            paced(ATTACKER, api, trickled, hello_for(&w.beta), 64, Duration::from_millis(50)).await;
        assert_eq!(status, Some(408), "{text}");
        assert!(
            text.contains("SlowBody") && text.contains("[admin] min_body_rate (8192 bytes a second after 2000 ms)"),
            "{text}"
        );
        assert!(took < Duration::from_secs(8), "{took:?}");
        // A slow but steady one (about 24 KiB/s, three times the rate): deployed.
        let (status, text, took) =
            paced(healthy, api, slow_ok, hello, 2 << 10, Duration::from_millis(80)).await;
        assert_eq!(status, Some(200), "{text}");
        eprintln!("admin: a {} KiB deploy at about 24 KiB/s took {took:?}", hello_for(&w.acme).len() / 1024);
        // And the attacker, its connections closed, is served again like anyone.
        assert_eq!(node_info(ATTACKER, api).await, Ok(200));
    });
}

/// Sends `head` and `body` whole, as most clients do before they read an answer, then reads
/// the answer: it, or the error of the write or the read.
async fn send_then_read(
    src: Ipv4Addr,
    to: SocketAddr,
    head: String,
    body: Vec<u8>,
) -> Result<String, String> {
    let mut s = connect_from(src, to).await.map_err(|e| e.to_string())?;
    let sent = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(&body).await
    };
    match tokio::time::timeout(Duration::from_secs(10), sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("sending the request failed: {e}")),
        Err(_) => return Err("the request could not be sent within 10 s".into()),
    }
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&got).into_owned()),
        Ok(Err(e)) => Err(format!(
            "reading the answer failed: {e} after {} bytes",
            got.len()
        )),
        Err(_) => Err("no end of the answer within 10 s".into()),
    }
}

/// A refusal sent to a client still sending its request reaches it whole: the node shuts its
/// side, reads and discards what the client still sends (at most 2 s and 1 MiB), then closes.
/// Closing at once would reset the connection and destroy the answer before the client reads
/// it. For a `413` of the HTTP listener and of the management API, and a `503` past the
/// management API's per-client cap.
#[test]
fn refusals_reach_a_client_that_is_still_sending_without_a_reset() {
    let w = world_with(
        "abuse-linger",
        "[http]\nmax_request_body = \"64 KiB\"\n[admin]\nmax_upload = \"128 KiB\"\nmax_connections = 8\nmax_connections_per_client = 2\n",
    );
    w.owner(&w.acme)
        .deploy("acme", "echo", &["/echo".into()], &[], &{
            let bytes = std::fs::read(guest_wasm("echo")).unwrap();
            zero_client::sign_component(
                &bytes,
                &w.acme.owner,
                &w.acme.chain,
                &grant("/", "[]", None),
            )
            .unwrap()
        })
        .unwrap();
    let (http, api) = (w.node.addr, w.node.admin);
    let big = vec![b'x'; 512 << 10];
    let too_big_deploy = {
        let c = hello_for(&w.acme);
        let head = deploy_head_of_length(&w, &w.acme, "big", &c, 1 << 20);
        let mut body = c;
        body.resize(1 << 20, 0);
        (head, body)
    };
    let client = Ipv4Addr::new(127, 0, 0, 30);
    rt().block_on(async {
        // The HTTP listener refuses a 512 KiB body past a 64 KiB limit.
        let head = format!(
            "POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n",
            big.len()
        );
        let got = send_then_read(client, http, head, big.clone()).await;
        let got = got.expect("the 413 did not reach the client");
        assert_eq!(status_of(got.as_bytes()), Some(413), "{got}");
        assert!(got.contains("this node accepts at most 65536"), "{got}");
        // The management API refuses a 1 MiB upload past `max_upload` (128 KiB).
        let (head, body) = too_big_deploy;
        let got = send_then_read(client, api, head, body).await;
        let got = got.expect("the 413 did not reach the client");
        assert_eq!(status_of(got.as_bytes()), Some(413), "{got}");
        assert!(got.contains("TooLarge"), "{got}");
        // Past the per-client cap: the third connection's request gets the whole 503.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (held, refused) =
            held_or_refused(open_many(client, api, 2).await, Duration::from_millis(300)).await;
        assert_eq!((held.len(), refused.len()), (2, 0), "{refused:?}");
        let head = format!(
            "PUT /v1/tenants/acme/apps/x HTTP/1.1\r\nhost: node\r\ncontent-length: {}\r\n\r\n",
            big.len()
        );
        let got = send_then_read(client, api, head, big.clone()).await;
        let got = got.expect("the 503 did not reach the client");
        assert_eq!(status_of(got.as_bytes()), Some(503), "{got}");
        assert!(
            got.contains("this client has too many connections open"),
            "{got}"
        );
        drop(held);
    });
    // Ordinary use goes on: the echo app answers a body within the limit.
    let (status, body) = post_streaming(&format!("http://{http}/echo"), vec![b'y'; 1000]);
    assert_eq!((status, body.len()), (200, 1000));
}

/// Many addresses that never authenticate cannot lock the management API's users out: with
/// every general place held by silent connections from four addresses, the places kept by
/// `[admin] reserved_connections` are refused to strangers (`503` naming the setting) and
/// serve a client that made an authenticated call lately at once, long before the
/// attackers' header timeout would free anything. Without the reserve, that client waits.
#[test]
fn unauthenticated_addresses_cannot_take_the_places_kept_for_known_clients() {
    for reserved in [2usize, 0] {
        let w = world_with(
            &format!("abuse-admin-reserve-{reserved}"),
            &format!(
                "[admin]\nmax_connections = 8\nmax_connections_per_client = 2\n\
                 reserved_connections = {reserved}\nheader_read_timeout_ms = 4000\n"
            ),
        );
        let api = w.node.admin;
        // The owner authenticates from 127.0.0.1: it is a known client from now on.
        // (A client of its own, dropped with its connection, which would hold a place.)
        w.owner(&w.acme).list_apps("acme").unwrap();
        let mut owner = w.owner(&w.acme);
        std::thread::sleep(Duration::from_millis(300));
        rt().block_on(async {
            let mut conns = Vec::new();
            for i in 0..4 {
                conns.extend(open_many(Ipv4Addr::new(127, 0, 0, 50 + i), api, 2).await);
            }
            let (held, refused) = held_or_refused(conns, Duration::from_millis(700)).await;
            let general = 8 - reserved;
            assert_eq!(
                (held.len(), refused.len()),
                (general, reserved),
                "{refused:?}"
            );
            for r in &refused {
                assert_eq!(status_of(r.as_bytes()), Some(503), "{r}");
                assert!(
                    r.contains("TooManyConnections") && r.contains("reserved_connections"),
                    "{r}"
                );
            }
            if reserved > 0 {
                // Another stranger is refused too; the known owner is served at once.
                let (_, more) = held_or_refused(
                    open_many(Ipv4Addr::new(127, 0, 0, 60), api, 1).await,
                    Duration::from_millis(700),
                )
                .await;
                assert_eq!(more.len(), 1, "{more:?}");
                w.node.wait_log("reserve refusal", |v| {
                    msg(v).contains("are kept for clients that have")
                });
            }
            let started = Instant::now();
            let listed = tokio::task::spawn_blocking(move || owner.list_apps("acme").map(|_| ()))
                .await
                .unwrap();
            let took = started.elapsed();
            assert!(listed.is_ok(), "{listed:?}");
            eprintln!("admin reserve {reserved}: the known owner was served after {took:?}");
            if reserved > 0 {
                assert!(took < Duration::from_secs(2), "{took:?}");
            } else {
                // It waited in the backlog until the header timeout closed a silent one.
                assert!(took > Duration::from_secs(2), "{took:?}");
            }
            drop(held);
        });
    }
}

/// A tenant owner is a known client too: from as many addresses as it likes it takes the
/// general places and those kept for known clients, but not the `[admin]
/// admin_reserved_connections` kept for the Admin, who can then still reach the node (to
/// revoke it). Without those places the Admin waits until the attacker's header timeout.
#[test]
fn a_tenant_owner_cannot_take_the_places_kept_for_the_admin() {
    for admin_reserved in [2usize, 0] {
        let w = world_with(
            &format!("abuse-admin-reserve-admin-{admin_reserved}"),
            &format!(
                "[admin]\nmax_connections = 8\nmax_connections_per_client = 4\n\
                 reserved_connections = 4\nadmin_reserved_connections = {admin_reserved}\n\
                 header_read_timeout_ms = 4000\n"
            ),
        );
        let api = w.node.admin;
        // The Admin authenticates from 127.0.0.1 (with a client of its own, dropped with its
        // kept-alive connection, which would hold a place).
        let admin_client = || zero_client::Client::new(&w.api, copy_key(&w.admin), vec![]);
        admin_client().list_tenants().unwrap();
        let mut admin = admin_client();
        let tenant_addrs = [Ipv4Addr::new(127, 0, 0, 70), Ipv4Addr::new(127, 0, 0, 71)];
        rt().block_on(async {
            // The tenant owner makes an authenticated call from each of its addresses.
            for src in tenant_addrs {
                let args = BTreeMap::from([("tenant".to_string(), Ipld::String("acme".into()))]);
                let inv = w.owner(&w.acme).invocation("/app/list", args).unwrap();
                let proofs: Vec<String> = w.acme.chain.iter().map(|d| d.to_base64()).collect();
                let head = format!(
                    "GET /v1/tenants/acme/apps HTTP/1.1\r\nhost: node\r\nauthorization: Bearer {}\r\n\
                     ucan-proofs: {}\r\nconnection: close\r\n\r\n",
                    inv.to_base64(),
                    proofs.join(",")
                );
                let mut s = connect_from(src, api).await.unwrap();
                s.write_all(head.as_bytes()).await.unwrap();
                let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                assert!(closed && status_of(&got) == Some(200), "{}", String::from_utf8_lossy(&got));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Then holds every place it can, silently.
            let mut conns = Vec::new();
            for src in tenant_addrs {
                conns.extend(open_many(src, api, 4).await);
            }
            let (held, refused) = held_or_refused(conns, Duration::from_millis(700)).await;
            assert_eq!(
                (held.len(), refused.len()),
                (8 - admin_reserved, admin_reserved),
                "{refused:?}"
            );
            for r in &refused {
                assert_eq!(status_of(r.as_bytes()), Some(503), "{r}");
                assert!(r.contains("admin_reserved_connections"), "{r}");
            }
            let started = Instant::now();
            let listed = tokio::task::spawn_blocking(move || admin.list_tenants().map(|_| ()))
                .await
                .unwrap();
            let took = started.elapsed();
            assert!(listed.is_ok(), "{listed:?}");
            eprintln!("admin places {admin_reserved}: the Admin was served after {took:?}");
            if admin_reserved > 0 {
                assert!(took < Duration::from_secs(2), "{took:?}");
                w.node.wait_log("admin reserve refusal", |v| {
                    msg(v).contains("kept for the Admin")
                });
            } else {
                // It waited in the backlog until the header timeout closed a silent one.
                assert!(took > Duration::from_secs(2), "{took:?}");
            }
            drop(held);
        });
    }
}
