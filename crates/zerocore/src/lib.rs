//! The zerocore runtime: one wasmtime engine per node, a component cache keyed by content hash,
//! ahead-of-time compiled artifacts on disk, per-request stores with limits, and the
//! classification of guest faults.
//!
//! The core owns no data and has no ambient authority: beside the WASI base (stdio to the log,
//! clocks, random, sockets with nothing behind them) and `wasi:http`'s incoming side, every host
//! interface a component can call comes from a [`ResourceProvider`] of the node's
//! [`ProviderSet`] (declared with [`providers!`]), and every request gets a fresh `Store` whose
//! CPU time, memory, tables and stack are bounded. The store's data is the core's private
//! [`CoreState`] beside each provider's instance state.
//!
//! The core also owns invocation for every event kind ([`App`]): a deployment's record with
//! every provider's per-app state, and running one event — a fresh store, instantiation, the
//! call, the wall-clock limit, the classification of faults and their log line. Event providers
//! (such as `zeroproxy` for HTTP) only turn their events into calls of an [`App`]'s entry.
//!
//! CPU time is metered with epoch interruption: a ticker thread advances the engine's epoch every
//! [`TICK`]; each time a running guest reaches a tick boundary it yields to the async executor (so
//! one busy guest cannot starve others) and is charged the CPU time its thread spent on it since
//! it last resumed (see `cpu_charge`); when its budget is spent the guest is stopped with
//! [`CpuLimitExceeded`].

#![deny(missing_docs)]

pub mod aot;
mod app;
pub mod command;
mod log;
mod p3;
mod providers;
mod state;
mod turns;
mod wasi;

pub use app::{App, ResponseSender, Run, TICK_HANDLER, Tick, Unavailable};
pub use providers::{__private, ProviderSet, StoreData};
pub use state::CoreState;
pub use zero_provider::{
    AppContext, AppSettings, HasView, Invocation, Meter, ResourceProvider, View,
};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use zero_provider::thread_cpu_ns;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Strategy, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;
use zero_component::{ContentHash, FormatError};

use crate::log::{GuestLog, GuestStream};
use crate::state::{CpuMark, CpuMeter, Faults, GuestLimits};

use crate::aot::ArtifactStore;

/// Length of one epoch tick, the granularity of CPU metering and the longest slice a guest
/// runs without yielding: whatever waits behind a busy guest on its thread (another tenant's
/// connection, a guest given a turn) waits at most this long. With 5 ms ticks the healthy
/// tenant's p99 under every abuser was 54 ms; with 1 ms ticks and turns handed on after the
/// worker polls for I/O (`turns`), 8–13 ms (`docs/reliability.md`).
pub const TICK: Duration = Duration::from_millis(1);

/// Limits applied to every request: `[limits]` in `zerocore.toml` (keys in brackets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU time a guest may use per request (`cpu_time_ms`).
    #[serde(
        rename = "cpu_time_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub cpu_time: Duration,
    /// Wall-clock time per request, response body included (enforced by event providers;
    /// `wall_time_ms`).
    #[serde(
        rename = "wall_time_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub wall_time: Duration,
    /// Maximum size of each linear memory (`memory`).
    #[serde(rename = "memory", deserialize_with = "zero_provider::settings::size")]
    pub memory_bytes: usize,
    /// Maximum elements of each table (`table_elements`).
    pub table_elements: usize,
    /// Maximum wasm stack (`max_stack`).
    #[serde(
        rename = "max_stack",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub max_stack_bytes: usize,
    /// Bytes of guest stdout+stderr logged per request and stream (`guest_log_bytes`).
    #[serde(
        rename = "guest_log_bytes",
        deserialize_with = "zero_provider::settings::size"
    )]
    pub log_bytes_per_request: usize,
    /// WASI 0.3 apps: requests one instance may serve at once (`max_concurrent_per_instance`).
    /// With this and [`max_reuse`](Limits::max_reuse) at 1 (the defaults) every 0.3 request
    /// gets a fresh instance, as every 0.2 request does.
    pub max_concurrent_per_instance: usize,
    /// WASI 0.3 apps: requests one instance may serve in its life (`max_reuse`).
    pub max_reuse: usize,
    /// WASI 0.3 apps: how long an instance with nothing to do is kept for the next request
    /// (`instance_idle_timeout_ms`).
    #[serde(
        rename = "instance_idle_timeout_ms",
        deserialize_with = "zero_provider::settings::millis"
    )]
    pub instance_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_time: Duration::from_millis(1000),
            wall_time: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            table_elements: 20_000,
            max_stack_bytes: 1 << 20,
            log_bytes_per_request: 256 << 10,
            max_concurrent_per_instance: 1,
            max_reuse: 1,
            instance_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// How the pooling allocator recycles the memory of a finished request's instance for the next
/// one: `[pool]` in `zerocore.toml` (keys in brackets).
///
/// Every request still gets a fresh instance in a fresh store; these settings only decide how a
/// slot's pages are reset to the component's initial image before the slot is used again.
/// Without them every linear memory and table is returned to the kernel with `madvise` after
/// each request (a system call, TLB shootdowns on every core running the node, and page faults
/// on the next use); with them up to that many bytes are reset in place (only the pages written
/// since the slot was last reset, where Linux's `PAGEMAP_SCAN` is available, else the lowest
/// bytes with `memset`) and stay resident, and the rest is still returned with `madvise`. The
/// cost is memory: at most `memory_keep_resident` (plus `table_keep_resident` per table) stays
/// resident for each warm slot, whichever app used it last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Bytes of each linear memory reset in place and kept resident (`memory_keep_resident`).
    #[serde(deserialize_with = "zero_provider::settings::size")]
    pub memory_keep_resident: usize,
    /// Bytes of each table reset in place and kept resident (`table_keep_resident`).
    #[serde(deserialize_with = "zero_provider::settings::size")]
    pub table_keep_resident: usize,
    /// Finished slots kept warm for reuse (`warm_slots`); a slot beyond them is returned to the
    /// kernel whole.
    pub warm_slots: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            memory_keep_resident: 2 << 20,
            table_keep_resident: 512 << 10,
            warm_slots: 100,
        }
    }
}

