//! zeroproxy's metrics: requests by tenant, app and status class, and their latency per app.
//!
//! Labels name only apps of the routing table in force (see `zero_provider::metrics` on
//! bounded labels): a request that no deployed app answered (no route for its host and path,
//! or its app removed meanwhile) is counted in `zeroproxy_http_unrouted_requests_total` by
//! status class alone, never by its host or path; the series of an app leave the registry when
//! a routing table without it is installed.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use zero_provider::metrics::{Metrics, latency_buckets};

/// The status classes counted.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The labels of a request counter (shared names: no allocation per request).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: Arc<str>,
    app: Arc<str>,
    class: &'static str,
}

/// The labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    tenant: Arc<str>,
    app: Arc<str>,
}

/// The labels of an unrouted request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

type Histograms = Family<AppLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// The counters of the HTTP listener (cheap to share).
pub(crate) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    unrouted: Family<ClassLabels, Counter>,
    /// The apps of the routing table in force: the only label values used.
    deployed: RwLock<HashSet<(Arc<str>, Arc<str>)>>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            unrouted: Family::default(),
            deployed: RwLock::new(HashSet::new()),
        }
    }
}

fn class(status: u16) -> &'static str {
    match status {
        100..=199 => CLASSES[0],
        200..=299 => CLASSES[1],
        300..=399 => CLASSES[2],
        400..=499 => CLASSES[3],
        _ => CLASSES[4],
    }
}

impl HttpMetrics {
    /// Counts one answered request (`tenant` and `app` when it was routed to one).
    pub(crate) fn record(
        &self,
        routed: Option<(Arc<str>, Arc<str>)>,
        status: u16,
        elapsed: Duration,
    ) {
        let class = class(status);
        let deployed = routed.filter(|key| {
            self.deployed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key)
        });
        match deployed {
            Some((tenant, app)) => {
                self.latency
                    .get_or_create(&AppLabels {
                        tenant: tenant.clone(),
                        app: app.clone(),
                    })
                    .observe(elapsed.as_secs_f64());
                self.requests
                    .get_or_create(&RequestLabels { tenant, app, class })
                    .inc();
            }
            None => {
                self.unrouted.get_or_create(&ClassLabels { class }).inc();
            }
        }
    }

    /// A new routing table serves `apps`: the series of apps no longer in it are forgotten.
    pub(crate) fn deployed(&self, apps: HashSet<(Arc<str>, Arc<str>)>) {
        let gone: Vec<(Arc<str>, Arc<str>)> = {
            let mut known = self.deployed.write().unwrap_or_else(|p| p.into_inner());
            let gone = known.difference(&apps).cloned().collect();
            *known = apps;
            gone
        };
        for (tenant, app) in gone {
            for class in CLASSES {
                self.requests.remove(&RequestLabels {
                    tenant: tenant.clone(),
                    app: app.clone(),
                    class,
                });
            }
            self.latency.remove(&AppLabels { tenant, app });
        }
    }
}

impl Metrics for HttpMetrics {
    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by tenant, app and status class",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to the end of its response, by tenant and app",
            self.latency.clone(),
        );
        registry.register(
            "http_unrouted_requests",
            "HTTP requests no deployed app answered (no route for their host and path), by status class",
            self.unrouted.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series lines of a scrape of `m`.
    fn series(m: &HttpMetrics) -> Vec<String> {
        let mut r = Registry::default();
        m.register_metrics(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn only_deployed_apps_get_series_and_removed_ones_lose_them() {
        let m = HttpMetrics::default();
        let key = |t: &str, a: &str| Some((Arc::<str>::from(t), Arc::<str>::from(a)));
        m.deployed(HashSet::from([key("t", "a").unwrap()]));
        m.record(key("t", "a"), 200, Duration::from_millis(3));
        m.record(key("t", "other"), 200, Duration::from_millis(3));
        m.record(None, 404, Duration::from_millis(1));
        for i in 0..100 {
            m.record(key("t", &format!("x{i}")), 500, Duration::ZERO);
        }
        let lines = series(&m);
        let of = |name: &str| lines.iter().filter(|l| l.starts_with(name)).count();
        assert_eq!(of("http_requests_total{"), 1, "{lines:#?}");
        assert_eq!(of("http_request_duration_seconds_count{"), 1, "{lines:#?}");
        // One series per status class (2xx, 4xx, 5xx), whatever the app named.
        assert_eq!(of("http_unrouted_requests_total{"), 3, "{lines:#?}");
        assert!(lines.iter().all(|l| !l.contains("x1")), "{lines:#?}");
        m.deployed(HashSet::new());
        let lines = series(&m);
        assert!(lines.iter().all(|l| !l.contains("app=")), "{lines:#?}");
    }
}
