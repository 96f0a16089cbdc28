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

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

pub use corral_cluster_access::Membership;
use corral_cluster_access::observer::Observer;
use corral_cluster_access::{Clients, Fleet, FleetFeed, lock};
use corral_event_log::{EventLog, LogError};
use corral_events::event_type::CLUSTER_CONNECTION_OBSERVED;
use corral_events::subject;
use corral_proto::events::ClusterConnectionObserved;
use corral_proto::v1alpha1::ClusterConfig;
use corral_secrets::SealingKey;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

static ROUND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    corral_telemetry::metrics::register(
        "corral_health_probe_round_duration_seconds",
        "Time for one round of probes of this replica's share of the fleet",
        Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
    )
});

static IN_FLIGHT: LazyLock<Gauge> = LazyLock::new(|| {
    corral_telemetry::metrics::register(
        "corral_health_probe_probes_in_flight",
        "Probes of clusters under way",
        Gauge::default(),
    )
});

/// Counts a probe while it runs.
struct InFlight(());

impl InFlight {
    fn new() -> InFlight {
        IN_FLIGHT.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.dec();
    }
}

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

impl Observer for HealthProbe {
    async fn round(self: Arc<Self>) {
        let started = Instant::now();
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
        ROUND_SECONDS.observe(started.elapsed().as_secs_f64());
    }

    fn changed(self: &Arc<Self>, id: String) {
        // New or changed clusters are probed at once, not at the next tick.
        if self.mine(&self.membership.live(), &id) {
            let p = self.clone();
            tokio::spawn(async move { p.probe_one(id).await });
        }
    }

    fn membership(&self) -> &Membership {
        &self.membership
    }
}

impl HealthProbe {
    /// Loads the fleet from the log; [`corral_cluster_access::observer::run`] then probes this
    /// replica's share of it.
    pub async fn start(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        config: ProbeConfig,
        membership: Membership,
    ) -> Result<(Arc<HealthProbe>, FleetFeed), LogError> {
        LazyLock::force(&ROUND_SECONDS);
        LazyLock::force(&IN_FLIGHT);
        let feed = corral_cluster_access::load_fleet(log.clone(), key, subject::CLUSTER_STATE).await?;
        let probe =
            Arc::new(HealthProbe { log, fleet: feed.fleet.clone(), config, clients: Clients::default(), membership });
        tracing::info!(
            clusters = lock(&probe.fleet).targets.len(),
            replica = probe.membership.me(),
            "health probe loaded"
        );
        Ok((probe, feed))
    }