/// How the runtime is built.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Where compiled artifacts are kept (the node uses `DATA_DIR/aot` unless
    /// `[engine] artifact_dir` says otherwise). Nodes may share it.
    pub artifact_dir: PathBuf,
    /// The secret key file that authenticates artifacts (created if missing; the node uses
    /// `DATA_DIR/artifact.key` unless `[engine] artifact_key` says otherwise). Nodes share
    /// artifacts only when they share this key.
    pub artifact_key: PathBuf,
    /// Per-request limits.
    pub limits: Limits,
    /// Try the pooling allocator (falls back to on-demand allocation if it cannot reserve its
    /// address space).
    pub pooling: bool,
    /// Instances the pool can hold at once (should exceed the node's max concurrent requests).
    pub pool_instances: u32,
    /// How the pool recycles memory between requests.
    pub pool: PoolSettings,
    /// Tiered compilation: a component never compiled before is compiled with Winch (the
    /// baseline compiler, a fraction of Cranelift's time) and serves at once, while Cranelift
    /// compiles it in the background; its requests move to the optimized code (and the
    /// artifact on disk is written) when that is ready. Off: every new component is compiled
    /// with Cranelift before its first request.
    pub tiered_compilation: bool,
    /// CPU time after which a request's guest is heavy (`[engine] heavy_after_ms`): its
    /// tenant's light requests pass it when turns are scarce, and its store is dropped off the
    /// async workers.
    pub heavy_after: Duration,
    /// Guests running at once (`[engine] guest_slots`), in turns given fairly between
    /// tenants (see the crate's `turns` module); 0 means one per core.
    pub guest_slots: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            artifact_dir: PathBuf::from(".zero-data/aot"),
            artifact_key: PathBuf::from(".zero-data/artifact.key"),
            limits: Limits::default(),
            pooling: true,
            pool_instances: 300,
            pool: PoolSettings::default(),
            tiered_compilation: true,
            heavy_after: Duration::from_millis(10),
            guest_slots: 0,
        }
    }
}

/// Counters of how components were obtained, for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Components compiled from source bytes.
    pub compiled: AtomicU64,
    /// Components loaded from an AOT artifact on disk.
    pub aot_loaded: AtomicU64,
    /// Loads answered from the in-memory cache.
    pub cache_hits: AtomicU64,
    /// Artifacts found unusable (corrupted, foreign) and recompiled.
    pub aot_rejected: AtomicU64,
    /// Components compiled with the baseline compiler (tiered compilation) to serve at once.
    pub baseline_compiled: AtomicU64,
    /// Components whose requests moved from baseline to optimized code.
    pub optimized_later: AtomicU64,
}

/// What the core tells the node about the guests it runs, for its metrics: hooks called as
/// stores (instances) are made and dropped and as runs fail. Set once with
/// [`Runtime::set_observer`]; each hook must be quick and must not block.
pub trait Observer: Send + Sync {
    /// A store (one instance of an app) was made for `invocation`.
    fn instance_started(&self, invocation: &Invocation);
    /// The store made for `invocation` was dropped after charging `cpu_ns` nanoseconds of CPU
    /// time (a reused WASI 0.3 instance: what all its requests used).
    fn instance_ended(&self, invocation: &Invocation, cpu_ns: u64);
    /// A run (an HTTP request or a schedule tick) of `invocation` ended with `fault`.
    fn fault(&self, invocation: &Invocation, fault: &Fault);
}

/// Which compiler produced the code a component runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Winch, wasmtime's single-pass baseline compiler: compiles several times faster than
    /// Cranelift and runs slower. A newly deployed component runs it until its optimized code
    /// is ready (see [`CoreConfig::tiered_compilation`]).
    Baseline,
    /// Cranelift, optimizing. Artifacts on disk always hold this tier.
    Optimized,
}

/// One compiled form of a component, linked against the linker of the engine that compiled it
/// (a store for it must be created on that engine).
pub(crate) struct Compiled<P: ProviderSet> {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<P::Data>,
    pub(crate) tier: Tier,
}

/// A component ready to instantiate: its current compiled form, which moves from
/// [`Tier::Baseline`] to [`Tier::Optimized`] once (tiered compilation). Requests already
/// running keep the form they started with.
pub struct LoadedComponent<P: ProviderSet> {
    /// Its content hash.
    pub hash: ContentHash,
    current: RwLock<Arc<Compiled<P>>>,
}

impl<P: ProviderSet> LoadedComponent<P> {
    /// The compiler of the code new requests run.
    pub fn tier(&self) -> Tier {
        self.current().tier
    }

    /// The compiled form new requests use.
    pub(crate) fn current(&self) -> Arc<Compiled<P>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, compiled: Compiled<P>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(compiled);
    }
}

/// The baseline tier's engine (Winch, on-demand allocation) and its linker.
struct BaselineTier<P: ProviderSet> {
    engine: Engine,
    linker: Linker<P::Data>,
}

/// Background optimizations queued at most (beyond, a new component is compiled with
/// Cranelift before its first request, as without tiering).
const MAX_PENDING_OPTIMIZATIONS: usize = 16;
/// Bytes of component code the queued optimizations may hold at most.
const MAX_PENDING_OPTIMIZATION_BYTES: usize = 256 << 20;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a component (core module, not wasm, …).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// wasmtime refused to compile it.
    #[error("compiling {what} failed: {reason}")]
    Compile {
        /// The component's name.
        what: String,
        /// wasmtime's error.
        reason: String,
    },
    /// It imports interfaces that no provider on this node supplies.
    #[error(
        "{what} imports {}, which this node does not provide (available: {})",
        missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
        available.join(", ")
    )]
    MissingImports {
        /// The component's name.
        what: String,
        /// The imports that cannot be satisfied.
        missing: Vec<String>,
        /// The interfaces this node provides.
        available: Vec<String>,
    },
    /// Linking failed for another reason (e.g. a type mismatch).
    #[error("linking {what} failed: {reason}")]
    Link {
        /// The component's name.
        what: String,
        /// wasmtime's error.
        reason: String,
    },
}

/// Raised when a guest exhausts its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit of {limit_ms} ms exceeded")]
pub struct CpuLimitExceeded {
    /// The budget, in milliseconds.
    pub limit_ms: u64,
}

