//! Apps and their invocation: the record of a deployed app (any event kind), and running one
//! event in a fresh store — instantiation, the call, the wall-clock limit, the classification
//! of faults and their log line — for every event kind.
//!
//! Event providers see [`App`] only (it is not generic): HTTP calls [`App::http`] for the
//! `wasi:http/incoming-handler@0.2` or `wasi:http/handler@0.3` export (see `p3`), schedules
//! call [`App::tick`] for the `zero:chrono/tick-handler` export; both go through the same run
//! (`Deployed::run`), except reused 0.3 instances (`p3::pooled`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use wasmtime::Store;
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use zero_component::ContentHash;
use zero_provider::{AppContext, AppSettings, Invocation};

use crate::{Compiled, Fault, LoadedComponent, ProviderSet, Runtime, StoreData};

mod ticker_wit {
    wasmtime::component::bindgen!({
        path: "../../wit/zero-chrono",
        world: "zero:chrono/ticker",
        exports: { default: async },
        require_store_data_send: true,
    });
}

use ticker_wit::Ticker as TickerWorld;
use ticker_wit::TickerPre;

/// The WIT interface a component exports to run on schedules.
pub const TICK_HANDLER: &str = "zero:chrono/tick-handler";

/// One tick of a schedule, as the component's `handle-tick` receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The schedule's name.
    pub schedule: String,
    /// When the tick was due (milliseconds since the Unix epoch).
    pub scheduled_ms: u64,
    /// When this attempt started (milliseconds since the Unix epoch).
    pub actual_ms: u64,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

/// The error a component's `handle-tick` returned (not a trap: the run is not retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Returned(pub String);

/// A guest run ready to go: awaiting it instantiates the component, calls its entry under the
/// wall-clock limit (counted from when the run was created), and returns the classified fault
/// (already logged) if it failed.
pub type Run = Pin<Box<dyn Future<Output = Result<(), Fault>> + Send>>;

/// Where an HTTP response goes: the channel `wasi:http`'s `response-outparam` answers on.
pub type ResponseSender =
    tokio::sync::oneshot::Sender<Result<http::Response<HyperOutgoingBody>, ErrorCode>>;

/// Why an app cannot run an event now (already logged with the request id).
#[derive(Debug)]
pub enum Unavailable {
    /// The app failed to load or was stopped.
    Failed,
    /// Its capability token or its owner's credential expired.
    Expired,
    /// It does not export the entry the event needs.
    NoEntry,
    /// The node could not create its store.
    Start,
    /// The event could not be brought into the store (a malformed request).
    Invalid(String),
}

/// A deployed app as the core keeps it, for every event kind: its tenant, name and settings,
/// and its loaded component with every provider's per-deployment state (or why it cannot run).
/// Triggers (HTTP routes, schedules) belong to the event providers.
pub struct App {
    /// Owning tenant.
    pub tenant: Arc<str>,
    /// App name.
    pub name: Arc<str>,
    /// The app's settings (component hash, capabilities, outgoing hosts, …).
    pub settings: Arc<AppSettings>,
    state: Result<Arc<dyn Deployment>, String>,
}

impl App {
    /// An app that cannot run, for `reason` (requests to it are refused, the reason logged).
    pub fn failed(tenant: &str, name: &str, reason: impl Into<String>) -> App {
        App {
            tenant: tenant.into(),
            name: name.into(),
            settings: Arc::default(),
            state: Err(reason.into()),
        }
    }

    /// Why the app cannot run, if it cannot.
    pub fn failure(&self) -> Option<&str> {
        self.state.as_ref().err().map(String::as_str)
    }

    /// The content hash of its component, when it loaded.
    pub fn component(&self) -> Option<ContentHash> {
        self.state.as_ref().ok().map(|d| d.component())
    }

    /// Whether the app can serve `wasi:http` requests, and why not.
    pub fn http_entry(&self) -> Result<(), String> {
        match &self.state {
            Ok(d) => d.http_entry(),
            Err(reason) => Err(reason.clone()),
        }
    }

    /// Whether the app can run schedule ticks (it exports [`TICK_HANDLER`]), and why not.
    pub fn tick_entry(&self) -> Result<(), String> {
        match &self.state {
            Ok(d) => d.tick_entry(),
            Err(reason) => Err(reason.clone()),
        }
    }

