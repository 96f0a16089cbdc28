//! The health probe: reaches every registered cluster's Kubernetes API with that cluster's own
//! credentials, on an interval and with bounded concurrency, and appends a
//! `ClusterConnectionObserved` event only when the status, message or server version changes, so
//! a healthy fleet adds nothing to the log.
//!
//! `attemptedAt` is the time of the probe that established the current state: later probes that
//! find the same state change nothing, by the rule above.
//!
//! Its view of the fleet is folded from the log (cluster events and its own observations), kept in
//! memory and rebuilt at start; clients are kept per cluster and reused between probes.

pub mod client;
pub mod membership;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_event_log::{EventLog, LogError, NewEvent, RecordedEvent};
use corral_proto::events::{ClusterConnectionObserved, EventEnvelope};
use corral_proto::registry::ClusterRecord;
use corral_proto::v1alpha1::ClusterConfig;
use corral_registry::read_model::{self, CLUSTER_CONNECTION_OBSERVED, CLUSTER_SUBJECT_PREFIX, STATE_SUBJECT_PREFIX};
use corral_domain::IN_CLUSTER_SERVER;
use corral_secrets::SealingKey;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};

pub use membership::Membership;

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub interval: Duration,
    /// Probes running at once.
    pub concurrency: usize,
    /// Bound on each request to a cluster.
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { interval: Duration::from_secs(10), concurrency: 32, timeout: Duration::from_secs(5) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: String,
    pub message: String,
    pub server_version: String,
}

/// One cluster as the probe knows it. The config holds credentials: never logged.
struct Target {
    record: ClusterRecord,
    config: Option<Arc<ClusterConfig>>,
    observed: Option<Observed>,
    state_seq: u64,
}

#[derive(Default)]
struct Fleet {
    targets: HashMap<String, Target>,
    applied: u64,
}

pub struct HealthProbe {
    log: Arc<dyn EventLog>,
    fleet: Arc<Mutex<Fleet>>,
    config: ProbeConfig,
    clients: Mutex<HashMap<String, (Arc<ClusterConfig>, kube::Client)>>,
    membership: Membership,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    /// Applies one logged event; answers the cluster id when a cluster appeared or changed.
    fn apply(&mut self, ev: &RecordedEvent, key: &SealingKey) -> Option<String> {
        self.applied = self.applied.max(ev.seq);
        if let Some(id) = ev.subject.strip_prefix(CLUSTER_SUBJECT_PREFIX) {
            let env = EventEnvelope::decode(ev.payload.as_ref()).ok()?;
            let previous = self.targets.remove(id);
            let (rec, observed, state_seq) = match previous {
                Some(t) => (Some(t.record), t.observed, t.state_seq),
                None => (None, None, 0),
            };
            let rec = match read_model::fold_cluster(rec, id, ev.seq, &env) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, seq = ev.seq, "health probe skipped a cluster event");
                    return None;
                }
            };
            if rec.deleted {
                return None;
            }
            let config = rec.spec.as_ref().and_then(|spec| match corral_registry::codec::open_config(spec, id, key) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::error!(error = %e, cluster_id = id, "cannot open a cluster's credentials");
                    None
                }
            });
            // A re-created cluster starts unobserved, as the registry shows it.
            let observed = if rec.connection_status.is_empty() && env.event_type == corral_registry::codec::CLUSTER_REGISTERED {
                None
            } else {
                observed
            };
            self.targets.insert(id.to_string(), Target { record: rec, config, observed, state_seq });
            return Some(id.to_string());
        }
        if let Some(id) = ev.subject.strip_prefix(STATE_SUBJECT_PREFIX) {
            let env = EventEnvelope::decode(ev.payload.as_ref()).ok()?;
            if env.event_type != CLUSTER_CONNECTION_OBSERVED {
                return None;
            }
            let e = ClusterConnectionObserved::decode(env.payload.as_slice()).ok()?;
            if let Some(t) = self.targets.get_mut(id) {
                t.state_seq = ev.seq;
                if e.cluster_created_at_unix_nanos == t.record.created_at_unix_nanos {
                    t.observed = Some(Observed { status: e.status, message: e.message, server_version: e.server_version });
                }
            }
        }
        None
    }
}

/// The in-cluster entry is probed only from inside a Kubernetes pod; elsewhere its URL means
/// nothing (and resolving it would send DNS queries off the machine), so it stays Unknown.
fn probeable(id: &str) -> bool {
    id != corral_domain::cluster_id(IN_CLUSTER_SERVER) || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// A probe failure in words an operator can act on, with any credential removed.
fn describe(err: &kube::Error, config: &ClusterConfig) -> String {
    let text = match err {
        kube::Error::Api(s) if s.code == 401 => "the API server refused the credentials (401 Unauthorized)".to_string(),
        kube::Error::Api(s) if s.code == 403 => format!("the credentials lack permission (403 Forbidden): {}", s.message),
        kube::Error::Api(s) => format!("the API server answered {} {}: {}", s.code, s.reason, s.message),
        other => {
            // The error chain carries the cause: TLS, DNS, refused connection, timeout.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let part = s.to_string();
                // Wrapping errors often repeat their cause's words; keep each once.
                if !text.contains(&part) {
                    text = format!("{text}: {part}");
                }
                source = s.source();
            }
            format!("cannot reach the API server: {text}")
        }
    };
    redact(text, config)
}

