//! `[telemetry]`: the node's traces, exported to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf). Off unless `otlp_endpoint` is set; then [`start`] installs the tracer every span
//! of `zero_provider::trace` goes to.
//!
//! Finished spans go into a bounded queue (`max_queued_spans`) that one thread of the node's
//! empties in batches to the collector. Nothing on a request's path waits for the collector: a
//! span that finds the queue full is dropped and counted (`zero_node_trace_spans_dropped`), a
//! batch the collector refuses or does not answer within `export_timeout_ms` is dropped and
//! counted (`zero_node_trace_export_failures`), so a slow or dead collector costs the node at
//! most the queue's memory and the exporting thread's time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP traces URL (`http://127.0.0.1:4318/v1/traces`); unset, traces
    /// are off.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the node's spans.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0; a request whose `traceparent` says
    /// whether its trace is sampled follows that instead.
    pub sampling_ratio: f64,
    /// Finished spans held for export at most; more are dropped (and counted).
    pub max_queued_spans: usize,
    /// How long the collector has to answer one export, in milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            service_name: "zerocore".into(),
            sampling_ratio: 1.0,
            max_queued_spans: 2048,
            export_timeout_ms: 10_000,
        }
    }
}

impl TelemetrySection {
    /// Checks the values: what is wrong and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.otlp_endpoint {
            check_endpoint(endpoint)?;
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(format!(
                "[telemetry] sampling_ratio = {} is not between 0.0 (no new trace is recorded) and 1.0 (every one is)",
                self.sampling_ratio
            ));
        }
        let name = &self.service_name;
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "[telemetry] service_name = {name:?} must be 1 to 255 characters without control characters (such as \"zerocore\")"
            ));
        }
        if !(1..=1_000_000).contains(&self.max_queued_spans) {
            return Err(format!(
                "[telemetry] max_queued_spans = {} must be between 1 and 1000000",
                self.max_queued_spans
            ));
        }
        if !(1..=600_000).contains(&self.export_timeout_ms) {
            return Err(format!(
                "[telemetry] export_timeout_ms = {} must be between 1 and 600000",
                self.export_timeout_ms
            ));
        }
        Ok(())
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let example = "such as \"http://127.0.0.1:4318/v1/traces\"";
    let uri: http::Uri = endpoint.parse().map_err(|e| {
        format!("[telemetry] otlp_endpoint = {endpoint:?} is not a URL ({e}); give the collector's OTLP/HTTP traces URL, {example}")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "[telemetry] otlp_endpoint = {endpoint:?}: https is not supported; send to a collector on this host or network over http, {example}"
            ));
        }
        _ => {
            return Err(format!(
                "[telemetry] otlp_endpoint = {endpoint:?} must be an http:// URL, {example}"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "[telemetry] otlp_endpoint = {endpoint:?} has no host, {example}"
        ));
    }
    if matches!(uri.path(), "" | "/") {
        return Err(format!(
            "[telemetry] otlp_endpoint = {endpoint:?} has no path: give the full traces URL (the collector's is /v1/traces), {example}"
        ));
    }
    Ok(())
}

/// The exporter's counters, on the node's `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct TraceCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the queue was full.
    pub dropped: Counter,
    /// Spans lost in exports that failed (collector down, slow or refusing).
    pub failed: Counter,
}

impl TraceCounters {
    /// Registers the counters in `registry` (the node's `zero_node_` sub-registry).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "trace_spans_exported",
            "Spans the OpenTelemetry collector accepted",
            self.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the export queue ([telemetry] max_queued_spans) was full",
            self.dropped.clone(),
        );
        registry.register(
            "trace_export_failures",
            "Spans lost in exports the collector refused or did not answer in time",
            self.failed.clone(),
        );
    }
}

/// The running exporter: flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Its counters.
    pub counters: TraceCounters,
}

impl Telemetry {
    /// Exports what is queued (within `timeout`) and stops exporting.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!("traces: the exporter did not stop cleanly: {e}");
        }
    }
}

/// Starts exporting traces as `[telemetry]` says: `None` when traces are off (no
/// `otlp_endpoint`). Must be called within the node's tokio runtime (the exporter's HTTP client
/// runs on it). Only the first node of a process traces: a second gets `None`.
pub fn start(config: &TelemetrySection) -> anyhow::Result<Option<Telemetry>> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    if zero_provider::trace::enabled() {
        tracing::warn!(
            "traces: a tracer is already installed in this process; this node's spans go to it"
        );
        return Ok(None);
    }
    let timeout = Duration::from_millis(config.export_timeout_ms);
    let client = opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("[telemetry] cannot set up the OTLP exporter: {e}"))?;
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    exporter.set_resource(&resource);
    let counters = TraceCounters::default();
    let queue = Queue::start(
        exporter,
        config.max_queued_spans,
        counters.clone(),
        tokio::runtime::Handle::current(),
    )?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("zerocore");
    zero_provider::trace::install(opentelemetry::global::BoxedTracer::new(Box::new(tracer)));
    tracing::info!(
        endpoint = %endpoint,
        sampling_ratio = config.sampling_ratio,
        "traces: exporting spans over OTLP/HTTP"
    );
    Ok(Some(Telemetry { provider, counters }))
}

