//! The set of apps a node serves — those declared in `zerocore.toml` plus those deployed over
//! the management API — and the checks every app passes before it serves: the component's
//! embedded capability token, then loading and linking.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use zero_auth::{Chain, ReplayCache, ValidationOptions, Validator};
use zero_provider::AppSettings;
use zerocore::Runtime;
use zeroproxy::{AppState, HttpApp, Route, RouteConflict, ZeroProxy};

use crate::state::StateStore;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why an app was refused, with the HTTP status the management API answers.
#[derive(Debug)]
pub struct Refusal {
    /// 400, 403, 409, 422, …
    pub status: u16,
    /// The failed check's name (`HashMismatch`, `Expired`, `LoadError`, …).
    pub error: String,
    /// What failed and how to fix it.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, error: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error: error.to_string(),
            message: message.into(),
        }
    }

    fn auth(e: zero_auth::Error) -> Refusal {
        Refusal::new(403, e.name(), e.to_string())
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// Shared authority state: the Admin, the node's DID, revocations and the replay cache.
pub struct Authority {
    /// Validation options (required root = Admin).
    pub options: ValidationOptions,
    /// The node's DID (audience of management invocations).
    pub node_did: zero_auth::Did,
    /// Revoked CIDs.
    pub revocations: crate::revocation::Revocations,
    /// Seen invocations.
    pub replay: ReplayCache,
}

impl Authority {
    /// Checks the capability token embedded in a component for `tenant`. `Ok(None)` when the
    /// component carries no token (it then gets no capabilities).
    pub fn verify_component(&self, bytes: &[u8], tenant: &str) -> Result<Option<Chain>, Refusal> {
        let sections = zero_component::custom_sections(bytes)
            .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?;
        let mut ucan = sections
            .iter()
            .filter(|s| s.name == zero_component::UCAN_SECTION);
        let Some(section) = ucan.next() else {
            return Ok(None);
        };
        if ucan.next().is_some() {
            return Err(Refusal::new(
                422,
                "Malformed",
                "the component has more than one `ucan` section; sign the unsigned component again with `zero sign`",
            ));
        }
        let chain = zero_auth::component::decode_section(&bytes[section.data.clone()])
            .map_err(Refusal::auth)?;
        let hash = zero_component::content_hash(bytes)
            .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?;
        let validator = Validator::new(&self.options).with_revocations(&self.revocations);
        zero_auth::component::verify_component_chain(
            &validator,
            &chain,
            &hash.to_string(),
            tenant,
            now(),
        )
        .map(Some)
        .map_err(Refusal::auth)
    }
}

/// A description of an app to build.
pub struct AppSpec {
    /// Tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Parsed routes.
    pub routes: Vec<Route>,
    /// Outgoing hosts.
    pub allowed_outbound_hosts: Vec<String>,
    /// The owner's credential the code was read with (deployed apps; `None` for apps from
    /// `zerocore.toml` and for the Admin's own deploys).
    pub owner_credential: Option<Arc<Chain>>,
}

/// Checks, loads and links a component into an app ready to serve.
pub async fn build_app(
    runtime: &Arc<Runtime>,
    authority: &Authority,
    spec: AppSpec,
    bytes: Vec<u8>,
    max_concurrent: usize,
) -> Result<Arc<HttpApp>, Refusal> {
    let what = format!("{}/{}", spec.tenant, spec.name);
    zero_component::expect_component(&bytes, &what)
        .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?;
    let capabilities = authority.verify_component(&bytes, &spec.tenant)?;
    let hash = zero_component::content_hash(&bytes)
        .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?;
    let rt = runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || rt.load(&bytes, &what))
        .await
        .map_err(|e| Refusal::new(500, "Internal", format!("loading failed: {e}")))?
        .map_err(|e| Refusal::new(422, "LoadError", e.to_string()))?;
    let mut settings = AppSettings {
        allowed_outbound_hosts: spec.allowed_outbound_hosts,
        component: Some(hash.to_string()),
        capabilities: capabilities.map(Arc::new),
        owner_credential: spec.owner_credential,
        not_after: None,
    };
    settings.not_after = settings.earliest_expiry();
    let app = HttpApp::new(
        &spec.tenant,
        &spec.name,
        spec.routes,
        settings,
        Ok(loaded),
        max_concurrent,
    );
    if let AppState::Failed(reason) = &app.state {
        return Err(Refusal::new(422, "LoadError", reason.clone()));
    }
    Ok(Arc::new(app))
}

