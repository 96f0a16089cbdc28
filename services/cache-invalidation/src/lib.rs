//! The cache-invalidation service: keeps, for each cluster, the cache info Argo CD shows
//! (`apisCount`: API group versions served, `resourcesCount`: resource kinds across them,
//! `lastCacheSyncTime`) by reading the cluster's discovery documents with its own credentials.
//!
//! A cluster is synced when it first appears, when `InvalidateCache` records a
//! `refreshRequestedAt` newer than the last sync answered (the cluster's client and cached
//! discovery are dropped first), after a failed sync (retried every check), and every
//! `resync` period. Each sync appends a `ClusterCacheSynced` event; replicas split the fleet as
//! the health probe's do.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use corral_cluster_access::Membership;
use corral_cluster_access::observer::Observer;
use corral_cluster_access::{Clients, Fleet, FleetFeed, Target, lock};
use corral_event_log::{EventLog, LogError};
use corral_events::event_type::CLUSTER_CACHE_SYNCED;
use corral_events::{now_unix, subject};
use corral_proto::events::ClusterCacheSynced;
use corral_secrets::SealingKey;
use prost::Message;

/// NATS subject the cache-invalidation replicas announce themselves on.
pub const HEARTBEAT_SUBJECT: &str = "corralsvc.cache-invalidation.heartbeat";

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// How often the fleet is checked for clusters that need a sync (and failed ones retried).
    pub check_interval: Duration,
    /// Age after which a good sync is redone anyway.
    pub resync: Duration,
    /// Bound on each request to a cluster.
    pub timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            check_interval: Duration::from_secs(5),
            resync: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }
}

pub struct CacheInvalidation {
    log: Arc<dyn EventLog>,
    fleet: Arc<Mutex<Fleet>>,
    config: CacheConfig,
    clients: Clients,
    membership: Membership,
    syncing: Mutex<HashSet<String>>,
}

/// The last sync the log holds for this incarnation of the cluster.
fn last_sync(t: &Target) -> Option<ClusterCacheSynced> {
    let (_, env) = t.side.as_ref()?;
    if env.event_type != CLUSTER_CACHE_SYNCED {
        return None;
    }
    let e = ClusterCacheSynced::decode(env.payload.as_slice()).ok()?;
    (e.cluster_created_at_unix_nanos == t.record.created_at_unix_nanos).then_some(e)
}

fn needs_sync(t: &Target, config: &CacheConfig) -> bool {
    match last_sync(t) {
        None => true,
        Some(e) => {
            let age = now_unix() - e.synced_at_unix;
            t.record.refresh_requested_at_unix_nanos > e.refresh_requested_at_unix_nanos
                || (!e.error.is_empty() && age >= config.check_interval.as_secs() as i64)
                || age >= config.resync.as_secs() as i64
        }
    }
}

/// Counts what the cluster's discovery documents serve.
async fn discover(client: &kube::Client) -> Result<(i64, i64), kube::Error> {
    let kinds = |list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList| {
        // "pods/log" and the like are subresources, not kinds.
        list.resources.iter().filter(|r| !r.name.contains('/')).count() as i64
    };
    let (mut apis, mut resources) = (0i64, 0i64);
    for version in client.list_core_api_versions().await?.versions {
        apis += 1;
        resources += kinds(client.list_core_api_resources(&version).await?);
    }
    for group in client.list_api_groups().await?.groups {
        for v in group.versions {
            apis += 1;
            resources += kinds(client.list_api_group_resources(&v.group_version).await?);
        }
    }
    Ok((apis, resources))
}

impl Observer for CacheInvalidation {
    async fn round(self: Arc<Self>) {
        self.check_all();
    }

    /// A new cluster, a spec change or a refresh request: look at it now.
    fn changed(self: &Arc<Self>, id: String) {
        self.check(&self.membership.live(), &id);
    }

    fn membership(&self) -> &Membership {
        &self.membership
    }
}

