//! The management API's request handling, in process: one real node (started once per process
//! in a temporary data directory, its listeners on loopback ports it never receives on) and
//! every input turned into one request (method, path, query, `authorization`, `ucan-proofs`, a
//! few other headers, a body) answered by `zero_node::api::answer`, the function the listener
//! answers every request with.
//!
//! No input carries a valid invocation: the tokens are fuzz bytes, invocations signed by a
//! stranger (with fuzzed commands, subjects, audiences, arguments and proofs, including the
//! Admin's real delegation to the tenant's owner and an outsider's to the stranger), or the Admin's own
//! invocations replayed, expired or addressed to another node. So:
//!
//! - nothing panics;
//! - only `GET`/`HEAD /v1/node` (which needs no invocation) may succeed; anything else is a
//!   4xx, never a 5xx, and its body is the API's error shape, `{"error": "…", "message": "…"}`,
//!   both non-empty;
//! - no request changes the node's state: the tenants, apps and revocations recorded after each
//!   input are those recorded before the first.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zero_auth::{Command, Delegation, Did, Ipld, Keypair, Policy};
use zero_node::api::{self, Api};

#[path = "shared/ipld.rs"]
mod ipld;

/// The tenant the harness creates (the Admin's one legitimate call), and one that does not exist.
const TENANT: &str = "acme";
const OTHER: &str = "beta";

/// The endpoints' commands, and some that are none of them.
const COMMANDS: &[&str] = &[
    "/tenant/create",
    "/app/deploy",
    "/app/list",
    "/app/remove",
    "/ucan/revoke",
    "/db/query",
    "/fs/write",
    "/fs/read",
    "/fs/create",
    "/fs/delete",
    "/cache/read",
    "/cache/write",
    "/chrono/list",
    "/chrono/run",
    "/chrono/schedule",
    "/node/metrics",
    "/node/events",
    "/log/read",
    "/",
    "/tenant",
    "/node",
];

/// Path segments: the names the harness knows, traversal, encodings, empties.
const SEGMENTS: &[&str] = &[
    TENANT,
    OTHER,
    "app",
    "main",
    "site",
    "index.html",
    "..",
    ".",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%",
    "",
    "a%20b",
    "note:1",
    "nightly",
    "metrics",
    "logs",
    "events",
    "node",
];

/// Argument names the endpoints read.
const ARG_KEYS: &[&str] = &[
    "tenant",
    "owner",
    "hosts",
    "app",
    "routes",
    "component",
    "allowed_outbound_hosts",
    "schedules",
    "db",
    "sql",
    "path",
    "key",
    "ttl_ms",
    "schedule",
    "revoke",
];

