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

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use corral_cluster_access::Membership;
use corral_cluster_access::{Clients, Fleet, lock};
use corral_event_log::{EventLog, LogError};
use corral_proto::events::ClusterConnectionObserved;
use corral_registry::read_model::{CLUSTER_CONNECTION_OBSERVED, STATE_SUBJECT_PREFIX};
use corral_secrets::SealingKey;
use prost::Message;
use tokio::sync::Semaphore;

/// NATS subject the health-probe replicas announce themselves on.
pub const HEARTBEAT_SUBJECT: &str = "corralsvc.health-probe.heartbeat";

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

pub struct HealthProbe {
    log: Arc<dyn EventLog>,
    fleet: Arc<Mutex<Fleet>>,
    config: ProbeConfig,
    clients: Clients,
    membership: Membership,
}

fn major_minor(info: &k8s_openapi::apimachinery::pkg::version::Info) -> String {
    // Argo CD shows "MAJOR.MINOR"; some distributions put a '+' after the minor.
    format!("{}.{}", info.major, info.minor.trim_end_matches('+'))
}

/// The state the log holds for a cluster: its last observation, if it was of this incarnation.
fn recorded(t: &corral_cluster_access::Target) -> Option<Observed> {
    let (_, env) = t.side.as_ref()?;
    if env.event_type != CLUSTER_CONNECTION_OBSERVED {
        return None;
    }
    let e = ClusterConnectionObserved::decode(env.payload.as_slice()).ok()?;
    (e.cluster_created_at_unix_nanos == t.record.created_at_unix_nanos).then_some(Observed {
        status: e.status,
        message: e.message,
        server_version: e.server_version,
    })
}

impl HealthProbe {
    /// Follows the log and probes this replica's share of the fleet until `shutdown` resolves.
    pub async fn run(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        config: ProbeConfig,
        membership: Membership,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), LogError> {
        let (fleet, mut changed_rx, follower) =
            corral_cluster_access::load_fleet(log.clone(), key, STATE_SUBJECT_PREFIX).await?;
        let probe = Arc::new(HealthProbe { log, fleet, config, clients: Clients::default(), membership });
        println!("health-probe ready (replica {})", probe.membership.me());
        tracing::info!(clusters = lock(&probe.fleet).targets.len(), "health probe ready");
        let mut ticker = tokio::time::interval(probe.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Replicas leaving are noticed between rounds: their clusters are probed at once, not at
        // the next tick, so a dead replica's share moves within one interval.
        let mut watch = tokio::time::interval(probe.config.interval / 6);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = probe.membership.live();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => probe.clone().round().await,
                _ = watch.tick() => {
                    let now = probe.membership.live();
                    let someone_left = live.iter().any(|r| !now.contains(r));
                    live = now;
                    if someone_left {
                        tracing::info!(replicas = live.len(), "a replica left; taking over its clusters");
                        probe.clone().round().await;
                    }
                }
                Some(id) = changed_rx.recv() => {
                    // New or changed clusters are probed at once, not at the next tick.
                    if probe.mine(&probe.membership.live(), &id) {
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
        let shard = lock(&self.fleet).targets.get(id).and_then(|t| t.shard());
        corral_cluster_access::reachable(id) && self.membership.owns(live, id, shard)
    }

    async fn round(self: Arc<Self>) {
        let live = self.membership.live();
        let all: Vec<(String, Option<i64>)> =
            lock(&self.fleet).targets.iter().map(|(id, t)| (id.clone(), t.shard())).collect();
        let ids: Vec<String> = all
            .into_iter()
            .filter(|(id, shard)| corral_cluster_access::reachable(id) && self.membership.owns(&live, id, *shard))
            .map(|(id, _)| id)
            .collect();
        // Clients of clusters that left this replica (moved, deleted) are dropped.
        self.clients.retain(|id| ids.iter().any(|i| i == id));
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

    async fn probe_one(&self, id: String) {
        let Some((server, config, created)) =
            lock(&self.fleet).targets.get(&id).map(|t| (t.server(), t.config.clone(), t.record.created_at_unix_nanos))
        else {
            return;
        };
        let attempted_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let failed = |message: String| Observed { status: "Failed".into(), message, server_version: String::new() };
        let observed = match config {
            None => failed("the cluster's credentials cannot be opened".into()),
            Some(config) => match self.clients.get(&id, &server, &config, self.config.timeout).await {
                Err(e) => failed(corral_cluster_access::redact(e.to_string(), &config)),
                Ok(c) => match tokio::time::timeout(self.config.timeout, c.apiserver_version()).await {
                    Ok(Ok(info)) => Observed {
                        status: "Successful".into(),
                        message: String::new(),
                        server_version: major_minor(&info),
                    },
                    Ok(Err(e)) => failed(corral_cluster_access::describe(&e, &config)),
                    Err(_) => failed(format!("the API server did not answer within {:?}", self.config.timeout)),
                },
            },
        };
        let (unchanged, side_seq) = match lock(&self.fleet).targets.get(&id) {
            Some(t) => (recorded(t).as_ref() == Some(&observed), t.side_seq()),
            None => return,
        };
        if unchanged {
            return;
        }
        if observed.status == "Failed" {
            tracing::info!(cluster_id = %id, message = %observed.message, "cluster connection failed");
        }
        let payload = ClusterConnectionObserved {
            status: observed.status,
            message: observed.message,
            server_version: observed.server_version,
            attempted_at_unix: attempted_at,
            cluster_created_at_unix_nanos: created,
        };
        let appended = corral_cluster_access::append_side(
            self.log.as_ref(),
            format!("{STATE_SUBJECT_PREFIX}{id}"),
            CLUSTER_CONNECTION_OBSERVED,
            format!("health-probe/{}", self.membership.me()),
            payload.encode_to_vec(),
            side_seq,
        )
        .await;
        if let Err(e) = appended {
            tracing::warn!(error = %e, cluster_id = %id, "cannot record a connection state; the next probe retries");
        }
    }
}

/// Configuration of the stand-alone health-probe process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-health-probe", about = "Probes every registered cluster (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub nats: corral_cluster_access::NatsServiceArgs,
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

pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (client, log, key) = config.nats.connect().await?;
    let probe_config = config.probe_config();
    let membership = Membership::join(client, HEARTBEAT_SUBJECT, probe_config.interval / 3).await?;
    HealthProbe::run(log, key, probe_config, membership, shutdown).await?;
    Ok(())
}
