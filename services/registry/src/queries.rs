//! The query side: answers Get and List from a projection of the log, once it has applied what
//! the query needs. The registry uses it, and so does each gateway replica, which keeps a view
//! of its own so that reads take no extra hop.

use std::sync::Arc;
use std::time::Duration;

use corral_domain as domain;
use corral_event_log::EventLog;
use corral_projection::Projection;
use corral_proto::cluster::ClusterQuery;
use corral_proto::registry::{Query, Reply, query, reply};
use corral_proto::v1alpha1::{self, ClusterList};
use tracing::{Instrument, info_span};

use crate::api::RegistryApi;
use crate::barrier::ReadBarrier;
use crate::error::RegistryError;
use crate::read_model::{self, cluster_record, name_record};
use crate::service::to_reply;

pub struct Queries {
    projection: Projection,
    barrier: ReadBarrier,
    read_timeout: Duration,
    list_cache: std::sync::Mutex<Option<(u64, Arc<Vec<v1alpha1::Cluster>>)>>,
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
                    let name = percent_encoding::percent_decode_str(&cid.value)
                        .decode_utf8()
                        .map_err(|_| RegistryError::InvalidArgument("id.value: invalid escaped name".into()))?;
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
        let id = self.resolve(q)?.ok_or_else(|| Self::not_found(q))?;
        match cluster_record(&self.projection, &id)? {
            Some(r) if !r.deleted => Ok(id),
            _ => Err(Self::not_found(q)),
        }
    }

    pub fn get(&self, q: &ClusterQuery) -> Result<v1alpha1::Cluster, RegistryError> {
        Ok(self.get_versioned(q)?.0)
    }

    /// The cluster and its aggregate version.
    pub fn get_versioned(&self, q: &ClusterQuery) -> Result<(v1alpha1::Cluster, u64), RegistryError> {
        let id = self.live_id(q)?;
        let rec = cluster_record(&self.projection, &id)?.ok_or_else(|| Self::not_found(q))?;
        Ok((read_model::render(&rec), rec.version))
    }

    /// Every live cluster, rendered and sorted by server. Reused while the projection has
    /// applied nothing new, so repeated Lists of a large fleet skip decoding and rendering.
    fn all_rendered(&self) -> Result<Arc<Vec<v1alpha1::Cluster>>, RegistryError> {
        let applied = self.projection.last_applied();
        if let Some((seq, all)) = self.list_cache.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && seq == applied
        {
            return Ok(all);
        }
        let mut items: Vec<v1alpha1::Cluster> =
            read_model::live_clusters(&self.projection)?.iter().map(read_model::render).collect();
        items.sort_by(|a, b| a.server.cmp(&b.server));
        let all = Arc::new(items);
        // Cache only a snapshot nothing was applied during, so it matches `applied` exactly.
        if self.projection.last_applied() == applied {
            *self.list_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((applied, all.clone()));
        }
        Ok(all)
    }

    pub fn list(&self, q: &ClusterQuery) -> Result<ClusterList, RegistryError> {
        let selector = crate::selector::Selector::parse(&q.selector)?;
        let items = self
            .all_rendered()?
            .iter()
            .filter(|c| {
                (q.server.is_empty() || c.server == q.server)
                    && (q.name.is_empty() || c.name == q.name)
                    && selector.matches(&c.labels)
            })
            .cloned()
            .collect();
        Ok(ClusterList { metadata: Some(Default::default()), items })
    }

    pub async fn handle_query(&self, q: Query) -> Result<(u64, reply::Result, u64), RegistryError> {
        let mut need = q.min_revision;
        if q.linearizable {
            need = need.max(self.barrier.last_seq().await.map_err(RegistryError::Unavailable)?);
        }
        if need > self.projection.last_applied() {
            self.wait_for(need).await?;
        }
        let revision = self.projection.last_applied();
        match q.kind.ok_or_else(|| RegistryError::InvalidArgument("empty query".into()))? {
            query::Kind::Get(cq) => {
                let (cluster, version) = self.get_versioned(&cq)?;
                Ok((revision, reply::Result::Cluster(cluster), version))
            }
            query::Kind::List(cq) => Ok((revision, reply::Result::List(self.list(&cq)?), 0)),
        }
    }
}

#[async_trait::async_trait]
impl RegistryApi for Queries {
    async fn command(&self, _command: corral_proto::registry::Command) -> Reply {
        to_reply(Err(RegistryError::FailedPrecondition("this view answers queries only".into())))
    }

    async fn query(&self, query: Query) -> Reply {
        let span = info_span!("registry.query", min_revision = query.min_revision, linearizable = query.linearizable);
        match self.handle_query(query).instrument(span).await {
            Ok((revision, result, cluster_version)) => {
                let mut reply = to_reply(Ok((revision, result)));
                reply.cluster_version = cluster_version;
                reply
            }
            Err(e) => to_reply(Err(e)),
        }
    }
}