/// What went wrong in a guest, for logs and the status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The CPU budget ran out.
    CpuLimit {
        /// The budget in milliseconds.
        limit_ms: u64,
    },
    /// Memory growth beyond the cap was refused and the guest then failed.
    MemoryLimit {
        /// The cap in bytes.
        limit: usize,
    },
    /// Table growth beyond the cap was refused and the guest then failed.
    TableLimit {
        /// The cap in elements.
        limit: usize,
    },
    /// The wasm stack overflowed.
    StackOverflow,
    /// The guest panicked (Rust panics print a message, then trap): the message and where, as
    /// the guest printed them on stderr (empty if it printed none).
    Panic(String),
    /// Another trap (unreachable, out-of-bounds access, …).
    Trap(String),
    /// The wall-clock timeout expired.
    WallTimeout {
        /// The timeout in milliseconds.
        limit_ms: u64,
    },
    /// An error outside the guest's code (instantiation, host).
    Host(String),
    /// The guest returned an error from its entry (a schedule's `handle-tick`): it ran to the
    /// end, so the run is not retried.
    Returned(String),
}

impl Fault {
    /// Classifies an error returned by a guest call, using the limits recorded in the store.
    pub(crate) fn classify(err: &wasmtime::Error, faults: &Faults) -> Fault {
        if let Some(app::Returned(e)) = err.downcast_ref::<app::Returned>() {
            return Fault::Returned(e.clone());
        }
        if let Some(cpu) = err.downcast_ref::<CpuLimitExceeded>() {
            return Fault::CpuLimit {
                limit_ms: cpu.limit_ms,
            };
        }
        let trap = err.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::StackOverflow) {
            return Fault::StackOverflow;
        }
        if let Some(limit) = faults.memory_limit {
            return Fault::MemoryLimit { limit };
        }
        if let Some(limit) = faults.table_limit {
            return Fault::TableLimit { limit };
        }
        if faults.panicked.load(Ordering::Relaxed) {
            let message = faults
                .panic_message
                .lock()
                .map(|m| m.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            return Fault::Panic(message);
        }
        match trap {
            Some(t) => Fault::Trap(t.to_string()),
            None => Fault::Host(format!("{err:#}")),
        }
    }

    /// A short description safe to show to the client.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Fault::CpuLimit { .. } => "the app exceeded its CPU time limit",
            Fault::MemoryLimit { .. } => "the app exceeded its memory limit",
            Fault::TableLimit { .. } => "the app exceeded its table limit",
            Fault::StackOverflow => "the app overflowed its stack",
            Fault::Panic(_) => "the app panicked",
            Fault::Trap(_) => "the app trapped",
            Fault::WallTimeout { .. } => "the app did not finish within its time limit",
            Fault::Host(_) => "the app failed",
            Fault::Returned(_) => "the app reported an error",
        }
    }

    /// A stable machine-readable name (`cpu_limit`, `trap`, …) for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::CpuLimit { .. } => "cpu_limit",
            Fault::MemoryLimit { .. } => "memory_limit",
            Fault::TableLimit { .. } => "table_limit",
            Fault::StackOverflow => "stack_overflow",
            Fault::Panic(_) => "panic",
            Fault::Trap(_) => "trap",
            Fault::WallTimeout { .. } => "wall_timeout",
            Fault::Host(_) => "host_error",
            Fault::Returned(_) => "app_error",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::CpuLimit { limit_ms } => write!(f, "CPU time limit of {limit_ms} ms exceeded"),
            Fault::MemoryLimit { limit } => write!(
                f,
                "memory limit of {limit} bytes reached (a memory.grow was refused, then the guest failed)"
            ),
            Fault::TableLimit { limit } => write!(f, "table limit of {limit} elements reached"),
            Fault::StackOverflow => f.write_str("wasm stack overflow"),
            Fault::Panic(m) if m.is_empty() => {
                f.write_str("guest panicked (see its stderr lines above)")
            }
            Fault::Panic(m) => write!(f, "guest panicked: {m}"),
            Fault::Trap(t) => write!(f, "guest trapped: {t}"),
            Fault::WallTimeout { limit_ms } => {
                write!(f, "wall-clock timeout of {limit_ms} ms expired")
            }
            Fault::Host(e) => write!(f, "{e}"),
            Fault::Returned(e) => write!(f, "the app returned an error: {e}"),
        }
    }
}

/// A guest's future whose every poll first sets the store's CPU mark: a poll is the guest
/// resuming on this thread, so the next epoch tick charges what ran since then, never what
/// the thread did for other tasks while the guest awaited a host call (with the mark set only
/// at ticks, a request awaiting a 300 ms outgoing timeout was charged its thread's other work
/// meanwhile and failed with a CPU-limit fault on a busy node).
/// What the guest ran in polls that ended before the next tick is carried to that tick.
pub(crate) struct Marked<F> {
    pub(crate) guest: F,
    pub(crate) mark: Arc<Mutex<Option<CpuMark>>>,
    pub(crate) carried: Arc<AtomicU64>,
}

impl<F: std::future::Future + Unpin> std::future::Future for Marked<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        set_mark(&self.mark);
        let polled = std::pin::Pin::new(&mut self.guest).poll(cx);
        let mark = *self.mark.lock().unwrap_or_else(|p| p.into_inner());
        self.carried
            .fetch_add(since_mark(mark).unwrap_or(0), Ordering::Relaxed);
        polled
    }
}