impl CacheInvalidation {
    /// Loads the fleet from the log; [`CacheInvalidation::run`] then keeps this replica's share
    /// of it synced.
    pub async fn start(
        log: Arc<dyn EventLog>,
        key: Arc<SealingKey>,
        config: CacheConfig,
        membership: Membership,
    ) -> Result<(Arc<CacheInvalidation>, FleetFeed), LogError> {
        let feed = corral_cluster_access::load_fleet(log.clone(), key, subject::CLUSTER_CACHE).await?;
        let svc = Arc::new(CacheInvalidation {
            log,
            fleet: feed.fleet.clone(),
            config,
            clients: Clients::default(),
            membership,
            syncing: Mutex::default(),
        });
        Ok((svc, feed))
    }

    /// Checks every `check_interval`, and at once on a change, until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, feed: FleetFeed, shutdown: impl std::future::Future<Output = ()> + Send) {
        let interval = self.config.check_interval;
        corral_cluster_access::observer::run(self, feed, interval, shutdown).await;
    }

    fn check_all(self: &Arc<Self>) {
        let live = self.membership.live();
        let ids: Vec<String> = lock(&self.fleet).targets.keys().cloned().collect();
        self.clients.retain(|id| ids.iter().any(|i| i == id));
        for id in ids {
            self.check(&live, &id);
        }
    }

    fn check(self: &Arc<Self>, live: &[String], id: &str) {
        let due = match lock(&self.fleet).targets.get(id) {
            Some(t) => {
                corral_cluster_access::reachable(id)
                    && self.membership.owns(live, id, t.shard())
                    && needs_sync(t, &self.config)
            }
            None => false,
        };
        if !due || !lock(&self.syncing).insert(id.to_string()) {
            return;
        }
        let svc = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            svc.sync(&id).await;
            lock(&svc.syncing).remove(&id);
        });
    }

    async fn sync(&self, id: &str) {
        let Some((server, config, created, refresh, side_seq, refreshing)) =
            lock(&self.fleet).targets.get(id).map(|t| {
                let refreshing = last_sync(t)
                    .is_some_and(|e| t.record.refresh_requested_at_unix_nanos > e.refresh_requested_at_unix_nanos);
                (
                    t.server(),
                    t.config.clone(),
                    t.record.created_at_unix_nanos,
                    t.record.refresh_requested_at_unix_nanos,
                    t.side_seq(),
                    refreshing,
                )
            })
        else {
            return;
        };
        if refreshing {
            // Invalidation: forget the connection and what it discovered, start from scratch.
            self.clients.retain(|c| c != id);
        }
        let budget = self.config.timeout * 4;
        let outcome = match &config {
            None => Err("the cluster's credentials cannot be opened".to_string()),
            Some(config) => {
                let discovered =
                    self.clients.call((id, &server, config), self.config.timeout, budget, |c| async move {
                        discover(&c).await
                    });
                discovered.await
            }
        };
        let (apis_count, resources_count, error) = match outcome {
            Ok((a, r)) => (a, r, String::new()),
            Err(e) => {
                tracing::info!(cluster_id = id, error = %e, "cache sync failed");
                (0, 0, e)
            }
        };
        let event = ClusterCacheSynced {
            apis_count,
            resources_count,
            synced_at_unix: now_unix(),
            refresh_requested_at_unix_nanos: refresh,
            cluster_created_at_unix_nanos: created,
            error,
        };
        let appended = corral_cluster_access::append_side(
            self.log.as_ref(),
            subject::cluster_cache(id),
            CLUSTER_CACHE_SYNCED,
            format!("cache-invalidation/{}", self.membership.me()),
            event.encode_to_vec(),
            side_seq,
        )
        .await;
        if let Err(e) = appended {
            tracing::warn!(error = %e, cluster_id = id, "cannot record cache info; the next check retries");
        }
    }
}

