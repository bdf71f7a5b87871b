//! The node's metrics (`GET /metrics` on the management listener, Prometheus text format
//! 0.0.4), readable with the `/node/metrics` capability.
//!
//! One registry: the core's series (`zerocore_…`: faults by kind, CPU time charged per tenant,
//! instances in flight, the pooling allocator's slots, component cache and compile counters),
//! the node's (`zero_node_deploys_total`), and each provider's under its own name (registered
//! here, the one place that names providers, through `zero_provider::metrics::Metrics`).
//!
//! Labels take only bounded values: tenants the Admin created, apps deployed in them (their
//! series are dropped once they are removed), kinds from fixed lists. Nothing a request
//! carries (host, path, headers) becomes a label.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use zero_provider::Invocation;
use zero_provider::metrics::{Metrics, TenantLabels};
use zerocore::Fault;

use crate::Runtime;

/// The labels of a fault counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    tenant: String,
    app: String,
    kind: &'static str,
}

/// What the core reports (see [`zerocore::Observer`]), and the node's own counters.
#[derive(Default)]
pub struct NodeObserver {
    faults: Family<FaultLabels, Counter>,
    /// The fault series made, to drop those of removed apps.
    fault_series: Mutex<HashSet<FaultLabels>>,
    cpu_seconds: Family<TenantLabels, Counter<f64, AtomicU64>>,
    instances: Gauge,
    instances_started: Counter,
    deploys: Family<TenantLabels, Counter>,
}

impl zerocore::Observer for NodeObserver {
    fn instance_started(&self, _: &Invocation) {
        self.instances.inc();
        self.instances_started.inc();
    }

    fn instance_ended(&self, invocation: &Invocation, cpu_ns: u64) {
        self.instances.dec();
        self.cpu_seconds
            .get_or_create(&TenantLabels::new(&invocation.tenant))
            .inc_by(cpu_ns as f64 / 1e9);
    }

    fn fault(&self, invocation: &Invocation, fault: &Fault) {
        let labels = FaultLabels {
            tenant: invocation.tenant.to_string(),
            app: invocation.app.to_string(),
            kind: fault.kind(),
        };
        self.faults.get_or_create(&labels).inc();
        self.fault_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(labels);
        crate::events::hub().fault(
            &invocation.tenant,
            &invocation.app,
            &invocation.request_id,
            fault.kind(),
            fault.to_string(),
        );
    }
}

impl NodeObserver {
    /// Counts a deploy (or redeploy) into `tenant`.
    pub fn deployed(&self, tenant: &str) {
        self.deploys.get_or_create(&TenantLabels::new(tenant)).inc();
    }

    /// Drops the fault series of apps that `deployed` says are gone.
    fn prune(&self, deployed: impl Fn(&str, &str) -> bool) {
        let mut series = self
            .fault_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        series.retain(|l| {
            let keep = deployed(&l.tenant, &l.app);
            if !keep {
                self.faults.remove(l);
            }
            keep
        });
    }
}

/// Reads the core's counters and the pooling allocator at each scrape.
struct CoreCollector(Arc<Runtime>);