/// The CPU time this thread used since `mark`, capped by the wall time since then, if the
/// mark was set on this thread.
fn since_mark(mark: Option<CpuMark>) -> Option<u64> {
    match (mark, thread_cpu_ns()) {
        (Some(m), Some(now)) if m.thread == std::thread::current().id() => {
            let wall = u64::try_from(m.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            Some(now.saturating_sub(m.thread_cpu_ns).min(wall))
        }
        _ => None,
    }
}

fn set_mark(mark: &Mutex<Option<CpuMark>>) {
    if let Some(thread_cpu_ns) = thread_cpu_ns() {
        *mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(CpuMark {
            thread: std::thread::current().id(),
            thread_cpu_ns,
            at: std::time::Instant::now(),
        });
    }
}

/// What to charge a guest at an epoch tick.
///
/// When the guest resumed on this same thread after its last tick (the mark), it is charged
/// the thread's CPU time since then, capped by the wall time since then: time the operating
/// system gave to other threads is not charged, and CPU that other tasks used on this thread
/// while the guest awaited a host call is bounded by the wall clock. Otherwise (first tick, or
/// the guest moved threads while awaiting a host call) it is charged one tick. The mark is set
/// at every resume ([`Marked`], each poll of the guest's future) and at every tick; what the
/// guest ran in polls that ended since the last tick is carried to this one.
fn cpu_charge(cpu: &CpuMeter) -> u64 {
    let tick = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
    let mark = *cpu.mark.lock().unwrap_or_else(|p| p.into_inner());
    let now = since_mark(mark).unwrap_or(tick);
    // Restart the measure here: what runs from now until this poll ends is carried.
    set_mark(&cpu.mark);
    now.saturating_add(cpu.carried.swap(0, Ordering::Relaxed))
}

/// The node's component runtime, generic over the node's [`ProviderSet`]. Cheap to share
/// behind an `Arc`.
pub struct Runtime<P: ProviderSet> {
    engine: Engine,
    linker: Linker<P::Data>,
    providers: P,
    artifacts: ArtifactStore,
    /// Components by content hash, held only while something (an app) uses them: code no app
    /// uses is dropped with its last user, so the cache is bounded by what is deployed.
    cache: Mutex<HashMap<ContentHash, Weak<LoadedComponent<P>>>>,
    limits: Limits,
    stats: Stats,
    pooling: bool,
    ticker_stop: Arc<AtomicBool>,
    /// The baseline tier, when tiered compilation is on (and Winch is available).
    baseline: Option<BaselineTier<P>>,
    /// Background optimizations queued or running, and the code bytes they hold.
    pending: AtomicUsize,
    pending_bytes: AtomicUsize,
    /// Held while one background optimization runs: they run one at a time, so a burst of
    /// deploys costs one core, not all of them.
    optimizing: Mutex<()>,
    /// Components with a background optimization queued or running (see [`Queued`]), so that
    /// an artifact released while its optimization runs is not left behind by it.
    queued: Mutex<HashMap<ContentHash, Queued>>,
    /// The threads components are compiled on (see [`COMPILE_NICENESS`]).
    compile_pool: rayon::ThreadPool,
    /// The turns guests run in, shared fairly between tenants (see `turns`).
    pub(crate) turns: Arc<turns::Turns>,
    /// CPU time after which a guest is heavy, in nanoseconds.
    pub(crate) heavy_after_ns: u64,
    /// The node's [`Observer`], once set.
    observer: OnceLock<Arc<dyn Observer>>,
}

/// How much lower than the rest of the node the compile threads are scheduled (Linux `nice`
/// value, per thread): a compile uses every core that is idle, but a core that is also needed to
/// serve requests goes mostly to the requests, so that deploys (one tenant's deploy storm
/// included) cannot slow other tenants' requests much. Elsewhere compile threads run at the
/// normal priority.
pub const COMPILE_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`COMPILE_NICENESS`] (best effort: a
/// refusal is logged and the thread keeps its priority).
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on Linux,
        // `PRIO_PROCESS` with a thread id changes that thread only.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, COMPILE_NICENESS)
        };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a compile thread; compiles compete with requests at the same priority"
            );
        }
    }
}