    /// Checks that the app may run an event now (it loaded, its authority has not expired),
    /// logging the refusal with `request_id`.
    pub fn available(&self, request_id: &str) -> Result<(), Unavailable> {
        if let Err(reason) = &self.state {
            tracing::error!(request_id, tenant = %self.tenant, app = %self.name, reason = %reason, "request to an app that failed to load");
            return Err(Unavailable::Failed);
        }
        // Most apps never expire; read the clock only for those that do.
        let expired = self.settings.not_after.and_then(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.settings.expired(now)
        });
        if let Some(reason) = expired {
            tracing::error!(request_id, tenant = %self.tenant, app = %self.name, reason = %reason, "request refused: the app's authority expired");
            return Err(Unavailable::Expired);
        }
        Ok(())
    }

    fn invocation(&self, request_id: Arc<str>) -> Invocation {
        Invocation {
            tenant: self.tenant.clone(),
            app: self.name.clone(),
            request_id,
            settings: self.settings.clone(),
            trace: None,
        }
    }

    /// Prepares an HTTP request for the app's `wasi:http/incoming-handler` (or, for a WASI 0.3
    /// component, its `wasi:http/handler`, on a fresh or a reused instance): a fresh store with
    /// the request and the response channel in it. The returned [`Run`] does the rest; the
    /// response arrives on `response` as soon as the guest sets it (its body streams while the
    /// run goes on).
    ///
    /// A [`trace::Parent`](zero_provider::trace::Parent) among the request's extensions is the
    /// parent of the spans of the run (instantiation, host calls, outgoing requests).
    pub fn http(
        &self,
        request_id: Arc<str>,
        mut request: http::Request<WasiBody>,
        response: ResponseSender,
    ) -> Result<Run, Unavailable> {
        self.available(&request_id)?;
        let deployment = match &self.state {
            Ok(d) => d,
            Err(_) => return Err(Unavailable::Failed),
        };
        let mut invocation = self.invocation(request_id);
        if let Some(zero_provider::trace::Parent(cx)) = request
            .extensions_mut()
            .remove::<zero_provider::trace::Parent>()
        {
            invocation.trace = Some(cx);
        }
        observed(
            deployment.observer(),
            invocation.clone(),
            deployment.http(invocation, request, response),
        )
    }

    /// Prepares one tick of a schedule for the app's `zero:chrono/tick-handler`: a fresh store,
    /// and a [`Run`] that instantiates the component and calls `handle-tick` under the same
    /// limits as an HTTP request. `run_id` tags every log line of the run. An error the
    /// component returns ends the run as [`Fault::Returned`].
    pub fn tick(&self, run_id: Arc<str>, tick: Tick) -> Result<Run, Unavailable> {
        self.available(&run_id)?;
        let deployment = match &self.state {
            Ok(d) => d,
            Err(_) => return Err(Unavailable::Failed),
        };
        let invocation = self.invocation(run_id);
        observed(
            deployment.observer(),
            invocation.clone(),
            deployment.tick(invocation, tick),
        )
    }
}

/// `run`, telling `observer` of its fault when it ends with one.
fn observed(
    observer: Option<Arc<dyn crate::Observer>>,
    invocation: Invocation,
    run: Result<Run, Unavailable>,
) -> Result<Run, Unavailable> {
    let Some(observer) = observer else {
        return run;
    };
    run.map(|run| -> Run {
        Box::pin(async move {
            let result = run.await;
            if let Err(fault) = &result {
                observer.fault(&invocation, fault);
            }
            result
        })
    })
}

/// The object-safe face of a [`Deployed`] app, so that [`App`] is not generic.
trait Deployment: Send + Sync {
    fn component(&self) -> ContentHash;
    fn observer(&self) -> Option<Arc<dyn crate::Observer>>;
    fn http_entry(&self) -> Result<(), String>;
    fn http(
        &self,
        invocation: Invocation,
        request: http::Request<WasiBody>,
        response: ResponseSender,
    ) -> Result<Run, Unavailable>;
    fn tick_entry(&self) -> Result<(), String>;
    fn tick(&self, invocation: Invocation, tick: Tick) -> Result<Run, Unavailable>;
}