impl std::fmt::Debug for CoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = ConstCounter::new(value);
    m.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    m.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for CoreCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let rt = &self.0;
        let s = rt.stats();
        counter(
            &mut e,
            "components_compiled",
            "Components compiled by the optimizing compiler (Cranelift)",
            s.compiled.load(Relaxed),
        )?;
        counter(
            &mut e,
            "components_baseline_compiled",
            "Components compiled by the baseline compiler (Winch) to serve at once",
            s.baseline_compiled.load(Relaxed),
        )?;
        counter(
            &mut e,
            "components_optimized_later",
            "Components whose requests moved from baseline to optimized code",
            s.optimized_later.load(Relaxed),
        )?;
        counter(
            &mut e,
            "aot_loaded",
            "Components loaded from their precompiled artifact on disk",
            s.aot_loaded.load(Relaxed),
        )?;
        counter(
            &mut e,
            "aot_rejected",
            "Precompiled artifacts found unusable (corrupted, foreign) and recompiled",
            s.aot_rejected.load(Relaxed),
        )?;
        counter(
            &mut e,
            "component_cache_hits",
            "Component loads answered from the in-memory cache",
            s.cache_hits.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "components_cached",
            "Components in memory (used by some app)",
            rt.cached_components() as u64,
        )?;
        if let Some(p) = rt.engine().pooling_allocator_metrics() {
            gauge(
                &mut e,
                "pool_component_instances",
                "Component instances allocated in the pooling allocator",
                p.component_instances(),
            )?;
            gauge(
                &mut e,
                "pool_core_instances",
                "Core instances allocated in the pooling allocator",
                p.core_instances(),
            )?;
            gauge(
                &mut e,
                "pool_memories",
                "Linear memories allocated in the pooling allocator",
                p.memories() as u64,
            )?;
            gauge(
                &mut e,
                "pool_tables",
                "Tables allocated in the pooling allocator",
                p.tables() as u64,
            )?;
            gauge(
                &mut e,
                "pool_unused_warm_memories",
                "Unused memory slots kept warm (resident) in the pooling allocator",
                u64::from(p.unused_warm_memories()),
            )?;
        }
        Ok(())
    }
}

/// The node's registry and its observer.
pub struct NodeMetrics {
    registry: Registry,
    /// The core's observer and the node's counters.
    pub observer: Arc<NodeObserver>,
}

impl NodeMetrics {
    /// The registry of a node: the core's series from `runtime` (whose observer it becomes)
    /// and every provider's. The one place that names them.
    pub fn new(
        runtime: &Arc<Runtime>,
        proxy: &zeroproxy::ZeroProxy,
        chrono: &zerochrono::Chrono,
        databases: &zerodb::Databases,
        cache: &zerocache::Cache,
        traces: Option<&crate::telemetry::TraceCounters>,
    ) -> NodeMetrics {
        let observer = Arc::new(NodeObserver::default());
        runtime.set_observer(observer.clone());
        let mut registry = Registry::default();
        {
            let core = registry.sub_registry_with_prefix("zerocore");
            core.register(
                "faults",
                "Runs (HTTP requests, schedule ticks) that ended in a fault, by tenant, app and kind",
                observer.faults.clone(),
            );
            core.register(
                "cpu_seconds",
                "CPU time charged to guests, by tenant",
                observer.cpu_seconds.clone(),
            );
            core.register(
                "instances_in_flight",
                "Guest instances (stores) alive now",
                observer.instances.clone(),
            );
            core.register(
                "instances_started",
                "Guest instances (stores) made",
                observer.instances_started.clone(),
            );
            core.register_collector(Box::new(CoreCollector(runtime.clone())));
        }
        registry.sub_registry_with_prefix("zero_node").register(
            "deploys",
            "Apps deployed (or redeployed) over the management API, by tenant",
            observer.deploys.clone(),
        );
        if let Some(traces) = traces {
            traces.register(registry.sub_registry_with_prefix("zero_node"));
        }
        proxy.register_metrics(registry.sub_registry_with_prefix("zeroproxy"));
        runtime
            .providers()
            .fs
            .register_metrics(registry.sub_registry_with_prefix("zerofs"));
        databases.register_metrics(registry.sub_registry_with_prefix("zerodb"));
        cache.register_metrics(registry.sub_registry_with_prefix("zerocache"));
        chrono.register_metrics(registry.sub_registry_with_prefix("zerochrono"));
        NodeMetrics { registry, observer }
    }

    /// The Prometheus text of every series, after dropping those of apps `deployed` says
    /// are gone.
    pub fn encode(&self, deployed: impl Fn(&str, &str) -> bool) -> Result<String, std::fmt::Error> {
        self.observer.prune(deployed);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