fn redact(mut text: String, config: &ClusterConfig) -> String {
    let mut secrets = vec![config.bearer_token.clone(), config.password.clone()];
    if let Some(e) = &config.exec_provider_config {
        secrets.extend(e.env.values().cloned());
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s.as_str(), "***");
    }
    text
}

fn major_minor(info: &k8s_openapi::apimachinery::pkg::version::Info) -> String {
    // Argo CD shows "MAJOR.MINOR"; some distributions put a '+' after the minor.
    format!("{}.{}", info.major, info.minor.trim_end_matches('+'))
}

impl HealthProbe {
    /// Follows the log and probes the fleet until `shutdown` resolves.
    pub async fn run(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        config: ProbeConfig,
        membership: Membership,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), LogError> {
        let probe = Arc::new(HealthProbe { log: log.clone(), fleet: Arc::default(), config, clients: Mutex::default(), membership });
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<String>();
        let last = log.last_seq().await?;
        let follower = tokio::spawn(follow(log, key, probe.fleet.clone(), changed_tx, last));
        // Start probing once the fleet is known, so the first round sees every cluster.
        while lock(&probe.fleet).applied < last {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("health-probe ready (replica {})", probe.membership.me());
        tracing::info!(clusters = lock(&probe.fleet).targets.len(), "health probe ready");
        let mut ticker = tokio::time::interval(probe.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => probe.clone().round().await,
                Some(id) = changed_rx.recv() => {
                    // New or changed clusters are probed at once, not at the next tick.
                    if probeable(&id) && probe.mine(&probe.membership.live(), &id) {
                        let p = probe.clone();
                        tokio::spawn(async move { p.probe_one(id).await });
                    }
                }
            }
        }
        follower.abort();
        Ok(())
    }

    fn mine(&self, live: &[String], id: &str) -> bool {
        let shard = lock(&self.fleet).targets.get(id).and_then(|t| t.record.spec.as_ref().and_then(|s| s.shard));
        self.membership.owns(live, id, shard)
    }