/// What the harness keeps between inputs.
struct Harness {
    rt: tokio::runtime::Runtime,
    /// Keeps the node's tasks (and its state) alive for the whole process.
    _node: zero_node::Node,
    api: Arc<Api>,
    router: axum::Router,
    timeout: Duration,
    node_did: Did,
    admin: Did,
    owner: Did,
    stranger: Keypair,
    /// The Admin's delegation of everything within `acme` to its owner.
    owner_grant: Delegation,
    /// An outsider's delegation of everything to the stranger (a root that is not the Admin).
    stranger_grant: Delegation,
    /// The Admin's invocations no node may accept again: the one that created `acme`
    /// (replayed), one expired, one addressed to another node.
    spent: Vec<String>,
    /// The state recorded after `acme` was created.
    state: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn s(v: &str) -> Ipld {
    Ipld::String(v.into())
}

/// The node's tenants, apps and revocations, as one comparable text.
fn snapshot(api: &Api) -> String {
    let tenants = api.state.tenants().expect("the state store reads");
    let apps = api.state.apps().expect("the state store reads");
    let revocations = api.state.revocations().expect("the state store reads");
    format!(
        "{:?}\n{:?}\n{:?}",
        tenants
            .iter()
            .map(|t| (&t.name, &t.owner, &t.hosts))
            .collect::<Vec<_>>(),
        apps.iter()
            .map(|a| (&a.tenant, &a.name, &a.component))
            .collect::<Vec<_>>(),
        revocations.iter().map(|r| &r.cid).collect::<Vec<_>>()
    )
}

fn call(h: &Harness, req: http::Request<Full<Bytes>>) -> (u16, http::HeaderMap, Bytes) {
    h.rt.block_on(async {
        let resp = api::answer(h.router.clone(), req, h.timeout).await;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .expect("an in-memory answer's body reads")
            .to_bytes();
        (parts.status.as_u16(), parts.headers, body)
    })
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zerocore-fuzz-mgmt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let admin_key = Keypair::from_seed(&[1; 32]);
        let owner_key = Keypair::from_seed(&[2; 32]);
        let stranger = Keypair::from_seed(&[3; 32]);
        let config = format!(
            "[node]\ndata_dir = {:?}\nadmin = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[engine]\npooling = false\n",
            dir.display().to_string(),
            admin_key.did()
        );
        let config = zero_node::NodeConfig::parse(&config, &dir).expect("the harness's config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let node = rt
            .block_on(zero_node::Node::start(config))
            .expect("the node starts");
        let api = node.api().clone();
        let node_did = Did::parse(node.did()).expect("the node's DID");
        let router = api::router(api.clone());
        let timeout = api.limits.request_timeout;
        let sign = |cmd: &str, exp: u64, aud: &Did| {
            zero_auth::InvocationToken::builder(
                admin_key.did().clone(),
                Command::parse(cmd).expect("a command"),
                Some(exp),
            )
            .audience(aud.clone())
            .args(BTreeMap::from([
                ("tenant".to_string(), s(TENANT)),
                ("owner".to_string(), s(&owner_key.did().to_string())),
            ]))
            .sign(&admin_key)
            .expect("the Admin signs")
            .to_base64()
        };
        let created = sign("/tenant/create", now() + 600, &node_did);
        let owner_grant = Delegation::builder(
            owner_key.did().clone(),
            Command::top(),
            Some(now() + 365 * 86400),
        )
        .subject(admin_key.did().clone())
        .policy(Policy::new(vec![zero_auth::component::tenant_statement(
            TENANT,
        )]))
        .sign(&admin_key)
        .expect("the Admin delegates");
        // Issued by an outsider, so that the stranger may not revoke it either.
        let outsider = Keypair::from_seed(&[4; 32]);
        let stranger_grant = Delegation::builder(stranger.did().clone(), Command::top(), None)
            .subject(outsider.did().clone())
            .sign(&outsider)
            .expect("the outsider delegates");
        let mut h = Harness {
            rt,
            _node: node,
            api,
            router,
            timeout,
            node_did: node_did.clone(),
            admin: admin_key.did().clone(),
            owner: owner_key.did().clone(),
            stranger,
            owner_grant,
            stranger_grant,
            spent: vec![
                created.clone(),
                sign("/tenant/create", now().saturating_sub(3600), &node_did),
                sign("/tenant/create", now() + 600, owner_key.did()),
            ],
            state: String::new(),
        };
        let req = http::Request::post("/v1/tenants")
            .header("authorization", format!("Bearer {created}"))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let (status, _, body) = call(&h, req);
        assert_eq!(
            status,
            201,
            "the Admin creates the tenant: {}",
            String::from_utf8_lossy(&body)
        );
        h.state = snapshot(&h.api);
        h
    })
}

fn text(u: &mut Unstructured<'_>, words: &[&str]) -> Result<String> {
    if u.ratio(1, 4)? {
        String::arbitrary(u)
    } else {
        Ok((*u.choose(words)?).to_owned())
    }
}

