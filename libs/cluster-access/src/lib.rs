//! What the services that observe clusters share: the fleet folded from the log (each cluster's
//! record with its credentials opened, plus the last event on the service's own side subject),
//! Kubernetes clients built from Argo CD cluster configs and kept per cluster, and replica
//! membership. Credentials stay in memory and are never logged.

pub mod aws;
pub mod client;
pub mod membership;
pub mod observer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use corral_cluster_model::{codec, read_model};
use corral_domain::IN_CLUSTER_SERVER;
use corral_event_log::{EventLog, LogError, RecordedEvent};
use corral_events::subject;
use corral_proto::events::EventEnvelope;
use corral_proto::registry::ClusterRecord;
use corral_proto::v1alpha1::ClusterConfig;
use corral_secrets::SealingKey;
use prost::Message;
use tokio::sync::mpsc;

pub use membership::Membership;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One live cluster as an observing service knows it.
pub struct Target {
    pub record: ClusterRecord,
    /// The opened connection config; `None` if it could not be opened.
    pub config: Option<Arc<ClusterConfig>>,
    /// The last event on the service's side subject for this cluster, and its sequence.
    pub side: Option<(u64, EventEnvelope)>,
    /// The headers of the last event that changed the cluster: its trace context, for the spans
    /// of the work that change causes.
    pub changed_by: corral_event_log::Headers,
}

impl Target {
    pub fn server(&self) -> String {
        self.record.spec.as_ref().map(|s| s.server.clone()).unwrap_or_default()
    }

    pub fn shard(&self) -> Option<i64> {
        self.record.spec.as_ref().and_then(|s| s.shard)
    }

    /// Sequence of the last side event (0: none): what the next side append expects.
    pub fn side_seq(&self) -> u64 {
        self.side.as_ref().map(|(s, _)| *s).unwrap_or(0)
    }
}

/// The fleet, folded from the log.
pub struct Fleet {
    pub targets: HashMap<String, Target>,
    pub applied: u64,
    applied_tx: tokio::sync::watch::Sender<u64>,
    side_prefix: &'static str,
}

impl Fleet {
    /// A fleet whose targets also track events on `<side_prefix><cluster-id>`.
    pub fn new(side_prefix: &'static str) -> Fleet {
        Fleet { targets: HashMap::new(), applied: 0, applied_tx: tokio::sync::watch::Sender::new(0), side_prefix }
    }

    /// The subjects the fleet is made of: the clusters' and the service's side subjects. Its
    /// follower receives these only.
    pub fn filters(&self) -> Vec<String> {
        vec![subject::all(subject::CLUSTER), subject::all(self.side_prefix)]
    }

    /// Follows `applied`, to wait for a revision without polling.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// Applies one logged event; answers the cluster id when a cluster appeared or changed.
    pub fn apply(&mut self, ev: &RecordedEvent, key: &SealingKey) -> Option<String> {
        self.applied = self.applied.max(ev.seq);
        self.applied_tx.send_replace(self.applied);
        if let Some(id) = ev.subject.strip_prefix(subject::CLUSTER) {
            let env = EventEnvelope::decode(ev.payload.as_ref()).ok()?;
            let previous = self.targets.remove(id);
            let (rec, side) = match previous {
                Some(t) => (Some(t.record), t.side),
                None => (None, None),
            };
            let rec = match read_model::fold_cluster(rec, id, ev.seq, &env) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, seq = ev.seq, "skipped a cluster event");
                    return None;
                }
            };
            if rec.deleted {
                return None;
            }
            let config = rec.spec.as_ref().and_then(|spec| match codec::open_config(spec, id, key) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::error!(error = %e, cluster_id = id, "cannot open a cluster's credentials");
                    None
                }
            });
            self.targets.insert(id.to_string(), Target { record: rec, config, side, changed_by: ev.headers.clone() });
            return Some(id.to_string());
        }
        if let Some(id) = ev.subject.strip_prefix(self.side_prefix)
            && let Some(t) = self.targets.get_mut(id)
            && let Ok(env) = EventEnvelope::decode(ev.payload.as_ref())
        {
            t.side = Some((ev.seq, env));
        }
        None
    }
}

/// The fleet as a follower of the log: reports the clusters that appear or change after
/// `live_from`.
struct FleetFollower {
    fleet: Arc<Mutex<Fleet>>,
    key: Arc<SealingKey>,
    changed: mpsc::UnboundedSender<String>,
    live_from: u64,
}

impl corral_projection::Follower for FleetFollower {
    /// An event the fleet cannot fold is reported and skipped: one broken cluster must not stop
    /// the observation of the others.
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "fleet"
    }

    fn last_applied(&self) -> u64 {
        lock(&self.fleet).applied
    }

    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), Self::Error> {
        let mut fleet = lock(&self.fleet);
        for ev in events {
            if let Some(id) = fleet.apply(ev, &self.key).filter(|_| ev.seq > self.live_from) {
                let _ = self.changed.send(id);
            }
        }
        Ok(())
    }
}

