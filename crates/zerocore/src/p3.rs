//! WASI 0.3: the interfaces the node links for components built for `wasi:http@0.3` (the
//! `wasi:http/service` world, whose `wasi:http/handler` export is an async function), and the
//! run of one HTTP request through that export.
//!
//! A 0.3 request goes through the same path as a 0.2 one (routing, grants, the node's, tenant's
//! and app's limits, the log): [`App::http`](crate::App::http) picks the export the component
//! has. By default each request gets a fresh store and instance, as for 0.2, so the store's CPU
//! budget, memory limits and the wall-clock limit bound that one request. The store's event loop
//! (`run_concurrent`) runs until the guest's task and every task it spawned (such as the one
//! writing the response body) have finished, so the body streams under the same limits.
//!
//! With `max_concurrent_per_instance` or `max_reuse` above 1 (`[limits]`), a 0.3 app's instances
//! are reused ([`Pool`]): one instance serves up to that many requests at once and in its life,
//! and is dropped after `instance_idle_timeout_ms` with nothing to do. An instance belongs to
//! one app (one compiled form of it) and so to one tenant. What holds per request and what per
//! instance: the wall-clock limit is per request (a request past it gets a 504; an instance busy
//! past it is dropped from outside its event loop, so a spinning guest cannot hold it, and so is
//! one still at work once every request it accepted is past its deadline); the CPU
//! budget and the memory limit are the instance's (its budget is `cpu_time_ms` for its start plus
//! `cpu_time_ms` per request it accepted). A trap or a spent budget ends the instance: every
//! request it was serving fails with that fault (a 5xx), and the next request gets a new one.
//! Guest log lines of a reused instance carry the instance's id (`instance-N`), not a request's.
//!
//! Linked for 0.3 here: `wasi:cli` (stdio to the node log, an empty environment),
//! `wasi:clocks`, `wasi:random` and `wasi:http/types`; the zeroproxy provider links
//! `wasi:http/client@0.3` (outgoing HTTP under the same rule and hooks as 0.2's, its
//! per-request count growing with the requests a reused instance accepted). Not linked (named
//! at deploy when a component imports them): `wasi:filesystem` and `wasi:sockets` at 0.3 —
//! files go through the 0.2 interfaces of the zerofs provider, under its rules.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::sync::{oneshot, watch};
use wasmtime::component::{GuestTaskId, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    self, HandlerState, ProxyHandler, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode as P3ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttp, WasiHttpCtxView};
use zero_provider::Invocation;

use crate::app::{GuestFuture, ResponseSender, Run};
use crate::{Fault, ProviderSet, Runtime, StoreData};

/// The WIT interfaces linked for 0.3 components (without versions; see [`provides`]).
pub(crate) const INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:cli/types",
    "wasi:clocks/types",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/system-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:http/types",
];

/// The export a component serves HTTP with under WASI 0.3.
pub const HTTP_HANDLER: &str = "wasi:http/handler";

/// Whether `import` (a WIT name such as `wasi:http/types@0.3.2`) is a WASI 0.3 interface.
pub(crate) fn is_p3(import: &str) -> bool {
    import
        .split_once('@')
        .is_some_and(|(_, version)| version.starts_with("0.3."))
}

/// Whether the node links the 0.3 interface `import` (versioned, e.g. `wasi:cli/stdout@0.3.0`).
pub(crate) fn provides(import: &str) -> bool {
    let unversioned = import.split('@').next().unwrap_or(import);
    INTERFACES.contains(&unversioned)
}

/// The 0.3 interfaces for the "available" part of a deploy refusal (`name@0.3`).
pub(crate) fn available() -> impl Iterator<Item = String> {
    INTERFACES.iter().map(|i| format!("{i}@0.3"))
}

/// The core's `wasi:http` view of a store, for the 0.3 bindings.
fn http_view<T: StoreData>(data: &mut T) -> WasiHttpCtxView<'_> {
    data.core_mut().http_view()
}

/// Adds the WASI 0.3 interfaces listed in [`INTERFACES`] to the linker of every store.
pub(crate) fn add_to_linker<T: StoreData>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    wasmtime_wasi::p3::cli::add_to_linker(linker)?;
    wasmtime_wasi::p3::clocks::add_to_linker(linker)?;
    wasmtime_wasi::p3::random::add_to_linker(linker)?;
    wasmtime_wasi_http::p3::bindings::http::types::add_to_linker::<T, WasiHttp>(
        linker,
        http_view::<T>,
    )?;
    Ok(())
}

