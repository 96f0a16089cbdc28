//! The process's Prometheus metrics: one registry that every library registers its families in
//! (a process runs one of each component, or the all-in-one runs each once), served as
//! OpenMetrics text on the operations listener.

use std::sync::{LazyLock, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while encoding leaves the registry as it was: its families are still sound.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `metric` as `name` (without the `_total` a counter gets when encoded) and hands it
/// back to be recorded into.
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    registry().register(name, help, metric.clone());
    metric
}

/// Registers a collector whose metrics are computed at each scrape.
pub fn register_collector(collector: Box<dyn Collector>) {
    registry().register_collector(collector);
}

/// Every registered metric, in the OpenMetrics text format.
pub fn encode() -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry()) {
        tracing::warn!(error = %e, "could not encode the metrics");
    }
    text
}

/// The buckets of Prometheus' client libraries (and go-grpc-prometheus), in seconds.
pub const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram in seconds with [`DEFAULT_BUCKETS`].
pub fn seconds_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}
