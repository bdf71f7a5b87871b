//! How a provider shows what it does on the node's `/metrics` endpoint (Prometheus text).
//!
//! Each provider implements [`Metrics`] on the value that holds its state and registers its own
//! counters, gauges and histograms (or a [`Collector`](prometheus_client::collector::Collector)
//! that reads its state at each scrape) in the sub-registry the node gives it. The node calls it
//! once, in its one registration place; the core never names a provider.
//!
//! **Bounded labels.** A label value must come from a set the operator or an owner controls and
//! that has a bound: a tenant the Admin created, an app deployed in it (and forgotten when it is
//! removed), a kind from a fixed list. Never a request's path, host, header, SQL text or key:
//! a client must not be able to grow the registry. The label types here ([`TenantLabels`],
//! [`AppLabels`]) are the ones to use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;

/// A provider's metrics on the node's `/metrics`.
pub trait Metrics: Send + Sync {
    /// Registers this provider's metrics in `registry` (already prefixed with the provider's
    /// name, e.g. `zerodb_`): counters and histograms it updates as it works, or collectors
    /// evaluated at each scrape. Label values follow the module's rule on bounded labels.
    fn register_metrics(&self, registry: &mut Registry);
}

/// The labels of a per-tenant series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// The tenant (a name the Admin created).
    pub tenant: String,
}

impl TenantLabels {
    /// The labels of `tenant`.
    pub fn new(tenant: &str) -> Self {
        TenantLabels {
            tenant: tenant.to_string(),
        }
    }
}

/// The labels of a per-app series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// The tenant.
    pub tenant: String,
    /// The app (deployed in the tenant).
    pub app: String,
}

impl AppLabels {
    /// The labels of `tenant`'s app `app`.
    pub fn new(tenant: &str, app: &str) -> Self {
        AppLabels {
            tenant: tenant.to_string(),
            app: app.to_string(),
        }
    }
}

/// Buckets for latencies in seconds: 1 ms to about 33 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16)
}

/// Buckets for short host work in seconds (a SQL statement): 50 µs to about 1.6 s, doubling.
pub fn short_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16)
}