/// A request path: one of the API's shapes with fuzzed segments, or any text.
fn path(u: &mut Unstructured<'_>) -> Result<String> {
    let seg = |u: &mut Unstructured<'_>| text(u, SEGMENTS);
    let p = match u.int_in_range(0..=12)? {
        0 => "/v1/node".to_string(),
        1 => "/v1/tenants".to_string(),
        2 => format!("/v1/tenants/{}/apps", seg(u)?),
        3 => format!("/v1/tenants/{}/apps/{}", seg(u)?, seg(u)?),
        4 => "/v1/revocations".to_string(),
        5 => format!("/v1/tenants/{}/db/{}/query", seg(u)?, seg(u)?),
        6 => format!("/v1/tenants/{}/cache/{}", seg(u)?, seg(u)?),
        7 => format!("/v1/tenants/{}/schedules", seg(u)?),
        8 => format!(
            "/v1/tenants/{}/apps/{}/schedules/{}/run",
            seg(u)?,
            seg(u)?,
            seg(u)?
        ),
        9 => format!("/v1/tenants/{}/fs", seg(u)?),
        10 => {
            let n = u.int_in_range(0..=4)?;
            let mut p = format!("/v1/tenants/{}/fs", seg(u)?);
            for _ in 0..n {
                p.push('/');
                p.push_str(&seg(u)?);
            }
            p
        }
        11 => format!("//{}/", seg(u)?),
        _ => String::arbitrary(u)?,
    };
    let p = if u.ratio(1, 8)? {
        p.replace("/v1", "//v1")
    } else {
        p
    };
    Ok(match u.int_in_range(0..=6)? {
        0 => format!("{p}?mkdir"),
        1 => format!("{p}?ttl_ms={}", String::arbitrary(u)?),
        2 => format!("{p}?{}", String::arbitrary(u)?),
        3 => format!("{p}/"),
        _ => p,
    })
}

/// An argument value: the names the harness knows, or any IPLD.
fn arg(u: &mut Unstructured<'_>, h: &Harness) -> Result<Ipld> {
    Ok(match u.int_in_range(0..=5)? {
        0 => s(TENANT),
        1 => s(OTHER),
        2 => s(&h.owner.to_string()),
        3 => Ipld::List(vec![s("acme.example")]),
        4 => s(&String::arbitrary(u)?),
        _ => ipld::value(u, 0)?,
    })
}

/// An invocation signed by the stranger: its fields fuzzed, its proofs cited from `proofs`.
fn stranger_invocation(
    u: &mut Unstructured<'_>,
    h: &Harness,
    proofs: &[&Delegation],
) -> Result<Option<String>> {
    let Ok(command) = Command::parse(&text(u, COMMANDS)?) else {
        return Ok(None);
    };
    let subject = (*u.choose(&[&h.admin, &h.owner, h.stranger.did(), &h.node_did])?).clone();
    let exp = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(now().saturating_sub(u.int_in_range(1..=100_000)?)),
        2 => Some(u64::arbitrary(u)?),
        _ => Some(now() + 60),
    };
    let mut b = zero_auth::InvocationToken::builder(subject, command, exp);
    match u.int_in_range(0..=3)? {
        0 => {}
        1 => b = b.audience(h.stranger.did().clone()),
        _ => b = b.audience(h.node_did.clone()),
    }
    let n = u.int_in_range(0..=6)?;
    let mut args = BTreeMap::new();
    for _ in 0..n {
        args.insert(text(u, ARG_KEYS)?, arg(u, h)?);
    }
    b = b.args(args);
    let cited: Vec<zero_auth::Cid> = proofs
        .iter()
        .filter_map(|d| u.ratio(3, 4).ok()?.then(|| *d.cid()))
        .collect();
    b = b.proofs(cited);
    if u.ratio(1, 4)? {
        b = b.nonce(Vec::<u8>::arbitrary(u)?);
    }
    Ok(b.sign(&h.stranger).ok().map(|t| t.to_base64()))
}

/// A header value from text, when it is a valid one.
fn header(req: &mut http::request::Builder, name: &str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        if let Some(headers) = req.headers_mut() {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                v,
            );
        }
    }
}

