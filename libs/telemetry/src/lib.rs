//! What every binary shares to be observed: logging and tracing set-up, trace context across
//! processes ([`trace`]), Prometheus metrics ([`metrics`]) and the operations listener ([`ops`]).
//!
//! Logs go to stderr (stdout carries only readiness lines), as text or JSON lines; `RUST_LOG`
//! filters them (default `info`). Spans are exported over OTLP (gRPC) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the SDK's
//! own environment variables honoured (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `_ARG`, `OTEL_BSP_*`); without it no span leaves the process and
//! nothing but `tracing` itself is paid.

pub mod metrics;
pub mod ops;
pub mod trace;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Keeps telemetry alive for the life of the process; dropping it sends the spans still
/// buffered.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("could not send the last spans: {e}");
        }
    }
}

/// Whether spans are to be exported: an OTLP endpoint is configured.
fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The process's resource: the SDK's (from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`),
/// named `service` unless those name it.
fn resource(service: &str) -> opentelemetry_sdk::Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    let builder = opentelemetry_sdk::Resource::builder();
    if named { builder.build() } else { builder.with_service_name(service.to_string()).build() }
}

/// The tracer provider exporting over OTLP/gRPC to the configured endpoint, in batches.
fn otlp_provider(service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build().map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(service)).build())
}

/// Only this workspace's spans are exported (those of the libraries under it stay local). A
/// filter of targets and levels, not a function: it tells `tracing` its highest level, so a
/// library's debug and trace calls (and the `log` records of those that use `log`, sled's many
/// per write) stop at their call site instead of reaching every layer to be refused.
fn ours() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target("corral", tracing::Level::INFO)
}

/// Sets up logging, and tracing when an OTLP endpoint is configured. Call it inside the tokio
/// runtime (the exporter runs on it).
pub fn init(service: &str, json: bool) -> Guard {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let (provider, failed) = if otlp_configured() {
        match otlp_provider(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service.to_string()))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // A span's `target` (the Rust module that made it) is no OpenTelemetry attribute:
            // `service.name` says which process, the span's name what it did.
            .with_target(false)
            // Our spans hand their context on through `OpenTelemetrySpanExt::context`, never
            // through OpenTelemetry's current context: attaching it on every enter (each poll of
            // an instrumented future) would be work nothing reads.
            .with_context_activation(false)
            .with_filter(ours())
    });
    let result = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    if result.is_ok() && provider.is_some() {
        trace::set_exporting();
    }
    if result.is_ok() {
        tracing::info!(service, exporting_spans = provider.is_some(), "telemetry initialised");
        if let Some(e) = failed {
            tracing::warn!(error = %e, "cannot export spans over OTLP; going on without");
        }
    }
    Guard { provider }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::Filter;

    #[test]
    fn exports_our_info_spans_only_and_names_its_highest_level() {
        let filter = super::ours();
        assert!(filter.would_enable("corral_registry::service", &Level::INFO));
        assert!(filter.would_enable("corral_nats_rpc", &Level::WARN));
        assert!(!filter.would_enable("corral_service_api::api", &Level::DEBUG));
        assert!(!filter.would_enable("sled::pagecache", &Level::INFO));
        assert!(!filter.would_enable("h2::codec", &Level::TRACE));
        // What lets a library's debug and trace call sites be skipped before any layer sees them.
        assert_eq!(Filter::<tracing_subscriber::Registry>::max_level_hint(&filter), Some(LevelFilter::INFO));
    }
}