/// Brings `request` into `store` for a 0.3 component and returns the guest's part of the run:
/// instantiate, call `wasi:http/handler#handle`, send its response (or its error code) on
/// `response`, then drive the store's event loop until every task of the guest has finished
/// (the body it streams included).
pub(crate) fn http<T: StoreData>(
    store: &mut Store<T>,
    pre: ServicePre<T>,
    request: http::Request<WasiBody>,
    response: ResponseSender,
) -> impl for<'a> FnOnce(&'a mut Store<T>) -> GuestFuture<'a> + Send + 'static {
    let trace = store.data().core().invocation().trace.clone();
    let (request, request_io) = {
        let view = http_view(store.data_mut());
        wasmtime_wasi_http::p3::Request::from_http(view.hooks, request)
    };
    move |store: &mut Store<T>| -> GuestFuture<'_> {
        Box::pin(async move {
            let span = crate::app::instantiate_span(trace.as_ref(), store.data().core());
            let service = pre.instantiate_async(&mut *store).await?;
            drop(span);
            store
                .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
                    let request = accessor.with(|mut access| {
                        http_view(access.get())
                            .table
                            .push(request)
                            .context("failed to bring the request into the store")
                    })?;
                    let answer = service
                        .wasi_http_handler()
                        .call_handle(accessor, request)
                        .await?;
                    match answer {
                        Ok(res) => {
                            let res = accessor.with(|mut access| {
                                let res = http_view(access.get())
                                    .table
                                    .delete(res)
                                    .context("failed to take the response from the store")?;
                                res.into_http_with_getter(&mut access, request_io, http_view::<T>)
                            })?;
                            // The client may have gone; the guest still runs to its end.
                            let _ = response.send(Ok(res));
                        }
                        Err(code) => {
                            let _ = response
                                .send(Err(ErrorCode::InternalError(Some(format!("{code:?}")))));
                        }
                    }
                    // The guest keeps running after it returned its response (e.g. the task
                    // writing the body): the run ends when all its tasks have.
                    poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                    Ok(())
                })
                .await?
        })
    }
}

/// How the instances of a 0.3 app are reused (from the node's [`Limits`](crate::Limits)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reuse {
    /// Requests one instance serves at once.
    pub(crate) max_concurrent: usize,
    /// Requests one instance serves in its life.
    pub(crate) max_reuse: usize,
    /// How long an idle instance is kept.
    pub(crate) idle: Duration,
    /// The wall-clock limit of one request.
    pub(crate) wall: Duration,
}

impl Reuse {
    /// The reuse the node's limits configure, if any (`None`: a fresh instance per request).
    pub(crate) fn from_limits(limits: &crate::Limits) -> Option<Reuse> {
        (limits.max_concurrent_per_instance > 1 || limits.max_reuse > 1).then_some(Reuse {
            max_concurrent: limits.max_concurrent_per_instance,
            max_reuse: limits.max_reuse,
            idle: limits.instance_idle_timeout,
            wall: limits.wall_time,
        })
    }
}

/// The instances of one deployed 0.3 app (one compiled form of it), reused under [`Reuse`]:
/// wasmtime-wasi-http's [`ProxyHandler`] runs each instance's event loop in its own task and
/// hands it requests while it accepts them. Every instance belongs to this app only (its own
/// store, with the app's tenant, settings and provider state).
pub(crate) type Pool<P> = ProxyHandler<Instances<P>>;

/// What a [`Pool`] needs to make a new instance of the app.
pub(crate) struct Instances<P: ProviderSet> {
    runtime: Arc<Runtime<P>>,
    engine: Engine,
    apps: Arc<P::Apps>,
    pre: ServicePre<P::Data>,
    /// The app's invocation (tenant, app, settings); each instance gets its own id.
    template: Invocation,
    reuse: Reuse,
    made: AtomicU64,
}

/// Makes the [`Pool`] of an app.
pub(crate) fn pool<P: ProviderSet>(
    runtime: Arc<Runtime<P>>,
    engine: Engine,
    apps: Arc<P::Apps>,
    pre: ServicePre<P::Data>,
    template: Invocation,
    reuse: Reuse,
) -> Pool<P> {
    ProxyHandler::new(Instances {
        runtime,
        engine,
        apps,
        pre,
        template,
        reuse,
        made: AtomicU64::new(0),
    })
}

