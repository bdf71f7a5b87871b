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
//! | `POST /v1/revocations` | `/ucan/revoke` | `cid` |
//! | `POST /v1/tenants/{t}/db/{db}/query` (body: `{"sql": …, "params": […]}`) | `/db/query` | `tenant`, `db`, `sql` |
//! | `PUT`, `GET`, `POST ?mkdir`, `DELETE /v1/tenants/{t}/fs/{path}` | `/fs/write`, `/fs/read`, `/fs/create`, `/fs/delete` | `tenant`, `path` |
//!
//! A database query is checked twice: the invocation must be allowed `/db/query`, and then every
//! table the statement touches must be allowed by the same chain with `/db/read`, `/db/write`,
//! `/db/create` or `/db/delete` and the arguments `{tenant, db, table}` (so a tenant owner, whose
//! chain grants `/` within the tenant, can do everything in their tenant and nothing elsewhere).
//! Parameters are JSON: `null`, integers, floats, strings, booleans (as 0/1) and `{"hex": "…"}`
//! for blobs; result cells use the same forms.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use zero_auth::{Delegation, Invocation, Ipld, Validator, VerifiedInvocation};
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

    /// Checks the request's invocation for `command`, with `scope` deciding whether the chain's
    /// capabilities allow the invocation's command and arguments. Returns the verified
    /// invocation and its delegation chain (root first).
    pub(crate) fn authorize_with(
        &self,
        req: &http::request::Parts,
        command: &str,
        scope: &zero_auth::Authorizer,
    ) -> Result<(VerifiedInvocation, Vec<Delegation>), Refusal> {
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
        let invocation = Invocation::from_base64(auth.trim())
            .map_err(|e| Refusal::new(401, e.name(), e.to_string()))?;
        let mut proofs = Vec::new();
        if let Some(v) = req.headers.get("ucan-proofs") {
            let v = v.to_str().map_err(|_| {
                Refusal::new(400, "Malformed", "the ucan-proofs header is not ASCII")
            })?;
            for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                proofs.push(
                    Delegation::from_base64(p)
                        .map_err(|e| Refusal::new(401, e.name(), e.to_string()))?,
                );
            }
        }
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
        if let Some(aud) = invocation.audience()
            && aud != &self.authority.node_did
        {
            return Err(Refusal::new(
                403,
                "InvalidAudience",
                format!(
                    "the invocation is addressed to {aud}, not to this node ({})",
                    self.authority.node_did
                ),
            ));
        }
        let revoked = self
            .authority
            .revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let verified = Validator::new(&self.authority.options)
            .with_revocations(&revoked)
            .with_replay_cache(&self.authority.replay)
            .validate_invocation_with(&invocation, &proofs, now(), scope)
            .map_err(|e| Refusal::new(403, e.name(), e.to_string()))?;
        let chain = verified
            .proofs
            .iter()
            .filter_map(|cid| proofs.iter().find(|d| d.cid() == cid).cloned())
            .collect();
        Ok((verified, chain))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let segs: Vec<String> = parts
            .uri
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
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
                let prefix = format!("/v1/tenants/{t}/fs");
                let rest = parts.uri.path()[prefix.len()..]
                    .trim_start_matches('/')
                    .to_string();
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
        let resp = result.unwrap_or_else(|r| {
            tracing::warn!(target: "management", method = %parts.method, path = %parts.uri.path(), error = %r.error, "refused: {}", r.message);
            refusal(r)
        });
        tracing::info!(target: "management", method = %parts.method, path = %parts.uri.path(), status = resp.status().as_u16(), "management call");
        resp
    }

    fn create_tenant(&self, parts: &http::request::Parts) -> Result<Resp, Refusal> {
        let inv = self.authorize(parts, "/tenant/create")?;
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
        let existing = self
            .state
            .tenant(&name)
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
        if let Some(t) = existing {
            if t.owner == owner {
                return Ok(json_response(
                    200,
                    json!({"tenant": name, "owner": owner, "created": false}),
                ));
            }
            return Err(Refusal::new(
                409,
                "TenantExists",
                format!("tenant `{name}` already exists"),
            ));
        }
        self.state
            .put_tenant(&TenantRecord {
                name: name.clone(),
                owner: owner.clone(),
                created_at: now(),
            })
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
        tracing::info!(tenant = %name, owner = %owner, "tenant created");
        Ok(json_response(
            201,
            json!({"tenant": name, "owner": owner, "created": true}),
        ))
    }

    pub(crate) fn require_tenant(&self, tenant: &str) -> Result<(), Refusal> {
        match self.state.tenant(tenant) {
            Ok(Some(_)) => Ok(()),
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

    async fn deploy(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        tenant: &str,
        app: &str,
    ) -> Result<Resp, Refusal> {
        // The upload is read (bounded) before any check so that a refusal never races the
        // client's upload on the same connection.
        let bytes = read_body(body, self.max_upload, "the component upload")
            .await?
            .to_vec();
        let (inv, chain) = self.authorize_with(parts, "/app/deploy", &zero_auth::authorize)?;
        expect_arg(&inv.args, "tenant", tenant)?;
        expect_arg(&inv.args, "app", app)?;
        self.require_tenant(tenant)?;
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
        let outbound = arg_strings(&inv.args, "allowed_outbound_hosts")?;
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
        let (bytes, owner) =
            crate::code::fetch(&self.fs, &self.authority, tenant, &key, &credential).await?;
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
            routes: routes_text.clone(),
            component: hash.clone(),
            allowed_outbound_hosts: outbound,
            deployed_at: now(),
            code: key.clone(),
            holder: credential.holder.to_string(),
            credential: credential.encoded_proofs(),
        };
        let previous = self.recorded_code(tenant, app);
        self.apps
            .deploy(built, || persist_deploy(&self.state, &record))?;
        if let Some(old) = previous.filter(|old| *old != key) {
            self.release_code(tenant, &old).await;
        }
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

    fn revoke(&self, parts: &http::request::Parts) -> Result<Resp, Refusal> {
        let inv = self.authorize(parts, "/ucan/revoke")?;
        let cid_text = arg_str(&inv.args, "cid")?;
        let cid = zero_auth::Cid::try_from(cid_text).map_err(|e| {
            Refusal::new(
                400,
                "InvalidArgs",
                format!("args.cid `{cid_text}` is not a CID: {e}"),
            )
        })?;
        let snapshot = {
            let mut set = self
                .authority
                .revocations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            set.insert(cid);
            set.clone()
        };
        self.state
            .set_revocations(&snapshot)
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))?;
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
        tracing::info!(%cid, stopped = ?stopped, "token revoked");
        Ok(json_response(
            200,
            json!({"revoked": cid.to_string(), "stopped_apps": stopped.len()}),
        ))
    }
}

/// Serves the management API until `shutdown` turns true.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _remote)) = accepted else { continue };
                let api = api.clone();
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.route(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
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
