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
//! | `PUT /v1/tenants/{t}/apps/{a}` (body: component) | `/app/deploy` | `tenant`, `app`, `routes`, `component`, `allowed_outbound_hosts` |
//! | `GET /v1/tenants/{t}/apps` | `/app/list` | `tenant` |
//! | `DELETE /v1/tenants/{t}/apps/{a}` | `/app/remove` | `tenant`, `app` |
//! | `POST /v1/revocations` | `/ucan/revoke` | `revoke` (CID link), `path` (CID links, root first) |
//! | `POST /v1/tenants/{t}/db/{db}/query` (body: `{"sql": …, "params": […]}`) | `/db/query` | `tenant`, `db`, `sql` |
//! | `PUT`, `GET`, `POST ?mkdir`, `DELETE /v1/tenants/{t}/fs/{path}` | `/fs/write`, `/fs/read`, `/fs/create`, `/fs/delete` | `tenant`, `path` |
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
//! drained without being buffered (bounded by the endpoint's size limit, skipped when the
//! client sent `Expect: 100-continue`) and answered with `Connection: close`. Invocations must
//! be addressed to this node (`aud`), expire within `[node] max_invocation_lifetime_secs`, and
//! run once, across restarts. The listener bounds the time to receive headers, the time to
//! answer, and the number of connections (`[admin] header_read_timeout_ms`,
//! `request_timeout_ms`, `max_connections`).
//!
//! A revocation (`/ucan/revoke`) is allowed to the Admin, or to the revoked delegation's own
//! issuer: the invocation names the revoked
//! delegation (`revoke`) and its chain (`path`, root first), whose delegations travel in
//! `ucan-proofs`; it carries no `prf` (see `zero_auth::Validator::validate_revocation`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use zero_auth::{Delegation, InvocationToken, Ipld, Validator, VerifiedInvocation};
use zerocore::Runtime;
use zeroproxy::Route;

use crate::apps::{AppSet, AppSpec, Authority, Refusal, build_app, now, persist_deploy};
use crate::code::Credential;
use crate::state::{AppRecord, StateStore, TenantRecord};

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
    /// Bounds on requests and connections.
    pub limits: AdminLimits,
    /// The operator's outgoing-HTTP rule (its host ceiling is checked at deploy).
    pub outbound: Arc<zeroproxy::OutboundConfig>,
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
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Answers `refusal` to a request whose body was not read: unless the client waits for
/// `100 Continue` (and so sends no body), reads and discards up to `limit` bytes of it first,
/// without buffering, so that a client that sends its whole body before reading the answer
/// gets the refusal rather than a reset connection. The answer then closes the connection
/// (see `Api::answer`).
pub(crate) async fn refuse_unread(
    parts: &http::request::Parts,
    mut body: Incoming,
    limit: usize,
    refusal: Refusal,
) -> Refusal {
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > limit {
                    break;
                }
            }
        }
    }
    refusal
}

/// The request path as percent-decoded segments (leading and trailing `/` ignored), with the
/// raw segments beside them. Never slices a string at a byte offset.
fn path_segments(path: &str) -> Result<(Vec<String>, Vec<&str>), Refusal> {
    let raw: Vec<&str> = path.trim_matches('/').split('/').collect();
    let decoded = raw
        .iter()
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    Refusal::new(
                        400,
                        "InvalidPath",
                        "a segment of the request path is not valid UTF-8 once percent-decoded",
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((decoded, raw))
}

/// The body of every management response: small JSON documents, or a streamed file download.
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
pub(crate) type Resp = Response<Body>;

/// A body of bytes known in full.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads a whole request body of at most `limit` bytes; `what` names it in the refusal.
pub(crate) async fn read_body(body: Incoming, limit: usize, what: &str) -> Result<Bytes, Refusal> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            Refusal::new(
                413,
                "TooLarge",
                format!("{what} failed or exceeds {limit} bytes: {e}"),
            )
        })
}

