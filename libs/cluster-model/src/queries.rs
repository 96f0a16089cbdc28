//! The query side: answers Get and List from a projection of the log, once it has applied what
//! the query needs. The registry uses it, and so does each gateway replica, which keeps a view
//! of its own so that reads take no extra hop.

use std::sync::Arc;
use std::time::Duration;

use corral_domain as domain;
use corral_event_log::EventLog;
use corral_projection::Projection;
use corral_proto::cluster::ClusterQuery;
use corral_proto::registry::{ClusterRecord, Query, query, reply};
use corral_proto::v1alpha1::{self, ClusterList};

use crate::barrier::ReadBarrier;
use crate::error::RegistryError;
use crate::read_model::{self, cluster_record, name_record};

pub struct Queries {
    projection: Projection,
    barrier: ReadBarrier,
    read_timeout: Duration,
    list_cache: std::sync::Mutex<Option<(u64, Arc<Vec<Listed>>)>>,
}

/// A live cluster as List serves it: rendered, and encoded once for every List that follows.
#[derive(Debug)]
pub struct Listed {
    pub cluster: v1alpha1::Cluster,
    pub encoded: bytes::Bytes,
}

/// A ClusterList made of clusters encoded beforehand: it encodes to the same bytes as the
/// `ClusterList` with those items, without copying or re-encoding a single cluster.
#[derive(Debug, Default)]
pub struct EncodedList {
    all: Arc<Vec<Listed>>,
    selected: Vec<usize>,
}

impl EncodedList {
    /// Encodes `clusters`, for a List answered some other way than from a local view.
    pub fn from_clusters(clusters: Vec<v1alpha1::Cluster>) -> EncodedList {
        let all: Vec<Listed> = clusters
            .into_iter()
            .map(|cluster| Listed { encoded: prost::Message::encode_to_vec(&cluster).into(), cluster })
            .collect();
        EncodedList { selected: (0..all.len()).collect(), all: Arc::new(all) }
    }

    /// The selected clusters, in List order.
    pub fn clusters(&self) -> impl Iterator<Item = &v1alpha1::Cluster> {
        self.selected.iter().map(|&i| &self.all[i].cluster)
    }

    /// Keeps the clusters `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&v1alpha1::Cluster) -> bool) {
        let all = &self.all;
        self.selected.retain(|&i| keep(&all[i].cluster));
    }

    pub fn len(&self) -> usize {
        self.selected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }

    /// Field numbers of Argo CD's ClusterList.
    const METADATA: u32 = 1;
    const ITEMS: u32 = 2;
}

impl prost::Message for EncodedList {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        // An empty ListMeta, as a ClusterList built by `list` carries.
        encode_key(Self::METADATA, WireType::LengthDelimited, buf);
        encode_varint(0, buf);
        for &i in &self.selected {
            let item = &self.all[i].encoded;
            encode_key(Self::ITEMS, WireType::LengthDelimited, buf);
            encode_varint(item.len() as u64, buf);
            buf.put_slice(item);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent: a decoder should use ClusterList.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let items: usize = self
            .selected
            .iter()
            .map(|&i| {
                let n = self.all[i].encoded.len();
                key_len(Self::ITEMS) + encoded_len_varint(n as u64) + n
            })
            .sum();
        key_len(Self::METADATA) + 1 + items
    }

    fn clear(&mut self) {
        self.selected.clear();
    }
}

