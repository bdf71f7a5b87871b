//! The core's part of every store: the WASI context, the resource table, the core's `wasi:http`
//! context, the limiter, the CPU meter and the faults seen. Its fields are private; providers
//! reach the store through a [`View`] of their own state.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks};
use zero_provider::{Invocation, Meter, View};

/// Limits applied to one guest instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestLimits {
    /// Maximum bytes of each linear memory.
    pub(crate) memory_bytes: usize,
    /// Maximum elements of each table.
    pub(crate) table_elements: usize,
    /// Maximum core instances in the store.
    pub(crate) instances: usize,
    /// Maximum tables in the store.
    pub(crate) tables: usize,
    /// Maximum linear memories in the store.
    pub(crate) memories: usize,
}

/// Which limit a guest ran into, recorded so that a following trap can be explained.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// A memory growth beyond the cap was refused.
    pub(crate) memory_limit: Option<usize>,
    /// A table growth beyond the cap was refused.
    pub(crate) table_limit: Option<usize>,
    /// The CPU budget ran out.
    pub(crate) cpu_limit: bool,
    /// The guest printed a Rust panic message on stderr.
    pub(crate) panicked: Arc<AtomicBool>,
    /// The panic's message and location as printed (the lines after `panicked at`), capped.
    pub(crate) panic_message: Arc<Mutex<String>>,
}

/// A guest's CPU meter, updated at every epoch tick while the guest runs.
#[derive(Debug, Default, Clone)]
pub(crate) struct CpuMeter {
    /// CPU time charged so far, in nanoseconds.
    pub(crate) used_ns: u64,
    /// The budget, in nanoseconds.
    pub(crate) budget_ns: u64,
    /// Epoch ticks at which the guest was found running.
    pub(crate) ticks: u64,
    /// Where and when the guest last resumed after yielding: its thread, that thread's CPU
    /// clock, and the wall clock.
    pub(crate) mark: Arc<Mutex<Option<CpuMark>>>,
    /// CPU time the guest ran in polls that ended since its last tick (see `Marked`).
    pub(crate) carried: Arc<std::sync::atomic::AtomicU64>,
    /// The turns host work done elsewhere on the request's behalf runs in, and the tenant
    /// they are charged to (see [`Meter::cpu_turns`]).
    pub(crate) share: Option<(Arc<crate::turns::Turns>, Arc<str>)>,
    /// The store is a reused WASI 0.3 instance, run outside [`Turns::run`]: at every epoch
    /// tick it passes through its tenant's turns ([`Turns::pass`]).
    ///
    /// [`Turns::run`]: crate::turns::Turns::run
    /// [`Turns::pass`]: crate::turns::Turns::pass
    pub(crate) outside_turns: bool,
}

/// A point at which a guest resumed running on a thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMark {
    /// The thread.
    pub(crate) thread: std::thread::ThreadId,
    /// The thread's CPU clock then, in nanoseconds.
    pub(crate) thread_cpu_ns: u64,
    /// The wall clock then.
    pub(crate) at: std::time::Instant,
}

impl Meter for CpuMeter {
    fn cpu_left(&self) -> Duration {
        Duration::from_nanos(self.budget_ns.saturating_sub(self.used_ns))
    }

    fn charge_cpu(&mut self, used: Duration) {
        let used = u64::try_from(used.as_nanos()).unwrap_or(u64::MAX);
        self.used_ns = self.used_ns.saturating_add(used);
    }

    fn cpu_turns(&self) -> Option<Arc<dyn zero_provider::CpuTurns>> {
        let (turns, tenant) = self.share.clone()?;
        Some(Arc::new(crate::turns::TenantTurns::new(turns, tenant)))
    }
}

/// The hooks of the core's own `wasi:http` view, used only to bring incoming requests into a
/// store (their forbidden headers are filtered by the default rule). Guests' outgoing requests
/// go through the outgoing-HTTP provider's view and policy, never through these.
struct DenyAllOutgoing;

