//! The registry service: owns the cluster aggregate, appends its events to the log with
//! optimistic concurrency, and answers queries from its sled projection.

pub mod api;
mod barrier;
pub mod codec;
pub mod error;
pub mod nats_rpc;
pub mod queries;
pub mod read_model;
pub mod selector;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;

pub use api::{RegistryApi, RotationApi};
pub use corral_event_log::{EventLog, NatsLog, NatsLogConfig};
use corral_projection::Projection;
use corral_secrets::SealingKey;
pub use error::RegistryError;
pub use queries::{EncodedList, Queries};
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
    let runner = corral_projection::run(log.clone(), projection.clone(), read_model::fold, shutdown);
    tokio::spawn(async move {
        if let Err(e) = runner.await {
            tracing::error!(error = %e, "registry projection stopped");
        }
    });
    let registry = Registry::new(log, projection, key, config);
    registry.ensure_in_cluster().await?;
    Ok(registry)
}

/// Opens a sled database for projections. Projections are rebuilt from the log and keep their
/// state and last applied sequence in one batch, so any flushed prefix is consistent: they favour
/// throughput and flush in the background.
pub fn open_projection_db(path: Option<&std::path::Path>) -> Result<sled::Db, RegistryError> {
    let config = sled::Config::new().mode(sled::Mode::HighThroughput).flush_every_ms(Some(1000));
    let config = match path {
        Some(p) => config.path(p),
        None => config.temporary(true),
    };
    config.open().map_err(|e| RegistryError::Internal(format!("cannot open projection store: {e}")))
}

/// A query-only view of the clusters: its own projection of the log, followed until `shutdown`
/// resolves. Gateways keep one, so reads cost no hop to a registry replica. It is kept in memory
/// and filled from the log on every start: storing it would only cost every event a write.
pub async fn start_view(
    log: Arc<dyn EventLog>,
    read_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<Queries>, RegistryError> {
    let projection = Projection::in_memory("cluster-view")?;
    let runner = corral_projection::run(log.clone(), projection.clone(), read_model::fold, shutdown);
    tokio::spawn(async move {
        if let Err(e) = runner.await {
            tracing::error!(error = %e, "cluster view projection stopped");
        }
    });
    let queries = Arc::new(Queries::new(log, projection, read_timeout));
    queries.catch_up().await?;
    Ok(queries)
}

/// Commands to the registry replicas, queries to the local view.
pub struct SplitApi {
    pub commands: Arc<dyn RegistryApi>,
    pub queries: Arc<dyn RegistryApi>,
}

#[async_trait::async_trait]
impl RegistryApi for SplitApi {
    async fn command(&self, command: corral_proto::registry::Command) -> corral_proto::registry::Reply {
        self.commands.command(command).await
    }

    async fn query(&self, query: corral_proto::registry::Query) -> corral_proto::registry::Reply {
        self.queries.query(query).await
    }

    async fn list_encoded(
        &self,
        query: corral_proto::registry::Query,
    ) -> Result<(u64, queries::EncodedList), corral_proto::registry::Reply> {
        self.queries.list_encoded(query).await
    }
}

/// Configuration of the stand-alone registry process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-registry", about = "The cluster registry service (NATS mode)")]
pub struct ServiceConfig {
    /// NATS server URL.
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: String,
    /// Folder for this replica's projection.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./data/registry")]
    pub data_dir: PathBuf,
    /// File holding the sealing key (base64); CORRAL_SEAL_KEY takes precedence.
    #[arg(long, env = "CORRAL_SEAL_KEY_FILE")]
    pub seal_key_file: Option<PathBuf>,
    /// JetStream stream name.
    #[arg(long, env = "CORRAL_STREAM", default_value = "CORRAL")]
    pub stream: String,
    /// Stream replicas (3 in production clusters).
    #[arg(long, env = "CORRAL_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

pub const SEAL_KEY_ENV: &str = "CORRAL_SEAL_KEY";

/// Runs the registry against NATS until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let key = Arc::new(SealingKey::load(SEAL_KEY_ENV, config.seal_key_file.as_deref(), false)?);
    let client = async_nats::connect(&config.nats_url).await?;
    let log_config = corral_event_log::NatsLogConfig {
        stream: config.stream.clone(),
        replicas: config.stream_replicas,
        ..Default::default()
    };
    let log: Arc<dyn EventLog> = Arc::new(corral_event_log::NatsLog::new(client.clone(), log_config).await?);
    std::fs::create_dir_all(&config.data_dir)?;
    let db = open_projection_db(Some(&config.data_dir))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let registry = start(log, &db, key, RegistryConfig::default(), stopped(stop_rx.clone())).await?;
    println!("registry ready");
    tracing::info!("registry ready");
    nats_rpc::serve(client, registry, shutdown).await?;
    let _ = stop_tx.send(true);
    db.flush_async().await?;
    Ok(())
}