impl Queries {
    pub fn new(log: Arc<dyn EventLog>, projection: Projection, read_timeout: Duration) -> Queries {
        Queries { projection, barrier: ReadBarrier::start(log), read_timeout, list_cache: Default::default() }
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Waits until the projection has applied everything the log acknowledged before this call.
    pub async fn catch_up(&self) -> Result<u64, RegistryError> {
        let seq = self.barrier.last_seq().await.map_err(RegistryError::Unavailable)?;
        self.wait_for(seq).await?;
        Ok(seq)
    }

    pub async fn wait_for(&self, seq: u64) -> Result<(), RegistryError> {
        self.projection
            .wait_for(seq, self.read_timeout)
            .await
            .map_err(|_| RegistryError::Unavailable(format!("projection has not reached revision {seq} yet")))
    }

    /// Resolves a query's cluster identifier to a cluster id, following Argo CD: `id.type` is
    /// `server` (default), `name` or `name_escaped`; without `id`, `server` then `name`.
    pub fn resolve(&self, q: &ClusterQuery) -> Result<Option<String>, RegistryError> {
        let by_name = |name: &str| -> Result<Option<String>, RegistryError> {
            let Some(claim) = name_record(&self.projection, &domain::name_key(name))? else { return Ok(None) };
            let Some(rec) = cluster_record(&self.projection, &claim.cluster_id)? else { return Ok(None) };
            let holds = !rec.deleted && rec.spec.as_ref().is_some_and(|s| s.name == name);
            Ok(holds.then_some(claim.cluster_id))
        };
        if let Some(cid) = q.id.as_ref().filter(|i| !i.value.is_empty()) {
            return match cid.r#type.as_str() {
                "" | "server" => Ok(Some(domain::cluster_id(&cid.value))),
                "name" => by_name(&cid.value),
                "name_escaped" => {
                    let name = domain::unescape_name(&cid.value)
                        .ok_or_else(|| RegistryError::InvalidArgument("id.value: invalid escaped name".into()))?;
                    by_name(&name)
                }
                other => Err(RegistryError::InvalidArgument(format!(
                    "id.type: unknown cluster id type \"{other}\" (expected server, name or name_escaped)"
                ))),
            };
        }
        if !q.server.is_empty() {
            return Ok(Some(domain::cluster_id(&q.server)));
        }
        if !q.name.is_empty() {
            return by_name(&q.name);
        }
        Err(RegistryError::InvalidArgument("id: a cluster server URL or name is required".into()))
    }

    pub fn not_found(q: &ClusterQuery) -> RegistryError {
        let what =
            q.id.as_ref()
                .map(|i| i.value.clone())
                .filter(|v| !v.is_empty())
                .or_else(|| (!q.server.is_empty()).then(|| q.server.clone()))
                .unwrap_or_else(|| q.name.clone());
        RegistryError::NotFound(format!("cluster \"{what}\" not found"))
    }

    pub fn live_id(&self, q: &ClusterQuery) -> Result<String, RegistryError> {
        Ok(self.live_record(q)?.0)
    }

    /// The id and record of the live cluster `q` names.
    fn live_record(&self, q: &ClusterQuery) -> Result<(String, ClusterRecord), RegistryError> {
        let id = self.resolve(q)?.ok_or_else(|| Self::not_found(q))?;
        match cluster_record(&self.projection, &id)? {
            Some(r) if !r.deleted => Ok((id, r)),
            _ => Err(Self::not_found(q)),
        }
    }

    pub fn get(&self, q: &ClusterQuery) -> Result<v1alpha1::Cluster, RegistryError> {
        Ok(self.get_versioned(q)?.0)
    }

    /// The cluster and its aggregate version.
    pub fn get_versioned(&self, q: &ClusterQuery) -> Result<(v1alpha1::Cluster, u64), RegistryError> {
        let (_, rec) = self.live_record(q)?;
        Ok((read_model::render(&rec), rec.version))
    }

    /// Every live cluster, rendered, encoded and sorted by server. Reused while the projection
    /// has applied nothing new, so repeated Lists of a large fleet skip decoding, rendering and
    /// encoding.
    fn all_listed(&self) -> Result<Arc<Vec<Listed>>, RegistryError> {
        let applied = self.projection.last_applied();
        if let Some((seq, all)) = self.list_cache.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && seq == applied
        {
            return Ok(all);
        }
        let mut items: Vec<Listed> = read_model::live_clusters(&self.projection)?
            .iter()
            .map(|r| {
                let cluster = read_model::render(r);
                let encoded = prost::Message::encode_to_vec(&cluster).into();
                Listed { cluster, encoded }
            })
            .collect();
        items.sort_by(|a, b| a.cluster.server.cmp(&b.cluster.server));
        let all = Arc::new(items);
        // Cache only a snapshot nothing was applied during, so it matches `applied` exactly.
        if self.projection.last_applied() == applied {
            *self.list_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((applied, all.clone()));
        }
        Ok(all)
    }

