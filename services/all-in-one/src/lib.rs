//! The all-in-one control plane: the gateway and the registry in one process. With no NATS URL it
//! runs on the embedded event log, so nothing else needs to be installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use corral_cluster_model::open_projection_db;
use corral_event_log::EventLog;
use corral_registry::RegistryConfig;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral", about = "Event-sourced cluster registry control plane (all in one process)")]
pub struct Config {
    /// Address to listen on for gRPC and REST.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: corral_gateway::TlsOptions,
    /// Folder for the embedded log, projections, the generated sealing key and admin password,
    /// and the accounts file.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// NATS server URLs, comma-separated; without them the embedded event log is used.
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub nats_auth: corral_process::NatsAuthOptions,
    #[command(flatten)]
    pub stream: corral_process::StreamOptions,
    #[command(flatten)]
    pub events: corral_process::EventsOptions,
    // Without a key or key file: <data-dir>/seal.key, generated on first start.
    #[command(flatten)]
    pub seal_key: corral_process::SealKeyOptions,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = corral_gateway::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub auth: corral_gateway::AuthOptions,
    #[command(flatten)]
    pub probe: corral_health_probe::ProbeOptions,
    #[command(flatten)]
    pub cache: corral_cache_invalidation::CacheOptions,
    #[command(flatten)]
    pub rotation: corral_auth_rotation::RotationOptions,
    #[command(flatten)]
    pub log: corral_process::LogOptions,
    #[command(flatten)]
    pub ops: corral_process::OpsOptions,
}

pub const NAME: &str = "corral";

/// What `<data-dir>/accounts.toml` holds when the all-in-one writes it on first start: nothing but
/// how to fill it in. The running control plane reads it again within a second of a change.
const ACCOUNTS_TEMPLATE: &str = r#"# Accounts and RBAC, in Argo CD's argocd-cm and argocd-rbac-cm keys (quoted: they hold dots).
# Saved changes take effect within a second; an invalid file is reported and the previous one kept.
#
# "accounts.ci" = "apiKey"                 # capabilities: login, apiKey
# "accounts.alice" = "login"
# "accounts.alice.enabled" = "false"
# "users.session.duration" = "24h"
# "policy.default" = "role:readonly"       # for every authenticated caller
# "policy.csv" = """
# p, role:deployer, clusters, update, prod/*, allow
# g, ci, role:deployer
# """
"#;

/// The accounts file of a data folder, written with [`ACCOUNTS_TEMPLATE`] if there is none.
fn default_accounts_file(data_dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let path = data_dir.join("accounts.toml");
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => std::io::Write::write_all(&mut f, ACCOUNTS_TEMPLATE.as_bytes())?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(path)
}

/// Runs the control plane on an already-bound listener until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: corral_gateway::PublicListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = corral_process::Readiness::new();
    config.ops.start(NAME, Some(corral_process::DEFAULT_OPS_LISTEN), &readiness).await?;
    std::fs::create_dir_all(&config.data_dir)?;
    let embedded = config.nats_url.is_none();
    let key = config.seal_key.load(embedded.then(|| config.data_dir.join("seal.key")).as_deref())?;
    let max_age = config.events.events_max_age;
    // The log, and the public stream of cluster changes beside it.
    let (log, public): (Arc<dyn EventLog>, Arc<dyn EventLog>) = match &config.nats_url {
        None => (
            Arc::new(corral_event_log::SledLog::open(&config.data_dir.join("log"))?),
            Arc::new(corral_event_log::SledLog::open_with_retention(&config.data_dir.join("events"), max_age)?),
        ),
        Some(urls) => {
            let client = corral_process::connect(urls, NAME, &config.nats_auth).await?;
            corral_process::require_connection(&readiness, &client);
            let public = config.events.open(client.clone(), config.stream.stream_replicas).await?;
            (config.stream.open(client).await?, public)
        }
    };
    let db = open_projection_db(Some(&config.data_dir.join("projections")))?;
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut auth_options = config.auth.clone();
    if auth_options.admin_password_out.is_none() {
        auth_options.admin_password_out = Some(config.data_dir.join("admin.password"));
    }
    if auth_options.accounts_file.is_none() {
        auth_options.accounts_file = Some(default_accounts_file(&config.data_dir)?);
    }
    let auth = corral_gateway::start_auth(log.clone(), key.clone(), &auth_options).await?;
    // The observers in this process: a fleet of one replica each; an interval of 0 turns one off.
    if config.probe.probe_interval_seconds > 0.0 {
        let membership = corral_health_probe::Membership::solo();
        let probe_config = config.probe.probe_config();
        let (probe, feed) =
            corral_health_probe::HealthProbe::start(log.clone(), key.clone(), probe_config, membership).await?;
        tokio::spawn(probe.run(feed, stopped(stop_tx.subscribe())));
    }
    if config.cache.cache_check_seconds > 0.0 {
        let membership = corral_cache_invalidation::Membership::solo();
        let cache_config = config.cache.cache_config();
        let (svc, feed) =
            corral_cache_invalidation::CacheInvalidation::start(log.clone(), key.clone(), cache_config, membership)
                .await?;
        tokio::spawn(svc.run(feed, stopped(stop_tx.subscribe())));
    }
    let registry =
        corral_registry::start(log.clone(), &db, key.clone(), RegistryConfig::default(), stopped(stop_tx.subscribe()))
            .await?;
    tokio::spawn(corral_watch::publisher::run(log.clone(), public.clone(), max_age, stopped(stop_tx.subscribe())));
    let view = Arc::new(corral_cluster_model::Queries::new(
        log.clone(),
        registry.projection().clone(),
        RegistryConfig::default().read_timeout,
    ));
    let hub_config = corral_watch::HubConfig { bookmark_after: config.events.bookmark_after(), ..Default::default() };
    let hub =
        corral_watch::Hub::start_with(log.clone(), public, view, hub_config, stopped(stop_tx.subscribe())).await?;
    let rotation = corral_auth_rotation::AuthRotation::start(
        log,
        key,
        registry.clone(),
        config.rotation.rotation_config(),
        corral_cluster_access::Membership::solo(),
        stopped(stop_tx.subscribe()),
    )
    .await?;
    let addr = listener.local_addr()?;
    // Ready (caught up) before the app is built, so that its health service starts SERVING.
    corral_process::announce_ready(NAME, Some(addr), &readiness);
    let app = corral_gateway::app(
        registry.clone(),
        registry,
        rotation,
        auth,
        hub,
        &corral_gateway::GatewayConfig { max_body_bytes: config.max_body_bytes, readiness },
    );
    tracing::info!(embedded, "control plane serving");
    corral_gateway::serve(listener, app, shutdown).await?;
    let _ = stop_tx.send(true);
    db.flush_async().await?;
    Ok(())
}
