//! The set of apps a node serves — those declared in `zerocore.toml` plus those deployed over
//! the management API — and the checks every app passes before it serves: the component's
//! embedded capability token, then loading, linking and every provider's per-app phase (the
//! core's [`zerocore::App`]), then mounting on its HTTP routes ([`HttpApp`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use zero_auth::{Chain, ReplayCache, ValidationOptions, Validator};
use zero_provider::AppSettings;
use zerocore::App;
use zeroproxy::{HttpApp, Route, RouteConflict, ZeroProxy};

use crate::Runtime;

use crate::state::{StateStore, TenantRecord};

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
    /// Checks the capability token embedded in `component` for `tenant`: every chain of its
    /// `ucan` section (one per capability), all for `tenant` and the component's hash; a
    /// refusal names the chain. `Ok(None)` when the component carries no token (it then gets no
    /// capabilities).
    pub fn verify_component(
        &self,
        component: &Component,
        tenant: &str,
    ) -> Result<Option<Vec<Chain>>, Refusal> {
        let bytes = component.bytes.as_slice();
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
        let data = bytes.get(section.data.clone()).ok_or_else(|| {
            Refusal::new(
                422,
                "InvalidComponent",
                "the component's `ucan` section lies outside the file",
            )
        })?;
        let chains = zero_auth::component::decode_chains(data).map_err(Refusal::auth)?;
        let validator = Validator::new(&self.options).with_revocations(&self.revocations);
        zero_auth::component::verify_component_chains(
            &validator,
            &chains,
            &component.hash,
            tenant,
            now(),
        )
        .map(Some)
        .map_err(|r| Refusal::new(403, r.error.name(), r.to_string()))
    }
}

/// A component's bytes with their two hashes, each computed once: the content hash (the
/// `ucan` section left out; what a token binds and what the app record names) and the code key
/// (the whole file; where the bytes are stored in zerofs, see [`crate::code::code_key`]).
#[derive(Debug, Clone)]
pub struct Component {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The content hash, `sha256:…`.
    pub hash: String,
    /// The code key, hex SHA-256 of the whole file.
    pub key: String,
}

impl Component {
    /// Hashes `bytes` (`InvalidComponent` when they are not WebAssembly).
    pub fn new(bytes: Vec<u8>) -> Result<Component, Refusal> {
        let key = crate::code::code_key(&bytes);
        Component::with_key(bytes, key)
    }

    /// Hashes `bytes` whose code key `key` is already known.
    pub(crate) fn with_key(bytes: Vec<u8>, key: String) -> Result<Component, Refusal> {
        let hash = zero_component::content_hash(&bytes)
            .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?
            .to_string();
        Ok(Component { bytes, hash, key })
    }
}

/// Parses a host the Admin grants to a tenant: a host name (`acme.example`) or `*.` and a host
/// name for every subdomain (`*.acme.example`); returned lowercase.
pub fn parse_host_grant(h: &str) -> Result<String, String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    if name.is_empty() || name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(format!(
            "`{h}` is not a host to grant: write a host name such as `acme.example`, or `*.acme.example` for its subdomains"
        ));
    }
    Route::parse(&format!("{name}/")).map_err(|_| {
        format!(
            "`{h}` is not a host to grant: letters, digits, `-` and `.` only, no port (e.g. `acme.example` or `*.acme.example`)"
        )
    })?;
    Ok(h.to_ascii_lowercase())
}

/// The first host claimed by `routes` that the Admin has not granted to `tenant`.
pub fn ungranted_host<'a>(tenant: &TenantRecord, routes: &'a [Route]) -> Option<&'a str> {
    routes
        .iter()
        .filter_map(|r| r.host.as_deref())
        .find(|h| !tenant.has_host(h))
}

