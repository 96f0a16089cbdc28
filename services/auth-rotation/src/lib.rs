//! The auth-rotation service: gives a cluster a new bearer token for its service account
//! (`argocd-manager` in `kube-system` by default, as Argo CD; the annotation
//! `corral.io/rotation-service-account: NAMESPACE/NAME` chooses another), and removes the old one
//! from the cluster only after a grace period, during which both work.
//!
//! A rotation, with the cluster's current credentials: check the service account; find the
//! service-account-token Secret holding the current token (if any); create a new one and wait
//! for its token; check the new token works; record it in the cluster's sealed config through the
//! registry (only if the cluster is still the version the caller authorised); record the
//! rotation (`ClusterCredentialsRotated`). Any failure before the record removes the new Secret
//! and leaves the old credentials in place. When the grace period ends, a replica removes the old
//! Secret with the new credentials and records `OldCredentialsRetired`.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use corral_cluster_access::{Clients, Fleet, Membership, Target, lock};
use corral_event_log::{EventLog, LogError};
use corral_events::event_type::{CLUSTER_CREDENTIALS_ROTATED, OLD_CREDENTIALS_RETIRED};
use corral_events::{now_unix, subject};
use corral_proto::cluster::{ClusterId, ClusterUpdateRequest};
use corral_proto::events::{ClusterCredentialsRotated, OldCredentialsRetired};
use corral_proto::registry::{Command, Reply, RequestContext, RotateAuth, command, reply};
use corral_proto::v1alpha1::{self, ClusterConfig};
use corral_secrets::SealingKey;
use corral_service_api::{ClusterCommands, CredentialRotation};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;
use tonic::Code;

/// NATS subject the auth-rotation replicas announce themselves on.
pub const HEARTBEAT_SUBJECT: &str = "corralsvc.auth-rotation.heartbeat";
/// Chooses the service account a cluster's token belongs to: `NAMESPACE/NAME` or `NAME`.
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "corral.io/rotation-service-account";
/// `secret` (default): a new service-account-token Secret, removable after the grace period.
/// `token-request`: a bound token from the TokenRequest API, which cannot be removed and ends
/// when it expires (`corral.io/token-expiration-seconds`, default one year).
pub const METHOD_ANNOTATION: &str = "corral.io/rotation-method";
pub const EXPIRATION_ANNOTATION: &str = "corral.io/token-expiration-seconds";
const DEFAULT_TOKEN_REQUEST_SECONDS: i64 = 365 * 24 * 3600;
/// Asks for a rotation every N hours (a decimal number); Argo CD has no such thing.
pub const SCHEDULE_ANNOTATION: &str = "corral.io/rotate-every-hours";
/// After a scheduled rotation fails, it is tried again this much later.
const SCHEDULE_RETRY: Duration = Duration::from_secs(60);
const SA_ANNOTATION: &str = "kubernetes.io/service-account.name";
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// How long the old token keeps working after a rotation.
    pub grace: Duration,
    /// Bound on each request to a cluster.
    pub timeout: Duration,
    /// How often retirements that are due are looked for.
    pub check_interval: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            grace: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

static ROTATIONS: LazyLock<Family<OutcomeLabel, Counter>> = LazyLock::new(|| {
    corral_telemetry::metrics::register(
        "corral_auth_rotations",
        "Credential rotations by outcome: rotated, not_found, refused, changed, cluster_failed, unavailable",
        Family::default(),
    )
});

#[derive(Debug, thiserror::Error)]
enum RotationError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("the cluster changed while the request was being authorised; retry")]
    Changed,
    #[error("rotation failed, the old credentials stay in place: {0}")]
    Cluster(String),
    #[error("{0}")]
    Unavailable(String),
}

impl RotationError {
    fn code(&self) -> Code {
        match self {
            RotationError::NotFound(_) => Code::NotFound,
            RotationError::Precondition(_) | RotationError::Cluster(_) => Code::FailedPrecondition,
            RotationError::Changed => Code::Aborted,
            RotationError::Unavailable(_) => Code::Unavailable,
        }
    }

