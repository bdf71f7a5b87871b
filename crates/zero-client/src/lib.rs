//! The client side of zerocore management, used by the `zero` CLI: key files, delegation chain
//! files, granting (attenuating) capabilities, signing components, and calling a node's
//! management API with UCAN invocations.
//!
//! A **chain file** (`*.ucan`) holds a delegation chain as one standard-base64 DAG-CBOR envelope
//! per line, root first; lines starting with `#` are comments. The Admin gives an owner a chain
//! of one delegation (`zero tenant create`); the owner extends it (`zero grant`), embeds it in a
//! component (`zero sign`) or cites it in invocations (`zero deploy`).

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use zero_auth::policy::Statement;
use zero_auth::{Command, Delegation, Did, InvocationToken, Ipld, Keypair, Policy};

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads a key file, with the path in the error.
pub fn load_key(path: &Path) -> anyhow::Result<Keypair> {
    Keypair::load(path).map_err(|e| anyhow::anyhow!("key {}: {e}", path.display()))
}

/// Reads a chain file.
pub fn read_chain(path: &Path) -> anyhow::Result<Vec<Delegation>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the chain file {}: {e}", path.display()))?;
    let mut chain = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        chain.push(Delegation::from_base64(line).map_err(|e| {
            anyhow::anyhow!("{} line {}: not a delegation: {e}", path.display(), i + 1)
        })?);
    }
    if chain.is_empty() {
        anyhow::bail!("{} holds no delegation", path.display());
    }
    Ok(chain)
}

/// Reads a delegation chain from a chain file, or from the `ucan` section of a signed
/// component (a file that starts with the WebAssembly magic bytes).
pub fn read_chain_or_component(path: &Path) -> anyhow::Result<Vec<Delegation>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        return read_chain(path);
    }
    let sections = zero_component::custom_sections(&bytes)?;
    let section = sections
        .iter()
        .find(|s| s.name == zero_component::UCAN_SECTION)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} carries no capability token (no `ucan` section)",
                path.display()
            )
        })?;
    let data = bytes
        .get(section.data.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: the `ucan` section is cut short", path.display()))?;
    zero_auth::component::decode_section(data)
        .map_err(|e| anyhow::anyhow!("{}: the embedded token is unreadable: {e}", path.display()))
}

/// Writes a chain file.
pub fn write_chain(path: &Path, chain: &[Delegation]) -> anyhow::Result<()> {
    let mut text = String::from(
        "# zerocore delegation chain, root first (one base64 DAG-CBOR envelope per line)\n",
    );
    for d in chain {
        text.push_str(&d.to_base64());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Converts JSON (as written on a command line) to IPLD: integers stay integers.
pub fn json_to_ipld(v: &serde_json::Value) -> Ipld {
    match v {
        serde_json::Value::Null => Ipld::Null,
        serde_json::Value::Bool(b) => Ipld::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Ipld::Integer(i.into()),
            None => match n.as_u64() {
                Some(u) => Ipld::Integer(u.into()),
                None => Ipld::Float(n.as_f64().unwrap_or(0.0)),
            },
        },
        serde_json::Value::String(s) => Ipld::String(s.clone()),
        serde_json::Value::Array(a) => Ipld::List(a.iter().map(json_to_ipld).collect()),
        serde_json::Value::Object(o) => Ipld::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_ipld(v)))
                .collect(),
        ),
    }
}

/// Parses a policy given as JSON, e.g. `[["==", ".tenant", "acme"]]`.
pub fn parse_policy(json: &str) -> anyhow::Result<Policy> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!(
            "the policy is not JSON ({e}); write it like [[\"==\", \".path\", \"/data\"]]"
        )
    })?;
    Policy::from_ipld(&json_to_ipld(&v)).map_err(|e| anyhow::anyhow!("invalid policy: {e}"))
}

fn with_statement(policy: Policy, extra: Statement) -> Policy {
    let mut statements = policy.statements().to_vec();
    statements.push(extra);
    Policy::new(statements)
}

/// What a new delegation grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Command (`/` for everything).
    pub command: String,
    /// Policy on the arguments.
    pub policy: Policy,
    /// Seconds until it expires (`None`: never).
    pub expires_in: Option<u64>,
}