/// Refuses routes on hosts the Admin has not granted to the tenant (`HostNotGranted`). Host-less
/// routes need no grant; a host route does, since it would shadow every other tenant's
/// host-less routes for requests naming that host.
pub fn check_host_grants(tenant: &TenantRecord, routes: &[Route]) -> Result<(), Refusal> {
    match ungranted_host(tenant, routes) {
        None => Ok(()),
        Some(host) => Err(Refusal::new(
            403,
            "HostNotGranted",
            format!(
                "a route on host `{host}` needs the Admin's grant of that host to tenant `{}`; the Admin grants it with `zero tenant create {} --owner DID --host {host}` (or deploy on a host-less route such as `/app`)",
                tenant.name, tenant.name
            ),
        )),
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
    /// Its schedules (parsed; checked against the caps when the app is installed).
    pub schedules: Vec<Arc<zerochrono::Schedule>>,
}

/// An app ready to serve: mounted on its routes, with its schedules.
pub struct BuiltApp {
    /// The app on its routes.
    pub http: Arc<HttpApp>,
    /// Its schedules.
    pub schedules: Vec<Arc<zerochrono::Schedule>>,
}

/// Checks, loads and links a component into an app ready to serve: it must export
/// `wasi:http/incoming-handler` when it has routes, and `zero:chrono/tick-handler` when it has
/// schedules (`MissingExport`, naming it).
pub async fn build_app(
    runtime: &Arc<Runtime>,
    authority: &Authority,
    spec: AppSpec,
    component: Component,
    max_concurrent: usize,
) -> Result<BuiltApp, Refusal> {
    let what = format!("{}/{}", spec.tenant, spec.name);
    zero_component::expect_component(&component.bytes, &what)
        .map_err(|e| Refusal::new(422, "InvalidComponent", e.to_string()))?;
    let capabilities = authority.verify_component(&component, &spec.tenant)?;
    let Component { bytes, hash, .. } = component;
    let rt = runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || rt.load(&bytes, &what))
        .await
        .map_err(|e| Refusal::new(500, "Internal", format!("loading failed: {e}")))?
        .map_err(|e| Refusal::new(422, "LoadError", e.to_string()))?;
    // The component's capability checker, made once for the deployment (see
    // `zero_auth::ScopedChain`): every instance's providers share its answers.
    let grants = Arc::new(zero_auth::ScopedChain::of_component(
        capabilities.as_deref(),
        &spec.tenant,
        Some(&hash),
    ));
    let mut settings = AppSettings {
        allowed_outbound_hosts: spec.allowed_outbound_hosts,
        component: Some(hash),
        capabilities: capabilities.map(Arc::from),
        grants,
        owner_credential: spec.owner_credential,
        not_after: None,
    };
    settings.not_after = settings.earliest_expiry();
    let app = runtime.app(&spec.tenant, &spec.name, settings, Ok(loaded));
    if let Some(reason) = app.failure() {
        return Err(Refusal::new(422, "LoadError", reason));
    }
    if !spec.schedules.is_empty()
        && let Err(reason) = app.tick_entry()
    {
        return Err(Refusal::new(422, "MissingExport", reason));
    }
    let no_routes = spec.routes.is_empty();
    let app = HttpApp::new(Arc::new(app), spec.routes, max_concurrent);
    if !no_routes && let Some(reason) = app.unavailable() {
        return Err(Refusal::new(422, "LoadError", reason));
    }
    Ok(BuiltApp {
        http: Arc::new(app),
        schedules: spec.schedules,
    })
}

/// The refusal of a schedule declaration or cap.
pub fn schedule_refusal(e: zerochrono::Error) -> Refusal {
    let (status, name) = match e {
        zerochrono::Error::Invalid(_) | zerochrono::Error::Duplicate(_) => (400, "InvalidArgs"),
        zerochrono::Error::TooManySchedules { .. } | zerochrono::Error::TooManyRetries { .. } => {
            (409, "TooManySchedules")
        }
        zerochrono::Error::UnknownSchedule { .. } => (404, "UnknownSchedule"),
        zerochrono::Error::Busy(_) => (409, "ScheduleBusy"),
        zerochrono::Error::RateLimited { .. } => (429, "RateLimited"),
    };
    Refusal::new(status, name, e.to_string())
}

/// The apps a node serves, and the swap of the routing table.
pub struct AppSet {
    proxy: Arc<ZeroProxy>,
    chrono: zerochrono::Chrono,
    inner: Mutex<Apps>,
    max_apps_per_tenant: usize,
}

