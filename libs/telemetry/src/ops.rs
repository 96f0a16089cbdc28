//! The operations listener every service has beside its work: `/metrics` (Prometheus),
//! `/healthz` (the process is alive) and `/readyz` (it can do its work: its projection has
//! caught up with the log and its connections are up). It is separate from the public API
//! because metric labels name clusters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// Whether a process is ready: it has caught up once, and every condition it depends on holds
/// now (a NATS connection that dropped turns it not ready until it is back).
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    caught_up: AtomicBool,
    checks: Mutex<Vec<(String, Check)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("ready", &self.check()).finish()
    }
}

impl Readiness {
    /// Not ready until [`Readiness::caught_up`].
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// The process has caught up with the log as it stood at start-up.
    pub fn caught_up(&self) {
        self.inner.caught_up.store(true, Ordering::Release);
    }

    /// Adds a condition, named for the answer that lists what is not ready.
    pub fn require(&self, name: impl Into<String>, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.checks().push((name.into(), Box::new(check)));
    }

    fn checks(&self) -> std::sync::MutexGuard<'_, Vec<(String, Check)>> {
        self.inner.checks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Ok` when ready, else what is missing.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        if !self.inner.caught_up.load(Ordering::Acquire) {
            missing.push("catching up with the log".to_string());
        }
        missing.extend(self.checks().iter().filter(|(_, check)| !check()).map(|(name, _)| name.clone()));
        if missing.is_empty() { Ok(()) } else { Err(missing) }
    }

    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    /// The answer of `/readyz`: 200 `ok`, or 503 with what is not ready, one per line.
    pub fn response(&self) -> Response {
        match self.check() {
            Ok(()) => (StatusCode::OK, "ok\n").into_response(),
            Err(missing) => {
                let body: String = missing.iter().map(|m| format!("not ready: {m}\n")).collect();
                (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
            }
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || async move { readiness.response() }))
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::encode()).into_response()
}

/// Binds `addr` and serves [`router`] on it in the background; the address it got.
pub async fn start(addr: SocketAddr, readiness: Readiness) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(readiness);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the operations listener stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_catching_up_and_every_condition() {
        let readiness = Readiness::new();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        readiness.require("connected to NATS", move || flag.load(Ordering::Relaxed));
        let addr = start("127.0.0.1:0".parse().unwrap(), readiness.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await, (200, "ok\n".into()));
        assert_eq!(get("/readyz").await, (503, "not ready: catching up with the log\n".into()));
        readiness.caught_up();
        assert_eq!(get("/readyz").await, (200, "ok\n".into()));
        up.store(false, Ordering::Relaxed);
        assert_eq!(get("/readyz").await, (503, "not ready: connected to NATS\n".into()));
        up.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.0, 200);
        let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
        assert_eq!(metrics.headers()[header::CONTENT_TYPE], crate::metrics::CONTENT_TYPE);
        assert!(metrics.text().await.unwrap().ends_with("# EOF\n"));
    }
}