/// A loaded app: its component, every provider's per-deployment state, and its entries.
struct Deployed<P: ProviderSet> {
    runtime: Arc<Runtime<P>>,
    component: Arc<LoadedComponent<P>>,
    name: String,
    apps: Arc<P::Apps>,
    /// The entries of the component's current compiled form (rebuilt once when it moves from
    /// baseline to optimized code).
    entries: RwLock<Arc<Entries<P>>>,
}

/// The entries of one compiled form of a component.
struct Entries<P: ProviderSet> {
    compiled: Arc<Compiled<P>>,
    http: Result<HttpEntry<P>, String>,
    /// The reused instances of a 0.3 app, made at its first request (when the node's limits
    /// configure reuse).
    pool: std::sync::OnceLock<crate::p3::Pool<P>>,
    tick: Result<TickerPre<P::Data>, String>,
}

/// The HTTP export of a component: `wasi:http/incoming-handler@0.2` or `wasi:http/handler@0.3`.
enum HttpEntry<P: ProviderSet> {
    P2(ProxyPre<P::Data>),
    P3(ServicePre<P::Data>),
}

impl<P: ProviderSet> Clone for HttpEntry<P> {
    fn clone(&self) -> Self {
        match self {
            HttpEntry::P2(pre) => HttpEntry::P2(pre.clone()),
            HttpEntry::P3(pre) => HttpEntry::P3(pre.clone()),
        }
    }
}

impl<P: ProviderSet> Entries<P> {
    fn new(compiled: Arc<Compiled<P>>, name: &str) -> Entries<P> {
        let http = ProxyPre::new(compiled.pre.clone())
            .map(HttpEntry::P2)
            .or_else(|p2| {
                ServicePre::new(compiled.pre.clone())
                    .map(HttpEntry::P3)
                    .map_err(|p3| (p2, p3))
            })
            .map_err(|(p2, p3)| {
                format!(
                    "app `{name}` exports neither `wasi:http/incoming-handler` (WASI 0.2) nor \
                     `{}` (WASI 0.3), so it cannot serve HTTP (build it as an HTTP component, \
                     e.g. with `wasi::http::proxy::export!` or `wasip3::http::service::export!`): \
                     {p2}; {p3}",
                    crate::p3::HTTP_HANDLER
                )
            });
        let tick = TickerPre::new(compiled.pre.clone()).map_err(|e| {
            format!(
                "app `{name}` does not export `{TICK_HANDLER}`, so it cannot run on schedules \
                 (export it with `wit_bindgen::generate!` over `wit/zero-chrono`, world \
                 `zero:chrono/ticker`, or deploy it without schedules): {e}"
            )
        });
        Entries {
            compiled,
            http,
            pool: std::sync::OnceLock::new(),
            tick,
        }
    }
}

pub(crate) type GuestFuture<'a> = Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send + 'a>>;