    fn reply(&self) -> Reply {
        corral_service_api::error_reply(self.code(), self.to_string())
    }
}

pub struct AuthRotation {
    log: Arc<dyn EventLog>,
    registry: Arc<dyn ClusterCommands>,
    fleet: Arc<Mutex<Fleet>>,
    clients: Clients,
    config: RotationConfig,
    membership: Membership,
    schedule_failures: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

fn service_account_of(t: &Target) -> (String, String) {
    let annotation =
        t.record.spec.as_ref().and_then(|s| s.annotations.get(SERVICE_ACCOUNT_ANNOTATION).cloned()).unwrap_or_default();
    match annotation.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (ns.to_string(), name.to_string()),
        _ if !annotation.is_empty() => ("kube-system".into(), annotation),
        _ => ("kube-system".into(), "argocd-manager".into()),
    }
}

/// The rotation on record for this incarnation that still has an old Secret to remove.
fn pending_retirement(t: &Target) -> Option<ClusterCredentialsRotated> {
    let (_, env) = t.side.as_ref()?;
    if env.event_type != CLUSTER_CREDENTIALS_ROTATED {
        return None;
    }
    let e = ClusterCredentialsRotated::decode(env.payload.as_slice()).ok()?;
    (e.cluster_created_at_unix_nanos == t.record.created_at_unix_nanos && !e.old_secret.is_empty()).then_some(e)
}

/// `Some(expiration seconds)` when the cluster asks for TokenRequest tokens.
fn token_request_of(t: &Target) -> Result<Option<i64>, RotationError> {
    let annotations = t.record.spec.as_ref().map(|s| &s.annotations);
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(|v| v.trim().to_string());
    match get(METHOD_ANNOTATION).as_deref() {
        None | Some("") | Some("secret") => Ok(None),
        Some("token-request") => match get(EXPIRATION_ANNOTATION) {
            None => Ok(Some(DEFAULT_TOKEN_REQUEST_SECONDS)),
            Some(v) => v.parse::<i64>().ok().filter(|s| *s >= 600).map(Some).ok_or_else(|| {
                RotationError::Precondition(format!(
                    "{EXPIRATION_ANNOTATION}: expected a number of seconds, at least 600, got {v:?}"
                ))
            }),
        },
        Some(other) => Err(RotationError::Precondition(format!(
            "{METHOD_ANNOTATION}: expected secret or token-request, got {other:?}"
        ))),
    }
}