impl<P: ProviderSet> Drop for Runtime<P> {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Builds the wasmtime configuration shared by the node.
fn engine_config(limits: &Limits, pool: Option<(u32, &PoolSettings)>) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    // WASI 0.3 components (async exports, streams and futures); see `p3`.
    cfg.wasm_component_model_async(true);
    cfg.epoch_interruption(true);
    cfg.max_wasm_stack(limits.max_stack_bytes);
    cfg.async_stack_size(limits.max_stack_bytes + (1 << 20));
    cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some((instances, settings)) = pool {
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(instances);
        p.total_core_instances(instances.saturating_mul(8));
        p.total_memories(instances.saturating_mul(2));
        p.total_tables(instances.saturating_mul(4));
        p.total_stacks(instances);
        p.max_memories_per_component(4);
        p.max_tables_per_component(8);
        p.max_core_instances_per_component(16);
        p.max_memory_size(limits.memory_bytes);
        p.table_elements(limits.table_elements);
        p.max_unused_warm_slots(instances.min(settings.warm_slots));
        p.linear_memory_keep_resident(settings.memory_keep_resident);
        p.table_keep_resident(settings.table_keep_resident);
        // Reset only the pages a request wrote, where the kernel can say which (Linux 6.7+).
        p.pagemap_scan(wasmtime::Enabled::Auto);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    cfg
}

impl<P: ProviderSet> Runtime<P> {
    /// Builds the engine (pooling allocator when possible), the linker with the WASI base and
    /// every provider's interfaces, the artifact store, and starts the epoch ticker.
    pub fn new(config: &CoreConfig, providers: P) -> anyhow::Result<Self> {
        let limits = config.limits.clone();
        let (engine, pooling) = if config.pooling {
            match Engine::new(&engine_config(
                &limits,
                Some((config.pool_instances, &config.pool)),
            )) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "the pooling allocator could not reserve its address space; falling back to on-demand allocation (slower instantiation)"
                    );
                    (Engine::new(&engine_config(&limits, None))?, false)
                }
            }
        } else {
            (Engine::new(&engine_config(&limits, None))?, false)
        };
        tracing::info!(pooling, "wasmtime engine ready");

        let linker = Self::new_linker(&engine)?;
        let baseline = if config.tiered_compilation {
            let mut cfg = engine_config(&limits, None);
            cfg.strategy(Strategy::Winch);
            match Engine::new(&cfg) {
                Ok(engine) => Some(BaselineTier {
                    linker: Self::new_linker(&engine)?,
                    engine,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "the baseline compiler (Winch) is not available here; new components are compiled with Cranelift before they serve");
                    None
                }
            }
        } else {
            None
        };
        let key = aot::ArtifactKey::load_or_create(&config.artifact_key).map_err(|e| {
            anyhow::anyhow!(
                "cannot read or create the artifact key {}: {e}",
                config.artifact_key.display()
            )
        })?;
        let artifacts = ArtifactStore::open(&config.artifact_dir, &engine, key).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the artifact directory under {}: {e}",
                config.artifact_dir.display()
            )
        })?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        // Every engine's guests are metered by the same ticker, and asked to yield early
        // together when a turn is wanted by a more entitled guest (see `turns`).
        let mut engines = vec![engine.weak()];
        engines.extend(baseline.as_ref().map(|b| b.engine.weak()));
        {
            let engines = engines.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("zerocore-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        for engine in &engines {
                            match engine.upgrade() {
                                Some(e) => e.increment_epoch(),
                                None => return,
                            }
                        }
                    }
                })?;
        }
        let preempt = Box::new(move || {
            for engine in engines.iter().filter_map(|e| e.upgrade()) {
                engine.increment_epoch();
            }
        });

        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let compile_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("zerocore-compile-{i}"))
            .start_handler(|_| lower_own_priority())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the compile threads: {e}"))?;

        let guest_slots = match config.guest_slots {
            0 => threads,
            n => n,
        };
        Ok(Runtime {
            compile_pool,
            turns: turns::Turns::new(guest_slots, config.heavy_after, preempt),
            heavy_after_ns: u64::try_from(config.heavy_after.as_nanos()).unwrap_or(u64::MAX),
            engine,
            linker,
            providers,
            artifacts,
            cache: Mutex::new(HashMap::new()),
            limits,
            stats: Stats::default(),
            observer: OnceLock::new(),
            pooling,
            ticker_stop,
            baseline,
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            optimizing: Mutex::new(()),
            queued: Mutex::new(HashMap::new()),
        })
    }

    /// A linker for `engine` with the WASI base and every provider's interfaces.
    fn new_linker(engine: &Engine) -> anyhow::Result<Linker<P::Data>> {
        let mut linker = Linker::new(engine);
        wasi::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("the WASI base failed to register: {e:#}"))?;
        P::add_to_linker(&mut linker)?;
        p3::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("the WASI 0.3 interfaces failed to register: {e:#}"))?;
        Ok(linker)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The node's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Load counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The node's resource providers.
    pub fn providers(&self) -> &P {
        &self.providers
    }

    /// The WIT interfaces the core and all providers supply (without versions, except a
    /// provider's WASI 0.3 interfaces, named `…@0.3`).
    pub fn provided_interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = wasi::INTERFACES.iter().map(|s| s.to_string()).collect();
        v.extend(self.providers.interfaces());
        v.sort();
        v.dedup();
        v
    }

    /// Validates, compiles (or loads the AOT artifact of) and links a component. Identical bytes
    /// are compiled once per engine, across restarts.
    ///
    /// With tiered compilation, a component with no artifact yet is compiled with the baseline
    /// compiler and returned at once, and its optimized compilation is queued on a background
    /// thread (one at a time); when it is done the artifact is written and the component's new
    /// requests run the optimized code. When the queue is full, or the baseline compiler
    /// refuses the component, it is compiled with Cranelift here, as without tiering.
    ///
    /// This is CPU-heavy on a miss: call it from a blocking thread in async code.
    pub fn load(
        self: &Arc<Self>,
        bytes: &[u8],
        what: &str,
    ) -> Result<Arc<LoadedComponent<P>>, LoadError> {
        zero_component::expect_component(bytes, what)?;
        let hash = zero_component::content_hash(bytes)?;
        if let Some(hit) = self.lock_cache().get(&hash).and_then(Weak::upgrade) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%hash, app = what, "component served from the in-memory cache");
            self.in_use_again(&hash);
            return Ok(hit);
        }
        self.in_use_again(&hash);
        let compiled = match self.load_artifact(&hash, what) {
            Some(component) => self.optimized(component, bytes, what)?,
            None => match self.baseline(bytes, &hash, what) {
                Some(compiled) => compiled,
                None => {
                    let component = self.compile_optimized(bytes, &hash, what)?;
                    self.optimized(component, bytes, what)?
                }
            },
        };
        let tier = compiled.tier;
        let loaded = Arc::new(LoadedComponent {
            hash,
            current: RwLock::new(Arc::new(compiled)),
        });
        if tier == Tier::Baseline {
            self.optimize_later(&loaded, bytes, what);
        }
        let mut cache = self.lock_cache();
        cache.retain(|_, entry| entry.strong_count() > 0);
        cache.insert(hash, Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// The baseline tier's compilation of `bytes`, when tiered compilation is on, a
    /// background optimization can be queued, and Winch accepts the component. Reserves the
    /// queue slot that [`Runtime::optimize_later`] uses.
    fn baseline(&self, bytes: &[u8], hash: &ContentHash, what: &str) -> Option<Compiled<P>> {
        let tier = self.baseline.as_ref()?;
        let pending = self.pending.fetch_add(1, Ordering::AcqRel);
        let pending_bytes = self.pending_bytes.fetch_add(bytes.len(), Ordering::AcqRel);
        let release = || {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.pending_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
        };
        if pending >= MAX_PENDING_OPTIMIZATIONS
            || pending_bytes.saturating_add(bytes.len()) > MAX_PENDING_OPTIMIZATION_BYTES
        {
            release();
            tracing::info!(
                app = what,
                pending,
                "background optimizations are queued to the limit; compiling with Cranelift now"
            );
            return None;
        }
        let start = std::time::Instant::now();
        // On the compile threads, as the optimizing tier: a deploy storm's baseline compiles
        // then take the cores only when requests leave them idle (this thread waits).
        let compiled = self
            .compile_pool
            .install(|| Component::new(&tier.engine, bytes))
            .map_err(|e| format!("{e:#}"))
            .and_then(|c| {
                tier.linker
                    .instantiate_pre(&c)
                    .map_err(|e| format!("{e:#}"))
            });
        match compiled {
            Ok(pre) => {
                self.stats.baseline_compiled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    %hash,
                    app = what,
                    tier = "baseline",
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    "compiled component"
                );
                Some(Compiled {
                    engine: tier.engine.clone(),
                    pre,
                    tier: Tier::Baseline,
                })
            }
            Err(reason) => {
                release();
                tracing::info!(app = what, %reason, "the baseline compiler refused the component; compiling with Cranelift now");
                None
            }
        }
    }

    /// Queues the optimized compilation of `loaded` (whose queue slot [`Runtime::baseline`]
    /// reserved) on a background thread. It is skipped if nothing uses the component by then.
    fn optimize_later(
        self: &Arc<Self>,
        loaded: &Arc<LoadedComponent<P>>,
        bytes: &[u8],
        what: &str,
    ) {
        self.lock_queued().entry(loaded.hash).or_default().jobs += 1;
        let job = OptimizeJob {
            runtime: self.clone(),
            loaded: Arc::downgrade(loaded),
            hash: loaded.hash,
            bytes: bytes.to_vec(),
            what: what.to_string(),
        };
        // A thread per queued job, run one at a time under `optimizing`; the queue is bounded.
        let spawned = std::thread::Builder::new()
            .name("zerocore-optimize".into())
            .spawn(move || job.run());
        if let Err(e) = spawned {
            tracing::warn!(app = what, error = %e, "could not start the background optimization; the component keeps its baseline code until the next restart");
            self.job_ended(&loaded.hash);
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.pending_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
    }

    /// Whether no background optimization is queued or running.
    pub fn optimizations_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Deletes the compiled artifact of the component `hash` from the artifact directory, once
    /// no app of this node uses that component any more (its app was replaced or removed, or
    /// its deploy refused), so that the directory holds what is deployed rather than
    /// everything ever deployed. Components still in memory stay usable; a node sharing the
    /// directory that still runs the component compiles it again at its next start.
    ///
    /// An optimization of the component queued or running now writes its artifact later: it
    /// is marked released, and the job deletes what it wrote when it ends, even if a request
    /// in flight still holds the component then.
    pub fn remove_artifact(&self, hash: &ContentHash) {
        let mut queued = self.lock_queued();
        self.artifacts.remove(hash);
        if let Some(q) = queued.get_mut(hash) {
            q.released = true;
        }
    }

    /// A deploy uses the component `hash` again: an optimization of it queued or running keeps
    /// its artifact after all.
    fn in_use_again(&self, hash: &ContentHash) {
        if let Some(q) = self.lock_queued().get_mut(hash) {
            q.released = false;
        }
    }

    /// One background optimization of `hash` ended (after writing its artifact, if it did):
    /// if no app uses the component any more, the artifact goes. Returns whether it did.
    fn job_ended(&self, hash: &ContentHash) -> bool {
        let mut queued = self.lock_queued();
        let Some(q) = queued.get_mut(hash) else {
            return false;
        };
        let released = q.released;
        q.jobs -= 1;
        if q.jobs == 0 {
            queued.remove(hash);
        }
        if released {
            self.artifacts.remove(hash);
        }
        released
    }

    fn lock_queued(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Queued>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the [`Observer`] told about every store and fault from now on. Only the first call
    /// counts; a later one returns `false`.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// The observer, if one is set.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.get()
    }

    /// How many loaded components are in memory (held by some user).
    pub fn cached_components(&self) -> usize {
        self.lock_cache()
            .values()
            .filter(|e| e.strong_count() > 0)
            .count()
    }

    fn lock_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Weak<LoadedComponent<P>>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The component from its artifact on disk, if there is a usable one (a corrupted or
    /// foreign artifact is removed, so that it is compiled again).
    fn load_artifact(&self, hash: &ContentHash, what: &str) -> Option<Component> {
        match self.artifacts.read(hash) {
            Ok(Some(artifact)) => {
                // SAFETY: the artifact was written by this node (ArtifactStore::write) from
                // `Engine::precompile_component` output, and its SHA-256 trailer was verified just
                // now, so these are exactly the bytes wasmtime produced. wasmtime additionally
                // checks the engine compatibility header and refuses foreign artifacts.
                match unsafe { Component::deserialize(&self.engine, &artifact) } {
                    Ok(c) => {
                        self.stats.aot_loaded.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%hash, app = what, source = "aot", "loaded precompiled artifact from disk");
                        return Some(c);
                    }
                    Err(e) => {
                        self.stats.aot_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%hash, app = what, error = %e, "precompiled artifact is not usable by this engine; recompiling");
                        self.artifacts.remove(hash);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.aot_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%hash, app = what, error = %e, "precompiled artifact rejected; recompiling");
                self.artifacts.remove(hash);
            }
        }
        None
    }

    /// Compiles `bytes` with Cranelift and stores the artifact.
    fn compile_optimized(
        &self,
        bytes: &[u8],
        hash: &ContentHash,
        what: &str,
    ) -> Result<Component, LoadError> {
        let start = std::time::Instant::now();
        // On the compile threads (lower priority; wasmtime's parallel compilation uses the
        // pool it is called from); this thread waits.
        let artifact = self
            .compile_pool
            .install(|| self.engine.precompile_component(bytes))
            .map_err(|e| LoadError::Compile {
                what: what.to_string(),
                reason: format!("{e:#}"),
            })?;
        // SAFETY: `artifact` was produced by `precompile_component` on this very engine a moment
        // ago and has not left this function.
        let component =
            unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(|e| {
                LoadError::Compile {
                    what: what.to_string(),
                    reason: format!("{e:#}"),
                }
            })?;
        self.stats.compiled.fetch_add(1, Ordering::Relaxed);
        // Logged once the artifact is on disk (or could not be stored): a node stopped after
        // this line finds it at its next start.
        if let Err(e) = self.artifacts.write(hash, &artifact) {
            tracing::warn!(%hash, error = %e, "could not store the precompiled artifact; it will be compiled again after a restart");
        }
        tracing::info!(%hash, app = what, source = "compile", tier = "optimized", elapsed_ms = start.elapsed().as_millis() as u64, "compiled component");
        Ok(component)
    }

    /// The optimized tier's compiled form of `component`, linked.
    fn optimized(
        &self,
        component: Component,
        bytes: &[u8],
        what: &str,
    ) -> Result<Compiled<P>, LoadError> {
        Ok(Compiled {
            engine: self.engine.clone(),
            pre: self.link(&component, bytes, what)?,
            tier: Tier::Optimized,
        })
    }

    fn link(
        &self,
        component: &Component,
        bytes: &[u8],
        what: &str,
    ) -> Result<InstancePre<P::Data>, LoadError> {
        match self.linker.instantiate_pre(component) {
            Ok(pre) => Ok(pre),
            Err(e) => {
                let provided = self.provided_interfaces();
                let imports = zero_component::inspect(bytes, what)
                    .map(|i| i.imports)
                    .unwrap_or_default();
                let missing: Vec<String> = imports
                    .into_iter()
                    .filter(|imp| {
                        let unversioned = imp.split('@').next().unwrap_or(imp);
                        if p3::is_p3(imp) {
                            // A provider names its 0.3 interfaces with `@0.3`.
                            let p3_name = format!("{unversioned}@0.3");
                            return !p3::provides(imp) && !provided.contains(&p3_name);
                        }
                        !provided.iter().any(|p| p == unversioned)
                    })
                    .collect();
                if missing.is_empty() {
                    Err(LoadError::Link {
                        what: what.to_string(),
                        reason: format!("{e:#}"),
                    })
                } else {
                    let mut available = provided;
                    if missing.iter().any(|m| p3::is_p3(m)) {
                        available.extend(p3::available());
                    }
                    Err(LoadError::MissingImports {
                        what: what.to_string(),
                        missing,
                        available,
                    })
                }
            }
        }
    }

    /// Creates a fresh store for one invocation of an app: WASI with the guest's stdio going to
    /// the log, no network, every provider's instance state (from the app's per-deployment
    /// state), the memory/table limiter and the CPU meter.
    fn new_store(
        &self,
        engine: &Engine,
        apps: &P::Apps,
        invocation: Invocation,
    ) -> anyhow::Result<Store<P::Data>> {
        let faults = Faults::default();
        let budget = self.limits.log_bytes_per_request;
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(GuestLog::new(
                invocation.clone(),
                GuestStream::Stdout,
                budget,
                faults.panicked.clone(),
                faults.panic_message.clone(),
            ))
            .stderr(GuestLog::new(
                invocation.clone(),
                GuestStream::Stderr,
                budget,
                faults.panicked.clone(),
                faults.panic_message.clone(),
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let cpu_ms = u64::try_from(self.limits.cpu_time.as_millis()).unwrap_or(u64::MAX);
        let limits = GuestLimits {
            memory_bytes: self.limits.memory_bytes,
            table_elements: self.limits.table_elements,
            instances: 64,
            tables: 64,
            memories: 16,
        };
        let cpu_ns = u64::try_from(self.limits.cpu_time.as_nanos()).unwrap_or(u64::MAX);
        let core = CoreState::new(
            invocation,
            builder.build(),
            limits,
            faults,
            cpu_ns,
            self.turns.clone(),
            self.observer().cloned(),
        );
        let data = self.providers.store_data(apps, core)?;
        let mut store = Store::new(engine, data);
        store.limiter(|s| s.core_mut());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut().core_mut();
            state.cpu.ticks += 1;
            let slice_ns = cpu_charge(&state.cpu);
            state.cpu.used_ns = state.cpu.used_ns.saturating_add(slice_ns);
            if state.cpu.used_ns > state.cpu.budget_ns {
                state.faults.cpu_limit = true;
                return Err(wasmtime::Error::new(CpuLimitExceeded { limit_ms: cpu_ms }));
            }
            // The guest yields: its slice ends and its turn goes to whoever is most entitled
            // to it (see `turns`); it resumes when it has a turn again, on this thread right
            // after this future completes.
            let mark = state.cpu.mark.clone();
            // A reused 0.3 instance is not run in turns: its slice is charged to its tenant
            // here, and it waits for its tenant's turn before it goes on.
            let pass = match (&state.cpu.share, state.cpu.outside_turns) {
                (Some((turns, tenant)), true) => {
                    Some(turns.pass(tenant.clone(), slice_ns, state.cpu.used_ns))
                }
                _ => None,
            };
            turns::yielding();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    if let Some(pass) = pass {
                        pass.await;
                    }
                    set_mark(&mark);
                }),
            ))
        });
        Ok(store)
    }
}