impl<P: ProviderSet> Deployed<P> {
    /// The entries of the component's current compiled form.
    fn entries(&self) -> Arc<Entries<P>> {
        let current = self.component.current();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&entries.compiled, &current) {
                return entries.clone();
            }
        }
        let fresh = Arc::new(Entries::new(current, &self.name));
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        fresh
    }

    fn store(
        &self,
        entries: &Entries<P>,
        invocation: Invocation,
    ) -> Result<Store<P::Data>, Unavailable> {
        let request_id = invocation.request_id.clone();
        let engine = &entries.compiled.engine;
        self.runtime
            .new_store(engine, &self.apps, invocation)
            .map_err(|e| {
                tracing::error!(request_id = %request_id, error = %e, "could not create a store");
                Unavailable::Start
            })
    }

    /// Runs `call` (instantiate and call an entry) on `store` within the wall-clock limit,
    /// classifying and logging a failure. Every event kind's entry goes through here.
    fn run<F>(&self, mut store: Store<P::Data>, call: F) -> Run
    where
        F: for<'a> FnOnce(&'a mut Store<P::Data>) -> GuestFuture<'a> + Send + 'static,
    {
        let wall = self.runtime.limits().wall_time;
        let heavy_after_ns = self.runtime.heavy_after_ns;
        let deadline = tokio::time::Instant::now() + wall;
        let turns = self.runtime.turns.clone();
        Box::pin(async move {
            let tenant = store.data().core().invocation().tenant.clone();
            let mark = store.data().core().cpu.mark.clone();
            // The guest runs in turns shared fairly between tenants, charged from each resume.
            let carried = store.data().core().cpu.carried.clone();
            let guest = crate::Marked {
                guest: call(&mut store),
                mark,
                carried,
            };
            let started = std::time::Instant::now();
            let stats = Arc::new(crate::turns::TurnStats::default());
            let guest = turns.run(tenant, guest).counted(stats.clone());
            let result = match tokio::time::timeout_at(deadline, guest).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Fault::classify(&e, &store.data().core().faults)),
                Err(_) => Err(Fault::WallTimeout {
                    limit_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
                }),
            };
            if let Err(fault) = &result {
                let core = store.data().core();
                let inv = core.invocation();
                tracing::error!(
                    request_id = %inv.request_id, tenant = %inv.tenant, app = %inv.app,
                    fault = fault.kind(), cpu_ms = core.cpu.used_ns / 1_000_000, cpu_ticks = core.cpu.ticks,
                    slices = stats.slices(), turn_wait_ms = stats.waited_ms(),
                    longest_turn_wait_ms = stats.longest_wait_ms(),
                    waiting_for_turn = stats.waiting_at_end(),
                    "request failed: {fault}"
                );
            }
            // A guest that waited long for its turns tells the operator the node's CPU is
            // oversubscribed (or that a tenant starves the others, which the turns exist to
            // prevent).
            if stats.longest_wait_ms() >= SLOW_TURN_WAIT_MS {
                let core = store.data().core();
                let inv = core.invocation();
                tracing::warn!(
                    request_id = %inv.request_id, tenant = %inv.tenant, app = %inv.app,
                    slices = stats.slices(), turn_wait_ms = stats.waited_ms(),
                    longest_turn_wait_ms = stats.longest_wait_ms(),
                    run_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "the guest waited long for a CPU turn"
                );
            }
            // A heavy guest's store (or one that grew its memory to the cap) is dropped on a
            // blocking thread: giving its memory back to the kernel (madvise) takes
            // milliseconds that would otherwise hold up this async worker and the light
            // requests queued on it.
            let core = store.data().core();
            if core.cpu.used_ns > heavy_after_ns || core.faults.memory_limit.is_some() {
                drop(tokio::task::spawn_blocking(move || drop(store)));
            }
            result
        })
    }
}

/// A wait for one CPU turn this long is logged (with the request's id and its waits).
const SLOW_TURN_WAIT_MS: u64 = 500;

/// The [`INSTANTIATE`](zero_provider::trace::names::INSTANTIATE) span of a run whose request
/// has the trace `parent` (no span without one).
pub(crate) fn instantiate_span(
    parent: Option<&zero_provider::trace::Context>,
    core: &crate::CoreState,
) -> zero_provider::trace::Span {
    use zero_provider::trace::{self, KeyValue};
    trace::Span::child(
        parent,
        trace::names::INSTANTIATE,
        trace::Kind::Internal,
        || {
            let inv = core.invocation();
            let mut attributes = vec![
                KeyValue::new("zero.tenant", inv.tenant.to_string()),
                KeyValue::new("zero.app", inv.app.to_string()),
            ];
            if let Some(component) = &inv.settings.component {
                attributes.push(KeyValue::new("zero.component", component.clone()));
            }
            attributes
        },
    )
}

impl<P: ProviderSet> Deployment for Deployed<P> {
    fn component(&self) -> ContentHash {
        self.component.hash
    }

    fn observer(&self) -> Option<Arc<dyn crate::Observer>> {
        self.runtime.observer().cloned()
    }

    fn http_entry(&self) -> Result<(), String> {
        self.entries()
            .http
            .as_ref()
            .map(|_| ())
            .map_err(String::clone)
    }

