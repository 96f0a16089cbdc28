//! The cluster read model every service shares: cluster events in their stored form (credentials
//! sealed, [`codec`]), their fold into one record per cluster and per claimed name
//! ([`read_model`]), the cluster as the API shows it, and the query side over a projection of
//! them ([`Queries`]), which the registry and each gateway's view answer from.

mod barrier;
pub mod change;
pub mod codec;
pub mod error;
pub mod queries;
pub mod read_model;
pub mod selector;

use std::sync::Arc;

use corral_event_log::EventLog;
use corral_projection::Projection;
pub use error::RegistryError;
pub use queries::{EncodedList, Listed, Queries};

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