fn request(
    u: &mut Unstructured<'_>,
    h: &Harness,
) -> Result<Option<(String, String, http::Request<Full<Bytes>>)>> {
    let method = match u.int_in_range(0..=8)? {
        0 | 1 => "GET".to_string(),
        2 => "POST".to_string(),
        3 => "PUT".to_string(),
        4 => "DELETE".to_string(),
        5 => "HEAD".to_string(),
        6 => "PATCH".to_string(),
        7 => "OPTIONS".to_string(),
        _ => String::arbitrary(u)?,
    };
    let path = path(u)?;
    let Ok(m) = http::Method::from_bytes(method.as_bytes()) else {
        return Ok(None);
    };
    let Ok(uri) = path.parse::<http::Uri>() else {
        return Ok(None);
    };
    // What the listener could receive: an origin-form target.
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Ok(None);
    }
    let mut req = http::Request::builder().method(m).uri(uri.clone());
    // The proofs sent, and the tokens made from them.
    let proofs: Vec<&Delegation> = [&h.owner_grant, &h.stranger_grant]
        .into_iter()
        .filter(|_| u.ratio(1, 2).unwrap_or(false))
        .collect();
    match u.int_in_range(0..=6)? {
        0 => {}
        1 => header(&mut req, "authorization", &String::arbitrary(u)?),
        2 => header(
            &mut req,
            "authorization",
            &format!("Bearer {}", String::arbitrary(u)?),
        ),
        3 => {
            let spent = u.choose(&h.spent)?;
            header(&mut req, "authorization", &format!("Bearer {spent}"));
        }
        _ => {
            if let Some(token) = stranger_invocation(u, h, &proofs)? {
                header(&mut req, "authorization", &format!("Bearer {token}"));
            }
        }
    }
    match u.int_in_range(0..=3)? {
        0 => {}
        1 => header(&mut req, "ucan-proofs", &String::arbitrary(u)?),
        _ => {
            let list: Vec<String> = proofs.iter().map(|d| d.to_base64()).collect();
            let sep = if u.ratio(1, 4)? { " , ," } else { "," };
            header(&mut req, "ucan-proofs", &list.join(sep));
        }
    }
    if u.ratio(1, 3)? {
        let ct = text(
            u,
            &[
                "application/json",
                "application/wasm",
                "application/octet-stream",
            ],
        )?;
        header(&mut req, "content-type", &ct);
    }
    if u.ratio(1, 8)? {
        header(&mut req, "expect", "100-continue");
    }
    if u.ratio(1, 8)? {
        header(&mut req, "content-length", &String::arbitrary(u)?);
    }
    if u.ratio(1, 8)? {
        header(&mut req, "transfer-encoding", "chunked");
    }
    if u.ratio(1, 8)? {
        let name = String::arbitrary(u)?;
        let value = String::arbitrary(u)?;
        if http::HeaderName::from_bytes(name.as_bytes()).is_ok() {
            header(&mut req, &name, &value);
        }
    }
    let body = if u.ratio(1, 3)? {
        format!(
            "{{\"sql\": {:?}, \"params\": [{}]}}",
            String::arbitrary(u)?,
            String::arbitrary(u)?
        )
        .into_bytes()
    } else {
        u.bytes(u.len())?.to_vec()
    };
    let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
        return Ok(None);
    };
    Ok(Some((method, uri.path().to_string(), req)))
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let mut u = Unstructured::new(data);
    let Ok(Some((method, path, req))) = request(&mut u, h) else {
        return;
    };
    let (status, headers, body) = call(h, req);
    let normalized = format!("/{}", path.trim_matches('/'));
    let public = (method == "GET" || method == "HEAD") && normalized == "/v1/node";
    let shown = String::from_utf8_lossy(&body);
    if public {
        assert_eq!(status, 200, "{method} {path}: {shown}");
    } else {
        assert!(
            (400..500).contains(&status),
            "{method} {path} without a valid invocation answered {status}: {shown}"
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{method} {path}: a refusal is JSON"
        );
        if method != "HEAD" {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("{method} {path}: the refusal is not JSON ({e}): {shown}")
            });
            for field in ["error", "message"] {
                assert!(
                    v.get(field)
                        .and_then(|f| f.as_str())
                        .is_some_and(|f| !f.trim().is_empty()),
                    "{method} {path} ({status}): the refusal's `{field}` is missing or empty: {shown}"
                );
            }
        }
    }
    assert_eq!(
        snapshot(&h.api),
        h.state,
        "{method} {path} ({status}: {shown}) changed the node's state without a valid invocation"
    );
});