/// A fleet kept up to date from the log, and the clusters that appear or change in it.
pub struct FleetFeed {
    pub fleet: Arc<Mutex<Fleet>>,
    pub changed: mpsc::UnboundedReceiver<String>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for FleetFeed {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Starts following the log and waits until the fleet holds everything logged so far.
pub async fn load_fleet(
    log: Arc<dyn EventLog>,
    key: Arc<SealingKey>,
    side_prefix: &'static str,
) -> Result<FleetFeed, LogError> {
    let fleet = Arc::new(Mutex::new(Fleet::new(side_prefix)));
    let (tx, rx) = mpsc::unbounded_channel();
    let filters = lock(&fleet).filters();
    let last = log.last_seq_matching(&filters).await?;
    let mut applied = lock(&fleet).applied_watch();
    let mut follower = FleetFollower { fleet: fleet.clone(), key, changed: tx, live_from: last };
    let follower = tokio::spawn(async move {
        let _ = corral_projection::follow(log, &filters, &mut follower, std::future::pending()).await;
    });
    let _ = applied.wait_for(|a| *a >= last).await;
    Ok(FleetFeed { fleet, changed: rx, follower })
}

/// Waits up to `limit` until `fleet` holds everything `log` acknowledged before the call on the
/// fleet's subjects; whether it does.
pub async fn catch_up(log: &dyn EventLog, fleet: &Mutex<Fleet>, limit: Duration) -> Result<bool, LogError> {
    let filters = lock(fleet).filters();
    let last = log.last_seq_matching(&filters).await?;
    Ok(wait_applied(fleet, last, limit).await)
}

/// Waits up to `limit` for the fleet to apply `seq`; whether it did.
pub async fn wait_applied(fleet: &Mutex<Fleet>, seq: u64, limit: Duration) -> bool {
    let mut applied = lock(fleet).applied_watch();
    matches!(tokio::time::timeout(limit, applied.wait_for(|a| *a >= seq)).await, Ok(Ok(_)))
}

/// The in-cluster entry is reached only from inside a Kubernetes pod; elsewhere its URL means
/// nothing (and resolving it would send DNS queries off the machine).
pub fn reachable(id: &str) -> bool {
    static IN_CLUSTER_ID: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| corral_domain::cluster_id(IN_CLUSTER_SERVER));
    id != *IN_CLUSTER_ID || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Kubernetes clients per cluster, rebuilt when the cluster's config changes (and, for AWS IAM
/// authentication, every 10 minutes, before the 15-minute EKS token runs out).
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<String, CachedClient>>,
}

/// A client, the config it was built from, and when.
type CachedClient = (Arc<ClusterConfig>, kube::Client, std::time::Instant);

const AWS_TOKEN_REFRESH: Duration = Duration::from_secs(600);

impl Clients {
    pub async fn get(
        &self,
        id: &str,
        server: &str,
        config: &Arc<ClusterConfig>,
        timeout: Duration,
    ) -> Result<kube::Client, client::ClientError> {
        let aws = config.aws_auth_config.as_ref().is_some_and(|a| !a.cluster_name.is_empty());
        if let Some((cfg, c, built)) = lock(&self.clients).get(id)
            && (Arc::ptr_eq(cfg, config) || **cfg == **config)
            && !(aws && built.elapsed() > AWS_TOKEN_REFRESH)
        {
            return Ok(c.clone());
        }
        // Built outside the lock: building may call STS.
        let c = if server == IN_CLUSTER_SERVER {
            // The built-in entry means "the cluster this runs in": its service account, as Argo CD.
            let cfg = kube::Config::incluster().map_err(|e| client::ClientError::Build(e.to_string()))?;
            kube::Client::try_from(cfg).map_err(|e| client::ClientError::Build(e.to_string()))?
        } else {
            client::build(server, config, timeout).await?
        };
        lock(&self.clients).insert(id.to_string(), (config.clone(), c.clone(), std::time::Instant::now()));
        Ok(c)
    }

    /// Runs `call` on the cluster's client (built with `timeout` on each request), bounded by
    /// `budget` in all; a failure in words an operator can act on, with every credential removed.
    pub async fn call<T, F, Fut>(
        &self,
        target: (&str, &str, &Arc<ClusterConfig>),
        timeout: Duration,
        budget: Duration,
        call: F,
    ) -> Result<T, String>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let (id, server, config) = target;
        let client = self.get(id, server, config, timeout).await.map_err(|e| redact(e.to_string(), config))?;
        match tokio::time::timeout(budget, call(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e, config)),
            Err(_) => Err(format!("the API server did not answer within {budget:?}")),
        }
    }

    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.clients).retain(|id, _| keep(id));
    }
}

/// Removes the config's credentials from a message meant for people.
pub fn redact(mut text: String, config: &ClusterConfig) -> String {
    let mut secrets = vec![config.bearer_token.clone(), config.password.clone()];
    if let Some(e) = &config.exec_provider_config {
        secrets.extend(e.env.values().cloned());
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s.as_str(), "***");
    }
    text
}

/// A Kubernetes client error in words an operator can act on, with any credential removed.
pub fn describe(err: &kube::Error, config: &ClusterConfig) -> String {
    let text = match err {
        kube::Error::Api(s) if s.code == 401 => "the API server refused the credentials (401 Unauthorized)".to_string(),
        kube::Error::Api(s) if s.code == 403 => {
            format!("the credentials lack permission (403 Forbidden): {}", s.message)
        }
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

/// Appends a service's side event for a cluster, expecting the side subject's last sequence so
/// that two replicas racing on one cluster record one change. A lost race is not an error.
pub async fn append_side(
    log: &dyn EventLog,
    subject: String,
    event_type: &str,
    actor: String,
    payload: Vec<u8>,
    expected_seq: u64,
) -> Result<(), LogError> {
    let draft = corral_events::Draft {
        aggregate_id: subject.clone(),
        subject,
        // Side subjects keep no version of their own: the expected sequence orders them.
        aggregate_version: 0,
        expected_subject_seq: Some(expected_seq),
        event_type,
        payload,
        msg_id: None,
    };
    let (event, _) = corral_events::write(draft, &corral_events::Origin { actor, ..Default::default() });
    match log.append(event).await {
        Ok(_) | Err(LogError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
