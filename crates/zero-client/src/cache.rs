//! Client calls of the cache endpoints (`zero cache get|set|del`): each is a UCAN invocation of
//! `/cache/read` or `/cache/write` with the arguments `{tenant, key}` (and `ttl_ms` for a set).

use std::collections::BTreeMap;

use zero_auth::Ipld;

use crate::{ApiError, Client};

/// The URL path and invocation arguments of a cache call on `tenant`'s `key`.
fn cache_call(tenant: &str, key: &str) -> (String, BTreeMap<String, Ipld>) {
    let encoded = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("/v1/tenants/{tenant}/cache/{encoded}");
    let args = BTreeMap::from([
        ("tenant".to_string(), Ipld::String(tenant.into())),
        ("key".to_string(), Ipld::String(key.into())),
    ]);
    (url, args)
}

impl Client {
    /// The value of `key` in `tenant`'s cache (`/cache/read`), or `None` when it is absent
    /// (never set, deleted, expired or evicted).
    pub fn cache_get(&mut self, tenant: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let (url, args) = cache_call(tenant, key);
        let req = self.authorized("GET", &url, "/cache/read", args)?;
        match req.call() {
            Ok(resp) => {
                let mut value = Vec::new();
                std::io::copy(&mut resp.into_reader(), &mut value)
                    .map_err(|e| anyhow::anyhow!("reading the value of `{key}` failed: {e}"))?;
                Ok(Some(value))
            }
            Err(e) => {
                let e = self.call_err(e);
                match e.downcast_ref::<ApiError>() {
                    Some(api) if api.status == 404 && api.error == "NotFound" => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    /// Stores `value` under `key` in `tenant`'s cache (`/cache/write`), expiring after `ttl_ms`
    /// milliseconds (`None`: until deleted or evicted).
    pub fn cache_set(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> anyhow::Result<serde_json::Value> {
        let (url, mut args) = cache_call(tenant, key);
        if let Some(ttl) = ttl_ms {
            args.insert("ttl_ms".to_string(), Ipld::Integer(i128::from(ttl)));
        }
        self.send_typed(
            "PUT",
            &url,
            "/cache/write",
            args,
            Some(value),
            "application/octet-stream",
        )
    }

    /// Removes `key` from `tenant`'s cache (`/cache/write`; nothing happens when it is absent).
    pub fn cache_delete(&mut self, tenant: &str, key: &str) -> anyhow::Result<serde_json::Value> {
        let (url, args) = cache_call(tenant, key);
        self.send("DELETE", &url, "/cache/write", args, None)
    }
}