/// The background optimizations of one component queued or running.
#[derive(Default)]
struct Queued {
    /// How many (a component dropped and deployed again may have a stale job still queued).
    jobs: usize,
    /// No app uses the component any more ([`Runtime::remove_artifact`] was called since).
    released: bool,
}

/// A queued background optimization (see [`Runtime::load`]).
struct OptimizeJob<P: ProviderSet> {
    runtime: Arc<Runtime<P>>,
    loaded: Weak<LoadedComponent<P>>,
    hash: ContentHash,
    bytes: Vec<u8>,
    what: String,
}

impl<P: ProviderSet> OptimizeJob<P> {
    /// Runs the job, then logs how it ended in one line naming the component's hash, once the
    /// artifact is where it stays (kept, or deleted because no app uses the component).
    fn run(self) {
        let rt = &self.runtime;
        // From the queueing to the end: how long the component ran baseline code.
        let start = std::time::Instant::now();
        let optimized = {
            let _one_at_a_time = rt.optimizing.lock().unwrap_or_else(|p| p.into_inner());
            self.optimize()
        };
        let released = rt.job_ended(&self.hash);
        let (hash, app) = (self.hash, &self.what);
        match optimized {
            None => {}
            Some(false) => {
                tracing::info!(%hash, %app, "the component was replaced or removed before its background optimization; skipped")
            }
            Some(true) if released => {
                tracing::info!(%hash, %app, "the component was replaced or removed while it was optimized; its artifact is deleted")
            }
            Some(true) => {
                tracing::info!(%hash, %app, elapsed_ms = start.elapsed().as_millis() as u64, "optimized code ready; new requests run it")
            }
        }
        rt.pending_bytes
            .fetch_sub(self.bytes.len(), Ordering::AcqRel);
        rt.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Compiles the component with Cranelift and switches it to the optimized code. `None` if
    /// the compiler failed (logged here), `Some(false)` if nothing used the component any more
    /// before it started (skipped), `Some(true)` if the artifact was written.
    fn optimize(&self) -> Option<bool> {
        let rt = &self.runtime;
        let hash = self.hash;
        // Nothing uses it any more (replaced or removed while queued): nothing to do.
        if self.loaded.upgrade().is_none() {
            return Some(false);
        }
        let compiled = rt
            .compile_optimized(&self.bytes, &hash, &self.what)
            .and_then(|c| rt.optimized(c, &self.bytes, &self.what));
        match (compiled, self.loaded.upgrade()) {
            (Ok(compiled), Some(loaded)) => {
                loaded.replace(compiled);
                rt.stats.optimized_later.fetch_add(1, Ordering::Relaxed);
            }
            // Replaced or removed while it compiled: its artifact is not kept either
            // (marked released, `job_ended` deletes it).
            (Ok(_), None) => rt.remove_artifact(&hash),
            (Err(e), _) => {
                tracing::warn!(%hash, app = %self.what, error = %e, "the optimizing compiler failed; the component keeps its baseline code");
                return None;
            }
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::providers! {
        /// No providers: the WASI base only.
        struct NoProviders, data NoData, apps NoApps {}
    }

    /// A runtime configuration under `dir`, without the pooling allocator.
    fn test_config(dir: &std::path::Path) -> CoreConfig {
        CoreConfig {
            artifact_dir: dir.join("aot"),
            artifact_key: dir.join("artifact.key"),
            pooling: false,
            ..CoreConfig::default()
        }
    }

    #[test]
    fn refuses_core_modules_and_garbage_before_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        let module = wasm_encoder::Module::new().finish();
        let err = rt.load(&module, "m.wasm").err().unwrap().to_string();
        assert!(
            err.contains("core module") && err.contains("zero convert"),
            "{err}"
        );
        let err = rt.load(b"hello", "g.wasm").err().unwrap().to_string();
        assert!(err.contains("not a WebAssembly binary"), "{err}");
    }

    #[test]
    fn pooling_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let ok = CoreConfig {
            artifact_dir: dir.path().join("aot"),
            artifact_key: dir.path().join("artifact.key"),
            pool_instances: 8,
            ..CoreConfig::default()
        };
        assert!(Runtime::new(&ok, NoProviders {}).unwrap().pooling());
        // Far more slots than any address space can hold.
        let huge = CoreConfig {
            pool_instances: u32::MAX / 4,
            ..ok
        };
        let rt = Arc::new(Runtime::new(&huge, NoProviders {}).unwrap());
        assert!(!rt.pooling());
        rt.load(&wasm_encoder::Component::new().finish(), "c")
            .unwrap();
    }

    /// A component with real code for both compilers.
    fn component_with_code() -> Vec<u8> {
        wat::parse_str(
            r#"(component
                (core module $m
                  (memory 1)
                  (func (export "sum") (param i32) (result i32)
                    (local $acc i32)
                    (loop $l
                      (local.set $acc (i32.add (local.get $acc) (local.get 0)))
                      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
                      (br_if $l (local.get 0)))
                    (local.get $acc)))
                (core instance (instantiate $m)))"#,
        )
        .unwrap()
    }

