//! The certificate endpoints of the management API (`zero tls put|list|remove`): a tenant
//! installs a certificate and key for a host the Admin granted it, served by the HTTP
//! listener by SNI (see [`crate::hostcerts`]).
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `PUT /v1/tenants/{t}/tls/{host}` (body: `{"cert": PEM, "key": PEM}`) | `/tls/put` | `tenant`, `host` |
//! | `GET /v1/tenants/{t}/tls` | `/tls/list` | `tenant` |
//! | `DELETE /v1/tenants/{t}/tls/{host}` | `/tls/remove` | `tenant`, `host` |
//! | `GET /v1/tls` | `/tls/list` | — (every tenant's; the chain must delegate `/tls` by name) |
//!
//! A put is refused before its body is read when the listener serves cleartext
//! (`TlsNotEnabled`), the host is not the tenant's (`HostNotGranted`, 403) or the tenant holds
//! `[admin] max_certs_per_tenant` certificates already (`TooManyCertificates`); a body over
//! [`crate::hostcerts::MAX_PUT_BYTES`] is `TooLarge` (413), a pair that does not parse, whose key
//! is not the certificate's, that is outside its validity dates or does not cover the host is
//! `InvalidCertificate` (400). No endpoint ever answers a key.

use std::sync::Arc;

use axum::extract::State;
use serde_json::json;

use crate::api::{Api, Resp, Upload, arg_str, json_response};
use crate::apps::Refusal;
use crate::hostcerts::{CertHost, HostCerts, MAX_PUT_BYTES};
use crate::state::TenantRecord;
use crate::ucan::{Endpoint, Ucan};

/// `PUT /v1/tenants/{tenant}/tls/{host}`.
pub(crate) struct TlsPut;
impl Endpoint for TlsPut {
    const COMMAND: &'static str = "/tls/put";
    const URL_ARGS: &'static [&'static str] = &["tenant", "host"];
}

/// `GET /v1/tenants/{tenant}/tls`.
pub(crate) struct TlsList;
impl Endpoint for TlsList {
    const COMMAND: &'static str = "/tls/list";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `GET /v1/tls`.
pub(crate) struct TlsListAll;
impl Endpoint for TlsListAll {
    const COMMAND: &'static str = "/tls/list";
}

/// `DELETE /v1/tenants/{tenant}/tls/{host}`.
pub(crate) struct TlsRemove;
impl Endpoint for TlsRemove {
    const COMMAND: &'static str = "/tls/remove";
    const URL_ARGS: &'static [&'static str] = &["tenant", "host"];
}

fn host_arg(
    args: &std::collections::BTreeMap<String, zero_auth::Ipld>,
) -> Result<CertHost, Refusal> {
    CertHost::parse(arg_str(args, "host")?).map_err(|e| Refusal::new(400, "InvalidArgs", e))
}

impl Api {
    fn all_tenants(&self) -> Result<Vec<TenantRecord>, Refusal> {
        self.state
            .tenants()
            .map_err(|e| Refusal::new(500, "Storage", e.to_string()))
    }
}

/// The body of a put.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    cert: String,
    key: String,
}

/// `PUT /v1/tenants/{tenant}/tls/{host}`: checked from the invocation before the body is read.
pub(crate) async fn put(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TlsPut>,
    upload: Upload,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let tenant = arg_str(args, "tenant")?;
    let host = host_arg(args)?;
    api.certs.check_enabled()?;
    let record = api.tenant_record(tenant)?;
    let tenants = api.all_tenants()?;
    HostCerts::check_owner(&record, &tenants, &host)?;
    api.certs.check_room(tenant, &host)?;
    let body = upload.read(MAX_PUT_BYTES, "the certificate upload").await?;
    let body: PutBody = serde_json::from_slice(&body).map_err(|e| {
        Refusal::new(
            400,
            "InvalidArgs",
            format!(
                "the body must be JSON {{\"cert\": PEM, \"key\": PEM}} ({e}); `zero tls put HOST \
                 --cert FILE --key FILE` sends it"
            ),
        )
    })?;
    // The grants are read again: the Admin may have changed them while the body arrived.
    let tenants = api.all_tenants()?;
    let record = api.tenant_record(tenant)?;
    HostCerts::check_owner(&record, &tenants, &host)?;
    let info = api.certs.put(
        tenant,
        &host,
        body.cert.as_bytes(),
        body.key.as_bytes(),
        &tenants,
    )?;
    tracing::info!(tenant, host = %host.text(), sha256 = %info["sha256"].as_str().unwrap_or_default(), "tenant certificate installed");
    Ok(json_response(200, info))
}

/// `GET /v1/tenants/{tenant}/tls`: the tenant's certificates (never their keys).
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TlsList>,
) -> Result<Resp, Refusal> {
    let tenant = arg_str(&ucan.inv.args, "tenant")?;
    api.require_tenant(tenant)?;
    let tenants = api.all_tenants()?;
    Ok(json_response(
        200,
        json!({"tenant": tenant, "certificates": api.certs.list(Some(tenant), &tenants)}),
    ))
}

/// `GET /v1/tls`: every tenant's certificates; the chain must delegate `/tls` (or one of its
/// commands) by name, as the Admin's own key does: a tenant owner's `/` within its tenant does
/// not reach other tenants.
pub(crate) async fn list_all(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TlsListAll>,
) -> Result<Resp, Refusal> {
    let tls = zero_auth::Command::parse("/tls")
        .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
    if let Some(cap) = ucan
        .inv
        .capabilities
        .iter()
        .find(|c| !tls.covers(&c.command))
    {
        return Err(Refusal::new(
            403,
            "InvalidClaim",
            format!(
                "listing every tenant's certificates takes the Admin's key or a delegation of \
                 `/tls` itself; the chain delegates `{}` (delegation {}); list one tenant's with \
                 `zero tls list --tenant NAME`",
                cap.command, cap.delegation
            ),
        ));
    }
    let tenants = api.all_tenants()?;
    Ok(json_response(
        200,
        json!({"certificates": api.certs.list(None, &tenants)}),
    ))
}

/// `DELETE /v1/tenants/{tenant}/tls/{host}`: the certificate stops being served at once.
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    ucan: Ucan<TlsRemove>,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let tenant = arg_str(args, "tenant")?;
    let host = host_arg(args)?;
    api.require_tenant(tenant)?;
    let tenants = api.all_tenants()?;
    if !api.certs.remove(tenant, &host, &tenants)? {
        return Err(Refusal::new(
            404,
            "UnknownCertificate",
            format!(
                "tenant `{tenant}` has no certificate for `{}` (`zero tls list` shows them)",
                host.text()
            ),
        ));
    }
    tracing::info!(tenant, host = %host.text(), "tenant certificate removed");
    Ok(json_response(
        200,
        json!({"tenant": tenant, "host": host.text(), "removed": true}),
    ))
}