impl<P: ProviderSet> HandlerState for Instances<P> {
    type StoreData = P::Data;
    type WorkerExpiration = Expiry;
    type WorkerState = InstanceState<P>;

    async fn instantiate(
        &self,
    ) -> wasmtime::Result<handler::Instance<P::Data, Expiry, InstanceState<P>>> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let mut invocation = self.template.clone();
        invocation.request_id = format!("instance-{n}").into();
        // A reused instance serves many requests, of as many traces: its host calls and
        // outgoing requests are not attributed to the first one.
        invocation.trace = None;
        let mut store = self
            .runtime
            .new_store(&self.engine, &self.apps, invocation.clone())
            .map_err(|e| wasmtime::format_err!("could not create a store: {e:#}"))?;
        // The CPU budget is the instance's: one request's budget for its instantiation, and one
        // more for every request it accepts (see `on_request_start`).
        let per_request_ns = store.data().core().cpu.budget_ns;
        // The pool runs the instance's event loop in a task of its own, not in `Turns::run`:
        // the instance passes through its tenant's turns at every epoch tick instead.
        store.data_mut().core_mut().cpu.outside_turns = true;
        let service = tokio::time::timeout(self.reuse.wall, self.pre.instantiate_async(&mut store))
            .await
            .map_err(|_| {
                wasmtime::format_err!("instantiation did not finish within the wall-clock limit")
            })??;
        tracing::info!(
            request_id = %invocation.request_id, tenant = %invocation.tenant,
            app = %invocation.app, "new instance of a 0.3 app (served by reuse)"
        );
        let (outcome, _) = watch::channel(None);
        let last_deadline = Arc::new(std::sync::Mutex::new(None));
        Ok(handler::Instance {
            store,
            proxy: handler::Proxy::P3(service),
            view: http_view::<P::Data>,
            expiration: Expiry {
                reuse: self.reuse,
                last_deadline: last_deadline.clone(),
                sleep: None,
            },
            state: InstanceState {
                reuse: self.reuse,
                invocation,
                heavy_after_ns: self.runtime.heavy_after_ns,
                per_request_ns,
                in_flight: AtomicUsize::new(0),
                last_deadline,
                outcome,
                _data: PhantomData,
            },
        })
    }
}

/// The per-request ticket through which a request learns the fault of the instance that
/// served it, if that instance failed.
pub(crate) type Ticket = Arc<OnceLock<watch::Receiver<Option<Fault>>>>;

/// One instance's state in a [`Pool`].
pub(crate) struct InstanceState<P: ProviderSet> {
    reuse: Reuse,
    invocation: Invocation,
    heavy_after_ns: u64,
    /// The CPU budget each accepted request adds to the instance's.
    per_request_ns: u64,
    /// The requests in flight on the instance when it last said it would accept one more
    /// (read when it accepts it; 0 for its first).
    in_flight: AtomicUsize,
    /// The latest wall-clock deadline of the requests it accepted (shared with its [`Expiry`]).
    last_deadline: Deadline,
    /// The instance's fault, once it failed (every request it was serving waits for it).
    outcome: watch::Sender<Option<Fault>>,
    _data: PhantomData<fn() -> P>,
}

impl<P: ProviderSet> WorkerState for InstanceState<P> {
    type StoreData = P::Data;
    type RequestData = Ticket;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        self.in_flight.store(concurrent, Ordering::Relaxed);
        if total >= self.reuse.max_reuse {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, P::Data>,
        ticket: Ticket,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let cpu = &mut store.data_mut().core_mut().cpu;
        cpu.budget_ns = cpu.budget_ns.saturating_add(self.per_request_ns);
        // The providers' per-request allowances (such as the outgoing requests it may make).
        let alone = self.in_flight.swap(0, Ordering::Relaxed) == 0;
        P::request_accepted(store.data_mut(), alone);
        let _ = ticket.set(self.outcome.subscribe());
        let deadline = tokio::time::Instant::now() + self.reuse.wall;
        {
            let mut last = self.last_deadline.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some(last.map_or(deadline, |d: tokio::time::Instant| d.max(deadline)));
        }
        Box::pin(tokio::time::sleep_until(deadline))
    }