    fn wait_for_optimizations<P: ProviderSet>(rt: &Runtime<P>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !rt.optimizations_done() {
            assert!(
                std::time::Instant::now() < deadline,
                "optimization never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn an_optimization_finishing_after_its_component_was_released_leaves_no_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let component = component_with_code();
        let hash = zero_component::content_hash(&component).unwrap();
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        // The optimization waits (as behind others) while the app is replaced; a request in
        // flight still holds the component when the optimization writes its artifact.
        let gate = rt.optimizing.lock().unwrap();
        let in_flight = rt.load(&component, "c").unwrap();
        assert_eq!(in_flight.tier(), Tier::Baseline);
        rt.remove_artifact(&hash);
        drop(gate);
        wait_for_optimizations(&rt);
        assert_eq!(
            in_flight.tier(),
            Tier::Optimized,
            "the holder runs optimized code"
        );
        assert!(
            !rt.artifacts.path(&hash).exists(),
            "the artifact of a component no app uses was left behind"
        );
        drop(in_flight);

        // Released, then deployed again before the optimization ends: the artifact is kept.
        let gate = rt.optimizing.lock().unwrap();
        let first = rt.load(&component, "c").unwrap();
        assert_eq!(first.tier(), Tier::Baseline);
        rt.remove_artifact(&hash);
        let again = rt.load(&component, "c").unwrap();
        drop(gate);
        wait_for_optimizations(&rt);
        assert_eq!(again.tier(), Tier::Optimized);
        assert!(
            rt.artifacts.path(&hash).exists(),
            "the artifact of a component deployed again was deleted"
        );
        assert!(rt.lock_queued().is_empty());
    }

    #[test]
    fn tiered_compilation_serves_baseline_code_then_moves_to_optimized_code() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        assert!(cfg.tiered_compilation, "on by default");
        let component = component_with_code();
        let hash = zero_component::content_hash(&component).unwrap();
        {
            let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
            let loaded = rt.load(&component, "c").unwrap();
            assert_eq!(loaded.tier(), Tier::Baseline);
            assert_eq!(rt.stats().baseline_compiled.load(Ordering::Relaxed), 1);
            wait_for_optimizations(&rt);
            assert_eq!(loaded.tier(), Tier::Optimized);
            assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 1);
            assert_eq!(rt.stats().optimized_later.load(Ordering::Relaxed), 1);
            assert!(
                rt.artifacts.path(&hash).exists(),
                "the optimized artifact is stored"
            );
            // The same bytes again: the in-memory component, already optimized.
            assert_eq!(rt.load(&component, "c").unwrap().tier(), Tier::Optimized);
        }
        // After a restart the artifact serves at once, optimized, with no compilation.
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        assert_eq!(rt.load(&component, "c").unwrap().tier(), Tier::Optimized);
        assert_eq!(rt.stats().baseline_compiled.load(Ordering::Relaxed), 0);
        assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 0);
        assert!(rt.optimizations_done());

