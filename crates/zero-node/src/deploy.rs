//! The one deploy procedure, shared by a deploy over the management API
//! (`PUT /v1/tenants/{t}/apps/{a}`) and the restore of every deployed app at startup.
//!
//! [`Api::install`] checks what the app is made of (its tenant, name, routes and host grants),
//! gets its code (an upload is hashed once, checked against the hash the invocation
//! authorizes, and stored in zerofs under its code key; a restored app's code is read back from
//! zerofs), checks that the owner's credential allows reading that code *now*, checks the
//! component's own token and compiles it, and swaps it into the routing table: a deploy with
//! its durable record (atomic: a refused deploy leaves the previous version serving), a restore
//! without one. A deploy then deletes the code no app uses any more, and the compiled artifact
//! of a component no app uses any more.
//!
//! Deploys are bounded by a [`DeployGate`]: at most `[admin] max_deploys_per_tenant` of one
//! tenant in flight (a further one is refused with `429 TooManyDeploys` before its upload is
//! read), and at most `[admin] max_compiles` compiling at once on the node (a further one waits
//! its turn, first come, first served). A tenant's cap on apps is checked before its component
//! is compiled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroproxy::Route;

use crate::api::Api;
use crate::apps::{AppSpec, BuiltApp, Component, Refusal, build_app, now, persist_deploy};
use crate::code::Credential;
use crate::state::AppRecord;

/// The bounds on deploys in flight: per tenant (refused past it) and compiles per node
/// (queued past it). See the module documentation.
pub(crate) struct DeployGate {
    per_tenant: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    compiles: Arc<tokio::sync::Semaphore>,
}

/// One tenant's deploy in flight; its place is given back when it is dropped.
pub(crate) struct DeployTicket {
    tenant: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for DeployTicket {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&self.tenant);
            }
        }
    }
}

/// Seconds a client refused with `TooManyDeploys` is told to wait (`retry-after`).
pub(crate) const DEPLOY_RETRY_AFTER_SECS: u64 = 1;

impl DeployGate {
    /// At most `per_tenant` deploys of one tenant and `compiles` compiles on the node at once.
    pub(crate) fn new(per_tenant: usize, compiles: usize) -> DeployGate {
        DeployGate {
            per_tenant: per_tenant.max(1),
            in_flight: Arc::default(),
            compiles: Arc::new(tokio::sync::Semaphore::new(compiles.max(1))),
        }
    }

    /// A place for one more deploy of `tenant`, or `429 TooManyDeploys` when it already has
    /// `[admin] max_deploys_per_tenant` in flight.
    pub(crate) fn enter(&self, tenant: &str) -> Result<DeployTicket, Refusal> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = in_flight.entry(tenant.to_string()).or_insert(0);
        if *n >= self.per_tenant {
            return Err(Refusal::new(
                429,
                "TooManyDeploys",
                format!(
                    "tenant `{tenant}` already has {n} deploy(s) in flight, the most this node \
                     runs at once for one tenant ([admin] max_deploys_per_tenant = {}); wait for \
                     it to finish and retry (retry-after: {DEPLOY_RETRY_AFTER_SECS} s), or ask \
                     the operator to raise the limit",
                    self.per_tenant
                ),
            ));
        }
        *n += 1;
        Ok(DeployTicket {
            tenant: tenant.to_string(),
            in_flight: self.in_flight.clone(),
        })
    }

    /// Waits for a compile slot (`[admin] max_compiles`), first come, first served.
    async fn compile_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        self.compiles
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Refusal::new(500, "Internal", format!("compile slots closed: {e}")))
    }
}

/// Where a deployment's code comes from.
pub(crate) enum Code {
    /// An upload, with the content hash the invocation authorizes (`args.component`).
    Upload {
        /// The uploaded bytes.
        bytes: Vec<u8>,
        /// The content hash they must have.
        claimed: String,
    },
    /// Code already stored in zerofs under this key (a restored app).
    Stored {
        /// The code key.
        key: String,
    },
}

/// What a deployment is made of, as a deploy call names it and its record keeps it.
pub(crate) struct Deployment {
    /// The tenant.
    pub tenant: String,
    /// The app's name within the tenant.
    pub app: String,
    /// Its routes, as written.
    pub routes: Vec<String>,
    /// Hosts it may reach with outgoing HTTP.
    pub allowed_outbound_hosts: Vec<String>,
    /// The deployer's credential (the owner's chain), kept with the record.
    pub credential: Credential,
    /// Its schedules (zerochrono), as declared.
    pub schedules: Vec<zerochrono::ScheduleDecl>,
}