    fn drop(&self, store: Store<P::Data>, result: wasmtime::Result<()>) {
        let core = store.data().core();
        if let Err(e) = result {
            let fault = Fault::classify(&e, &core.faults);
            let inv = &self.invocation;
            tracing::error!(
                request_id = %inv.request_id, tenant = %inv.tenant, app = %inv.app,
                fault = fault.kind(), cpu_ms = core.cpu.used_ns / 1_000_000,
                "instance failed, its requests in flight fail with it: {fault}"
            );
            self.outcome.send_replace(Some(fault));
        }
        if core.cpu.used_ns > self.heavy_after_ns || core.faults.memory_limit.is_some() {
            drop(tokio::task::spawn_blocking(move || drop(store)));
        }
    }
}

/// The latest wall-clock deadline of the requests an instance accepted.
type Deadline = Arc<std::sync::Mutex<Option<tokio::time::Instant>>>;

/// When an instance of a [`Pool`] is dropped: idle longer than the idle timeout, busy with a
/// request longer than the wall-clock limit, or busy after its responses (the guest's tasks
/// going on) past the wall-clock deadline of the last request it accepted — whatever it does
/// then, no request of its is waiting for it any more (a request that expired included: its
/// guest work, such as an outgoing request, ends with it). Polled from outside the instance's
/// event loop, so it holds even while a guest spins.
pub(crate) struct Expiry {
    reuse: Reuse,
    last_deadline: Deadline,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: std::time::Instant,
    ) -> Poll<()> {
        let start = tokio::time::Instant::from_std(start);
        let deadline = match status {
            WorkerStatus::Idle => start + self.reuse.idle,
            WorkerStatus::Requests => start + self.reuse.wall,
            WorkerStatus::PostReturn => {
                let last = *self.last_deadline.lock().unwrap_or_else(|p| p.into_inner());
                last.unwrap_or(start + self.reuse.wall)
            }
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

/// A response body that tells `done` when it ended or was dropped (the request is over).
struct Tracked {
    inner: WasiBody,
    done: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The run of one request on a [`Pool`]: it is handed to an instance that accepts it (a new
/// one when none does), its response sent on `response`; the run lasts until the response
/// body ended, within the wall-clock limit. When the instance fails (a trap, its CPU budget),
/// every request it was serving ends with the instance's fault; the next request gets another
/// instance.
pub(crate) fn pooled<P: ProviderSet>(
    pool: Pool<P>,
    invocation: Invocation,
    request: http::Request<WasiBody>,
    response: ResponseSender,
    wall: Duration,
) -> Run {
    let deadline = tokio::time::Instant::now() + wall;
    let limit_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
    Box::pin(async move {
        let ticket: Ticket = Arc::default();
        let work = async {
            match pool.handle(ticket.clone(), request).await {
                Ok(res) => {
                    let (done_tx, done_rx) = oneshot::channel();
                    let res = res.map(|inner| {
                        Tracked {
                            inner,
                            done: Some(done_tx),
                        }
                        .boxed_unsync()
                    });
                    if response.send(Ok(res)).is_ok() {
                        let _ = done_rx.await;
                    }
                    Ok(())
                }
                Err(e) => match request_fault(&e, &ticket, limit_ms).await {
                    Answer::Code(code) => {
                        let _ = response.send(Err(ErrorCode::InternalError(Some(code))));
                        Ok(())
                    }
                    Answer::Fault(fault) => Err(fault),
                },
            }
        };
        let result = match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(Fault::WallTimeout { limit_ms }),
        };
        if let Err(fault) = &result {
            tracing::error!(
                request_id = %invocation.request_id, tenant = %invocation.tenant,
                app = %invocation.app, fault = fault.kind(), "request failed: {fault}"
            );
        }
        result
    })
}

/// How a pooled request ended without a response.
enum Answer {
    /// The guest answered with this `error-code`.
    Code(String),
    /// It failed.
    Fault(Fault),
}

/// What `e` (from [`ProxyHandler::handle`]) means for the request.
async fn request_fault(e: &wasmtime::Error, ticket: &Ticket, limit_ms: u64) -> Answer {
    if let Some(code) = e.downcast_ref::<P3ErrorCode>() {
        return Answer::Code(format!("{code:?}"));
    }
    if e.is::<handler::ExpirationError>() {
        return Answer::Fault(Fault::WallTimeout { limit_ms });
    }
    if e.is::<handler::TrapOrPanicError>()
        && let Some(outcome) = ticket.get()
    {
        let mut outcome = outcome.clone();
        if let Ok(fault) = outcome.wait_for(Option::is_some).await
            && let Some(fault) = fault.clone()
        {
            return Answer::Fault(fault);
        }
    }
    Answer::Fault(Fault::Host(format!("{e:#}")))
}