impl WasiHttpHooks for DenyAllOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        tracing::warn!(uri = %request.uri(), "outgoing HTTP request denied: no outgoing HTTP is configured for this store");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The core's state in every store. The node's store data (generated by
/// [`providers!`](crate::providers)) holds one beside every provider's instance state.
pub struct CoreState {
    invocation: Invocation,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: DenyAllOutgoing,
    pub(crate) limits: GuestLimits,
    pub(crate) faults: Faults,
    pub(crate) cpu: CpuMeter,
    /// Told when this store is made and dropped (the node's metrics).
    observer: Option<Arc<dyn crate::Observer>>,
    /// Host-call spans this store opened, and host calls past
    /// [`MAX_HOST_CALL_SPANS`](zero_provider::trace::MAX_HOST_CALL_SPANS) left untraced.
    host_spans: (u32, u64),
}

impl Drop for CoreState {
    fn drop(&mut self) {
        if let Some(o) = &self.observer {
            o.instance_ended(&self.invocation, self.cpu.used_ns);
        }
        if let (Some(cx), untraced @ 1..) = (&self.invocation.trace, self.host_spans.1) {
            use zero_provider::trace::{KeyValue, TraceContextExt};
            let untraced = i64::try_from(untraced).unwrap_or(i64::MAX);
            cx.span()
                .set_attribute(KeyValue::new("zero.host_calls.untraced", untraced));
        }
    }
}

impl CoreState {
    pub(crate) fn new(
        invocation: Invocation,
        wasi: WasiCtx,
        limits: GuestLimits,
        faults: Faults,
        cpu_budget_ns: u64,
        turns: Arc<crate::turns::Turns>,
        observer: Option<Arc<dyn crate::Observer>>,
    ) -> Self {
        let share = Some((turns, invocation.tenant.clone()));
        if let Some(o) = &observer {
            o.instance_started(&invocation);
        }
        CoreState {
            invocation,
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: DenyAllOutgoing,
            limits,
            faults,
            cpu: CpuMeter {
                budget_ns: cpu_budget_ns,
                share,
                ..CpuMeter::default()
            },
            observer,
            host_spans: (0, 0),
        }
    }

    /// Who is running in this store.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    /// A provider's view of this store, over its `instance` state (see
    /// [`zero_provider::HasView`]).
    ///
    /// Each view is one host call of provider `provider` (its field name in the node's
    /// provider list): while traces are on and the invocation has a trace, the view holds a
    /// [`HOST_CALL`](zero_provider::trace::names::HOST_CALL) span that ends with it, if `traced`
    /// (the provider's [`TRACE_HOST_CALLS`](zero_provider::ResourceProvider::TRACE_HOST_CALLS))
    /// and the store has not reached
    /// [`MAX_HOST_CALL_SPANS`](zero_provider::trace::MAX_HOST_CALL_SPANS).
    #[inline]
    pub fn view<'a, I>(
        &'a mut self,
        instance: &'a mut I,
        provider: &'static str,
        traced: bool,
    ) -> View<'a, I> {
        let span = match (traced, &self.invocation.trace) {
            (true, Some(parent)) => {
                let parent = parent.clone();
                self.host_span(parent, provider)
            }
            _ => zero_provider::trace::Span::none(),
        };
        View::new(
            instance,
            &mut self.table,
            &self.invocation,
            &mut self.cpu,
            span,
        )
    }

    #[cold]
    fn host_span(
        &mut self,
        parent: zero_provider::trace::Context,
        provider: &'static str,
    ) -> zero_provider::trace::Span {
        use zero_provider::trace::{self, KeyValue};
        if self.host_spans.0 >= trace::MAX_HOST_CALL_SPANS {
            self.host_spans.1 += 1;
            return trace::Span::none();
        }
        self.host_spans.0 += 1;
        let (tenant, app) = (self.invocation.tenant.clone(), self.invocation.app.clone());
        trace::Span::child(
            Some(&parent),
            trace::names::HOST_CALL,
            trace::Kind::Internal,
            || {
                vec![
                    KeyValue::new("zero.provider", provider),
                    KeyValue::new("zero.tenant", tenant.to_string()),
                    KeyValue::new("zero.app", app.to_string()),
                ]
            },
        )
    }

    /// The WASI view of this store (the WASI base interfaces the core links).
    pub fn wasi_view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }

    /// The core's `wasi:http` view, through which event entries bring requests into the store.
    pub(crate) fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl wasmtime::ResourceLimiter for CoreState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.faults.memory_limit = Some(self.limits.memory_bytes);
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.faults.table_limit = Some(self.limits.table_elements);
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}