impl Api {
    /// The one deploy procedure (see the module documentation). Returns the app's record.
    pub(crate) async fn install(&self, d: Deployment, code: Code) -> Result<AppRecord, Refusal> {
        let restoring = matches!(code, Code::Stored { .. });
        let tenant_record = self.tenant_record(&d.tenant)?;
        if !crate::config::valid_name(&d.app) {
            return Err(Refusal::new(
                400,
                "InvalidArgs",
                "app names use lowercase letters, digits, `-` and `_` (1 to 63 characters)",
            ));
        }
        if d.routes.is_empty() && d.schedules.is_empty() {
            return Err(Refusal::new(
                400,
                "InvalidArgs",
                "args.routes must name at least one route, e.g. [\"/app\"] (or args.schedules a schedule)",
            ));
        }
        let schedules = d
            .schedules
            .iter()
            .map(|decl| zerochrono::Schedule::parse(decl).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::apps::schedule_refusal)?;
        let routes = d
            .routes
            .iter()
            .map(|r| Route::parse(r).map_err(|e| Refusal::new(400, "InvalidArgs", e)))
            .collect::<Result<Vec<_>, _>>()?;
        crate::apps::check_host_grants(&tenant_record, &routes)?;
        if !restoring {
            // Before anything is stored or compiled: a tenant at its cap cannot make the node
            // compile code it would then refuse.
            self.apps.check_room(&d.tenant, &d.app)?;
        }
        let (component, owner) = match code {
            Code::Upload { bytes, claimed } => {
                // The operator's ceiling is checked at deploy; a restored app is held to it
                // when it calls out.
                crate::outbound::check_deploy(&self.outbound, &d.allowed_outbound_hosts)?;
                let component = Component::new(bytes)?;
                if component.hash != claimed {
                    return Err(Refusal::new(
                        400,
                        "HashMismatch",
                        format!(
                            "the invocation authorizes component {claimed} but the uploaded bytes are {}",
                            component.hash
                        ),
                    ));
                }
                // The code goes to zerofs first (content-addressed, so the serving version's
                // code is untouched if this deploy fails), readable with the deployer's
                // credential exactly as it will be after a restart.
                let code_path = zerofs::TenantPath::parse(&crate::code::code_path(&component.key))
                    .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
                let owner = d
                    .credential
                    .check_read(&self.authority, &d.tenant, &code_path)?;
                crate::code::store(&self.fs, &d.tenant, &component).await?;
                (component, owner)
            }
            Code::Stored { key } => {
                crate::code::fetch(&self.fs, &self.authority, &d.tenant, &key, &d.credential)
                    .await?
            }
        };
        let record = AppRecord {
            tenant: d.tenant.clone(),
            name: d.app.clone(),
            routes: d.routes.clone(),
            component: component.hash.clone(),
            allowed_outbound_hosts: d.allowed_outbound_hosts.clone(),
            deployed_at: now(),
            code: component.key.clone(),
            holder: d.credential.holder.to_string(),
            credential: d.credential.encoded_proofs(),
            schedules: d.schedules.clone(),
        };
        let spec = AppSpec {
            tenant: d.tenant.clone(),
            name: d.app.clone(),
            routes,
            allowed_outbound_hosts: d.allowed_outbound_hosts,
            owner_credential: owner,
            schedules,
        };
        if restoring {
            let built = self.build(spec, component).await?;
            self.apps.restore(built)?;
            return Ok(record);
        }
        let previous = self.recorded(&d.tenant, &d.app);
        let result = match self.build(spec, component).await {
            Ok(built) => self
                .apps
                .deploy(built, || persist_deploy(&self.state, &record)),
            Err(r) => Err(r),
        };
        match &result {
            // Code no app uses any more: the replaced version's, or this deploy's when it failed.
            Ok(()) => {
                if let Some((old_code, old_hash)) = previous {
                    if old_code != record.code {
                        self.release_code(&d.tenant, &old_code).await;
                    }
                    if old_hash != record.component {
                        self.release_artifact(&old_hash).await;
                    }
                }
            }
            Err(_) => {
                self.release_code(&d.tenant, &record.code).await;
                self.release_artifact(&record.component).await;
            }
        }
        result.map(|()| record)
    }

    async fn build(&self, spec: AppSpec, component: Component) -> Result<BuiltApp, Refusal> {
        let _slot = self.deploys.compile_slot().await?;
        build_app(
            &self.runtime,
            &self.authority,
            spec,
            component,
            self.max_concurrent_per_app,
        )
        .await
    }

    /// Restores a deployed app at startup from its record, through [`Api::install`]: its code
    /// is read from zerofs with the owner's credential (validated now), then checked and
    /// compiled as at deploy.
    pub async fn restore(&self, record: &AppRecord) -> Result<(), Refusal> {
        if record.holder.is_empty() || record.code.is_empty() {
            return Err(Refusal::new(
                500,
                "Storage",
                "this deployment predates code storage in zerofs and has no owner's credential; deploy the app again",
            ));
        }
        let credential = Credential::decode(&record.holder, &record.credential)?;
        let deployment = Deployment {
            tenant: record.tenant.clone(),
            app: record.name.clone(),
            routes: record.routes.clone(),
            allowed_outbound_hosts: record.allowed_outbound_hosts.clone(),
            credential,
            schedules: record.schedules.clone(),
        };
        let key = record.code.clone();
        self.install(deployment, Code::Stored { key })
            .await
            .map(|_| ())
    }

    /// The key of the code and the content hash recorded for a deployed app.
    pub(crate) fn recorded(&self, tenant: &str, app: &str) -> Option<(String, String)> {
        let records = self.state.apps().ok()?;
        records
            .into_iter()
            .find(|r| r.tenant == tenant && r.name == app)
            .filter(|r| !r.code.is_empty())
            .map(|r| (r.code, r.component))
    }

    /// Deletes the compiled artifact of the component `hash` once no app on this node (of any
    /// tenant, deployed or configured) uses it any more.
    pub(crate) async fn release_artifact(&self, hash: &str) {
        if self.apps.uses_component(hash) {
            return;
        }
        let Ok(parsed) = zero_component::ContentHash::parse(hash) else {
            return;
        };
        let runtime = self.runtime.clone();
        let removed = tokio::task::spawn_blocking(move || runtime.remove_artifact(&parsed)).await;
        if let Err(e) = removed {
            tracing::warn!(component = hash, error = %e, "could not delete an unused compiled artifact");
        }
    }

    /// Deletes a tenant's stored code once no deployed app of the tenant uses it any more.
    pub(crate) async fn release_code(&self, tenant: &str, key: &str) {
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
}