    /// Probes until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, feed: FleetFeed, shutdown: impl std::future::Future<Output = ()> + Send) {
        let interval = self.config.interval;
        corral_cluster_access::observer::run(self, feed, interval, shutdown).await;
    }

    fn mine(&self, live: &[String], id: &str) -> bool {
        let shard = lock(&self.fleet).targets.get(id).and_then(|t| t.shard());
        corral_cluster_access::reachable(id) && self.membership.owns(live, id, shard)
    }

    async fn probe_one(&self, id: String) {
        let Some((server, config, created, changed_by)) = lock(&self.fleet)
            .targets
            .get(&id)
            .map(|t| (t.server(), t.config.clone(), t.record.created_at_unix_nanos, t.changed_by.clone()))
        else {
            return;
        };
        // Linked to the change that made the cluster what it is (its registration, for the first
        // probe), so that a trace shows what probing a new cluster found.
        let span = tracing::info_span!("probe", otel.name = "probe cluster", otel.kind = "client", cluster_id = %id);
        corral_telemetry::trace::add_link(&span, &corral_telemetry::trace::from_pairs(&changed_by));
        self.probe_target(id, server, config, created).instrument(span).await
    }

    async fn probe_target(&self, id: String, server: String, config: Option<Arc<ClusterConfig>>, created: i64) {
        let _in_flight = InFlight::new();
        let attempted_at = corral_events::now_unix();
        let failed = |message: String| Observed { status: "Failed".into(), message, server_version: String::new() };
        let timeout = self.config.timeout;
        let observed = match config {
            None => failed("the cluster's credentials cannot be opened".into()),
            Some(config) => {
                let version = self
                    .clients
                    .call((&id, &server, &config), timeout, timeout, |c| async move { c.apiserver_version().await });
                match version.await {
                    Ok(info) => Observed {
                        status: "Successful".into(),
                        message: String::new(),
                        server_version: major_minor(&info),
                    },
                    Err(message) => failed(message),
                }
            }
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
            subject::cluster_state(&id),
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

/// How the health probe probes (the stand-alone service's flags, and the all-in-one's).
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeOptions {
    /// Seconds between probe rounds (in the all-in-one, 0 turns the probe off).
    #[arg(long, env = "CORRAL_PROBE_INTERVAL_SECONDS", default_value_t = 10.0)]
    pub probe_interval_seconds: f64,
    /// Probes running at once.
    #[arg(long, env = "CORRAL_PROBE_CONCURRENCY", default_value_t = 32)]
    pub probe_concurrency: usize,
    /// Seconds each request to a cluster may take.
    #[arg(long, env = "CORRAL_PROBE_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub probe_timeout_seconds: f64,
}

impl ProbeOptions {
    pub fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_secs_f64(self.probe_interval_seconds.max(0.05)),
            concurrency: self.probe_concurrency,
            timeout: Duration::from_secs_f64(self.probe_timeout_seconds.max(0.05)),
        }
    }
}

/// Configuration of the stand-alone health-probe process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-health-probe", about = "Probes every registered cluster (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub service: corral_process::ServiceOptions,
    #[command(flatten)]
    pub probe: ProbeOptions,
}

pub const NAME: &str = "corral-health-probe";

pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = corral_process::Readiness::new();
    config.service.ops.start(NAME, None, &readiness).await?;
    let (key, client, log) = config.service.connect(NAME, &readiness).await?;
    let probe_config = config.probe.probe_config();
    let membership = Membership::join(client, HEARTBEAT_SUBJECT, probe_config.interval / 3).await?;
    let (probe, feed) = HealthProbe::start(log, key, probe_config, membership).await?;
    println!("{NAME} replica {}", probe.membership.me());
    corral_process::announce_ready(NAME, None, &readiness);
    probe.run(feed, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use corral_proto::events::EventEnvelope;
    use corral_proto::registry::ClusterRecord;

    use super::*;

    #[test]
    fn the_server_version_is_shown_as_argo_cd_shows_it() {
        let info = |major: &str, minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
            major: major.into(),
            minor: minor.into(),
            ..Default::default()
        };
        assert_eq!(major_minor(&info("1", "31")), "1.31");
        assert_eq!(major_minor(&info("1", "29+")), "1.29", "as some distributions write it");
    }

    #[test]
    fn only_an_observation_of_this_incarnation_counts() {
        let observed = |created: i64| {
            let e = ClusterConnectionObserved {
                status: "Successful".into(),
                server_version: "1.31".into(),
                cluster_created_at_unix_nanos: created,
                ..Default::default()
            };
            EventEnvelope {
                event_type: CLUSTER_CONNECTION_OBSERVED.into(),
                payload: e.encode_to_vec(),
                ..Default::default()
            }
        };
        let target = |side: Option<EventEnvelope>| corral_cluster_access::Target {
            record: ClusterRecord { created_at_unix_nanos: 7, ..Default::default() },
            config: None,
            side: side.map(|e| (3, e)),
            changed_by: Vec::new(),
        };
        assert_eq!(recorded(&target(None)), None);
        let seen = recorded(&target(Some(observed(7)))).expect("this incarnation's");
        assert_eq!((seen.status.as_str(), seen.server_version.as_str()), ("Successful", "1.31"));
        assert_eq!(recorded(&target(Some(observed(6)))), None, "a cluster registered again starts unobserved");
    }
}
