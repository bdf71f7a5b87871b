//! The cache endpoints of the management API (`zero cache get|set|del`), one small handler
//! each:
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `GET /v1/tenants/{t}/cache/{key}` | `/cache/read` | `tenant`, `key` |
//! | `PUT /v1/tenants/{t}/cache/{key}` (body: the value) | `/cache/write` | `tenant`, `key`, `ttl_ms` (optional, milliseconds) |
//! | `DELETE /v1/tenants/{t}/cache/{key}` | `/cache/write` | `tenant`, `key` |
//!
//! The invocation is checked like any other, its policies evaluated on these arguments (so a
//! delegation scoped with `[["like", ".key", "session:*"]]` works here as for a component), and
//! the URL must name the same tenant and key (checked by the [`Ucan`] extractor, before the
//! body is read). A value is answered as the raw bytes
//! (`application/octet-stream`); an absent key is `404 NotFound`.

use std::sync::Arc;

use axum::extract::State;
use serde_json::json;
use zero_auth::Ipld;

use crate::api::{Api, Resp, Upload, arg_str, full_body, json_response};
use crate::apps::Refusal;
use crate::ucan::{Endpoint, Ucan};

/// `GET /v1/tenants/{tenant}/cache/{key}`.
pub(crate) struct CacheGet;
impl Endpoint for CacheGet {
    const COMMAND: &'static str = "/cache/read";
    const URL_ARGS: &'static [&'static str] = &["tenant", "key"];
}

/// `PUT` and `DELETE /v1/tenants/{tenant}/cache/{key}`.
pub(crate) struct CacheWrite;
impl Endpoint for CacheWrite {
    const COMMAND: &'static str = "/cache/write";
    const URL_ARGS: &'static [&'static str] = &["tenant", "key"];
}

fn cache_refusal(e: zerocache::Error) -> Refusal {
    let status = match &e {
        zerocache::Error::PermissionDenied { .. } => 403,
        zerocache::Error::LimitExceeded { .. } => 413,
        zerocache::Error::NotAnInteger { .. } | zerocache::Error::Overflow { .. } => 409,
        zerocache::Error::Invalid(_) => 400,
    };
    Refusal::new(status, e.name(), e.to_string())
}

/// The optional `ttl_ms` argument: a positive integer of milliseconds.
fn ttl_arg(args: &std::collections::BTreeMap<String, Ipld>) -> Result<Option<u64>, Refusal> {
    match args.get("ttl_ms") {
        None | Some(Ipld::Null) => Ok(None),
        Some(Ipld::Integer(n)) if *n > 0 && *n <= i128::from(u64::MAX) => {
            Ok(u64::try_from(*n).ok())
        }
        Some(_) => Err(Refusal::new(
            400,
            "InvalidArgs",
            "the invocation's args.ttl_ms must be a positive whole number of milliseconds (or \
             absent for no expiry)",
        )),
    }
}

/// `GET /v1/tenants/{tenant}/cache/{key}`: the value as raw bytes, `404 NotFound` when absent.
pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    ucan: Ucan<CacheGet>,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let (tenant, key) = (arg_str(args, "tenant")?, arg_str(args, "key")?);
    api.require_tenant(tenant)?;
    let value = api.cache.get(tenant, key).map_err(cache_refusal)?;
    tracing::info!(tenant, key, hit = value.is_some(), "cache get");
    let value = value.ok_or_else(|| {
        Refusal::new(
            404,
            "NotFound",
            format!(
                "key `{key}` is not in the cache of tenant `{tenant}` (never set, deleted, \
                 expired or evicted)"
            ),
        )
    })?;
    let mut resp = Resp::new(full_body(bytes::Bytes::from(value.to_vec())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `PUT /v1/tenants/{tenant}/cache/{key}` (body: the value, at most `[cache] max_value_size`).
pub(crate) async fn set(
    State(api): State<Arc<Api>>,
    ucan: Ucan<CacheWrite>,
    upload: Upload,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let (tenant, key) = (arg_str(args, "tenant")?, arg_str(args, "key")?);
    let ttl = ttl_arg(args)?;
    api.require_tenant(tenant)?;
    let limit = usize::try_from(api.cache.settings().max_value_size).unwrap_or(usize::MAX);
    let value = upload
        .read(limit, "the cache value ([cache] max_value_size)")
        .await?;
    api.cache
        .set(tenant, key, &value, ttl)
        .map_err(cache_refusal)?;
    tracing::info!(tenant, key, bytes = value.len(), ttl_ms = ttl, "cache set");
    Ok(json_response(200, json!({"tenant": tenant, "key": key})))
}

/// `DELETE /v1/tenants/{tenant}/cache/{key}`.
pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    ucan: Ucan<CacheWrite>,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let (tenant, key) = (arg_str(args, "tenant")?, arg_str(args, "key")?);
    api.require_tenant(tenant)?;
    api.cache.delete(tenant, key).map_err(cache_refusal)?;
    tracing::info!(tenant, key, "cache delete");
    Ok(json_response(200, json!({"tenant": tenant, "key": key})))
}