        // Off: compiled by Cranelift before it is returned.
        let off = tempfile::tempdir().unwrap();
        let cfg = CoreConfig {
            artifact_dir: off.path().join("aot"),
            artifact_key: off.path().join("artifact.key"),
            pooling: false,
            tiered_compilation: false,
            ..CoreConfig::default()
        };
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        assert_eq!(rt.load(&component, "c").unwrap().tier(), Tier::Optimized);
        assert_eq!(rt.stats().baseline_compiled.load(Ordering::Relaxed), 0);
        assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn compiles_once_then_uses_cache_and_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CoreConfig {
            artifact_dir: dir.path().join("aot"),
            artifact_key: dir.path().join("artifact.key"),
            pooling: false,
            tiered_compilation: false,
            ..CoreConfig::default()
        };
        let component = wasm_encoder::Component::new().finish();
        {
            let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
            let held = rt.load(&component, "c").unwrap();
            rt.load(&component, "c").unwrap();
            assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 1);
            assert_eq!(rt.stats().cache_hits.load(Ordering::Relaxed), 1);
            assert_eq!(rt.cached_components(), 1);
            // Code nobody holds leaves memory; the artifact on disk brings it back cheaply.
            drop(held);
            assert_eq!(rt.cached_components(), 0);
            rt.load(&component, "c").unwrap();
            assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 1);
            assert_eq!(rt.stats().aot_loaded.load(Ordering::Relaxed), 1);
        }
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        rt.load(&component, "c").unwrap();
        assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 0);
        assert_eq!(rt.stats().aot_loaded.load(Ordering::Relaxed), 1);

        // A corrupted artifact is detected and recompiled.
        let hash = zero_component::content_hash(&component).unwrap();
        let path = rt.artifacts.path(&hash);
        let mut raw = std::fs::read(&path).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x55;
        std::fs::write(&path, raw).unwrap();
        let rt = Arc::new(Runtime::new(&cfg, NoProviders {}).unwrap());
        rt.load(&component, "c").unwrap();
        assert_eq!(rt.stats().aot_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(rt.stats().compiled.load(Ordering::Relaxed), 1);
    }
}