/// The most spans in one export.
const MAX_BATCH: usize = 512;
/// How long a span waits for its batch to fill before the batch is sent anyway.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// At most one warning about failed exports in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The span processor: a bounded queue of finished spans and the thread that exports them.
#[derive(Debug)]
struct Queue {
    tx: SyncSender<SpanData>,
    dropped: Counter,
    closing: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Queue {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        capacity: usize,
        counters: TraceCounters,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Queue> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let closing = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            rx,
            exporter,
            runtime,
            counters: counters.clone(),
            closing: closing.clone(),
            last_warning: None,
            lost_since_warning: 0,
        };
        let handle = std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || worker.run())
            .map_err(|e| anyhow::anyhow!("traces: cannot start the export thread: {e}"))?;
        Ok(Queue {
            tx,
            dropped: counters.dropped,
            closing,
            worker: Mutex::new(Some(handle)),
        })
    }
}

impl opentelemetry_sdk::trace::SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.closing.store(true, Ordering::Release);
        let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let deadline = Instant::now() + timeout;
        while !worker.is_finished() {
            if Instant::now() >= deadline {
                return Err(OTelSdkError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        worker
            .join()
            .map_err(|_| OTelSdkError::InternalFailure("the export thread panicked".into()))
    }
}

struct Worker {
    rx: Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
    counters: TraceCounters,
    closing: Arc<AtomicBool>,
    last_warning: Option<Instant>,
    lost_since_warning: u64,
}

impl Worker {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let closing = self.closing.load(Ordering::Acquire);
            let deadline = Instant::now() + BATCH_DELAY;
            while batch.len() < MAX_BATCH {
                let wait = if closing {
                    Duration::ZERO
                } else {
                    deadline.saturating_duration_since(Instant::now())
                };
                match self.rx.recv_timeout(wait) {
                    Ok(span) => batch.push(span),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let drained = closing && batch.len() < MAX_BATCH;
            if !batch.is_empty() {
                self.export(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
            }
            if drained {
                let _ = self.exporter.shutdown();
                return;
            }
        }
    }

    fn export(&mut self, batch: Vec<SpanData>) {
        let n = batch.len() as u64;
        // The exporter's HTTP client runs on the node's runtime; this thread only waits.
        match self.runtime.block_on(self.exporter.export(batch)) {
            Ok(()) => {
                self.counters.exported.inc_by(n);
            }
            Err(e) => {
                self.counters.failed.inc_by(n);
                self.lost_since_warning += n;
                if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    let lost = std::mem::take(&mut self.lost_since_warning);
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(
                        lost,
                        "traces: the collector did not take {lost} spans: {e} (see zero_node_trace_export_failures; at most one such warning a minute)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TelemetrySection)) -> Result<(), String> {
        let mut t = TelemetrySection::default();
        f(&mut t);
        t.validate()
    }

    #[test]
    fn off_by_default_and_valid() {
        let t = TelemetrySection::default();
        assert!(t.otlp_endpoint.is_none());
        t.validate().unwrap();
        with(|t| t.otlp_endpoint = Some("http://127.0.0.1:4318/v1/traces".into())).unwrap();
    }

    #[test]
    fn bad_values_say_what_to_write() {
        for (endpoint, says) in [
            ("127.0.0.1:4318", "must be an http:// URL"),
            ("https://collector:4318/v1/traces", "https is not supported"),
            ("http://127.0.0.1:4318", "has no path"),
            ("http://127.0.0.1:4318/", "has no path"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let e = with(|t| t.otlp_endpoint = Some(endpoint.into())).unwrap_err();
            assert!(e.contains(says), "{endpoint}: {e}");
            assert!(e.contains("/v1/traces"), "{endpoint}: {e}");
        }
        for ratio in [-0.1, 1.5, f64::NAN] {
            let e = with(|t| t.sampling_ratio = ratio).unwrap_err();
            assert!(e.contains("sampling_ratio"), "{e}");
        }
        assert!(with(|t| t.service_name = String::new()).is_err());
        assert!(with(|t| t.service_name = "a\nb".into()).is_err());
        assert!(with(|t| t.max_queued_spans = 0).is_err());
        assert!(with(|t| t.export_timeout_ms = 0).is_err());
    }
}
