//! zerofs's metrics: each tenant's bytes and files, read from the store at each scrape.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use zero_provider::metrics::{Metrics, TenantLabels};

use crate::ZeroFs;

/// Reads every tenant's usage when scraped.
#[derive(Debug)]
struct UsageCollector(Arc<ZeroFs>);

impl Collector for UsageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usages = match self.0.usages() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the file store's usage for /metrics");
                return Ok(());
            }
        };
        let mut bytes = encoder.encode_descriptor(
            "tenant_bytes",
            "Total size of each tenant's files (deployed code included), in bytes",
            None,
            MetricType::Gauge,
        )?;
        for (tenant, usage) in &usages {
            let labels = TenantLabels::new(tenant);
            ConstGauge::new(usage.bytes as i64).encode(bytes.encode_family(&labels)?)?;
        }
        let mut files = encoder.encode_descriptor(
            "tenant_files",
            "Number of each tenant's files and directories",
            None,
            MetricType::Gauge,
        )?;
        for (tenant, usage) in &usages {
            let labels = TenantLabels::new(tenant);
            ConstGauge::new(usage.files as i64).encode(files.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Metrics for crate::wasi::FsProvider {
    fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(UsageCollector(self.store().clone())));
    }
}