    async fn round(self: Arc<Self>) {
        let live = self.membership.live();
        let all: Vec<(String, Option<i64>)> = lock(&self.fleet)
            .targets
            .iter()
            .map(|(id, t)| (id.clone(), t.record.spec.as_ref().and_then(|s| s.shard)))
            .collect();
        let ids: Vec<String> = all
            .into_iter()
            .filter(|(id, shard)| self.membership.owns(&live, id, *shard) && probeable(id))
            .map(|(id, _)| id)
            .collect();
        // Clients of clusters that moved to another replica are dropped.
        lock(&self.clients).retain(|id, _| ids.contains(id));
        let gate = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let p = self.clone();
            tasks.push(tokio::spawn(async move {
                p.probe_one(id).await;
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn client_for(&self, id: &str, server: &str, config: &Arc<ClusterConfig>) -> Result<kube::Client, client::ClientError> {
        let mut clients = lock(&self.clients);
        if server == IN_CLUSTER_SERVER {
            // The built-in entry means "the cluster this runs in": its service account, as Argo CD.
            if let Some((_, c)) = clients.get(id) {
                return Ok(c.clone());
            }
            let cfg = kube::Config::incluster().map_err(|e| client::ClientError::Build(e.to_string()))?;
            let c = kube::Client::try_from(cfg).map_err(|e| client::ClientError::Build(e.to_string()))?;
            clients.insert(id.to_string(), (config.clone(), c.clone()));
            return Ok(c);
        }
        if let Some((cfg, c)) = clients.get(id)
            && (Arc::ptr_eq(cfg, config) || **cfg == **config)
        {
            return Ok(c.clone());
        }
        let c = client::build(server, config, self.config.timeout)?;
        clients.insert(id.to_string(), (config.clone(), c.clone()));
        Ok(c)
    }

    async fn probe_one(&self, id: String) {
        let Some((server, config, created)) = lock(&self.fleet)
            .targets
            .get(&id)
            .map(|t| (t.record.spec.as_ref().map(|s| s.server.clone()).unwrap_or_default(), t.config.clone(), t.record.created_at_unix_nanos))
        else {
            lock(&self.clients).remove(&id);
            return;
        };
        let attempted_at = chrono::Utc::now().timestamp();
        let observed = match config {
            None => Observed { status: "Failed".into(), message: "the cluster's credentials cannot be opened".into(), server_version: String::new() },
            Some(config) => match self.client_for(&id, &server, &config) {
                Err(e) => Observed { status: "Failed".into(), message: redact(e.to_string(), &config), server_version: String::new() },
                Ok(c) => match tokio::time::timeout(self.config.timeout, c.apiserver_version()).await {
                    Ok(Ok(info)) => Observed { status: "Successful".into(), message: String::new(), server_version: major_minor(&info) },
                    Ok(Err(e)) => Observed { status: "Failed".into(), message: describe(&e, &config), server_version: String::new() },
                    Err(_) => Observed {
                        status: "Failed".into(),
                        message: format!("the API server did not answer within {:?}", self.config.timeout),
                        server_version: String::new(),
                    },
                },
            },
        };
        let (unchanged, state_seq) = match lock(&self.fleet).targets.get(&id) {
            Some(t) => (t.observed.as_ref() == Some(&observed), t.state_seq),
            None => return,
        };
        if unchanged {
            return;
        }
        if observed.status == "Failed" {
            tracing::info!(cluster_id = %id, message = %observed.message, "cluster connection failed");
        }
        let payload = ClusterConnectionObserved {
            status: observed.status.clone(),
            message: observed.message.clone(),
            server_version: observed.server_version.clone(),
            attempted_at_unix: attempted_at,
            cluster_created_at_unix_nanos: created,
        };
        let event_id = uuid::Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            event_id: event_id.clone(),
            event_type: CLUSTER_CONNECTION_OBSERVED.into(),
            aggregate_id: format!("clusterstate/{id}"),
            occurred_at_unix_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            schema_version: 1,
            actor: format!("health-probe/{}", self.membership.me()),
            payload: payload.encode_to_vec(),
            ..Default::default()
        };
        let event = NewEvent {
            subject: format!("{STATE_SUBJECT_PREFIX}{id}"),
            msg_id: event_id,
            // Two probes racing on one cluster record one change, not two.
            expected_subject_seq: Some(state_seq),
            headers: vec![],
            payload: envelope.encode_to_vec().into(),
        };
        match self.log.append(event).await {
            Ok(_) | Err(LogError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(error = %e, cluster_id = %id, "cannot record a connection state; the next probe retries"),
        }
    }
}

/// Folds the log into the fleet; reports clusters that appear or change after `live_from`.
async fn follow(
    log: Arc<dyn EventLog>,
    key: Arc<SealingKey>,
    fleet: Arc<Mutex<Fleet>>,
    changed: mpsc::UnboundedSender<String>,
    live_from: u64,
) {
    loop {
        let from = lock(&fleet).applied + 1;
        let mut stream = match log.subscribe(from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "health probe cannot follow the log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(next) = stream.next().await {
            match next {
                Ok(ev) => {
                    let touched = lock(&fleet).apply(&ev, &key);
                    if let Some(id) = touched.filter(|_| ev.seq > live_from) {
                        let _ = changed.send(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "health probe lost the log; resubscribing");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Configuration of the stand-alone health-probe process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-health-probe", about = "Probes every registered cluster (NATS mode)")]
pub struct ServiceConfig {
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: String,
    #[arg(long, env = "CORRAL_STREAM", default_value = "CORRAL")]
    pub stream: String,
    /// File holding the sealing key (base64); CORRAL_SEAL_KEY takes precedence.
    #[arg(long, env = "CORRAL_SEAL_KEY_FILE")]
    pub seal_key_file: Option<std::path::PathBuf>,
    /// Seconds between probe rounds.
    #[arg(long, env = "CORRAL_PROBE_INTERVAL_SECONDS", default_value_t = 10.0)]
    pub interval_seconds: f64,
    /// Probes running at once.
    #[arg(long, env = "CORRAL_PROBE_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds each request to a cluster may take.
    #[arg(long, env = "CORRAL_PROBE_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub timeout_seconds: f64,
}

impl ServiceConfig {
    pub fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_secs_f64(self.interval_seconds.max(0.05)),
            concurrency: self.concurrency,
            timeout: Duration::from_secs_f64(self.timeout_seconds.max(0.05)),
        }
    }
}

pub async fn run(config: ServiceConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let client = async_nats::connect(&config.nats_url).await?;
    let log_config = corral_event_log::NatsLogConfig { stream: config.stream.clone(), ..Default::default() };
    let log: Arc<dyn EventLog> = Arc::new(corral_event_log::NatsLog::new(client.clone(), log_config).await?);
    let key = Arc::new(SealingKey::load(corral_registry::SEAL_KEY_ENV, config.seal_key_file.as_deref(), false)?);
    let probe_config = config.probe_config();
    let membership = Membership::join(client, probe_config.interval / 3).await?;
    HealthProbe::run(log, key, probe_config, membership, shutdown).await?;
    Ok(())
}
