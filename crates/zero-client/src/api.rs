//! Calling a node's management API with UCAN invocations.

use std::collections::BTreeMap;

use zero_auth::{Command, Delegation, Did, InvocationToken, Ipld, Keypair};

use crate::now;

/// An error answered by the management API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The failed check's name.
    pub error: String,
    /// Explanation.
    pub message: String,
    /// Seconds the node asks to wait before trying again (its `retry-after` header), when it
    /// sent one (e.g. with `429 TooManyDeploys`).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the node refused ({} {}): {}",
            self.status, self.error, self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// An agent for the management API over `tls`.
fn agent(tls: crate::tls::Connector) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(300))
        .tls_connector(std::sync::Arc::new(tls))
        .build()
}

/// A caller of one node's management API.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    key: Keypair,
    proofs: Vec<Delegation>,
    node_did: Option<Did>,
}

impl Client {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8081`), signing with `key` and
    /// citing `proofs` (root first; empty when `key` is the Admin itself).
    ///
    /// An `https://` address is reached over TLS trusting the public certificate authorities;
    /// [`Client::with_ca`] trusts a node's own certificate instead.
    pub fn new(base: &str, key: Keypair, proofs: Vec<Delegation>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(crate::tls::Connector::web_roots()),
            key,
            proofs,
            node_did: None,
        }
    }

    /// Trusts only the certificates in the PEM file `ca` for `https://` (the node's
    /// self-signed certificate, or the authority that issued it), instead of the public
    /// certificate authorities; `None` keeps the client as it is. The CLI's `--ca FILE` and
    /// `ZERO_CA`.
    pub fn with_ca(mut self, ca: Option<&std::path::Path>) -> anyhow::Result<Client> {
        if let Some(path) = ca {
            self.agent = agent(crate::tls::Connector::from_ca_file(path)?);
        }
        Ok(self)
    }

    pub(crate) fn call_err(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Status(status, resp) => {
                let retry_after = resp
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok());
                let body: serde_json::Value = resp.into_json().unwrap_or_default();
                ApiError {
                    status,
                    error: body["error"].as_str().unwrap_or("Unknown").to_string(),
                    message: body["message"].as_str().unwrap_or("").to_string(),
                    retry_after,
                }
                .into()
            }
            ureq::Error::Transport(t) => {
                // A TLS problem says what it is; anything else is a node not reached.
                let mut source: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(&t);
                while let Some(e) = source {
                    // An `io::Error` hides its inner error from `source`: look inside.
                    let inner = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(|io| io.get_ref())
                        .and_then(|i| i.downcast_ref::<crate::tls::TlsProblem>());
                    if let Some(p) = inner.or_else(|| e.downcast_ref::<crate::tls::TlsProblem>()) {
                        return anyhow::anyhow!(
                            "cannot reach the management API at {} over TLS: {p}",
                            self.base
                        );
                    }
                    source = e.source();
                }
                let hint = if self.base.starts_with("http://") {
                    "is the node running? pass --api; if its management API serves TLS, use https://"
                } else {
                    "is the node running? pass --api"
                };
                anyhow::anyhow!(
                    "cannot reach the management API at {}: {t} ({hint})",
                    self.base
                )
            }
        }
    }

    /// The node's DID and Admin.
    pub fn node_info(&mut self) -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value = self
            .agent
            .get(&format!("{}/v1/node", self.base))
            .call()
            .map_err(|e| self.call_err(e))?
            .into_json()?;
        if let Some(did) = v["did"].as_str() {
            self.node_did = Some(Did::parse(did).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        Ok(v)
    }

    /// Builds and signs an invocation of `command` with `args`, addressed to the node.
    pub fn invocation(
        &mut self,
        command: &str,
        args: BTreeMap<String, Ipld>,
    ) -> anyhow::Result<InvocationToken> {
        if self.node_did.is_none() {
            self.node_info()?;
        }
        let subject = match self.proofs.first() {
            Some(root) => root
                .subject()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the proof chain's root has no subject"))?,
            None => self.key.did().clone(),
        };
        let mut b = InvocationToken::builder(
            subject,
            Command::parse(command).map_err(|e| anyhow::anyhow!("{e}"))?,
            Some(now() + 300),
        )
        .args(args)
        .proofs(self.proofs.iter().map(|d| *d.cid()).collect());
        if let Some(node) = &self.node_did {
            b = b.audience(node.clone());
        }
        b.sign(&self.key).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// A request carrying a fresh invocation of `command` with `args` and the proof chain.
    pub(crate) fn authorized(
        &mut self,
        method: &str,
        path: &str,
        command: &str,
        args: BTreeMap<String, Ipld>,
    ) -> anyhow::Result<ureq::Request> {
        let inv = self.invocation(command, args)?;
        let proofs: Vec<String> = self.proofs.iter().map(|d| d.to_base64()).collect();
        Ok(self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("authorization", &format!("Bearer {}", inv.to_base64()))
            .set("ucan-proofs", &proofs.join(",")))
    }

    /// The URL path and invocation arguments of a file operation on `tenant`'s `path`.
    fn file_call(
        tenant: &str,
        path: &str,
        query: &str,
    ) -> anyhow::Result<(String, BTreeMap<String, Ipld>)> {
        let path = zerofs::TenantPath::parse(path)
            .map_err(|e| anyhow::anyhow!("{e} (write file paths like /site/index.html)"))?;
        let encoded: Vec<String> = path
            .segments()
            .map(|s| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let url = format!("/v1/tenants/{tenant}/fs/{}{query}", encoded.join("/"));
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("path".to_string(), Ipld::String(path.as_str().into())),
        ]);
        Ok((url, args))
    }

    /// Uploads `content` (streamed, chunked) to `path` in `tenant`'s files, creating missing
    /// parent directories when `parents` is set. Needs `/fs/write`, and `/fs/create` when the
    /// file is new.
    pub fn fs_put(
        &mut self,
        tenant: &str,
        path: &str,
        content: impl std::io::Read,
        parents: bool,
    ) -> anyhow::Result<serde_json::Value> {
        let (url, args) = Self::file_call(tenant, path, if parents { "?parents" } else { "" })?;
        let req = self.authorized("PUT", &url, "/fs/write", args)?;
        let resp = req
            .set("content-type", "application/octet-stream")
            .send(content)
            .map_err(|e| self.call_err(e))?;
        Ok(resp.into_json()?)
    }

    /// Downloads `path` of `tenant`'s files into `out` (streamed); returns the bytes written.
    pub fn fs_get(
        &mut self,
        tenant: &str,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<u64> {
        let (url, args) = Self::file_call(tenant, path, "")?;
        let resp = self
            .authorized("GET", &url, "/fs/read", args)?
            .call()
            .map_err(|e| self.call_err(e))?;
        let expected: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
        let n = std::io::copy(&mut resp.into_reader(), out)
            .map_err(|e| anyhow::anyhow!("the download of {path} failed: {e}"))?;
        if let Some(expected) = expected
            && expected != n
        {
            anyhow::bail!("the download of {path} ended after {n} of {expected} bytes; retry");
        }
        Ok(n)
    }

    /// Lists a directory (or describes a file) of `tenant`'s files.
    pub fn fs_list(&mut self, tenant: &str, path: &str) -> anyhow::Result<serde_json::Value> {
        let (url, args) = Self::file_call(tenant, path, "?list")?;
        self.send("GET", &url, "/fs/read", args, None)
    }

    /// Creates a directory (and its missing parents when `parents` is set).
    pub fn fs_mkdir(
        &mut self,
        tenant: &str,
        path: &str,
        parents: bool,
    ) -> anyhow::Result<serde_json::Value> {
        let query = if parents { "?mkdir&parents" } else { "?mkdir" };
        let (url, args) = Self::file_call(tenant, path, query)?;
        self.send("POST", &url, "/fs/create", args, None)
    }

    /// Removes a file or an empty directory (or a whole tree when `recursive` is set).
    pub fn fs_remove(
        &mut self,
        tenant: &str,
        path: &str,
        recursive: bool,
    ) -> anyhow::Result<serde_json::Value> {
        let (url, args) = Self::file_call(tenant, path, if recursive { "?recursive" } else { "" })?;
        self.send("DELETE", &url, "/fs/delete", args, None)
    }

    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        command: &str,
        args: BTreeMap<String, Ipld>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<serde_json::Value> {
        self.send_typed(method, path, command, args, body, "application/wasm")
    }

    pub(crate) fn send_typed(
        &mut self,
        method: &str,
        path: &str,
        command: &str,
        args: BTreeMap<String, Ipld>,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let req = self.authorized(method, path, command, args)?;
        let result = match body {
            Some(b) => req.set("content-type", content_type).send_bytes(b),
            None => req.call(),
        };
        Ok(result.map_err(|e| self.call_err(e))?.into_json()?)
    }

    /// Records a tenant with its owner (Admin only), granting it no host.
    pub fn create_tenant(
        &mut self,
        tenant: &str,
        owner: &Did,
    ) -> anyhow::Result<serde_json::Value> {
        self.create_tenant_with_hosts(tenant, owner, &[])
    }

    /// Records a tenant with its owner and the hosts its apps may claim routes on
    /// (`acme.example`, `*.acme.example`); Admin only. Calling it again for an existing tenant
    /// with the same owner replaces its host grants.
    pub fn create_tenant_with_hosts(
        &mut self,
        tenant: &str,
        owner: &Did,
        hosts: &[String],
    ) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("owner".to_string(), Ipld::String(owner.to_string())),
            (
                "hosts".to_string(),
                Ipld::List(hosts.iter().map(|h| Ipld::String(h.clone())).collect()),
            ),
        ]);
        self.send("POST", "/v1/tenants", "/tenant/create", args, None)
    }

    /// Lists the node's tenants: name, owner, hosts, creation time and number of apps
    /// (`/tenant/list`: the Admin, or a key the Admin delegated it to).
    pub fn list_tenants(&mut self) -> anyhow::Result<serde_json::Value> {
        self.send("GET", "/v1/tenants", "/tenant/list", BTreeMap::new(), None)
    }

    /// Deploys a component into a tenant.
    pub fn deploy(
        &mut self,
        tenant: &str,
        app: &str,
        routes: &[String],
        allowed_outbound_hosts: &[String],
        component: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        self.deploy_with_schedules(tenant, app, routes, allowed_outbound_hosts, &[], component)
    }

    /// Deploys a component into a tenant with schedules (each `name=EXPRESSION[;tz=ZONE]
    /// [;catch_up=last][;retries=N]`, e.g. `tick=*/5 * * * * *`), which need `/chrono/schedule`
    /// in the chain beside `/app/deploy`.
    pub fn deploy_with_schedules(
        &mut self,
        tenant: &str,
        app: &str,
        routes: &[String],
        allowed_outbound_hosts: &[String],
        schedules: &[String],
        component: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        let hash = zero_component::content_hash(component)?.to_string();
        let list = |v: &[String]| Ipld::List(v.iter().map(|s| Ipld::String(s.clone())).collect());
        let mut args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("app".to_string(), Ipld::String(app.into())),
            ("routes".to_string(), list(routes)),
            (
                "allowed_outbound_hosts".to_string(),
                list(allowed_outbound_hosts),
            ),
            ("component".to_string(), Ipld::String(hash)),
        ]);
        if !schedules.is_empty() {
            args.insert("schedules".to_string(), list(schedules));
        }
        self.send(
            "PUT",
            &format!("/v1/tenants/{tenant}/apps/{app}"),
            "/app/deploy",
            args,
            Some(component),
        )
    }

    /// Lists a tenant's deployed apps.
    pub fn list_apps(&mut self, tenant: &str) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([("tenant".to_string(), Ipld::String(tenant.into()))]);
        self.send(
            "GET",
            &format!("/v1/tenants/{tenant}/apps"),
            "/app/list",
            args,
            None,
        )
    }

    /// Removes an app.
    pub fn remove_app(&mut self, tenant: &str, app: &str) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("app".to_string(), Ipld::String(app.into())),
        ]);
        self.send(
            "DELETE",
            &format!("/v1/tenants/{tenant}/apps/{app}"),
            "/app/remove",
            args,
            None,
        )
    }

    /// Lists the names of `tenant`'s databases (`/db/list`).
    pub fn list_databases(&mut self, tenant: &str) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([("tenant".to_string(), Ipld::String(tenant.into()))]);
        self.send(
            "GET",
            &format!("/v1/tenants/{tenant}/db"),
            "/db/list",
            args,
            None,
        )
    }

    /// Runs one SQL statement on database `db` of `tenant` (`/db/query`; the node then checks
    /// every table the statement touches against the same chain). `params` are JSON values:
    /// null, numbers, strings, booleans, or `{"hex": "…"}` for blobs. The answer has `columns`,
    /// `rows`, `rows_affected` and `last_insert_id`.
    pub fn db_query(
        &mut self,
        tenant: &str,
        db: &str,
        sql: &str,
        params: &[serde_json::Value],
    ) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("db".to_string(), Ipld::String(db.into())),
            ("sql".to_string(), Ipld::String(sql.into())),
        ]);
        let body = serde_json::json!({"sql": sql, "params": params}).to_string();
        self.send_typed(
            "POST",
            &format!("/v1/tenants/{tenant}/db/{db}/query"),
            "/db/query",
            args,
            Some(body.as_bytes()),
            "application/json",
        )
    }

    /// The URL path and arguments of a certificate call for `host` of `tenant`.
    fn tls_call(tenant: &str, host: &str) -> (String, BTreeMap<String, Ipld>) {
        let encoded =
            percent_encoding::utf8_percent_encode(host, percent_encoding::NON_ALPHANUMERIC);
        let url = format!("/v1/tenants/{tenant}/tls/{encoded}");
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("host".to_string(), Ipld::String(host.into())),
        ]);
        (url, args)
    }

    /// Installs a certificate chain and its private key (PEM) for `host` (`acme.example` or
    /// `*.acme.example`) of `tenant` (`/tls/put`): the node serves it by SNI for that host
    /// once it checked the Admin's grant, the names, the dates and that the key is the
    /// certificate's. Answers the host, names, `not_after`, `days_left` and `sha256`.
    pub fn tls_put(
        &mut self,
        tenant: &str,
        host: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let (url, args) = Self::tls_call(tenant, host);
        let body = serde_json::json!({"cert": cert_pem, "key": key_pem}).to_string();
        self.send_typed(
            "PUT",
            &url,
            "/tls/put",
            args,
            Some(body.as_bytes()),
            "application/json",
        )
    }

    /// Lists the certificates of `tenant` (`/tls/list`), or with `None` every tenant's (the
    /// Admin's key, or a delegation of `/tls`). Never a key.
    pub fn tls_list(&mut self, tenant: Option<&str>) -> anyhow::Result<serde_json::Value> {
        match tenant {
            Some(t) => {
                let args = BTreeMap::from([("tenant".to_string(), Ipld::String(t.into()))]);
                self.send(
                    "GET",
                    &format!("/v1/tenants/{t}/tls"),
                    "/tls/list",
                    args,
                    None,
                )
            }
            None => self.send("GET", "/v1/tls", "/tls/list", BTreeMap::new(), None),
        }
    }

    /// Removes the certificate of `host` of `tenant` (`/tls/remove`); the node's default is
    /// served for the host from the next handshake.
    pub fn tls_remove(&mut self, tenant: &str, host: &str) -> anyhow::Result<serde_json::Value> {
        let (url, args) = Self::tls_call(tenant, host);
        self.send("DELETE", &url, "/tls/remove", args, None)
    }

    /// Revokes a delegation by CID alone (`/ucan/revoke`): allowed to the Admin only; others
    /// use [`Client::revoke_in_chain`].
    pub fn revoke(&mut self, cid: &str) -> anyhow::Result<serde_json::Value> {
        self.revoke_in_chain(Some(cid), &[])
    }

    /// Revokes a delegation (`/ucan/revoke`). `chain` is the revoked delegation's chain, root
    /// first (a chain file, or the chain embedded in a signed component): the node accepts the
    /// revocation only from the revoked delegation's own issuer, or from the Admin. `cid` names the revoked delegation (default: the chain's last);
    /// with no chain, only the Admin may revoke, by CID alone. The key signs; the client's own
    /// proofs are not used (a revocation's authority is the chain, not a delegation to revoke).
    pub fn revoke_in_chain(
        &mut self,
        cid: Option<&str>,
        chain: &[Delegation],
    ) -> anyhow::Result<serde_json::Value> {
        if self.node_did.is_none() {
            self.node_info()?;
        }
        let revoked = match (cid, chain.last()) {
            (Some(c), _) => zero_auth::Cid::try_from(c)
                .map_err(|e| anyhow::anyhow!("`{c}` is not a CID: {e}"))?,
            (None, Some(last)) => *last.cid(),
            (None, None) => anyhow::bail!(
                "name the delegation to revoke: its CID, or --chain with the chain that ends with it"
            ),
        };
        let path: &[Delegation] = if chain.is_empty() {
            chain
        } else {
            let pos = chain
                .iter()
                .position(|d| *d.cid() == revoked)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{revoked} is not in the given chain; give the chain that contains the delegation to revoke"
                    )
                })?;
            chain.get(..=pos).unwrap_or(chain)
        };
        let subject = match path.first() {
            Some(root) => root
                .subject()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the chain's root delegation has no subject"))?,
            None => self.key.did().clone(),
        };
        let mut args = BTreeMap::from([("revoke".to_string(), Ipld::Link(revoked))]);
        if !path.is_empty() {
            args.insert(
                "path".to_string(),
                Ipld::List(path.iter().map(|d| Ipld::Link(*d.cid())).collect()),
            );
        }
        let mut b = InvocationToken::builder(
            subject,
            Command::parse(zero_auth::REVOKE_COMMAND).map_err(|e| anyhow::anyhow!("{e}"))?,
            Some(now() + 300),
        )
        .args(args);
        if let Some(node) = &self.node_did {
            b = b.audience(node.clone());
        }
        let inv = b.sign(&self.key).map_err(|e| anyhow::anyhow!("{e}"))?;
        let proofs: Vec<String> = path.iter().map(|d| d.to_base64()).collect();
        let mut req = self
            .agent
            .post(&format!("{}/v1/revocations", self.base))
            .set("authorization", &format!("Bearer {}", inv.to_base64()));
        if !proofs.is_empty() {
            req = req.set("ucan-proofs", &proofs.join(","));
        }
        Ok(req.call().map_err(|e| self.call_err(e))?.into_json()?)
    }
}
