//! The all-in-one control plane: the gateway and the registry in one process. With no NATS URL it
//! runs on the embedded event log, so nothing else needs to be installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use corral_event_log::EventLog;
use corral_registry::{RegistryApi, RegistryConfig};
use corral_secrets::SealingKey;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral", about = "Event-sourced cluster registry control plane (all in one process)")]
pub struct Config {
    /// Address to listen on for gRPC and REST.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for the embedded log, projections and the generated sealing key.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// NATS server URL; without it the embedded event log is used.
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: Option<String>,
    /// File holding the sealing key (base64). Default: <data-dir>/seal.key, generated on first
    /// start in embedded mode. CORRAL_SEAL_KEY takes precedence.
    #[arg(long, env = "CORRAL_SEAL_KEY_FILE")]
    pub seal_key_file: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = corral_gateway::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub auth: corral_gateway::AuthOptions,
    /// Seconds between health-probe rounds; 0 turns the probe off.
    #[arg(long, env = "CORRAL_PROBE_INTERVAL_SECONDS", default_value_t = 10.0)]
    pub probe_interval_seconds: f64,
    /// Seconds the old token keeps working after rotate-auth.
    #[arg(long, env = "CORRAL_ROTATION_GRACE_SECONDS", default_value_t = 300.0)]
    pub rotation_grace_seconds: f64,
    /// Seconds between cache-invalidation checks; 0 turns cache syncing off.
    #[arg(long, env = "CORRAL_CACHE_CHECK_SECONDS", default_value_t = 5.0)]
    pub cache_check_seconds: f64,
}

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
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let embedded = config.nats_url.is_none();
    let key_file = config.seal_key_file.clone().unwrap_or_else(|| config.data_dir.join("seal.key"));
    let key = Arc::new(SealingKey::load(corral_registry::SEAL_KEY_ENV, Some(&key_file), embedded)?);
    let log: Arc<dyn EventLog> = match &config.nats_url {
        None => Arc::new(corral_event_log::SledLog::open(&config.data_dir.join("log"))?),
        Some(url) => {
            let client = async_nats::connect(url.as_str()).await?;
            Arc::new(corral_event_log::NatsLog::new(client, Default::default()).await?)
        }
    };
    let db = corral_registry::open_projection_db(Some(&config.data_dir.join("projections")))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let projection_stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let mut auth_options = config.auth.clone();
    if auth_options.admin_password_out.is_none() {
        auth_options.admin_password_out = Some(config.data_dir.join("admin.password"));
    }
    if auth_options.accounts_file.is_none() {
        auth_options.accounts_file = Some(default_accounts_file(&config.data_dir)?);
    }
    let auth = corral_gateway::start_auth(log.clone(), key.clone(), &auth_options).await?;
    if config.probe_interval_seconds > 0.0 {
        let probe_config = corral_health_probe::ProbeConfig {
            interval: std::time::Duration::from_secs_f64(config.probe_interval_seconds.max(0.05)),
            ..Default::default()
        };
        let mut probe_stop = stop_tx.subscribe();
        tokio::spawn(corral_health_probe::HealthProbe::run(
            log.clone(),
            key.clone(),
            probe_config,
            corral_health_probe::Membership::solo(),
            async move {
                let _ = probe_stop.wait_for(|s| *s).await;
            },
        ));
    }
    if config.cache_check_seconds > 0.0 {
        let cache_config = corral_cache_invalidation::CacheConfig {
            check_interval: std::time::Duration::from_secs_f64(config.cache_check_seconds.max(0.05)),
            ..Default::default()
        };
        let mut cache_stop = stop_tx.subscribe();
        tokio::spawn(corral_cache_invalidation::CacheInvalidation::run(
            log.clone(),
            key.clone(),
            cache_config,
            corral_cache_invalidation::Membership::solo(),
            async move {
                let _ = cache_stop.wait_for(|s| *s).await;
            },
        ));
    }
    let registry =
        corral_registry::start(log.clone(), &db, key.clone(), RegistryConfig::default(), projection_stop).await?;
    let api: Arc<dyn RegistryApi> = registry;
    let rotation_config = corral_auth_rotation::RotationConfig {
        grace: std::time::Duration::from_secs_f64(config.rotation_grace_seconds.max(0.0)),
        ..Default::default()
    };
    let mut rotation_stop = stop_tx.subscribe();
    let rotation = corral_auth_rotation::AuthRotation::start(
        log,
        key,
        api.clone(),
        rotation_config,
        corral_cluster_access::Membership::solo(),
        async move {
            let _ = rotation_stop.wait_for(|s| *s).await;
        },
    )
    .await?;
    let app = corral_gateway::app(
        api,
        rotation,
        auth,
        &corral_gateway::GatewayConfig { max_body_bytes: config.max_body_bytes },
    );
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    tracing::info!(%addr, embedded, "control plane listening");
    corral_gateway::serve(listener, app, shutdown).await?;
    let _ = stop_tx.send(true);
    db.flush_async().await?;
    Ok(())
}