/// The apps a node serves, and the swap of the routing table.
pub struct AppSet {
    proxy: Arc<ZeroProxy>,
    /// Apps from `zerocore.toml` (keyed `tenant/name`).
    configured: Vec<Arc<HttpApp>>,
    /// Apps deployed over the API.
    deployed: Mutex<BTreeMap<(String, String), Arc<HttpApp>>>,
}

impl AppSet {
    /// A set with the configured apps.
    pub fn new(proxy: Arc<ZeroProxy>, configured: Vec<Arc<HttpApp>>) -> AppSet {
        AppSet {
            proxy,
            configured,
            deployed: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Arc<HttpApp>>> {
        self.deployed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self, deployed: &BTreeMap<(String, String), Arc<HttpApp>>) -> Vec<Arc<HttpApp>> {
        self.configured
            .iter()
            .cloned()
            .chain(deployed.values().cloned())
            .collect()
    }

    /// Installs the current set in the proxy.
    pub fn publish(&self) -> Result<(), RouteConflict> {
        let deployed = self.lock();
        self.proxy.set_apps(self.all(&deployed))
    }

    /// Adds or replaces a deployed app, atomically: `persist` runs after the routing table was
    /// validated and before it is swapped; if either fails, the previous version keeps serving.
    pub fn deploy(
        &self,
        app: Arc<HttpApp>,
        persist: impl FnOnce() -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let mut deployed = self.lock();
        let key = (app.tenant.to_string(), app.name.to_string());
        let mut candidate = deployed.clone();
        candidate.insert(key.clone(), app.clone());
        if let Err(c) = zeroproxy::Router::build(self.all(&candidate)) {
            return Err(Refusal::new(
                409,
                "RouteConflict",
                format!(
                    "route `{}` is already in use by another app; choose another path or host",
                    c.route
                ),
            ));
        }
        persist()?;
        self.proxy
            .set_apps(self.all(&candidate))
            .map_err(|c| Refusal::new(409, "RouteConflict", c.to_string()))?;
        *deployed = candidate;
        Ok(())
    }

    /// Removes a deployed app; `false` if the tenant has no such app.
    pub fn remove(&self, tenant: &str, name: &str) -> bool {
        let mut deployed = self.lock();
        if deployed
            .remove(&(tenant.to_string(), name.to_string()))
            .is_none()
        {
            return false;
        }
        if let Err(e) = self.proxy.set_apps(self.all(&deployed)) {
            tracing::error!(error = %e, "routing table rebuild failed after a removal");
        }
        true
    }

    /// The deployed apps of a tenant.
    pub fn of_tenant(&self, tenant: &str) -> Vec<Arc<HttpApp>> {
        self.lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Inserts an app restored at startup (no persistence; routing published later).
    pub fn restore(&self, app: Arc<HttpApp>) -> Result<(), Refusal> {
        self.deploy(app, || Ok(()))
    }

    /// Stops serving every deployed app for which `refuse` returns a reason (used after a
    /// revocation); returns the affected `tenant/app` names.
    pub fn retain(&self, mut refuse: impl FnMut(&HttpApp) -> Option<String>) -> Vec<String> {
        let mut deployed = self.lock();
        let mut stopped = Vec::new();
        deployed.retain(|(t, n), app| match refuse(app) {
            Some(reason) => {
                tracing::warn!(tenant = %t, app = %n, "app stopped: {reason}");
                stopped.push(format!("{t}/{n}"));
                false
            }
            None => true,
        });
        if !stopped.is_empty()
            && let Err(e) = self.proxy.set_apps(self.all(&deployed))
        {
            tracing::error!(error = %e, "routing table rebuild failed after a revocation");
        }
        stopped
    }
}

/// Persists the record of a deploy (the code is already in zerofs).
pub fn persist_deploy(state: &StateStore, record: &crate::state::AppRecord) -> Result<(), Refusal> {
    state.put_app(record).map_err(|e| {
        Refusal::new(
            500,
            "Storage",
            format!("could not store the deployment: {e}"),
        )
    })
}
