//! zerodb's metrics: statements run per tenant and how they ended, and their latency.
//!
//! Labels are the tenant (whose name the Admin chose) and a fixed outcome; never a database's
//! name, a table or the SQL (see `zero_provider::metrics` on bounded labels).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use zero_provider::metrics::{Metrics, TenantLabels, short_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    tenant: String,
    outcome: &'static str,
}

/// Statement counters, shared by every database of a [`crate::Databases`].
pub(crate) struct DbStats {
    statements: Family<StatementLabels, Counter>,
    latency: Family<TenantLabels, Histogram, fn() -> Histogram>,
}

fn short_histogram() -> Histogram {
    Histogram::new(short_buckets())
}

impl Default for DbStats {
    fn default() -> Self {
        DbStats {
            statements: Family::default(),
            latency: Family::new_with_constructor(short_histogram as fn() -> Histogram),
        }
    }
}

impl DbStats {
    /// Counts one statement of `tenant` that took `seconds` and succeeded or not.
    pub(crate) fn record(&self, tenant: &str, ok: bool, seconds: f64) {
        self.statements
            .get_or_create(&StatementLabels {
                tenant: tenant.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.latency
            .get_or_create(&TenantLabels::new(tenant))
            .observe(seconds);
    }
}

impl Metrics for crate::Databases {
    fn register_metrics(&self, registry: &mut Registry) {
        let stats = self.stats();
        registry.register(
            "statements",
            "SQL statements run, by tenant and outcome (ok or error, a refusal included)",
            stats.statements.clone(),
        );
        registry.register(
            "statement_duration_seconds",
            "Time SQL statements took, by tenant",
            stats.latency.clone(),
        );
    }
}