fn token_of(secret: &Secret) -> Option<String> {
    secret.data.as_ref()?.get("token").map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

impl AuthRotation {
    /// Follows the log; retires old tokens when their grace ends, until `shutdown`.
    pub async fn start(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        registry: Arc<dyn ClusterCommands>,
        config: RotationConfig,
        membership: Membership,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<AuthRotation>, LogError> {
        LazyLock::force(&ROTATIONS);
        let feed = corral_cluster_access::load_fleet(log.clone(), key, subject::CLUSTER_AUTH).await?;
        let svc = Arc::new(AuthRotation {
            log,
            registry,
            fleet: feed.fleet.clone(),
            clients: Clients::default(),
            config,
            membership,
            schedule_failures: Mutex::default(),
        });
        let worker = svc.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut ticker = tokio::time::interval(worker.config.check_interval);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = ticker.tick() => {
                        worker.retire_due().await;
                        worker.rotate_scheduled().await;
                    }
                }
            }
            drop(feed);
        });
        Ok(svc)
    }

    /// Waits until the fleet has applied everything logged before the call.
    async fn catch_up(&self) -> Result<(), RotationError> {
        let caught_up = corral_cluster_access::catch_up(self.log.as_ref(), &self.fleet, Duration::from_secs(5))
            .await
            .map_err(|e| RotationError::Unavailable(e.to_string()))?;
        if caught_up {
            Ok(())
        } else {
            Err(RotationError::Unavailable("the rotation service is behind the log; retry".into()))
        }
    }

    async fn client(&self, id: &str, server: &str, config: &Arc<ClusterConfig>) -> Result<kube::Client, RotationError> {
        self.clients
            .get(id, server, config, self.config.timeout)
            .await
            .map_err(|e| RotationError::Cluster(corral_cluster_access::redact(e.to_string(), config)))
    }

    /// One rotation, counted by outcome.
    async fn rotate_inner(&self, req: RotateAuth) -> Result<(), RotationError> {
        let result = self.rotate_once(req).await;
        let outcome = match &result {
            Ok(()) => "rotated",
            Err(RotationError::NotFound(_)) => "not_found",
            Err(RotationError::Precondition(_)) => "refused",
            Err(RotationError::Changed) => "changed",
            Err(RotationError::Cluster(_)) => "cluster_failed",
            Err(RotationError::Unavailable(_)) => "unavailable",
        };
        ROTATIONS.get_or_create(&OutcomeLabel { outcome }).inc();
        result
    }

    async fn rotate_once(&self, req: RotateAuth) -> Result<(), RotationError> {
        self.catch_up().await?;
        let id = corral_domain::cluster_id(&req.server);
        let (server, config, version, created, sa, token_request) = {
            let fleet = lock(&self.fleet);
            let t = fleet
                .targets
                .get(&id)
                .ok_or_else(|| RotationError::NotFound(format!("cluster \"{}\" not found", req.server)))?;
            let config = t
                .config
                .clone()
                .ok_or_else(|| RotationError::Precondition("the cluster's credentials cannot be opened".into()))?;
            (
                t.server(),
                config,
                t.record.version,
                t.record.created_at_unix_nanos,
                service_account_of(t),
                token_request_of(t)?,
            )
        };
        if req.expected_version != 0 && req.expected_version != version {
            return Err(RotationError::Changed);
        }
        if config.bearer_token.is_empty() {
            return Err(RotationError::Precondition("the cluster has no bearer token to rotate".into()));
        }
        let (ns, sa_name) = sa;
        let client = self.client(&id, &server, &config).await?;
        let describe = |e: kube::Error| RotationError::Cluster(corral_cluster_access::describe(&e, &config));
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        accounts.get(&sa_name).await.map_err(describe)?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let old_secret = secrets
            .list(&ListParams::default())
            .await
            .map_err(describe)?
            .items
            .into_iter()
            .find(|s| {
                s.type_.as_deref() == Some(SA_TOKEN_TYPE)
                    && token_of(s).as_deref() == Some(config.bearer_token.as_str())
            })
            .and_then(|s| s.metadata.name);
        if let Some(expiration_seconds) = token_request {
            let request = TokenRequest {
                spec: Some(TokenRequestSpec { expiration_seconds: Some(expiration_seconds), ..Default::default() }),
                ..Default::default()
            };
            let issued =
                accounts.create_token_request(&sa_name, &PostParams::default(), &request).await.map_err(describe)?;
            let token = issued
                .status
                .and_then(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| RotationError::Cluster("the TokenRequest answer holds no token".into()))?;
            // A bound token cannot be taken back: if recording it fails, it simply expires.
            self.record_token(&server, &config, token, version).await?;
            return self.record_rotation(&id, ns, sa_name, String::new(), old_secret, created).await;
        }
        let new_name = format!("{sa_name}-token-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut fresh = Secret::default();
        fresh.metadata.name = Some(new_name.clone());
        fresh.metadata.annotations = Some(BTreeMap::from([(SA_ANNOTATION.to_string(), sa_name.clone())]));
        fresh.type_ = Some(SA_TOKEN_TYPE.to_string());
        secrets.create(&PostParams::default(), &fresh).await.map_err(describe)?;
        if let Err(e) = self.finish_rotation(&server, &config, &secrets, &new_name, version).await {
            // Nothing was recorded: take the new Secret away again, keep the old credentials.
            let _ = secrets.delete(&new_name, &DeleteParams::default()).await;
            return Err(e);
        }
        self.record_rotation(&id, ns, sa_name, new_name, old_secret, created).await
    }

    /// Records a done rotation, so the old Secret goes when the grace period ends.
    async fn record_rotation(
        &self,
        id: &str,
        ns: String,
        sa_name: String,
        new_name: String,
        old_secret: Option<String>,
        created: i64,
    ) -> Result<(), RotationError> {
        let record = ClusterCredentialsRotated {
            namespace: ns,
            service_account: sa_name,
            new_secret: new_name,
            old_secret: old_secret.unwrap_or_default(),
            // Rounded up: the old token never goes before its full grace period.
            retire_old_at_unix: (std::time::SystemTime::now() + self.config.grace)
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64().ceil() as i64)
                .unwrap_or_default(),
            cluster_created_at_unix_nanos: created,
        };
        let side_seq = lock(&self.fleet).targets.get(id).map(|t| t.side_seq()).unwrap_or(0);
        corral_cluster_access::append_side(
            self.log.as_ref(),
            subject::cluster_auth(id),
            CLUSTER_CREDENTIALS_ROTATED,
            format!("auth-rotation/{}", self.membership.me()),
            record.encode_to_vec(),
            side_seq,
        )
        .await
        .map_err(|e| {
            RotationError::Unavailable(format!("rotated, but the retirement of the old token was not recorded: {e}"))
        })?;
        Ok(())
    }

    /// Waits for the new token, checks it works, and records it in the cluster's config.
    async fn finish_rotation(
        &self,
        server: &str,
        config: &Arc<ClusterConfig>,
        secrets: &Api<Secret>,
        new_name: &str,
        version: u64,
    ) -> Result<(), RotationError> {
        let describe = |e: kube::Error| RotationError::Cluster(corral_cluster_access::describe(&e, config));
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let token = loop {
            if let Some(t) = token_of(&secrets.get(new_name).await.map_err(describe)?) {
                break t;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RotationError::Cluster(
                    "the cluster did not issue a token for the new Secret in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.record_token(server, config, token, version).await
    }

    /// Checks the new token works and records it in the cluster's config through the registry.
    async fn record_token(
        &self,
        server: &str,
        config: &Arc<ClusterConfig>,
        token: String,
        version: u64,
    ) -> Result<(), RotationError> {
        let mut new_config = (**config).clone();
        new_config.bearer_token = token;
        let check = corral_cluster_access::client::build(server, &new_config, self.config.timeout)
            .await
            .map_err(|e| RotationError::Cluster(e.to_string()))?;
        check.apiserver_version().await.map_err(|e| {
            RotationError::Cluster(format!(
                "the new token does not work: {}",
                corral_cluster_access::describe(&e, &new_config)
            ))
        })?;
        let update = Command {
            context: Some(RequestContext { actor: "auth-rotation".into(), ..Default::default() }),
            expected_version: version,
            kind: Some(command::Kind::Update(ClusterUpdateRequest {
                cluster: Some(v1alpha1::Cluster {
                    server: server.to_string(),
                    config: Some(new_config),
                    ..Default::default()
                }),
                updated_fields: vec!["config".into()],
                id: Some(ClusterId { r#type: "server".into(), value: server.to_string() }),
            })),
            // A replica behind the version read above refuses it (Aborted), and it is retried.
            min_revision: 0,
        };
        match self.registry.command(update).await.result {
            Some(reply::Result::Error(e)) if corral_service_api::wire_code(&e) == Code::Aborted => {
                Err(RotationError::Changed)
            }
            Some(reply::Result::Error(e)) => {
                Err(RotationError::Unavailable(format!("the registry did not record the new token: {}", e.message)))
            }
            _ => Ok(()),
        }
    }

    async fn retire_due(&self) {
        let live = self.membership.live();
        let due: Vec<(String, String, Arc<ClusterConfig>, ClusterCredentialsRotated, u64)> = lock(&self.fleet)
            .targets
            .iter()
            .filter(|(id, t)| self.membership.owns(&live, id, t.shard()))
            .filter_map(|(id, t)| {
                let r = pending_retirement(t).filter(|r| r.retire_old_at_unix <= now_unix())?;
                Some((id.clone(), t.server(), t.config.clone()?, r, t.side_seq()))
            })
            .collect();
        for (id, server, config, r, side_seq) in due {
            let Ok(client) = self.client(&id, &server, &config).await else { continue };
            let secrets: Api<Secret> = Api::namespaced(client, &r.namespace);
            match secrets.delete(&r.old_secret, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(cluster_id = %id, error = %corral_cluster_access::describe(&e, &config), "cannot remove the old token yet");
                    continue;
                }
            }
            let rotated_at = lock(&self.fleet)
                .targets
                .get(&id)
                .and_then(|t| t.side.as_ref().map(|(_, env)| env.occurred_at_unix_nanos / 1_000_000_000))
                .unwrap_or_else(now_unix);
            let done = OldCredentialsRetired {
                namespace: r.namespace.clone(),
                old_secret: r.old_secret.clone(),
                rotated_at_unix: rotated_at,
            };
            if let Err(e) = corral_cluster_access::append_side(
                self.log.as_ref(),
                subject::cluster_auth(&id),
                OLD_CREDENTIALS_RETIRED,
                format!("auth-rotation/{}", self.membership.me()),
                done.encode_to_vec(),
                side_seq,
            )
            .await
            {
                tracing::warn!(cluster_id = %id, error = %e, "old token removed but not recorded; will retry");
            } else {
                tracing::info!(cluster_id = %id, secret = %r.old_secret, "old token removed after its grace period");
            }
        }
    }
}

/// When this incarnation of the cluster last had its token rotated, or was created.
fn last_rotation_unix(t: &Target) -> i64 {
    let created = t.record.created_at_unix_nanos / 1_000_000_000;
    let Some((_, env)) = &t.side else { return created };
    let at = match env.event_type.as_str() {
        CLUSTER_CREDENTIALS_ROTATED => env.occurred_at_unix_nanos / 1_000_000_000,
        OLD_CREDENTIALS_RETIRED => {
            OldCredentialsRetired::decode(env.payload.as_slice()).map(|e| e.rotated_at_unix).unwrap_or(0)
        }
        _ => 0,
    };
    at.max(created)
}

fn schedule_hours(t: &Target) -> Option<f64> {
    let v = t.record.spec.as_ref()?.annotations.get(SCHEDULE_ANNOTATION)?;
    v.trim().parse::<f64>().ok().filter(|h| h.is_finite() && *h > 0.0)
}

impl AuthRotation {
    /// Rotates the clusters whose schedule annotation says they are due.
    async fn rotate_scheduled(&self) {
        let live = self.membership.live();
        let now = now_unix();
        let due: Vec<String> = lock(&self.fleet)
            .targets
            .iter()
            .filter(|(id, t)| corral_cluster_access::reachable(id) && self.membership.owns(&live, id, t.shard()))
            .filter(|(_, t)| schedule_hours(t).is_some_and(|h| (now - last_rotation_unix(t)) as f64 >= h * 3600.0))
            .map(|(_, t)| t.server())
            .collect();
        for server in due {
            let recently_failed =
                lock(&self.schedule_failures).get(&server).is_some_and(|at| at.elapsed() < SCHEDULE_RETRY);
            if recently_failed {
                continue;
            }
            match self.rotate_inner(RotateAuth { server: server.clone(), ..Default::default() }).await {
                Ok(()) => {
                    lock(&self.schedule_failures).remove(&server);
                    tracing::info!(server, "scheduled rotation done");
                }
                Err(e) => {
                    lock(&self.schedule_failures).insert(server.clone(), std::time::Instant::now());
                    tracing::warn!(server, error = %e, "scheduled rotation failed; the old credentials stay");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl CredentialRotation for AuthRotation {
    async fn rotate(&self, request: RotateAuth) -> Reply {
        match self.rotate_inner(request).await {
            Ok(()) => Reply { result: Some(reply::Result::Empty(Default::default())), ..Default::default() },
            Err(e) => {
                tracing::info!(error = %e, "rotation refused or failed");
                e.reply()
            }
        }
    }
}

/// How credentials are rotated (the stand-alone service's flags, and the all-in-one's).
#[derive(Debug, Clone, clap::Args)]
pub struct RotationOptions {
    /// Seconds the old token keeps working after a rotation.
    #[arg(long, env = "CORRAL_ROTATION_GRACE_SECONDS", default_value_t = 300.0)]
    pub rotation_grace_seconds: f64,
    /// Seconds each request to a cluster may take.
    #[arg(long, env = "CORRAL_ROTATION_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub rotation_timeout_seconds: f64,
}

impl RotationOptions {
    pub fn rotation_config(&self) -> RotationConfig {
        RotationConfig {
            grace: Duration::from_secs_f64(self.rotation_grace_seconds.max(0.0)),
            timeout: Duration::from_secs_f64(self.rotation_timeout_seconds.max(0.05)),
            ..Default::default()
        }
    }
}

/// Configuration of the stand-alone auth-rotation process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-auth-rotation", about = "Rotates clusters' bearer tokens and issues API tokens (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub service: corral_process::ServiceOptions,
    #[command(flatten)]
    pub rotation: RotationOptions,
    /// Accounts configuration (the gateways' file or folder): which accounts may hold API tokens.
    #[arg(long, env = "CORRAL_ACCOUNTS_FILE")]
    pub accounts_file: Option<std::path::PathBuf>,
    /// How long to wait for a registry replica, in milliseconds.
    #[arg(long, env = "CORRAL_REGISTRY_TIMEOUT_MS", default_value_t = 15_000)]
    pub registry_timeout_ms: u64,
}

pub const NAME: &str = "corral-auth-rotation";

pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = corral_process::Readiness::new();
    config.service.ops.start(NAME, None, &readiness).await?;
    let (key, client, log) = config.service.connect(NAME, &readiness).await?;
    let registry = Arc::new(corral_service_api::nats::NatsClient::new(
        client.clone(),
        Duration::from_millis(config.registry_timeout_ms),
    ));
    let membership = Membership::join(client.clone(), HEARTBEAT_SUBJECT, Duration::from_millis(500)).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // This service issues and revokes the accounts' API tokens (the gateways authorise).
    let accounts = match &config.accounts_file {
        Some(path) => corral_auth::AuthConfig::load(path)?,
        None => corral_auth::AuthConfig::default(),
    };
    let auth = corral_auth::Auth::start(log.clone(), key.clone(), accounts, false).await?;
    if let Some(path) = &config.accounts_file {
        auth.watch_config_file(path.clone());
    }
    let rotation_config = config.rotation.rotation_config();
    let svc = AuthRotation::start(log, key, registry, rotation_config, membership, stopped(stop_rx.clone())).await?;
    corral_process::announce_ready(NAME, None, &readiness);
    let serving = corral_service_api::nats::serve_rotation(client.clone(), svc, stopped(stop_rx.clone()));
    let tokens = corral_auth::nats::serve(client, auth, stopped(stop_rx));
    tokio::select! {
        r = serving => r?,
        r = tokens => r?,
        _ = shutdown => {}
    }
    let _ = stop_tx.send(true);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use corral_proto::events::{ClusterSpec, EventEnvelope};
    use corral_proto::registry::ClusterRecord;

    use super::*;

    const CREATED: i64 = 1_700_000_000;

    fn target(annotations: &[(&str, &str)], side: Option<EventEnvelope>) -> Target {
        let spec = ClusterSpec {
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let record =
            ClusterRecord { spec: Some(spec), created_at_unix_nanos: CREATED * 1_000_000_000, ..Default::default() };
        Target { record, config: None, side: side.map(|e| (9, e)), changed_by: Vec::new() }
    }

    fn rotated(at: i64, old_secret: &str, created: i64) -> EventEnvelope {
        let e = ClusterCredentialsRotated {
            old_secret: old_secret.into(),
            retire_old_at_unix: at + 300,
            cluster_created_at_unix_nanos: created * 1_000_000_000,
            ..Default::default()
        };
        EventEnvelope {
            event_type: CLUSTER_CREDENTIALS_ROTATED.into(),
            occurred_at_unix_nanos: at * 1_000_000_000,
            payload: e.encode_to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn the_service_account_comes_from_the_annotation_or_is_argo_cds() {
        assert_eq!(service_account_of(&target(&[], None)), ("kube-system".into(), "argocd-manager".into()));
        let ns_name = target(&[(SERVICE_ACCOUNT_ANNOTATION, "ops/rotator")], None);
        assert_eq!(service_account_of(&ns_name), ("ops".into(), "rotator".into()));
        let name_only = target(&[(SERVICE_ACCOUNT_ANNOTATION, "rotator")], None);
        assert_eq!(service_account_of(&name_only), ("kube-system".into(), "rotator".into()));
    }

    #[test]
    fn token_requests_are_asked_for_by_annotation_with_a_sane_expiry() {
        assert_eq!(token_request_of(&target(&[], None)).unwrap(), None);
        assert_eq!(token_request_of(&target(&[(METHOD_ANNOTATION, "secret")], None)).unwrap(), None);
        let tr = target(&[(METHOD_ANNOTATION, "token-request")], None);
        assert_eq!(token_request_of(&tr).unwrap(), Some(DEFAULT_TOKEN_REQUEST_SECONDS));
        let short = target(&[(METHOD_ANNOTATION, "token-request"), (EXPIRATION_ANNOTATION, "3600")], None);
        assert_eq!(token_request_of(&short).unwrap(), Some(3600));
        for bad in [
            vec![(METHOD_ANNOTATION, "magic")],
            vec![(METHOD_ANNOTATION, "token-request"), (EXPIRATION_ANNOTATION, "60")],
        ] {
            assert!(matches!(token_request_of(&target(&bad, None)), Err(RotationError::Precondition(_))), "{bad:?}");
        }
    }

    #[test]
    fn an_old_secret_is_retired_only_for_the_incarnation_that_rotated() {
        assert!(pending_retirement(&target(&[], Some(rotated(CREATED + 10, "old-token-secret", CREATED)))).is_some());
        // nothing to remove: the token came from elsewhere
        assert!(pending_retirement(&target(&[], Some(rotated(CREATED + 10, "", CREATED)))).is_none());
        // a rotation of an earlier cluster registered under the same server
        assert!(pending_retirement(&target(&[], Some(rotated(CREATED - 10, "s", CREATED - 100)))).is_none());
    }

    #[test]
    fn a_schedule_counts_from_the_last_rotation_or_the_registration() {
        assert_eq!(schedule_hours(&target(&[(SCHEDULE_ANNOTATION, "1.5")], None)), Some(1.5));
        for bad in ["", "0", "-2", "soon", "NaN", "inf"] {
            assert_eq!(schedule_hours(&target(&[(SCHEDULE_ANNOTATION, bad)], None)), None, "{bad:?}");
        }
        assert_eq!(last_rotation_unix(&target(&[], None)), CREATED);
        assert_eq!(last_rotation_unix(&target(&[], Some(rotated(CREATED + 50, "s", CREATED)))), CREATED + 50);
    }
}
