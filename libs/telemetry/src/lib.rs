//! What every binary shares to be observed: logging and tracing set-up, W3C trace context
//! helpers, Prometheus metrics ([`metrics`]) and the operations listener ([`ops`]).
//!
//! Logs go to stderr (stdout carries only readiness lines), as text or JSON lines; `RUST_LOG`
//! filters them (default `info`).

pub mod metrics;
pub mod ops;

use tracing_subscriber::EnvFilter;

/// Keeps telemetry alive for the life of the process.
pub struct Guard {
    _private: (),
}

pub fn init(service: &str, json: bool) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
    Guard { _private: () }
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

/// A W3C `traceparent` for this hop: a child of the incoming one when it is well formed (same
/// trace id and flags, new span id), else the root of a new trace.
pub fn traceparent_or_new(incoming: Option<&str>) -> String {
    let span: u64 = rand::random();
    if let Some(tp) = incoming.filter(|t| is_valid_traceparent(t)) {
        let flags = tp.rsplit('-').next().unwrap_or("01");
        return format!("00-{}-{span:016x}-{flags}", trace_id(tp));
    }
    let trace: u128 = rand::random();
    format!("00-{trace:032x}-{span:016x}-01")
}

pub fn is_valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        && parts[1].chars().any(|c| c != '0')
}

/// The trace id part of a traceparent, for log fields.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_and_replaces_invalid_traceparents() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = traceparent_or_new(Some(tp));
        assert!(is_valid_traceparent(&child));
        assert_eq!(trace_id(&child), trace_id(tp), "same trace");
        assert_ne!(child, tp, "new span");
        let fresh = traceparent_or_new(Some("garbage"));
        assert!(is_valid_traceparent(&fresh), "{fresh}");
        assert_ne!(trace_id(&fresh), trace_id(tp));
    }
}