/// How cache info is kept (the stand-alone service's flags, and the all-in-one's).
#[derive(Debug, Clone, clap::Args)]
pub struct CacheOptions {
    /// Seconds between checks for clusters that need a sync (in the all-in-one, 0 turns cache
    /// syncing off).
    #[arg(long, env = "CORRAL_CACHE_CHECK_SECONDS", default_value_t = 5.0)]
    pub cache_check_seconds: f64,
    /// Seconds after which a good sync is redone anyway.
    #[arg(long, env = "CORRAL_CACHE_RESYNC_SECONDS", default_value_t = 3600.0)]
    pub cache_resync_seconds: f64,
    /// Seconds each request to a cluster may take.
    #[arg(long, env = "CORRAL_CACHE_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub cache_timeout_seconds: f64,
}

impl CacheOptions {
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            check_interval: Duration::from_secs_f64(self.cache_check_seconds.max(0.05)),
            resync: Duration::from_secs_f64(self.cache_resync_seconds.max(1.0)),
            timeout: Duration::from_secs_f64(self.cache_timeout_seconds.max(0.05)),
        }
    }
}

/// Configuration of the stand-alone cache-invalidation process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-cache-invalidation", about = "Keeps each cluster's cache info (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub service: corral_process::ServiceOptions,
    #[command(flatten)]
    pub cache: CacheOptions,
}

pub const NAME: &str = "corral-cache-invalidation";

pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = corral_process::Readiness::new();
    config.service.ops.start(NAME, None, &readiness).await?;
    let (key, client, log) = config.service.connect(NAME, &readiness).await?;
    let cache_config = config.cache.cache_config();
    let membership = Membership::join(client, HEARTBEAT_SUBJECT, cache_config.check_interval / 3).await?;
    let (svc, feed) = CacheInvalidation::start(log, key, cache_config, membership).await?;
    println!("{NAME} replica {}", svc.membership.me());
    corral_process::announce_ready(NAME, None, &readiness);
    svc.run(feed, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use corral_proto::events::EventEnvelope;
    use corral_proto::registry::ClusterRecord;

    use super::*;

    const CREATED_NANOS: i64 = 1_700_000_000_000_000_000;

    fn config() -> CacheConfig {
        CacheConfig {
            check_interval: Duration::from_secs(5),
            resync: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }

    /// A cluster whose last sync was `age` seconds ago (none: never), answering `refresh`.
    fn target(sync: Option<(i64, i64, &str, i64)>, refresh_requested: i64) -> Target {
        let record = ClusterRecord {
            created_at_unix_nanos: CREATED_NANOS,
            refresh_requested_at_unix_nanos: refresh_requested,
            ..Default::default()
        };
        let side = sync.map(|(age, refresh, error, created)| {
            let e = ClusterCacheSynced {
                synced_at_unix: now_unix() - age,
                refresh_requested_at_unix_nanos: refresh,
                error: error.into(),
                cluster_created_at_unix_nanos: created,
                apis_count: 3,
                resources_count: 11,
            };
            let env = EventEnvelope {
                event_type: CLUSTER_CACHE_SYNCED.into(),
                payload: e.encode_to_vec(),
                ..Default::default()
            };
            (5, env)
        });
        Target { record, config: None, side, changed_by: Vec::new() }
    }

    #[test]
    fn a_cluster_is_synced_when_new_invalidated_failed_or_old() {
        let c = config();
        assert!(needs_sync(&target(None, 0), &c), "never synced");
        assert!(!needs_sync(&target(Some((10, 0, "", CREATED_NANOS)), 0), &c), "synced 10 s ago");
        assert!(needs_sync(&target(Some((10, 0, "", CREATED_NANOS)), 42), &c), "a refresh asked after the sync");
        assert!(!needs_sync(&target(Some((10, 42, "", CREATED_NANOS)), 42), &c), "that refresh answered");
        assert!(needs_sync(&target(Some((10, 0, "timeout", CREATED_NANOS)), 0), &c), "failed, retried each check");
        assert!(!needs_sync(&target(Some((2, 0, "timeout", CREATED_NANOS)), 0), &c), "failed a moment ago");
        assert!(needs_sync(&target(Some((3600, 0, "", CREATED_NANOS)), 0), &c), "older than the resync period");
        assert!(needs_sync(&target(Some((10, 0, "", CREATED_NANOS - 1)), 0), &c), "a sync of an earlier incarnation");
    }
}