/// The Admin's delegation to a tenant's owner: everything (`/`) within the tenant.
pub fn owner_delegation(
    admin: &Keypair,
    tenant: &str,
    owner: &Did,
    expires_in: Option<u64>,
) -> anyhow::Result<Delegation> {
    Delegation::builder(owner.clone(), Command::top(), expires_in.map(|s| now() + s))
        .subject(admin.did().clone())
        .policy(Policy::new(vec![zero_auth::component::tenant_statement(
            tenant,
        )]))
        .sign(admin)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Extends `chain` (whose holder must be `issuer`) with a delegation to `audience`.
pub fn extend_chain(
    issuer: &Keypair,
    chain: &[Delegation],
    audience: &Did,
    grant: &Grant,
) -> anyhow::Result<Vec<Delegation>> {
    let leaf = chain
        .last()
        .ok_or_else(|| anyhow::anyhow!("the proof chain is empty"))?;
    if leaf.audience() != issuer.did() {
        anyhow::bail!(
            "the proof chain is held by {}, not by this key ({}); use the key the chain was delegated to",
            leaf.audience(),
            issuer.did()
        );
    }
    let subject = chain
        .first()
        .and_then(|d| d.subject().cloned())
        .ok_or_else(|| anyhow::anyhow!("the chain's root delegation has no subject"))?;
    let command = Command::parse(&grant.command).map_err(|e| anyhow::anyhow!("{e}"))?;
    let d = Delegation::builder(
        audience.clone(),
        command,
        grant.expires_in.map(|s| now() + s),
    )
    .subject(subject)
    .policy(grant.policy.clone())
    .sign(issuer)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = chain.to_vec();
    out.push(d);
    Ok(out)
}

/// Signs a component: appends a delegation bound to its content hash (`.component`) to `chain`
/// and embeds the whole chain in the `ucan` custom section (replacing any previous one).
pub fn sign_component(
    bytes: &[u8],
    key: &Keypair,
    chain: &[Delegation],
    grant: &Grant,
) -> anyhow::Result<Vec<u8>> {
    zero_component::expect_component(bytes, "the input")?;
    let unsigned = zero_component::strip_custom_section(bytes, zero_component::UCAN_SECTION)?;
    let hash = zero_component::content_hash(&unsigned)?.to_string();
    let bound = Grant {
        policy: with_statement(
            grant.policy.clone(),
            zero_auth::component::binding_statement(&hash),
        ),
        ..grant.clone()
    };
    let full = extend_chain(key, chain, key.did(), &bound)?;
    let section = zero_auth::component::encode_section(&full);
    Ok(zero_component::append_custom_section(
        &unsigned,
        zero_component::UCAN_SECTION,
        &section,
    ))
}

/// Splits `TENANT:/path` into the tenant and the path.
pub fn parse_remote(remote: &str) -> anyhow::Result<(&str, &str)> {
    match remote.split_once(':') {
        Some((tenant, path)) if !tenant.is_empty() && path.starts_with('/') => Ok((tenant, path)),
        _ => anyhow::bail!(
            "`{remote}` is not a tenant file: write TENANT:/path, for example acme:/site/index.html"
        ),
    }
}

/// Writes `path` through `fill` into a temporary file next to it, renamed into place only when
/// `fill` succeeds: an interrupted download never leaves a partial file.
pub fn write_file_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.part{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    let filled = fill(&mut file).and_then(|()| {
        file.sync_all()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))
    });
    if let Err(e) = filled {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Renders the answer of [`Client::fs_list`] as `ls -l`-like lines: kind, size, name.
pub fn format_listing(answer: &serde_json::Value) -> Vec<String> {
    let line = |e: &serde_json::Value| {
        let dir = e["kind"] == "directory";
        format!(
            "{} {:>12}  {}{}",
            if dir { "d" } else { "-" },
            e["size"].as_u64().unwrap_or(0),
            e["name"].as_str().unwrap_or(""),
            if dir { "/" } else { "" }
        )
    };
    match answer["entry"]["kind"].as_str() {
        Some("file") => vec![line(&answer["entry"])],
        _ => answer["entries"]
            .as_array()
            .map(|a| a.iter().map(line).collect())
            .unwrap_or_default(),
    }
}

/// An error answered by the management API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The failed check's name.
    pub error: String,
    /// Explanation.
    pub message: String,
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
    pub fn new(base: &str, key: Keypair, proofs: Vec<Delegation>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(300))
                .build(),
            key,
            proofs,
            node_did: None,
        }
    }

    fn call_err(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Status(status, resp) => {
                let body: serde_json::Value = resp.into_json().unwrap_or_default();
                ApiError {
                    status,
                    error: body["error"].as_str().unwrap_or("Unknown").to_string(),
                    message: body["message"].as_str().unwrap_or("").to_string(),
                }
                .into()
            }
            ureq::Error::Transport(t) => anyhow::anyhow!(
                "cannot reach the management API at {}: {t} (is the node running? pass --api)",
                self.base
            ),
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
    fn authorized(
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

    fn send(
        &mut self,
        method: &str,
        path: &str,
        command: &str,
        args: BTreeMap<String, Ipld>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<serde_json::Value> {
        self.send_typed(method, path, command, args, body, "application/wasm")
    }

    fn send_typed(
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

    /// Deploys a component into a tenant.
    pub fn deploy(
        &mut self,
        tenant: &str,
        app: &str,
        routes: &[String],
        allowed_outbound_hosts: &[String],
        component: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        let hash = zero_component::content_hash(component)?.to_string();
        let list = |v: &[String]| Ipld::List(v.iter().map(|s| Ipld::String(s.clone())).collect());
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("app".to_string(), Ipld::String(app.into())),
            ("routes".to_string(), list(routes)),
            (
                "allowed_outbound_hosts".to_string(),
                list(allowed_outbound_hosts),
            ),
            ("component".to_string(), Ipld::String(hash)),
        ]);
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

/// Renders a `db_query` answer for a terminal: an aligned table of the rows when the statement
/// returned columns, otherwise `N rows affected`.
pub fn format_query_result(v: &serde_json::Value) -> String {
    let cell = |c: &serde_json::Value| match c {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("hex").and_then(|h| h.as_str()) {
            Some(h) => format!("x'{h}'"),
            None => c.to_string(),
        },
        other => other.to_string(),
    };
    let columns: Vec<String> = v["columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    if columns.is_empty() {
        let n = v["rows_affected"].as_u64().unwrap_or(0);
        return format!("{n} row{} affected", if n == 1 { "" } else { "s" });
    }
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| r.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&columns)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for r in &rows {
        out.push(line(r));
    }
    out.push(format!(
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out.join("\n")
}

/// A human-readable description of a chain (for `zero inspect` and `zero grant`).
pub fn describe_chain(chain: &[Delegation]) -> Vec<String> {
    chain
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let exp = match d.expiration() {
                Some(e) => format!("expires {e} (unix)"),
                None => "never expires".into(),
            };
            format!(
                "{}. {} -> {}\n     cmd {}  policy {}  {exp}\n     cid {}",
                i + 1,
                d.issuer(),
                d.audience(),
                d.command(),
                d.policy(),
                d.cid()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Keypair::generate().unwrap();
        let owner = Keypair::generate().unwrap();
        let d = owner_delegation(&admin, "acme", owner.did(), Some(60)).unwrap();
        let p = dir.path().join("owner.ucan");
        write_chain(&p, std::slice::from_ref(&d)).unwrap();
        let back = read_chain(&p).unwrap();
        assert_eq!(back[0].cid(), d.cid());
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(
            read_chain(&p)
                .unwrap_err()
                .to_string()
                .contains("no delegation")
        );
        std::fs::write(&p, "not base64!\n").unwrap();
        assert!(read_chain(&p).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn extending_requires_the_holders_key() {
        let admin = Keypair::generate().unwrap();
        let owner = Keypair::generate().unwrap();
        let other = Keypair::generate().unwrap();
        let d = owner_delegation(&admin, "acme", owner.did(), None).unwrap();
        let grant = Grant {
            command: "/fs/read".into(),
            policy: parse_policy(r#"[["==", ".path", "/site"]]"#).unwrap(),
            expires_in: Some(60),
        };
        let chain = extend_chain(&owner, std::slice::from_ref(&d), other.did(), &grant).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].subject(), Some(admin.did()));
        let err = extend_chain(&other, std::slice::from_ref(&d), owner.did(), &grant).unwrap_err();
        assert!(err.to_string().contains("held by"), "{err}");
    }

    #[test]
    fn query_results_render_as_aligned_tables_or_counts() {
        let v = serde_json::json!({
            "columns": ["id", "title"],
            "rows": [[1, "milk"], [10, null], [2, {"hex": "00ff"}]],
            "rows_affected": 0,
        });
        let text = format_query_result(&v);
        assert_eq!(
            text,
            "id | title\n---+--------\n1  | milk\n10 | NULL\n2  | x'00ff'\n(3 rows)"
        );
        let w = serde_json::json!({"columns": [], "rows": [], "rows_affected": 1});
        assert_eq!(format_query_result(&w), "1 row affected");
        let w = serde_json::json!({"columns": [], "rows": [], "rows_affected": 3});
        assert_eq!(format_query_result(&w), "3 rows affected");
    }

    #[test]
    fn policies_parse_from_json_with_clear_errors() {
        assert!(parse_policy("[]").is_ok());
        assert!(parse_policy("[[\"==\", \".n\", 1]]").is_ok());
        assert!(
            parse_policy("not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        assert!(parse_policy("[[\"~~\", \".n\", 1]]").is_err());
    }
}
