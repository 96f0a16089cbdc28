//! Which replica of an observing service (health-probe, cache-invalidation) handles which
//! cluster. Replicas announce themselves on their service's NATS subject every third of an
//! interval; a replica not heard from for 2.5 announcements is gone, so
//! its clusters move to the others within about one interval. A cluster with a `shard` goes to
//! the replica at that index of the sorted live replicas; any other to the replica with the
//! highest rendezvous hash of (replica, cluster), so a replica joining or leaving moves only its
//! own share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

#[derive(Clone)]
pub struct Membership {
    me: String,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    expiry: Duration,
}

/// The rendezvous score of (replica, cluster): the first 8 bytes of SHA-256 over both, with a
/// separator. A hash with a fixed definition, so that replicas built by different toolchains (a
/// rolling upgrade) agree on who owns what; std's hasher promises no such thing.
fn score(replica: &str, cluster: &str) -> u64 {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(replica.as_bytes());
    h.update([0]);
    h.update(cluster.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl Membership {
    /// A replica alone (the all-in-one): it owns every cluster.
    pub fn solo() -> Membership {
        Membership { me: "solo".into(), seen: Arc::default(), expiry: Duration::MAX }
    }

    /// Joins the replicas announcing on `subject` (one per service), announcing every `period`.
    pub async fn join(
        client: async_nats::Client,
        subject: &str,
        period: Duration,
    ) -> Result<Membership, async_nats::SubscribeError> {
        let me = uuid::Uuid::new_v4().to_string();
        let m = Membership { me: me.clone(), seen: Arc::default(), expiry: period.mul_f64(2.5) };
        let subject = subject.to_string();
        let mut sub = client.subscribe(subject.clone()).await?;
        let seen = m.seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(id) = std::str::from_utf8(&msg.payload) {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Instant::now());
                }
            }
        });
        let seen = m.seen.clone();
        tokio::spawn(async move {
            loop {
                seen.lock().unwrap_or_else(|p| p.into_inner()).insert(me.clone(), Instant::now());
                if client.publish(subject.clone(), me.clone().into()).await.is_err() {
                    tracing::warn!(subject, "cannot announce this replica");
                }
                tokio::time::sleep(period).await;
            }
        });
        Ok(m)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live replicas, sorted.
    pub fn live(&self) -> Vec<String> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now.duration_since(*at) <= self.expiry);
        let mut ids: Vec<String> = seen.keys().cloned().collect();
        if !ids.contains(&self.me) {
            ids.push(self.me.clone());
        }
        ids.sort();
        ids
    }

    pub fn owns(&self, live: &[String], cluster_id: &str, shard: Option<i64>) -> bool {
        if live.len() <= 1 {
            return true;
        }
        let owner = match shard {
            Some(s) if s >= 0 => &live[(s as usize) % live.len()],
            _ => live.iter().max_by_key(|r| score(r, cluster_id)).unwrap_or(&self.me),
        };
        *owner == self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORE_A: u64 = 1_551_752_090_149_556_540;
    const SCORE_B: u64 = 16_244_622_253_575_201_220;

    fn member(me: &str) -> Membership {
        Membership { me: me.into(), seen: Arc::default(), expiry: Duration::MAX }
    }

    #[test]
    fn the_score_is_pinned() {
        // SHA-256("replica-a" 0x00 "87be…") computed apart from this code (Python's hashlib): a
        // change here would move clusters between replicas of different builds.
        assert_eq!(score("replica-a", "87be6b76145c5cd0ad4a5c25422539a9"), SCORE_A);
        assert_eq!(score("b", "x"), SCORE_B);
        assert_ne!(score("ab", "c"), score("a", "bc"), "the separator keeps the parts apart");
    }

    #[test]
    fn every_cluster_has_exactly_one_owner() {
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let members: Vec<_> = live.iter().map(|m| member(m)).collect();
        let mut per = HashMap::new();
        for i in 0..300 {
            let id = format!("cluster-{i}");
            let owners: Vec<_> = members.iter().filter(|m| m.owns(&live, &id, None)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            *per.entry(owners[0].me.clone()).or_insert(0) += 1;
        }
        assert!(per.values().all(|n| *n > 50), "shares are roughly even: {per:?}");
    }

    #[test]
    fn shard_picks_the_replica_by_index_and_a_leaving_replica_moves_only_its_share() {
        let live: Vec<String> = ["a", "b"].map(String::from).to_vec();
        assert!(member("b").owns(&live, "x", Some(1)));
        assert!(member("a").owns(&live, "x", Some(2)));
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        for i in 0..100 {
            let id = format!("c{i}");
            // A cluster a or b owned among three stays with it when c leaves.
            for m in ["a", "b"] {
                if member(m).owns(&three, &id, None) {
                    assert!(member(m).owns(&live, &id, None));
                }
            }
        }
    }
}