/// The apps from `zerocore.toml` and those deployed over the API (keyed `(tenant, name)`).
#[derive(Clone)]
struct Apps {
    configured: Vec<Arc<HttpApp>>,
    deployed: BTreeMap<(String, String), Arc<HttpApp>>,
}

impl Apps {
    fn all(&self) -> Vec<Arc<HttpApp>> {
        self.configured
            .iter()
            .cloned()
            .chain(self.deployed.values().cloned())
            .collect()
    }
}

impl AppSet {
    /// A set with the configured apps, taking at most `max_apps_per_tenant` deployed apps per
    /// tenant.
    pub fn new(
        proxy: Arc<ZeroProxy>,
        chrono: zerochrono::Chrono,
        configured: Vec<Arc<HttpApp>>,
        max_apps_per_tenant: usize,
    ) -> AppSet {
        AppSet {
            proxy,
            chrono,
            inner: Mutex::new(Apps {
                configured,
                deployed: BTreeMap::new(),
            }),
            max_apps_per_tenant,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Apps> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the current set in the proxy.
    pub fn publish(&self) -> Result<(), RouteConflict> {
        let apps = self.lock();
        self.proxy.set_apps(apps.all())
    }

    /// Adds or replaces a deployed app, atomically: `persist` runs after the routing table and
    /// the schedules' caps were validated and before both are swapped; if any fails, the
    /// previous version keeps serving.
    /// Routes are owned (see [`zeroproxy::Router::build`]): a route equal to, above or below
    /// another tenant's route is refused with `RouteConflict`, without naming the other tenant.
    pub fn deploy(
        &self,
        app: BuiltApp,
        persist: impl FnOnce() -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        self.install(app, persist, true)
    }

    /// `TooManyApps` when deploying `app` as a new app of `tenant` would exceed
    /// `[admin] max_apps_per_tenant` (replacing an existing app always has room).
    pub fn check_room(&self, tenant: &str, app: &str) -> Result<(), Refusal> {
        let apps = self.lock();
        self.room(&apps, &(tenant.to_string(), app.to_string()))
    }

    fn room(&self, apps: &Apps, key: &(String, String)) -> Result<(), Refusal> {
        let of_tenant = apps.deployed.keys().filter(|(t, _)| *t == key.0).count();
        if !apps.deployed.contains_key(key) && of_tenant >= self.max_apps_per_tenant {
            return Err(Refusal::new(
                409,
                "TooManyApps",
                format!(
                    "tenant `{}` already has {of_tenant} apps, the most this node takes ([admin] max_apps_per_tenant = {}); remove one with `zero apps remove` or replace an existing app",
                    key.0, self.max_apps_per_tenant
                ),
            ));
        }
        Ok(())
    }

    /// Whether any app of the node (deployed or from `zerocore.toml`) runs the component with
    /// content hash `hash`.
    pub fn uses_component(&self, hash: &str) -> bool {
        self.lock()
            .all()
            .iter()
            .any(|a| a.settings.component.as_deref() == Some(hash))
    }

    /// The schedules' event provider.
    pub fn chrono(&self) -> &zerochrono::Chrono {
        &self.chrono
    }

    fn install(
        &self,
        built: BuiltApp,
        persist: impl FnOnce() -> Result<(), Refusal>,
        capped: bool,
    ) -> Result<(), Refusal> {
        let BuiltApp {
            http: app,
            schedules,
        } = built;
        let mut apps = self.lock();
        let key = (app.tenant.to_string(), app.name.to_string());
        if capped {
            self.room(&apps, &key)?;
        }
        let mut candidate = apps.clone();
        candidate.deployed.insert(key.clone(), app.clone());
        // The new app goes last, so that a conflict names its route and the other app.
        let mut table: Vec<Arc<HttpApp>> = apps
            .all()
            .into_iter()
            .filter(|a| !(*a.tenant == *key.0 && *a.name == *key.1))
            .collect();
        table.push(app.clone());
        if let Err(c) = zeroproxy::Router::build(table) {
            let own = c.first.split('/').next() == Some(&*app.tenant);
            let message = if own {
                format!(
                    "route `{}` is already served by your app `{}`; choose another path or host",
                    c.route, c.first
                )
            } else {
                format!(
                    "route `{}` overlaps a route another app already serves (the same path, or one above or below it); a path belongs to the tenant that claimed it first: choose another path, or a host the Admin granted you",
                    c.route
                )
            };
            return Err(Refusal::new(409, "RouteConflict", message));
        }
        let names: Vec<zerochrono::ScheduleDecl> =
            schedules.iter().map(|s| s.decl.clone()).collect();
        self.chrono
            .check(&app.tenant, &app.name, &names)
            .map_err(schedule_refusal)?;
        persist()?;
        self.proxy
            .set_apps(candidate.all())
            .map_err(|c| Refusal::new(409, "RouteConflict", c.to_string()))?;
        // Checked above under the same lock: installing cannot fail on the caps.
        if let Err(e) = self
            .chrono
            .install(&app.tenant, &app.name, app.app.clone(), schedules)
        {
            tracing::error!(tenant = %app.tenant, app = %app.name, error = %e, "the app's schedules could not be installed");
        }
        *apps = candidate;
        Ok(())
    }

    /// Removes a deployed app; `false` if the tenant has no such app.
    pub fn remove(&self, tenant: &str, name: &str) -> bool {
        let mut apps = self.lock();
        if apps
            .deployed
            .remove(&(tenant.to_string(), name.to_string()))
            .is_none()
        {
            return false;
        }
        self.chrono.remove(tenant, name);
        if let Err(e) = self.proxy.set_apps(apps.all()) {
            tracing::error!(error = %e, "routing table rebuild failed after a removal");
        }
        true
    }

    /// The deployed apps of a tenant.
    pub fn of_tenant(&self, tenant: &str) -> Vec<Arc<HttpApp>> {
        self.lock()
            .deployed
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Inserts an app restored at startup (no persistence, and not held to the per-tenant cap,
    /// which may have been lowered since the deploy).
    pub fn restore(&self, app: BuiltApp) -> Result<(), Refusal> {
        self.install(app, || Ok(()), false)
    }

    /// Stops serving every app for which `refuse` returns a reason (after a revocation, or a
    /// host grant withdrawn); returns the affected `tenant/app` names. A deployed app is
    /// removed from routing; an app from `zerocore.toml` keeps its routes, which answer 503
    /// with the reason in the log, until the operator changes the file.
    pub fn retain(&self, refuse: impl FnMut(&HttpApp) -> Option<String>) -> Vec<String> {
        self.stop_where(refuse, true)
    }

    /// [`AppSet::retain`] for deployed apps only (apps from `zerocore.toml` are the operator's:
    /// their host routes need no grant).
    pub fn retain_deployed(&self, refuse: impl FnMut(&HttpApp) -> Option<String>) -> Vec<String> {
        self.stop_where(refuse, false)
    }

    fn stop_where(
        &self,
        mut refuse: impl FnMut(&HttpApp) -> Option<String>,
        configured_too: bool,
    ) -> Vec<String> {
        let mut apps = self.lock();
        let mut stopped = Vec::new();
        let chrono = &self.chrono;
        apps.deployed.retain(|(t, n), app| match refuse(app) {
            Some(reason) => {
                tracing::warn!(tenant = %t, app = %n, "app stopped: {reason}");
                chrono.remove(t, n);
                stopped.push(format!("{t}/{n}"));
                false
            }
            None => true,
        });
        for app in apps.configured.iter_mut().filter(|_| configured_too) {
            if app.failure().is_some() {
                continue;
            }
            if let Some(reason) = refuse(app) {
                tracing::warn!(tenant = %app.tenant, app = %app.name, "app stopped: {reason}");
                self.chrono.remove(&app.tenant, &app.name);
                stopped.push(format!("{}/{}", app.tenant, app.name));
                *app = Arc::new(HttpApp::new(
                    Arc::new(App::failed(
                        &app.tenant,
                        &app.name,
                        format!("stopped: {reason}"),
                    )),
                    app.routes.clone(),
                    1,
                ));
            }
        }
        if !stopped.is_empty()
            && let Err(e) = self.proxy.set_apps(apps.all())
        {
            tracing::error!(error = %e, "routing table rebuild failed after stopping apps");
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
