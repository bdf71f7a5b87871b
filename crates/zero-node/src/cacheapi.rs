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
//! the URL must name the same tenant and key. A value is answered as the raw bytes
//! (`application/octet-stream`); an absent key is `404 NotFound`.

use http::Method;
use hyper::body::Incoming;
use serde_json::json;
use zero_auth::Ipld;

use crate::api::{Api, Resp, expect_arg, full_body, json_response, read_body, refuse_unread};
use crate::apps::Refusal;

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

impl Api {
    /// Dispatches a cache call on `tenant`'s `key` by method.
    pub(crate) async fn cache_call(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        method: &Method,
        tenant: &str,
        key: &str,
    ) -> Result<Resp, Refusal> {
        match *method {
            Method::GET => self.cache_get(parts, tenant, key),
            Method::PUT => self.cache_set(parts, body, tenant, key).await,
            Method::DELETE => self.cache_delete(parts, tenant, key),
            _ => Err(Refusal::new(
                405,
                "MethodNotAllowed",
                format!(
                    "{method} is not a cache call: use GET (read), PUT (write) or DELETE (delete) \
                     /v1/tenants/{{tenant}}/cache/{{key}}"
                ),
            )),
        }
    }

    /// Checks the invocation for `command` on `tenant`'s `key`, and that the tenant exists.
    fn cache_authorize(
        &self,
        parts: &http::request::Parts,
        command: &str,
        tenant: &str,
        key: &str,
    ) -> Result<zero_auth::VerifiedInvocation, Refusal> {
        let inv = self.authorize(parts, command)?;
        expect_arg(&inv.args, "tenant", tenant)?;
        expect_arg(&inv.args, "key", key)?;
        self.require_tenant(tenant)?;
        Ok(inv)
    }

    fn cache_get(
        &self,
        parts: &http::request::Parts,
        tenant: &str,
        key: &str,
    ) -> Result<Resp, Refusal> {
        self.cache_authorize(parts, "/cache/read", tenant, key)?;
        let value = self.cache.get(tenant, key).map_err(cache_refusal)?;
        tracing::info!(tenant, key, hit = value.is_some(), "cache get");
        let value = value.ok_or_else(|| {
            Refusal::new(
                404,
                "NotFound",
                format!("key `{key}` is not in the cache of tenant `{tenant}` (never set, deleted, expired or evicted)"),
            )
        })?;
        let mut resp = http::Response::new(full_body(bytes::Bytes::from(value.to_vec())));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Ok(resp)
    }

    async fn cache_set(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        tenant: &str,
        key: &str,
    ) -> Result<Resp, Refusal> {
        let limit = usize::try_from(self.cache.settings().max_value_size.0).unwrap_or(usize::MAX);
        let checked = self
            .cache_authorize(parts, "/cache/write", tenant, key)
            .and_then(|inv| ttl_arg(&inv.args));
        let ttl = match checked {
            Ok(ttl) => ttl,
            Err(r) => return Err(refuse_unread(parts, body, limit, r).await),
        };
        let value = read_body(body, limit, "the cache value ([cache] max_value_size)").await?;
        self.cache
            .set(tenant, key, &value, ttl)
            .map_err(cache_refusal)?;
        tracing::info!(tenant, key, bytes = value.len(), ttl_ms = ttl, "cache set");
        Ok(json_response(200, json!({"tenant": tenant, "key": key})))
    }

    fn cache_delete(
        &self,
        parts: &http::request::Parts,
        tenant: &str,
        key: &str,
    ) -> Result<Resp, Refusal> {
        self.cache_authorize(parts, "/cache/write", tenant, key)?;
        self.cache.delete(tenant, key).map_err(cache_refusal)?;
        tracing::info!(tenant, key, "cache delete");
        Ok(json_response(200, json!({"tenant": tenant, "key": key})))
    }
}