    fn http(
        &self,
        invocation: Invocation,
        request: http::Request<WasiBody>,
        response: ResponseSender,
    ) -> Result<Run, Unavailable> {
        let entries = self.entries();
        let pre = match &entries.http {
            Ok(pre) => pre.clone(),
            Err(reason) => {
                tracing::error!(request_id = %invocation.request_id, tenant = %invocation.tenant, app = %invocation.app, reason = %reason, "HTTP request to an app without an HTTP entry");
                return Err(Unavailable::NoEntry);
            }
        };
        let pre = match pre {
            HttpEntry::P2(pre) => pre,
            HttpEntry::P3(pre) => {
                if let Some(reuse) = crate::p3::Reuse::from_limits(self.runtime.limits()) {
                    let pool = entries.pool.get_or_init(|| {
                        crate::p3::pool(
                            self.runtime.clone(),
                            entries.compiled.engine.clone(),
                            self.apps.clone(),
                            pre,
                            invocation.clone(),
                            reuse,
                        )
                    });
                    return Ok(crate::p3::pooled(
                        pool.clone(),
                        invocation,
                        request,
                        response,
                        reuse.wall,
                    ));
                }
                let mut store = self.store(&entries, invocation)?;
                let call = crate::p3::http(&mut store, pre, request, response);
                return Ok(self.run(store, call));
            }
        };
        let trace = invocation.trace.clone();
        let mut store = self.store(&entries, invocation)?;
        let mut http = store.data_mut().core_mut().http_view();
        let req = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| Unavailable::Invalid(e.to_string()))?;
        let out = http
            .new_response_outparam(response)
            .map_err(|e| Unavailable::Invalid(e.to_string()))?;
        Ok(self.run(store, move |store| {
            Box::pin(async move {
                let span = instantiate_span(trace.as_ref(), store.data().core());
                let proxy = pre.instantiate_async(&mut *store).await?;
                drop(span);
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, req, out)
                    .await
            })
        }))
    }

    fn tick_entry(&self) -> Result<(), String> {
        self.entries()
            .tick
            .as_ref()
            .map(|_| ())
            .map_err(String::clone)
    }

    fn tick(&self, invocation: Invocation, tick: Tick) -> Result<Run, Unavailable> {
        let entries = self.entries();
        let pre = match &entries.tick {
            Ok(pre) => pre.clone(),
            Err(reason) => {
                tracing::error!(request_id = %invocation.request_id, tenant = %invocation.tenant, app = %invocation.app, reason = %reason, "schedule tick for an app without a tick entry");
                return Err(Unavailable::NoEntry);
            }
        };
        let tick = ticker_wit::zero::chrono::types::Tick {
            schedule: tick.schedule,
            scheduled_ms: tick.scheduled_ms,
            actual_ms: tick.actual_ms,
            attempt: tick.attempt,
            run_id: invocation.request_id.to_string(),
        };
        let store = self.store(&entries, invocation)?;
        Ok(self.run(store, move |store| {
            Box::pin(async move {
                let ticker: TickerWorld = pre.instantiate_async(&mut *store).await?;
                ticker
                    .zero_chrono_tick_handler()
                    .call_handle_tick(&mut *store, &tick)
                    .await?
                    .map_err(|e| wasmtime::Error::new(Returned(e)))
            })
        }))
    }
}

impl<P: ProviderSet> Runtime<P> {
    /// Makes an app of a loaded component (or of the reason it could not be loaded): runs every
    /// provider's per-app phase and resolves the entries the component exports. A provider's
    /// refusal makes the app [failed](App::failure).
    pub fn app(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        settings: AppSettings,
        loaded: Result<Arc<LoadedComponent<P>>, String>,
    ) -> App {
        let settings = Arc::new(settings);
        let state = loaded.and_then(|component| {
            let apps = self
                .providers()
                .prepare(&AppContext {
                    tenant,
                    name,
                    settings: &settings,
                })
                .map_err(|e| format!("app `{name}` cannot be prepared: {e:#}"))?;
            let entries = Entries::new(component.current(), name);
            let deployed: Arc<dyn Deployment> = Arc::new(Deployed {
                runtime: self.clone(),
                component,
                name: name.to_string(),
                apps: Arc::new(apps),
                entries: RwLock::new(Arc::new(entries)),
            });
            Ok(deployed)
        });
        App {
            tenant: tenant.into(),
            name: name.into(),
            settings,
            state,
        }
    }
}
