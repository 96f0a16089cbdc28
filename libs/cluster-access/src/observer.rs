//! The one run loop of the services that observe clusters (the health probe, cache
//! invalidation): a round over this replica's share of the fleet every interval, another as soon
//! as a replica leaves (so its clusters move within one interval), and a look at each cluster
//! that appears or changes.

use std::sync::Arc;
use std::time::Duration;

use crate::{FleetFeed, Membership};

/// What an observing service does; [`run`] decides when.
pub trait Observer: Send + Sync + 'static {
    /// Looks at every cluster this replica owns.
    fn round(self: Arc<Self>) -> impl Future<Output = ()> + Send;
    /// A cluster appeared or changed: look at it now, if it is this replica's.
    fn changed(self: &Arc<Self>, cluster_id: String);
    fn membership(&self) -> &Membership;
}

/// Runs `observer` on `feed` every `interval` until `shutdown` resolves.
pub async fn run<O: Observer>(
    observer: Arc<O>,
    mut feed: FleetFeed,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Replicas leaving are noticed between rounds: their clusters are looked at once, not at
    // the next tick, so a dead replica's share moves within one interval.
    let mut watch = tokio::time::interval(interval / 6);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = observer.membership().live();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => observer.clone().round().await,
            _ = watch.tick() => {
                let now = observer.membership().live();
                let someone_left = live.iter().any(|r| !now.contains(r));
                live = now;
                if someone_left {
                    tracing::info!(replicas = live.len(), "a replica left; taking over its clusters");
                    observer.clone().round().await;
                }
            }
            Some(id) = feed.changed.recv() => observer.changed(id),
        }
    }
}
