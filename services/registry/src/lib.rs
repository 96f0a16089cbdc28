//! The registry service: owns the cluster aggregate, appends its events to the log with
//! optimistic concurrency, and answers queries from its sled projection.

pub mod metrics;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;

use corral_cluster_model::{RegistryError, open_projection_db, read_model};
use corral_event_log::EventLog;
use corral_projection::Projection;
use corral_secrets::SealingKey;
pub use service::{Registry, RegistryConfig};

/// Opens the registry's projection in `db` and starts following the log; resolves once the
/// projection has caught up and the built-in in-cluster entry exists.
pub async fn start(
    log: Arc<dyn EventLog>,
    db: &sled::Db,
    key: Arc<SealingKey>,
    config: RegistryConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<Registry>, RegistryError> {
    let projection = Projection::open(db, "registry")?;
    corral_telemetry::metrics::register_collector(Box::new(metrics::ClusterMetrics::new(projection.clone())));
    let runner = corral_projection::run(log.clone(), projection.clone(), read_model::fold, shutdown);
    tokio::spawn(async move {
        if let Err(e) = runner.await {
            tracing::error!(error = %e, "registry projection stopped");
        }
    });
    let registry = Registry::new(log, projection, key, config);
    // A log without a quorum at start is waited for, as a running replica waits.
    let unavailable = |e: &RegistryError| matches!(e, RegistryError::Unavailable(_));
    corral_process::retry_while("register the in-cluster entry", unavailable, || registry.ensure_in_cluster()).await?;
    Ok(registry)
}

/// Configuration of the stand-alone registry process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-registry", about = "The cluster registry service (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub service: corral_process::ServiceOptions,
    /// Folder for this replica's projection.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./data/registry")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub events: corral_process::EventsOptions,
}

pub const NAME: &str = "corral-registry";

/// Runs the registry against NATS until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = corral_process::Readiness::new();
    config.service.ops.start(NAME, None, &readiness).await?;
    let (key, client, log) = config.service.connect(NAME, &readiness).await?;
    std::fs::create_dir_all(&config.data_dir)?;
    let db = open_projection_db(Some(&config.data_dir))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let registry = start(log.clone(), &db, key, RegistryConfig::default(), stopped(stop_rx.clone())).await?;
    // Every replica runs a publisher of the public event stream: one lands each event, the others
    // stand by (corral_watch::publisher).
    let public = config.events.open(client.clone(), config.service.nats.stream.stream_replicas).await?;
    tokio::spawn(corral_watch::publisher::run(log, public, config.events.events_max_age, stopped(stop_rx.clone())));
    corral_process::announce_ready(NAME, None, &readiness);
    corral_service_api::nats::serve_registry(client, registry, shutdown).await?;
    let _ = stop_tx.send(true);
    db.flush_async().await?;
    Ok(())
}
