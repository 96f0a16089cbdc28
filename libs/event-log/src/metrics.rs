//! How long appends take, by kind of log.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    log: &'static str,
}

type Durations = Family<Labels, Histogram, fn() -> Histogram>;

static APPEND_SECONDS: LazyLock<Durations> = LazyLock::new(|| {
    corral_telemetry::metrics::register(
        "corral_event_log_append_duration_seconds",
        "Time from handing events to the log to its acknowledgement (stored, and replicated where the log is)",
        Family::new_with_constructor(corral_telemetry::metrics::seconds_histogram as fn() -> Histogram),
    )
});

/// Records the time since it was made when dropped: an append that fails or is given up counts
/// too, since its caller waited for it.
pub(crate) struct AppendTimer {
    log: &'static str,
    started: Instant,
}

impl AppendTimer {
    pub(crate) fn start(log: &'static str) -> AppendTimer {
        AppendTimer { log, started: Instant::now() }
    }
}

impl Drop for AppendTimer {
    fn drop(&mut self) {
        APPEND_SECONDS.get_or_create(&Labels { log: self.log }).observe(self.started.elapsed().as_secs_f64());
    }
}

/// Registers the metrics (so that they are scraped before the first append).
pub(crate) fn register() {
    LazyLock::force(&APPEND_SECONDS);
}
