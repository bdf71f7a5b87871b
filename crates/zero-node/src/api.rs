//! The management API: tenants, deployments, revocations, files and databases, on its own listener (loopback by
//! default).
//!
//! Every call is a UCAN invocation: `Authorization: Bearer <base64 DAG-CBOR invocation>`, with
//! the delegations it cites in `ucan-proofs: <base64>,<base64>,…` (root first). The node checks it
//! like any capability: signatures, time bounds, the chain back to the Admin, revocations,
//! replay, the command the endpoint requires, and the chain's policies on the invocation's
//! arguments, which must also match the request (tenant and app in the URL, the uploaded
//! component's hash). Every refusal names the failed check and never mentions other tenants.
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `GET /v1/node` | none | — (the node's DID and the Admin) |
//! | `POST /v1/tenants` | `/tenant/create` | `tenant`, `owner` |
//! | `GET /v1/tenants` | `/tenant/list` | — (the Admin's, like `/tenant/create`) |
//! | `PUT /v1/tenants/{t}/apps/{a}` (body: component) | `/app/deploy` | `tenant`, `app`, `routes`, `component`, `allowed_outbound_hosts`, `schedules` |
//! | `GET /v1/tenants/{t}/apps` | `/app/list` | `tenant` |
//! | `DELETE /v1/tenants/{t}/apps/{a}` | `/app/remove` | `tenant`, `app` |
//! | `POST /v1/revocations` | `/ucan/revoke` | `revoke` (CID link), `path` (CID links, root first) |
//! | `GET /v1/tenants/{t}/db` | `/db/list` | `tenant` (the tenant's database names) |
//! | `POST /v1/tenants/{t}/db/{db}/query` (body: `{"sql": …, "params": […]}`) | `/db/query` | `tenant`, `db`, `sql` |
//! | `PUT`, `GET`, `POST ?mkdir`, `DELETE /v1/tenants/{t}/fs/{path}` | `/fs/write`, `/fs/read`, `/fs/create`, `/fs/delete` | `tenant`, `path` |
//! | `GET`, `PUT` (body: the value), `DELETE /v1/tenants/{t}/cache/{key}` | `/cache/read`, `/cache/write`, `/cache/write` | `tenant`, `key` (and `ttl_ms` for `PUT`) |
//! | `GET /v1/tenants/{t}/schedules` | `/chrono/list` | `tenant` |
//! | `POST /v1/tenants/{t}/apps/{a}/schedules/{s}/run` | `/chrono/run` | `tenant`, `app`, `schedule` |
//! | `GET /metrics`, `GET /v1/node/events`, `GET /v1/tenants/{t}/logs` | `/node/metrics`, `/node/events`, `/log/read` | see `obsapi` |
//! | `GET /console/…` | none | — (the web console's static files, see `console`) |
//! | `PUT`, `DELETE /v1/tenants/{t}/tls/{host}`, `GET /v1/tenants/{t}/tls`, `GET /v1/tls` | `/tls/put`, `/tls/remove`, `/tls/list` | see `tlsapi` |
//!
//! A deploy that declares schedules (`args.schedules`) also needs `/chrono/schedule` for each
//! (see `chronoapi`).
//!
//! A database query is checked twice: the invocation must be allowed `/db/query`, and then every
//! table the statement touches must be allowed by the same chain with `/db/read`, `/db/write`,
//! `/db/create` or `/db/delete` and the arguments `{tenant, db, table}` (so a tenant owner, whose
//! chain grants `/` within the tenant, can do everything in their tenant and nothing elsewhere).
//! Parameters are JSON: `null`, integers, floats, strings, booleans (as 0/1) and `{"hex": "…"}`
//! for blobs; result cells use the same forms.
//!
//! Before any request body is read, the invocation is checked from the headers alone (at most
//! `[admin] max_proofs` proofs and `[admin] max_token_bytes` of tokens); a refused upload is
//! drained without being buffered (bounded by `[admin] max_upload` and `[fs]
//! transfer_idle_timeout_ms`, skipped when the client sent `Expect: 100-continue`) and
//! answered with `Connection: close`. Invocations must
//! be addressed to this node (`aud`), expire within `[node] max_invocation_lifetime_secs`, and
//! run once, across restarts. The listener bounds the time to receive headers, the time to
//! answer, the body's rate and the number of connections, on the node and per client
//! (`[admin] header_read_timeout_ms`, `request_timeout_ms`, `min_body_rate`,
//! `max_connections`, `max_connections_per_client`): see [`serve`].
//!
//! A revocation (`/ucan/revoke`) is allowed to the Admin, or to the revoked delegation's own
//! issuer: the invocation names the revoked
//! delegation (`revoke`) and its chain (`path`, root first), whose delegations travel in
//! `ucan-proofs`; it carries no `prf` (see `zero_auth::Validator::validate_revocation`).
//!
//! # Structure
//!
//! The API is an axum [`Router`] ([`router`]): one route line per endpoint, each handler taking
//! typed extractors: the [`Ucan`](crate::ucan::Ucan) extractor in place of per-handler
//! authorization (it verifies the invocation from the headers and checks it names the
//! request's path parameters), typed path and query extractors, and [`Upload`] for a body,
//! which is read only once the invocation was accepted, within the endpoint's limit. One layer
//! ([`finish`]) drains the unread body of a refused request and logs every call; [`serve`] runs
//! the listener (connection limit, header and request timeouts, graceful shutdown). Adding an
//! endpoint: a marker type implementing [`Endpoint`](crate::ucan::Endpoint) (its command and
//! path arguments), a handler taking `Ucan<Marker>`, and its line in [`router`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Runtime;
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use zero_auth::{Ipld, Validator, VerifiedInvocation};

use crate::apps::{AppSet, Authority, Refusal, now};
use crate::code::Credential;
use crate::deploy::{Code, Deployment};
use crate::state::{StateStore, TenantRecord};
use crate::ucan::{Endpoint, Ucan};

/// Shared state of the API.
pub struct Api {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// The apps.
    pub apps: Arc<AppSet>,
    /// Authority (admin, revocations, replay).
    pub authority: Arc<Authority>,
    /// Persistent state.
    pub state: StateStore,
    /// The tenant file store (deployed code and tenants' files).
    pub fs: Arc<zerofs::ZeroFs>,
    /// Largest component upload.
    pub max_upload: usize,
    /// Time limits of file uploads and downloads (`[fs] transfer_*`).
    pub fs_transfer: crate::fsapi::TransferLimits,
    /// Per-app concurrency for new apps.
    pub max_concurrent_per_app: usize,
    /// The tenants' SQL databases.
    pub databases: Arc<zerodb::Databases>,
    /// The tenants' in-memory cache.
    pub cache: Arc<zerocache::Cache>,
    /// Bounds on requests and connections.
    pub limits: AdminLimits,
    /// The operator's outgoing-HTTP rule (its host ceiling is checked at deploy).
    pub outbound: Arc<zeroproxy::OutboundConfig>,
    /// Deploys in flight (`[admin] max_deploys_per_tenant`, `max_compiles`).
    pub(crate) deploys: crate::deploy::DeployGate,
    /// The node's metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::NodeMetrics>,
    /// The tenants' certificates for their hosts (`zero tls`), served by SNI.
    pub certs: Arc<crate::hostcerts::HostCerts>,
    /// Turns true when the listener stops: log streams end.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

/// Bounds of the management API (`[admin]` in `zerocore.toml`).
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Most delegations in `ucan-proofs` (and in an invocation's `prf` or revocation path).
    pub max_proofs: usize,
    /// Largest total size of the `authorization` and `ucan-proofs` headers.
    pub max_token_bytes: usize,
    /// Time allowed to receive a request's headers.
    pub header_read_timeout: Duration,
    /// Time allowed from a request's headers to its response's headers.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client (an IPv4 address or an IPv6 /64) may hold open.
    pub max_connections_per_client: usize,
    /// Connections kept for clients that made an authenticated call lately.
    pub reserved_connections: usize,
    /// Of `reserved_connections`, those kept for clients that authenticated as the Admin.
    pub admin_reserved_connections: usize,
    /// Slowest a request body may arrive, in bytes a second (after `header_read_timeout`).
    pub min_body_rate: u64,
}

impl AdminLimits {
    /// The limits set in `config`.
    pub fn from_config(config: &crate::NodeConfig) -> AdminLimits {
        let a = &config.admin;
        AdminLimits {
            max_proofs: a.max_proofs,
            max_token_bytes: usize::try_from(a.max_token_bytes.0).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_millis(a.header_read_timeout_ms),
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            max_connections: a.max_connections,
            max_connections_per_client: a.connections_per_client(),
            reserved_connections: a.reserved(),
            admin_reserved_connections: a.admin_reserved(),
            min_body_rate: a.min_body_rate.0,
        }
    }
}

/// The refusal of a token check, with its status: 429 when the principal has too many live
/// invocations, 500 when the replay journal cannot be written, 403 otherwise.
pub(crate) fn auth_refusal(e: zero_auth::Error) -> Refusal {
    let status = match e {
        zero_auth::Error::TooManyInvocations { .. } => 429,
        zero_auth::Error::Storage { .. } => 500,
        _ => 403,
    };
    Refusal::new(status, e.name(), e.to_string())
}

/// Whether the request announces a body (a length above 0, or a chunked body).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Whether the client waits for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// The body of every management request and response.
pub(crate) type Body = axum::body::Body;
/// A management response.
pub type Resp = axum::response::Response;

/// A body of bytes known in full.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    Body::from(bytes.into())
}

pub(crate) fn json_response(status: u16, v: serde_json::Value) -> Resp {
    let mut r = Resp::new(full_body(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// What a refusal said, kept on its response for the access log.
#[derive(Clone, Debug)]
struct Refused {
    error: String,
    message: String,
}

impl IntoResponse for Refusal {
    /// `{"error": "<check>", "message": "…"}` with the refusal's status.
    fn into_response(self) -> Resp {
        let mut r = json_response(
            self.status,
            json!({"error": self.error, "message": self.message}),
        );
        r.extensions_mut().insert(Refused {
            error: self.error,
            message: self.message,
        });
        r
    }
}

/// The request body, kept aside by [`finish`] until a handler takes it with [`Upload`] (so that
/// the body of a request refused before its handler ran can still be drained).
#[derive(Clone)]
struct BodySlot(Arc<Mutex<Option<Body>>>);

impl BodySlot {
    fn take(&self) -> Option<Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The request body, for the endpoints that take one. Put it after the [`Ucan`] argument: the
/// body is then only read once the invocation was accepted. It stays in the request's
/// [`BodySlot`] until [`Upload::read`] or [`Upload::into_body`] takes it, so that a handler
/// refusing before it reads the body (a deploy past `max_deploys_per_tenant`, say) leaves it to
/// [`finish`] to drain: the client gets the refusal rather than a connection reset mid-upload.
pub(crate) struct Upload(BodySlot);

impl<S: Send + Sync> FromRequestParts<S> for Upload {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        parts
            .extensions
            .get::<BodySlot>()
            .cloned()
            .map(Upload)
            .ok_or_else(|| Refusal::new(500, "Internal", "the request body was already taken"))
    }
}

impl Upload {
    /// The body, to stream; from now on the handler drains it if it refuses.
    pub(crate) fn into_body(self) -> Result<Body, Refusal> {
        self.0
            .take()
            .ok_or_else(|| Refusal::new(500, "Internal", "the request body was already taken"))
    }

    /// Reads the whole body, at most `limit` bytes; `what` names it in the refusal.
    pub(crate) async fn read(self, limit: usize, what: &str) -> Result<Bytes, Refusal> {
        Limited::new(self.into_body()?, limit)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| {
                if let Some(slow) = crate::bodyrate::refusal(&*e) {
                    return slow;
                }
                Refusal::new(
                    413,
                    "TooLarge",
                    format!("{what} failed or exceeds {limit} bytes: {e}"),
                )
            })
    }
}

/// The layer every call goes through: keeps the body aside for [`Upload`]; when the answer is
/// a refusal, drains what the handler did not read (within `[admin] max_upload` and the
/// `[fs] transfer_*` limits; not when the client waits
/// for `100 Continue`, so it sends nothing) and closes the connection if a body was announced;
/// logs the call.
pub(crate) async fn finish(State(api): State<Arc<Api>>, req: Request, next: Next) -> Resp {
    let (mut parts, body) = req.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_string());
    let announced = has_body(&parts.headers);
    let waits = expects_continue(&parts.headers);
    let slot = BodySlot(Arc::new(Mutex::new(Some(body))));
    parts.extensions.insert(slot.clone());
    let mut resp = next.run(Request::from_parts(parts, Body::empty())).await;
    let status = resp.status().as_u16();
    if status >= 400 {
        if let Some(unread) = slot.take()
            && announced
            && !waits
        {
            crate::fsapi::drain(unread, api.max_upload, api.fs_transfer).await;
        }
        if announced {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if let Some(r) = resp.extensions().get::<Refused>() {
            tracing::warn!(target: "management", %method, %path, error = %r.error, "refused: {}", r.message);
        }
    }
    tracing::info!(target: "management", %method, %path, status, "management call");
    resp
}

pub(crate) fn arg_str<'a>(args: &'a BTreeMap<String, Ipld>, key: &str) -> Result<&'a str, Refusal> {
    match args.get(key) {
        Some(Ipld::String(s)) => Ok(s),
        _ => Err(Refusal::new(
            400,
            "InvalidArgs",
            format!("the invocation's args must include `{key}` as a string"),
        )),
    }
}

fn arg_strings(args: &BTreeMap<String, Ipld>, key: &str) -> Result<Vec<String>, Refusal> {
    match args.get(key) {
        None => Ok(vec![]),
        Some(Ipld::List(items)) => items
            .iter()
            .map(|i| match i {
                Ipld::String(s) => Ok(s.clone()),
                _ => Err(Refusal::new(
                    400,
                    "InvalidArgs",
                    format!("args.{key} must be a list of strings"),
                )),
            })
            .collect(),
        _ => Err(Refusal::new(
            400,
            "InvalidArgs",
            format!("args.{key} must be a list of strings"),
        )),
    }
}

pub(crate) fn expect_arg(
    args: &BTreeMap<String, Ipld>,
    key: &str,
    value: &str,
) -> Result<(), Refusal> {
    let got = arg_str(args, key)?;
    if got != value {
        return Err(Refusal::new(
            400,
            "InvalidArgs",
            format!(
                "the invocation's args.{key} is `{got}` but the request is for `{value}`; sign an invocation for this request"
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/tenants`.
pub(crate) struct TenantCreate;
impl Endpoint for TenantCreate {
    const COMMAND: &'static str = "/tenant/create";
}

/// `GET /v1/tenants`.
pub(crate) struct TenantList;
impl Endpoint for TenantList {
    const COMMAND: &'static str = "/tenant/list";
}

/// `PUT /v1/tenants/{tenant}/apps/{app}`.
pub(crate) struct AppDeploy;
impl Endpoint for AppDeploy {
    const COMMAND: &'static str = "/app/deploy";
    const URL_ARGS: &'static [&'static str] = &["tenant", "app"];
}

/// `GET /v1/tenants/{tenant}/apps`.
pub(crate) struct AppList;
impl Endpoint for AppList {
    const COMMAND: &'static str = "/app/list";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `DELETE /v1/tenants/{tenant}/apps/{app}`.
pub(crate) struct AppRemove;
impl Endpoint for AppRemove {
    const COMMAND: &'static str = "/app/remove";
    const URL_ARGS: &'static [&'static str] = &["tenant", "app"];
}

/// The management API's routes: one line per endpoint (see the module documentation). Every
/// call goes through [`finish`]; an unknown path or method is `NotFound`.
pub fn router(api: Arc<Api>) -> Router {
    use crate::{cacheapi, chronoapi, dbapi, fsapi, obsapi, tlsapi};
    Router::new()
        .route("/v1/node", get(node))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant}/apps", get(list))
        .route(
            "/v1/tenants/{tenant}/apps/{app}",
            put(deploy).delete(remove),
        )
        .route("/v1/revocations", post(revoke))
        .route("/v1/tenants/{tenant}/db", get(dbapi::list))
        .route("/v1/tenants/{tenant}/db/{db}/query", post(dbapi::query))
        .route(
            "/v1/tenants/{tenant}/cache/{key}",
            get(cacheapi::get)
                .put(cacheapi::set)
                .delete(cacheapi::delete),
        )
        .route("/v1/tenants/{tenant}/schedules", get(chronoapi::list))
        .route(
            "/v1/tenants/{tenant}/apps/{app}/schedules/{schedule}/run",
            post(chronoapi::run),
        )
        .route("/metrics", get(obsapi::metrics))
        .route("/v1/node/events", get(obsapi::events))
        .route("/v1/tenants/{tenant}/logs", get(obsapi::logs))
        .route("/v1/tls", get(tlsapi::list_all))
        .route("/v1/tenants/{tenant}/tls", get(tlsapi::list))
        .route(
            "/v1/tenants/{tenant}/tls/{host}",
            put(tlsapi::put).delete(tlsapi::remove),
        )
        .route("/v1/tenants/{tenant}/fs", fsapi::routes())
        .route("/v1/tenants/{tenant}/fs/{*path}", fsapi::routes())
        .route("/console", get(crate::console::index))
        .route("/console/{*path}", get(crate::console::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(api.clone(), finish))
        .with_state(api)
}

async fn not_found(method: Method, uri: Uri) -> Refusal {
    Refusal::new(
        404,
        "NotFound",
        format!("no management endpoint {method} {}", uri.path()),
    )
}

/// `GET /v1/node`: the node's DID and the Admin (no invocation needed).
async fn node(State(api): State<Arc<Api>>) -> Resp {
    json_response(
        200,
        json!({
            "did": api.authority.node_did.to_string(),
            "admin": api.authority.options.required_root.as_ref().map(|d| d.to_string()),
        }),
    )
}

async fn create_tenant(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TenantCreate>,
) -> Result<Resp, Refusal> {
    api.create_tenant(ucan.inv)
}

/// `GET /v1/tenants`: every tenant with its owner, hosts and number of apps (the Admin's).
async fn list_tenants(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TenantList>,
) -> Result<Resp, Refusal> {
    require_tenant_admin(&ucan.inv, "listing tenants")?;
    let mut tenants = api
        .state
        .tenants()
        .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    let tenants: Vec<serde_json::Value> = tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": t.name,
                "owner": t.owner,
                "hosts": t.hosts,
                "created_at": t.created_at,
                "apps": api.apps.of_tenant(&t.name).len(),
            })
        })
        .collect();
    Ok(json_response(200, json!({"tenants": tenants})))
}

/// Refuses an invocation whose chain does not delegate tenant administration (`/tenant` or one
/// of its commands) by name: a tenant owner's `/` within its own tenant is not enough.
fn require_tenant_admin(inv: &VerifiedInvocation, what: &str) -> Result<(), Refusal> {
    let tenant_admin = zero_auth::Command::parse("/tenant")
        .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
    match inv
        .capabilities
        .iter()
        .find(|c| !tenant_admin.covers(&c.command))
    {
        None => Ok(()),
        Some(cap) => Err(Refusal::new(
            403,
            "InvalidClaim",
            format!(
                "{what} takes the Admin's key or a delegation of `{}` itself; the chain \
                 delegates `{}` (delegation {}), which does not grant tenant administration",
                inv.command, cap.command, cap.delegation
            ),
        )),
    }
}

async fn list(State(api): State<Arc<Api>>, ucan: Ucan<AppList>) -> Result<Resp, Refusal> {
    api.list(arg_str(&ucan.inv.args, "tenant")?)
}

async fn remove(State(api): State<Arc<Api>>, ucan: Ucan<AppRemove>) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    api.remove(arg_str(args, "tenant")?, arg_str(args, "app")?)
        .await
}

async fn revoke(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Resp, Refusal> {
    api.revoke(&headers)
}

/// `PUT /v1/tenants/{tenant}/apps/{app}`: authorized from the headers before a byte of the
/// upload is read, then [`Api::install`], the one deploy procedure.
async fn deploy(
    State(api): State<Arc<Api>>,
    ucan: Ucan<AppDeploy>,
    upload: Upload,
) -> Result<Resp, Refusal> {
    // Schedules are checked from the invocation alone, before a byte of the upload is read.
    let schedules = crate::chronoapi::declared(&ucan.inv.args, &ucan.checker())?;
    // So is the tenant's number of deploys in flight: a flood is refused without its uploads
    // being buffered or its components compiled.
    let _ticket = match api.deploys.enter(arg_str(&ucan.inv.args, "tenant")?) {
        Ok(t) => t,
        Err(refusal) => {
            let mut r = refusal.into_response();
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(crate::deploy::DEPLOY_RETRY_AFTER_SECS),
            );
            return Ok(r);
        }
    };
    let bytes = upload
        .read(api.max_upload, "the component upload")
        .await?
        .to_vec();
    let Ucan { inv, chain, .. } = ucan;
    let deployment = Deployment {
        tenant: arg_str(&inv.args, "tenant")?.to_string(),
        app: arg_str(&inv.args, "app")?.to_string(),
        routes: arg_strings(&inv.args, "routes")?,
        allowed_outbound_hosts: arg_strings(&inv.args, "allowed_outbound_hosts")?,
        credential: Credential {
            holder: inv.issuer.clone(),
            proofs: chain,
        },
        schedules,
    };
    let claimed = arg_str(&inv.args, "component")?.to_string();
    let record = api
        .install(deployment, Code::Upload { bytes, claimed })
        .await?;
    tracing::info!(tenant = %record.tenant, app = %record.name, component = %record.component, routes = ?record.routes, "app deployed");
    api.metrics.observer.deployed(&record.tenant);
    crate::events::hub().node_event(
        "deploy",
        event_fields(
            json!({"tenant": record.tenant, "app": record.name, "component": record.component}),
        ),
    );
    Ok(json_response(
        200,
        json!({"tenant": record.tenant, "app": record.name, "component": record.component, "routes": record.routes, "schedules": record.schedules.iter().map(|s| s.to_arg()).collect::<Vec<_>>()}),
    ))
}

impl Api {
    fn create_tenant(&self, inv: VerifiedInvocation) -> Result<Resp, Refusal> {
        // A tenant's owner holds `/` within the tenant, which covers `/tenant/create` for its
        // own name; creating tenants and granting them hosts is the Admin's, so the chain must
        // delegate tenant administration itself, not everything.
        let tenant_admin = zero_auth::Command::parse("/tenant")
            .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
        if let Some(cap) = inv
            .capabilities
            .iter()
            .find(|c| !tenant_admin.covers(&c.command))
        {
            return Err(Refusal::new(
                403,
                "InvalidClaim",
                format!(
                    "creating tenants and granting hosts takes the Admin's key or a delegation of `/tenant/create` itself; the chain delegates `{}` (delegation {}), which does not grant tenant administration",
                    cap.command, cap.delegation
                ),
            ));
        }
        let name = arg_str(&inv.args, "tenant")?.to_string();
        let owner = arg_str(&inv.args, "owner")?.to_string();
        if !crate::config::valid_name(&name) {
            return Err(Refusal::new(
                400,
                "InvalidArgs",
                "tenant names use lowercase letters, digits, `-` and `_` (1 to 63 characters)",
            ));
        }
        zero_auth::Did::parse(&owner)
            .map_err(|e| Refusal::new(400, "InvalidArgs", format!("args.owner: {e}")))?;
        let mut hosts = arg_strings(&inv.args, "hosts")?
            .iter()
            .map(|h| {
                crate::apps::parse_host_grant(h).map_err(|e| Refusal::new(400, "InvalidArgs", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        hosts.sort();
        hosts.dedup();
        let existing = self
            .state
            .tenant(&name)
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
        let created = match existing {
            Some(t) if t.owner != owner => {
                return Err(Refusal::new(
                    409,
                    "TenantExists",
                    format!("tenant `{name}` already exists"),
                ));
            }
            Some(t) if t.hosts == hosts => {
                return Ok(json_response(
                    200,
                    json!({"tenant": name, "owner": owner, "hosts": hosts, "created": false}),
                ));
            }
            Some(t) => {
                // The Admin changes the tenant's host grants: record them, then stop the apps
                // whose host routes are no longer granted.
                let record = TenantRecord {
                    hosts: hosts.clone(),
                    ..t
                };
                self.state
                    .put_tenant(&record)
                    .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
                let stopped = self.apps.retain_deployed(|app| {
                    (*app.tenant == *name)
                        .then(|| crate::apps::ungranted_host(&record, &app.routes))
                        .flatten()
                        .map(|host| {
                            format!("the Admin no longer grants host `{host}` to its tenant")
                        })
                });
                // Certificates of hosts no longer granted stop being served at once.
                let tenants = self
                    .state
                    .tenants()
                    .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
                self.certs.publish(&tenants);
                tracing::info!(tenant = %name, hosts = ?hosts, stopped = ?stopped, "tenant hosts changed");
                false
            }
            None => {
                self.state
                    .put_tenant(&TenantRecord {
                        name: name.clone(),
                        owner: owner.clone(),
                        created_at: now(),
                        hosts: hosts.clone(),
                    })
                    .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
                tracing::info!(tenant = %name, owner = %owner, hosts = ?hosts, "tenant created");
                crate::events::hub().node_event(
                    "tenant",
                    event_fields(json!({"tenant": name, "owner": owner})),
                );
                true
            }
        };
        Ok(json_response(
            if created { 201 } else { 200 },
            json!({"tenant": name, "owner": owner, "hosts": hosts, "created": created}),
        ))
    }

    /// The tenant's record, or `UnknownTenant`.
    pub(crate) fn tenant_record(&self, tenant: &str) -> Result<TenantRecord, Refusal> {
        match self.state.tenant(tenant) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(Refusal::new(
                404,
                "UnknownTenant",
                format!(
                    "tenant `{tenant}` does not exist; the Admin creates it with `zero tenant create`"
                ),
            )),
            Err(e) => Err(Refusal::new(500, "Storage", e.to_string())),
        }
    }

    pub(crate) fn require_tenant(&self, tenant: &str) -> Result<(), Refusal> {
        self.tenant_record(tenant).map(|_| ())
    }

    fn list(&self, tenant: &str) -> Result<Resp, Refusal> {
        self.require_tenant(tenant)?;
        let apps: Vec<serde_json::Value> = self
            .apps
            .of_tenant(tenant)
            .iter()
            .map(|a| {
                json!({
                    "app": a.name.to_string(),
                    "routes": a.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    "component": a.settings.component,
                })
            })
            .collect();
        Ok(json_response(200, json!({"tenant": tenant, "apps": apps})))
    }

    async fn remove(&self, tenant: &str, app: &str) -> Result<Resp, Refusal> {
        self.require_tenant(tenant)?;
        let recorded = self.recorded(tenant, app);
        let existed = self
            .state
            .remove_app(tenant, app)
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
        let served = self.apps.remove(tenant, app);
        if let Some((code, hash)) = recorded {
            self.release_code(tenant, &code).await;
            self.release_artifact(&hash).await;
        }
        if !existed && !served {
            return Err(Refusal::new(
                404,
                "UnknownApp",
                format!("tenant `{tenant}` has no app `{app}`"),
            ));
        }
        tracing::info!(tenant, app, "app removed");
        crate::events::hub().node_event(
            "remove",
            event_fields(json!({"tenant": tenant, "app": app})),
        );
        Ok(json_response(
            200,
            json!({"tenant": tenant, "app": app, "removed": true}),
        ))
    }

    /// `POST /v1/revocations`: see the module documentation for who may revoke.
    fn revoke(&self, headers: &HeaderMap) -> Result<Resp, Refusal> {
        let (invocation, delegations) = self.tokens(headers)?;
        self.check_addressed(&invocation, zero_auth::REVOKE_COMMAND)?;
        let path_len = match invocation.args().get("path") {
            Some(Ipld::List(items)) => items.len(),
            _ => 0,
        };
        if path_len > self.limits.max_proofs {
            return Err(Refusal::new(
                400,
                "TooManyProofs",
                format!(
                    "args.path names {path_len} delegations, more than this node accepts ({}, [admin] max_proofs)",
                    self.limits.max_proofs
                ),
            ));
        }
        let now = now();
        let verified = Validator::new(&self.authority.options)
            .with_revocations(&self.authority.revocations)
            .with_replay_cache(&self.authority.replay)
            .validate_revocation(&invocation, &delegations, now)
            .map_err(auth_refusal)?;
        let cid = verified.revoked;
        let record = crate::revocation::RevocationRecord {
            cid: cid.to_string(),
            revoker: verified.revoker.to_string(),
            principal: if verified.by_root {
                String::new()
            } else {
                verified.principal.to_string()
            },
            forget_after: verified
                .revoked_expiration
                .map(|e| e.saturating_add(self.authority.options.clock_skew)),
            revoked_at: now,
        };
        let added = self
            .authority
            .revocations
            .add(&self.state, cid, record, now)?;
        let stopped = self.apps.retain(|app| {
            let relies =
                |chain: &zero_auth::Chain| chain.capabilities().iter().any(|c| c.delegation == cid);
            // A component with several capabilities stops when any of its chains relies on it.
            if app
                .settings
                .capabilities
                .iter()
                .flat_map(|c| c.iter())
                .any(relies)
            {
                Some(format!("its capability token {cid} was revoked"))
            } else if app.settings.owner_credential.as_deref().is_some_and(relies) {
                Some(format!(
                    "the owner's credential {cid} its code was deployed with was revoked"
                ))
            } else {
                None
            }
        });
        let already = added == crate::revocation::Added::Already;
        tracing::info!(%cid, revoker = %verified.revoker, already, stopped = ?stopped, "token revoked");
        crate::events::hub().node_event(
            "revoke",
            event_fields(json!({"revoked": cid.to_string(), "revoker": verified.revoker.to_string(), "stopped": stopped})),
        );
        Ok(json_response(
            200,
            json!({
                "revoked": cid.to_string(),
                "already_revoked": already,
                "stopped_apps": stopped.len(),
            }),
        ))
    }
}

/// The fields of a node event, from a JSON object.
fn event_fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The path with repeated leading and any trailing `/` removed (`//v1/node/` is `/v1/node`), as
/// the API has always read it.
fn normalize(req: &mut http::Request<Body>) {
    let path = req.uri().path();
    let trimmed = format!("/{}", path.trim_matches('/'));
    if trimmed == path {
        return;
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Answers one request as the listener does, without a socket: normalizes the path, runs the
/// [`router`] within `timeout` (`[admin] request_timeout_ms`, until the answer's headers), else
/// `408 Timeout` with `Connection: close`. [`serve`] answers every request it reads with it; a
/// harness (the `mgmt_api` fuzz target) calls it with requests built in memory.
pub async fn answer<B>(router: Router, req: http::Request<B>, timeout: Duration) -> Resp
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use tower_service::Service;
    let mut req = req.map(Body::new);
    normalize(&mut req);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut router = router;
    match tokio::time::timeout(timeout, router.call(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::warn!(target: "management", %method, %path, "refused: the request timed out");
            let mut r = Refusal::new(
                408,
                "Timeout",
                format!(
                    "the request was not answered within {} ms ([admin] request_timeout_ms); \
                     send the body faster or raise the limit",
                    timeout.as_millis()
                ),
            )
            .into_response();
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// Serves the management API until `shutdown` turns true, with the HTTP listener's connection
/// rules ([`zeroproxy::conn`]): at most `[admin] max_connections` connections at once (further
/// ones wait to be accepted) and `max_connections_per_client` from one client (past it a new
/// connection is answered `503` and closed), each connection's first request head within `header_read_timeout_ms` of
/// the accept (later ones, and idle HTTP/2 connections, within it of the previous answer),
/// each body at `min_body_rate` at least, each answer within `request_timeout_ms`, and a
/// lingering close. On shutdown it stops accepting, lets the calls in flight finish (at most
/// `request_timeout_ms` more), and returns. With `tls` (`[admin] tls_cert` and `tls_key`)
/// every connection is TLS, its handshake within `header_read_timeout_ms` of the accept.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Option<zeroproxy::tls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use zeroproxy::conn;
    let limits = api.limits.clone();
    let held = api.clone();
    let router = router(api);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The request head must hold the tokens and a few other headers, nothing more.
    let head_bytes = limits.max_token_bytes.saturating_add(16 << 10).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(head_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(8)
        .max_header_list_size(u32::try_from(head_bytes).unwrap_or(u32::MAX));
    let connections = conn::Connections::with_json_refusals(
        limits.max_connections,
        limits.max_connections_per_client,
        limits.reserved_connections,
        limits.admin_reserved_connections,
        "[admin]",
    );
    let deadlines = conn::Deadlines {
        first: limits.header_read_timeout,
        idle: limits.header_read_timeout,
        // An answer may take the whole request timeout before its first frame; a download
        // is cut by its own `[fs] transfer_idle_timeout_ms` before this.
        stall: limits.request_timeout + Duration::from_secs(1),
    };
    let mut acceptor = conn::Acceptor::new("[admin] max_connections");
    let refuser = conn::Refuser::default();
    loop {
        // Past max_connections further connections wait in the listen backlog, as they
        // always have; past the per-client cap they are refused.
        let place = tokio::select! {
            place = connections.place() => place,
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = acceptor.accept(&listener) => accepted,
            _ = shutdown.changed() => break,
        };
        let slot = match connections.admit_into(place, remote.ip()) {
            Ok(slot) => slot,
            Err(response) => {
                refuser.shed(stream, response);
                continue;
            }
        };
        let activity = conn::Activity::new();
        let service = {
            let router = router.clone();
            let activity = activity.clone();
            let (timeout, rate, grace) = (
                limits.request_timeout,
                limits.min_body_rate,
                limits.header_read_timeout,
            );
            let connections = connections.clone();
            hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let router = router.clone();
                let connections = connections.clone();
                let in_flight = activity.begin();
                let req = req.map(|b| crate::bodyrate::MinRate::new(b, rate, grace));
                async move {
                    let (resp, vouched) = vouch::watch(answer(router, req, timeout)).await;
                    if let Some(who) = vouched {
                        connections.vouch(remote.ip(), who);
                    }
                    Ok::<_, Infallible>(resp.map(|b| conn::Holding::new(b, in_flight)))
                }
            })
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ended = |outcome: Result<_, conn::Closed>| {
                if let Err(why) = outcome {
                    let why = match why {
                        conn::Closed::FirstRequest => {
                            "sent no complete request head (or TLS handshake) within [admin] header_read_timeout_ms"
                        }
                        conn::Closed::Idle => "was idle for [admin] header_read_timeout_ms",
                        conn::Closed::Stalled => {
                            "stopped reading its answer for [admin] request_timeout_ms"
                        }
                    };
                    tracing::debug!(target: "management", %remote, "closed a connection that {why}");
                }
            };
            conn::serve(
                &builder,
                stream,
                tls.as_ref(),
                service,
                &activity,
                deadlines,
                shutdown,
                ended,
            )
            .await;
        });
    }
    drop(listener);
    // Log streams end, so that their connections close with the others.
    let _ = held.closing.send(true);
    if !connections.drained(limits.request_timeout).await {
        tracing::warn!(target: "management", "management calls still running at shutdown were cut off");
    }
}

/// Whether a management call was authenticated, and as whom: the one place that verifies
/// invocations ([`Api::authorize_with`]) says so to the connection serving the call, which then
/// counts its client as known (see `[admin] reserved_connections` and
/// `admin_reserved_connections`).
pub(crate) mod vouch {
    use std::cell::Cell;

    use zeroproxy::conn::Vouched;

    tokio::task_local! {
        static AUTHENTICATED: Cell<Option<Vouched>>;
    }

    /// Runs `call`; returns its output and what it verified, if anything.
    pub(crate) async fn watch<F: std::future::Future>(call: F) -> (F::Output, Option<Vouched>) {
        AUTHENTICATED
            .scope(Cell::new(None), async {
                let out = call.await;
                (out, AUTHENTICATED.with(Cell::get))
            })
            .await
    }

    /// Marks the call being served as authenticated, as the Admin when `admin` (outside
    /// [`watch`], nothing happens). An Admin call in the same scope is never downgraded.
    pub(crate) fn authenticated(admin: bool) {
        let _ = AUTHENTICATED.try_with(|a| {
            if a.get() != Some(Vouched::Admin) {
                a.set(Some(if admin {
                    Vouched::Admin
                } else {
                    Vouched::Known
                }));
            }
        });
    }
}

/// Binds the management listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the management API: {e} (change [admin] listen in zerocore.toml)"
        )
    })
}