    /// Every live cluster as subscribers see it ([`crate::change::public`]) as of one revision,
    /// and that revision: the initial events of a watch.
    pub fn snapshot(&self) -> Result<(u64, Vec<v1alpha1::Cluster>), RegistryError> {
        let (seq, records) = read_model::live_clusters_at(&self.projection)?;
        let mut clusters: Vec<_> = records.iter().map(crate::change::public).collect();
        clusters.sort_by(|a, b| a.server.cmp(&b.server));
        Ok((seq, clusters))
    }

    /// The clusters a List query selects, encoded.
    pub fn list_selected(&self, q: &ClusterQuery) -> Result<EncodedList, RegistryError> {
        let selector = crate::selector::Selector::parse(&q.selector)?;
        let all = self.all_listed()?;
        let selected = all
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let c = &l.cluster;
                (q.server.is_empty() || c.server == q.server)
                    && (q.name.is_empty() || c.name == q.name)
                    && selector.matches(&c.labels)
            })
            .map(|(i, _)| i)
            .collect();
        Ok(EncodedList { all, selected })
    }

    pub fn list(&self, q: &ClusterQuery) -> Result<ClusterList, RegistryError> {
        let items = self.list_selected(q)?.clusters().cloned().collect();
        Ok(ClusterList { metadata: Some(Default::default()), items })
    }

    /// Waits until the projection holds what `q` must see; the revision it answers at.
    pub async fn reach(&self, q: &Query) -> Result<u64, RegistryError> {
        Ok(self.reach_confirming(q).await?.0)
    }

    /// As [`Queries::reach`], and whether the answer is as fresh as `q` asked: a linearizable
    /// query when the log cannot say how far it goes (no quorum) is answered from what this
    /// replica has applied (writes are refused meanwhile, except on the other side of a
    /// partition), rather than not at all, but that answer may be behind.
    async fn reach_confirming(&self, q: &Query) -> Result<(u64, bool), RegistryError> {
        let mut need = q.min_revision;
        let mut confirmed = true;
        if q.linearizable {
            match self.barrier.last_seq().await {
                Ok(seq) => need = need.max(seq),
                Err(e) => {
                    tracing::debug!(error = %e, "log unavailable; reading what this replica has");
                    confirmed = false;
                }
            }
        }
        if need > self.projection.last_applied() {
            self.wait_for(need).await?;
        }
        Ok((self.projection.last_applied(), confirmed))
    }

    pub async fn handle_query(&self, q: Query) -> Result<(u64, reply::Result, u64), RegistryError> {
        let (revision, confirmed) = self.reach_confirming(&q).await?;
        match q.kind.ok_or_else(|| RegistryError::InvalidArgument("empty query".into()))? {
            query::Kind::Get(cq) => {
                let (cluster, version) = match self.get_versioned(&cq) {
                    // A replica that may be behind can tell what it holds, not that something
                    // is missing: it may have been created elsewhere a moment ago (a write's
                    // authorisation would otherwise answer a final 404 for a cluster that exists).
                    Err(RegistryError::NotFound(_)) if !confirmed => {
                        return Err(RegistryError::Unavailable(
                            "the event log is unavailable, so whether the cluster exists cannot be confirmed; retry"
                                .into(),
                        ));
                    }
                    other => other?,
                };
                Ok((revision, reply::Result::Cluster(cluster), version))
            }
            query::Kind::List(cq) => Ok((revision, reply::Result::List(self.list(&cq)?), 0)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use corral_event_log::{AppendOutcome, EventStream, LogError, NewEvent, RecordedEvent};
    use prost::Message;

    use super::*;

    /// A log with no quorum: nothing answers.
    struct NoQuorum;

    fn no_quorum<T>() -> Result<T, LogError> {
        Err(LogError::Unavailable("no quorum".into()))
    }

    #[async_trait::async_trait]
    impl EventLog for NoQuorum {
        async fn append(&self, _: NewEvent) -> Result<AppendOutcome, LogError> {
            no_quorum()
        }
        async fn append_batch(&self, _: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
            no_quorum()
        }
        async fn last_seq(&self) -> Result<u64, LogError> {
            no_quorum()
        }
        async fn first_seq(&self) -> Result<u64, LogError> {
            no_quorum()
        }
        async fn append_expecting(&self, _: u64, _: Vec<NewEvent>) -> Result<(), LogError> {
            no_quorum()
        }
        async fn last_subject_seq(&self, _: &str) -> Result<u64, LogError> {
            no_quorum()
        }
        async fn read(&self, _: u64, _: usize) -> Result<Vec<RecordedEvent>, LogError> {
            no_quorum()
        }
        async fn subscribe(&self, _: u64) -> Result<EventStream, LogError> {
            no_quorum()
        }
        async fn subscribe_matching(&self, _: u64, _: &[String]) -> Result<EventStream, LogError> {
            no_quorum()
        }
        async fn last_seq_matching(&self, _: &[String]) -> Result<u64, LogError> {
            no_quorum()
        }
    }

    fn get(server: &str) -> Query {
        let q = ClusterQuery { server: server.into(), ..Default::default() };
        Query { linearizable: true, kind: Some(query::Kind::Get(q)), ..Default::default() }
    }

    #[tokio::test]
    async fn a_replica_that_cannot_reach_the_log_does_not_answer_a_cluster_is_missing() {
        let projection = Projection::in_memory("test").unwrap();
        let cut_off = Queries::new(Arc::new(NoQuorum), projection.clone(), Duration::from_secs(1));
        let e = cut_off.handle_query(get("https://elsewhere.example.com")).await.err();
        assert!(matches!(e, Some(RegistryError::Unavailable(_))), "{e:?}");
        // A list answers with what the replica has.
        let list =
            Query { linearizable: true, kind: Some(query::Kind::List(Default::default())), ..Default::default() };
        assert!(cut_off.handle_query(list).await.is_ok());
        // Where the log answers, missing is missing.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(corral_event_log::SledLog::open(dir.path()).unwrap());
        let reachable = Queries::new(log, projection, Duration::from_secs(1));
        let e = reachable.handle_query(get("https://elsewhere.example.com")).await.err();
        assert!(matches!(e, Some(RegistryError::NotFound(_))), "{e:?}");
    }

    fn cluster(server: &str, project: &str) -> v1alpha1::Cluster {
        v1alpha1::Cluster {
            server: server.into(),
            name: server.replace("https://", ""),
            project: project.into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_list_is_byte_for_byte_the_cluster_list() {
        let clusters = vec![cluster("https://a", "p1"), cluster("https://b", "p2"), cluster("https://c", "p1")];
        let mut encoded = EncodedList::from_clusters(clusters.clone());
        let whole = ClusterList { metadata: Some(Default::default()), items: clusters.clone() };
        assert_eq!(encoded.encode_to_vec(), whole.encode_to_vec());
        assert_eq!(encoded.encoded_len(), whole.encoded_len());

        encoded.retain(|c| c.project == "p1");
        let some = ClusterList {
            metadata: Some(Default::default()),
            items: clusters.into_iter().filter(|c| c.project == "p1").collect(),
        };
        assert_eq!(encoded.len(), 2);
        assert_eq!(encoded.encode_to_vec(), some.encode_to_vec());
        assert_eq!(ClusterList::decode(encoded.encode_to_vec().as_slice()).expect("decodes"), some);

        encoded.retain(|_| false);
        assert!(encoded.is_empty());
        assert_eq!(
            encoded.encode_to_vec(),
            ClusterList { metadata: Some(Default::default()), items: vec![] }.encode_to_vec()
        );
    }
}