pub(crate) fn json_response(status: u16, v: serde_json::Value) -> Resp {
    let mut r = Response::new(full_body(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn refusal(r: Refusal) -> Resp {
    json_response(r.status, json!({"error": r.error, "message": r.message}))
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

impl Api {
    /// Checks the request's invocation for `command`.
    pub(crate) fn authorize(
        &self,
        req: &http::request::Parts,
        command: &str,
    ) -> Result<VerifiedInvocation, Refusal> {
        self.authorize_with(req, command, &zero_auth::authorize)
            .map(|(inv, _)| inv)
    }

    /// Reads the invocation and its proofs from the request's headers, within the bounds
    /// (`[admin] max_token_bytes` in all, `[admin] max_proofs` proofs), before anything is
    /// verified.
    fn tokens(
        &self,
        req: &http::request::Parts,
    ) -> Result<(InvocationToken, Vec<Delegation>), Refusal> {
        let limits = &self.limits;
        let size: usize = [http::header::AUTHORIZATION.as_str(), "ucan-proofs"]
            .iter()
            .flat_map(|h| req.headers.get_all(*h).iter())
            .map(|v| v.len())
            .sum();
        if size > limits.max_token_bytes {
            return Err(Refusal::new(
                431,
                "TooLarge",
                format!(
                    "the invocation and its proofs take {size} bytes, more than this node accepts \
                     ({} bytes, [admin] max_token_bytes); send only the delegations the invocation \
                     cites",
                    limits.max_token_bytes
                ),
            ));
        }
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::new(
                    401,
                    "MissingInvocation",
                    "send a UCAN invocation as `Authorization: Bearer <base64>` (the zero CLI does this for you)",
                )
            })?;
        let mut encoded = Vec::new();
        for v in req.headers.get_all("ucan-proofs") {
            let v = v.to_str().map_err(|_| {
                Refusal::new(400, "Malformed", "the ucan-proofs header is not ASCII")
            })?;
            encoded.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()));
        }
        if encoded.len() > limits.max_proofs {
            return Err(Refusal::new(
                400,
                "TooManyProofs",
                format!(
                    "the request carries {} proofs, more than this node accepts ({}, [admin] \
                     max_proofs); send only the delegations the invocation cites, or obtain a \
                     shorter chain",
                    encoded.len(),
                    limits.max_proofs
                ),
            ));
        }
        let invocation = InvocationToken::from_base64(auth.trim())
            .map_err(|e| Refusal::new(401, e.name(), e.to_string()))?;
        let proofs = encoded
            .into_iter()
            .map(|p| {
                Delegation::from_base64(p).map_err(|e| Refusal::new(401, e.name(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((invocation, proofs))
    }

    /// The checks every management invocation gets before its chain: the endpoint's command,
    /// and an `aud` naming this node.
    fn check_addressed(&self, invocation: &InvocationToken, command: &str) -> Result<(), Refusal> {
        if invocation.command().as_str() != command {
            return Err(Refusal::new(
                403,
                "InvalidClaim",
                format!(
                    "this endpoint takes the command `{command}`, the invocation is for `{}`",
                    invocation.command()
                ),
            ));
        }
        let node = &self.authority.node_did;
        match invocation.audience() {
            Some(aud) if aud == node => Ok(()),
            Some(aud) => Err(Refusal::new(
                403,
                "InvalidAudience",
                format!(
                    "the invocation is addressed to {aud}, not to this node ({node}); sign it with \
                     `aud` set to this node's DID (GET /v1/node tells it; the zero CLI does this)"
                ),
            )),
            None => Err(Refusal::new(
                403,
                "InvalidAudience",
                format!(
                    "the invocation has no `aud`; management invocations must be addressed to \
                     this node ({node}) so that they cannot be replayed elsewhere (the zero CLI \
                     does this)"
                ),
            )),
        }
    }

    /// Checks the request's invocation for `command`, with `scope` deciding whether the chain's
    /// capabilities allow the invocation's command and arguments. Returns the verified
    /// invocation and its delegation chain (root first). Reads headers only.
    pub(crate) fn authorize_with(
        &self,
        req: &http::request::Parts,
        command: &str,
        scope: &zero_auth::Authorizer,
    ) -> Result<(VerifiedInvocation, Vec<Delegation>), Refusal> {
        let (invocation, proofs) = self.tokens(req)?;
        self.check_addressed(&invocation, command)?;
        if invocation.proofs().len() > self.limits.max_proofs {
            return Err(Refusal::new(
                400,
                "TooManyProofs",
                format!(
                    "the invocation cites {} proofs, more than this node accepts ({}, [admin] max_proofs)",
                    invocation.proofs().len(),
                    self.limits.max_proofs
                ),
            ));
        }
        let verified = Validator::new(&self.authority.options)
            .with_revocations(&self.authority.revocations)
            .with_replay_cache(&self.authority.replay)
            .validate_invocation_with(&invocation, &proofs, now(), scope)
            .map_err(auth_refusal)?;
        let chain = verified
            .proofs
            .iter()
            .filter_map(|cid| proofs.iter().find(|d| d.cid() == cid).cloned())
            .collect();
        Ok((verified, chain))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let (segs, raw) = match path_segments(parts.uri.path()) {
            Ok(v) => v,
            Err(r) => return self.answer(&parts, Err(r)),
        };
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let result = match (&parts.method, segs.as_slice()) {
            (&Method::GET, ["v1", "node"]) => Ok(json_response(
                200,
                json!({
                    "did": self.authority.node_did.to_string(),
                    "admin": self.authority.options.required_root.as_ref().map(|d| d.to_string()),
                }),
            )),
            (&Method::POST, ["v1", "tenants"]) => self.create_tenant(&parts),
            (&Method::PUT, ["v1", "tenants", t, "apps", a]) => {
                let (t, a) = (t.to_string(), a.to_string());
                self.deploy(&parts, body, &t, &a).await
            }
            (&Method::GET, ["v1", "tenants", t, "apps"]) => self.list(&parts, t),
            (&Method::DELETE, ["v1", "tenants", t, "apps", a]) => self.remove(&parts, t, a).await,
            (&Method::POST, ["v1", "revocations"]) => self.revoke(&parts),
            (_, ["v1", "tenants", t, "fs", ..]) => {
                let t = t.to_string();
                // The file path stays percent-encoded: the file endpoint decodes it.
                let rest = raw.get(4..).unwrap_or_default().join("/");
                self.files(&parts, body, &t, &rest).await
            }
            (&Method::POST, ["v1", "tenants", t, "db", d, "query"]) => {
                let (t, d) = (t.to_string(), d.to_string());
                self.db_query(&parts, body, &t, &d).await
            }
            _ => Err(Refusal::new(
                404,
                "NotFound",
                format!(
                    "no management endpoint {} {}",
                    parts.method,
                    parts.uri.path()
                ),
            )),
        };
        self.answer(&parts, result)
    }

    /// Logs and renders the outcome of a call. A refused request that announced a body gets
    /// `Connection: close`: its body may not have been read (see [`refuse_unread`]).
    fn answer(&self, parts: &http::request::Parts, result: Result<Resp, Refusal>) -> Resp {
        let mut resp = result.unwrap_or_else(|r| {
            tracing::warn!(target: "management", method = %parts.method, path = %parts.uri.path(), error = %r.error, "refused: {}", r.message);
            refusal(r)
        });
        if resp.status().as_u16() >= 400 && has_body(&parts.headers) {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        tracing::info!(target: "management", method = %parts.method, path = %parts.uri.path(), status = resp.status().as_u16(), "management call");
        resp
    }

    fn create_tenant(&self, parts: &http::request::Parts) -> Result<Resp, Refusal> {
        let inv = self.authorize(parts, "/tenant/create")?;
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
                    "creating tenants and granting hosts takes the Admin's key or a delegation of                      `/tenant/create` itself; the chain delegates `{}` (delegation {}), which does                      not grant tenant administration",
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

    async fn deploy(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        tenant: &str,
        app: &str,
    ) -> Result<Resp, Refusal> {
        // Authorized from the headers before a byte of the upload is read; a refused upload
        // is drained unbuffered so that the client still reads the refusal.
        let checked = self
            .authorize_with(parts, "/app/deploy", &zero_auth::authorize)
            .and_then(|(inv, chain)| {
                expect_arg(&inv.args, "tenant", tenant)?;
                expect_arg(&inv.args, "app", app)?;
                Ok((inv, chain))
            });
        let (inv, chain) = match checked {
            Ok(v) => v,
            Err(r) => return Err(refuse_unread(parts, body, self.max_upload, r).await),
        };
        let bytes = read_body(body, self.max_upload, "the component upload")
            .await?
            .to_vec();
        let tenant_record = self.tenant_record(tenant)?;
        if !crate::config::valid_name(app) {
            return Err(Refusal::new(
                400,
                "InvalidArgs",
                "app names use lowercase letters, digits, `-` and `_` (1 to 63 characters)",
            ));
        }
        let routes_text = arg_strings(&inv.args, "routes")?;
        if routes_text.is_empty() {
            return Err(Refusal::new(
                400,
                "InvalidArgs",
                "args.routes must name at least one route, e.g. [\"/app\"]",
            ));
        }
        let routes = routes_text
            .iter()
            .map(|r| Route::parse(r).map_err(|e| Refusal::new(400, "InvalidArgs", e)))
            .collect::<Result<Vec<_>, _>>()?;
        crate::apps::check_host_grants(&tenant_record, &routes)?;
        let outbound = arg_strings(&inv.args, "allowed_outbound_hosts")?;
        crate::outbound::check_deploy(&self.outbound, &outbound)?;
        let claimed = arg_str(&inv.args, "component")?.to_string();

        let hash = zero_component::content_hash(&bytes)
            .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?
            .to_string();
        if hash != claimed {
            return Err(Refusal::new(
                400,
                "HashMismatch",
                format!(
                    "the invocation authorizes component {claimed} but the uploaded bytes are {hash}"
                ),
            ));
        }
        // The code goes to zerofs first (content-addressed, so the serving version's code is
        // untouched if this deploy fails), then the node reads it back with the deployer's
        // credential, exactly as it will after a restart.
        let credential = Credential {
            holder: inv.issuer.clone(),
            proofs: chain,
        };
        let key = crate::code::code_key(&bytes);
        let code_path = zerofs::TenantPath::parse(&crate::code::code_path(&key))
            .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
        credential.check_read(&self.authority, tenant, &code_path)?;
        crate::code::store(&self.fs, tenant, bytes).await?;
        let previous = self.recorded_code(tenant, app);
        let result = self
            .install(
                tenant,
                app,
                &key,
                &credential,
                routes,
                &routes_text,
                outbound,
                &hash,
            )
            .await;
        match &result {
            // Code no app uses any more: the replaced version's, or this deploy's when it failed.
            Ok(_) => {
                if let Some(old) = previous.filter(|old| *old != key) {
                    self.release_code(tenant, &old).await;
                }
            }
            Err(_) => self.release_code(tenant, &key).await,
        }
        result
    }

    /// Second half of a deploy, once the code is stored: reads it back with the deployer's
    /// credential, builds the app and swaps it in atomically with its durable record.
    #[allow(clippy::too_many_arguments)]
    async fn install(
        &self,
        tenant: &str,
        app: &str,
        key: &str,
        credential: &Credential,
        routes: Vec<Route>,
        routes_text: &[String],
        outbound: Vec<String>,
        hash: &str,
    ) -> Result<Resp, Refusal> {
        let (bytes, owner) =
            crate::code::fetch(&self.fs, &self.authority, tenant, key, credential).await?;
        let spec = AppSpec {
            tenant: tenant.to_string(),
            name: app.to_string(),
            routes,
            allowed_outbound_hosts: outbound.clone(),
            owner_credential: owner,
        };
        let built = build_app(
            &self.runtime,
            &self.authority,
            spec,
            bytes,
            self.max_concurrent_per_app,
        )
        .await?;
        let record = AppRecord {
            tenant: tenant.to_string(),
            name: app.to_string(),
            routes: routes_text.to_vec(),
            component: hash.to_string(),
            allowed_outbound_hosts: outbound,
            deployed_at: now(),
            code: key.to_string(),
            holder: credential.holder.to_string(),
            credential: credential.encoded_proofs(),
        };
        self.apps
            .deploy(built, || persist_deploy(&self.state, &record))?;
        tracing::info!(tenant, app, component = %hash, routes = ?routes_text, "app deployed");
        Ok(json_response(
            200,
            json!({"tenant": tenant, "app": app, "component": hash, "routes": routes_text}),
        ))
    }

    fn list(&self, parts: &http::request::Parts, tenant: &str) -> Result<Resp, Refusal> {
        let inv = self.authorize(parts, "/app/list")?;
        expect_arg(&inv.args, "tenant", tenant)?;
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

    async fn remove(
        &self,
        parts: &http::request::Parts,
        tenant: &str,
        app: &str,
    ) -> Result<Resp, Refusal> {
        let inv = self.authorize(parts, "/app/remove")?;
        expect_arg(&inv.args, "tenant", tenant)?;
        expect_arg(&inv.args, "app", app)?;
        self.require_tenant(tenant)?;
        let code = self.recorded_code(tenant, app);
        let existed = self
            .state
            .remove_app(tenant, app)
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
        let served = self.apps.remove(tenant, app);
        if let Some(hash) = code {
            self.release_code(tenant, &hash).await;
        }
        if !existed && !served {
            return Err(Refusal::new(
                404,
                "UnknownApp",
                format!("tenant `{tenant}` has no app `{app}`"),
            ));
        }
        tracing::info!(tenant, app, "app removed");
        Ok(json_response(
            200,
            json!({"tenant": tenant, "app": app, "removed": true}),
        ))
    }

    /// The key of the code recorded for a deployed app.
    fn recorded_code(&self, tenant: &str, app: &str) -> Option<String> {
        let records = self.state.apps().ok()?;
        records
            .into_iter()
            .find(|r| r.tenant == tenant && r.name == app)
            .map(|r| r.code)
            .filter(|c| !c.is_empty())
    }

    /// Deletes a tenant's stored code once no deployed app of the tenant uses it any more.
    async fn release_code(&self, tenant: &str, key: &str) {
        let in_use = match self.state.apps() {
            Ok(records) => records.iter().any(|r| r.tenant == tenant && r.code == key),
            Err(_) => true,
        };
        if in_use {
            return;
        }
        let fs = self.fs.clone();
        let (t, path) = (tenant.to_string(), crate::code::code_path(key));
        let removed = tokio::task::spawn_blocking(move || fs.remove(&t, &path)).await;
        match removed {
            Ok(Ok(())) | Ok(Err(zerofs::Error::NotFound(_))) => {}
            Ok(Err(e)) => {
                tracing::warn!(tenant, code = key, error = %e, "could not delete unused code")
            }
            Err(e) => {
                tracing::warn!(tenant, code = key, error = %e, "could not delete unused code")
            }
        }
    }

    /// `POST /v1/revocations`: see the module documentation for who may revoke.
    fn revoke(&self, parts: &http::request::Parts) -> Result<Resp, Refusal> {
        let (invocation, delegations) = self.tokens(parts)?;
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
            let relies = |chain: &Option<Arc<zero_auth::Chain>>| {
                chain
                    .as_ref()
                    .is_some_and(|c| c.capabilities().iter().any(|c| c.delegation == cid))
            };
            if relies(&app.settings.capabilities) {
                Some(format!("its capability token {cid} was revoked"))
            } else if relies(&app.settings.owner_credential) {
                Some(format!(
                    "the owner's credential {cid} its code was deployed with was revoked"
                ))
            } else {
                None
            }
        });
        let already = added == crate::revocation::Added::Already;
        tracing::info!(%cid, revoker = %verified.revoker, already, stopped = ?stopped, "token revoked");
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

/// Serves the management API until `shutdown` turns true: at most `[admin] max_connections`
/// connections at once (further ones wait in the listen backlog), each request's headers
/// within `header_read_timeout_ms` and its answer within `request_timeout_ms`.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let limits = api.limits.clone();
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
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(e) => {
                    tracing::warn!(target: "management", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let api = api.clone();
        let builder = builder.clone();
        let header_timeout = limits.header_read_timeout;
        let timeout = limits.request_timeout;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let api = api.clone();
            async move {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let resp = match tokio::time::timeout(timeout, api.route(req)).await {
                    Ok(resp) => resp,
                    Err(_) => {
                        tracing::warn!(target: "management", %method, %path, "refused: the request timed out");
                        let mut r = refusal(Refusal::new(
                            408,
                            "Timeout",
                            format!(
                                "the request was not answered within {} ms ([admin] \
                                 request_timeout_ms); send the body faster or raise the limit",
                                timeout.as_millis()
                            ),
                        ));
                        r.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        r
                    }
                };
                Ok::<_, Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let _permit = permit;
            // hyper's header timeout starts once the HTTP version is known; a client that
            // sends nothing must not hold a connection slot either.
            if !version_known(&stream, header_timeout).await {
                return;
            }
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let _ = conn.await;
        });
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, at most `timeout`, until the client has sent enough to tell HTTP/1 from HTTP/2 (what
/// the connection builder reads first, with no timeout of its own); `false` when it did not, or
/// closed the connection.
async fn version_known(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if n >= H2_PREFACE.len() || buf.get(..n) != H2_PREFACE.get(..n) {
                return true;
            }
            // Part of the HTTP/2 preface: wait for the rest.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

/// Binds the management listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the management API: {e} (change [admin] listen in zerocore.toml)"
        )
    })
}
