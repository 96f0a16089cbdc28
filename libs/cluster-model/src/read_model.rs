//! The clusters' projection: one record per cluster and one per claimed name, folded from the
//! log. Records keep credentials sealed; the redacted config is what responses show.

use corral_event_log::RecordedEvent;
use corral_projection::{Changes, Projection, Read, Staged};
use corral_proto::events::{self, EventEnvelope};
use corral_proto::meta::Time;
use corral_proto::registry::{ClusterRecord, NameRecord};
use corral_proto::v1alpha1::{self, ClusterConfig, ConnectionState};
use prost::Message;

use corral_events::event_type::{
    CLUSTER_CACHE_SYNCED, CLUSTER_CONNECTION_OBSERVED, CLUSTER_DELETED, CLUSTER_NAME_CLAIMED, CLUSTER_NAME_RELEASED,
    CLUSTER_REFRESH_REQUESTED, CLUSTER_REGISTERED, CLUSTER_SPEC_CHANGED,
};
use corral_events::subject;

use crate::error::RegistryError;

const CLUSTER_KEY_PREFIX: &[u8] = b"c/";
const NAME_KEY_PREFIX: &[u8] = b"n/";

fn cluster_key(id: &str) -> Vec<u8> {
    [CLUSTER_KEY_PREFIX, id.as_bytes()].concat()
}

fn name_key(key: &str) -> Vec<u8> {
    [NAME_KEY_PREFIX, key.as_bytes()].concat()
}

pub fn cluster_record(p: &impl Read, id: &str) -> Result<Option<ClusterRecord>, RegistryError> {
    match p.get(&cluster_key(id))? {
        Some(bytes) => Ok(Some(ClusterRecord::decode(bytes.as_ref())?)),
        None => Ok(None),
    }
}

pub fn name_record(p: &impl Read, key: &str) -> Result<Option<NameRecord>, RegistryError> {
    match p.get(&name_key(key))? {
        Some(bytes) => Ok(Some(NameRecord::decode(bytes.as_ref())?)),
        None => Ok(None),
    }
}

/// Every live (not deleted) cluster record.
pub fn live_clusters(p: &Projection) -> Result<Vec<ClusterRecord>, RegistryError> {
    let mut out = Vec::new();
    for item in p.scan_prefix(CLUSTER_KEY_PREFIX) {
        let (_, v) = item?;
        let rec = ClusterRecord::decode(v.as_ref())?;
        if !rec.deleted {
            out.push(rec);
        }
    }
    Ok(out)
}

/// Every live cluster record as of one revision, and that revision.
pub fn live_clusters_at(p: &Projection) -> Result<(u64, Vec<ClusterRecord>), RegistryError> {
    let (seq, entries) = p.snapshot_prefix(CLUSTER_KEY_PREFIX);
    let mut out = Vec::with_capacity(entries.len());
    for (_, v) in entries {
        let rec = ClusterRecord::decode(v.as_ref())?;
        if !rec.deleted {
            out.push(rec);
        }
    }
    Ok((seq, out))
}

pub use crate::codec::redact;

pub fn decode_envelope(ev: &RecordedEvent) -> Result<EventEnvelope, RegistryError> {
    Ok(EventEnvelope::decode(ev.payload.as_ref())?)
}

/// Folds one cluster event into the cluster's record. Pure, so a writer can render the result
/// of its own append without waiting for the projection.
pub fn fold_cluster(
    rec: Option<ClusterRecord>,
    id: &str,
    seq: u64,
    env: &EventEnvelope,
) -> Result<ClusterRecord, RegistryError> {
    let mut rec = rec.unwrap_or_else(|| ClusterRecord { cluster_id: id.to_string(), ..Default::default() });
    rec.subject_seq = seq;
    rec.version += 1;
    match env.event_type.as_str() {
        CLUSTER_REGISTERED => {
            let e = events::ClusterRegistered::decode(env.payload.as_slice())?;
            let spec = e.spec.unwrap_or_default();
            rec.redacted_config = spec.redacted_config.clone();
            rec.spec = Some(spec);
            rec.deleted = false;
            rec.refresh_requested_at_unix_nanos = 0;
            rec.created_at_unix_nanos = env.occurred_at_unix_nanos;
            // A re-created cluster starts unobserved.
            rec.connection_status.clear();
            rec.connection_message.clear();
            rec.connection_attempted_at_unix = 0;
            rec.server_version.clear();
            rec.cache_apis_count = 0;
            rec.cache_resources_count = 0;
            rec.cache_synced_at_unix = 0;
        }
        CLUSTER_SPEC_CHANGED => {
            let e = events::ClusterSpecChanged::decode(env.payload.as_slice())?;
            let spec = e.spec.unwrap_or_default();
            rec.redacted_config = spec.redacted_config.clone();
            rec.spec = Some(spec);
        }
        CLUSTER_DELETED => {
            rec.deleted = true;
        }
        CLUSTER_REFRESH_REQUESTED => {
            let e = events::ClusterRefreshRequested::decode(env.payload.as_slice())?;
            rec.refresh_requested_at_unix_nanos = e.requested_at_unix_nanos;
        }
        other => {
            // Events from newer writers this version does not know: skip, keep the version.
            tracing::warn!(event_type = other, seq, "skipping unknown cluster event type");
        }
    }
    Ok(rec)
}

/// The subjects whose events change a cluster's record, and the one whose events are only
/// announced (a credential rotation changes the config through the registry, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterSubject {
    Spec,
    Connection,
    Cache,
    Credentials,
}

/// Which cluster an event's subject is about, and on which of its subjects.
pub fn cluster_subject(subject: &str) -> Option<(&str, ClusterSubject)> {
    [
        (subject::CLUSTER, ClusterSubject::Spec),
        (subject::CLUSTER_STATE, ClusterSubject::Connection),
        (subject::CLUSTER_CACHE, ClusterSubject::Cache),
        (subject::CLUSTER_AUTH, ClusterSubject::Credentials),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| subject.strip_prefix(prefix).map(|id| (id, kind)))
}

/// Every subject [`cluster_subject`] knows, as log filters.
pub fn cluster_subject_filters() -> Vec<String> {
    [subject::CLUSTER, subject::CLUSTER_STATE, subject::CLUSTER_CACHE, subject::CLUSTER_AUTH]
        .into_iter()
        .map(subject::all)
        .collect()
}

/// Folds one event of one of a cluster's subjects into its record: `Some` with the new record
/// when the record changes, `None` when it does not. Pure, as [`fold_cluster`].
pub fn fold_cluster_event(
    rec: Option<ClusterRecord>,
    id: &str,
    on: ClusterSubject,
    ev: &RecordedEvent,
    env: &EventEnvelope,
) -> Result<Option<ClusterRecord>, RegistryError> {
    match on {
        ClusterSubject::Spec => fold_cluster(rec, id, ev.seq, env).map(Some),
        ClusterSubject::Connection => {
            let Some(mut rec) = rec.filter(|_| env.event_type == CLUSTER_CONNECTION_OBSERVED) else { return Ok(None) };
            let e = events::ClusterConnectionObserved::decode(env.payload.as_slice())?;
            // Only for the incarnation that was probed; the cluster's own version is untouched.
            if rec.deleted || e.cluster_created_at_unix_nanos != rec.created_at_unix_nanos {
                return Ok(None);
            }
            rec.connection_status = e.status;
            rec.connection_message = e.message;
            rec.connection_attempted_at_unix = e.attempted_at_unix;
            rec.server_version = e.server_version;
            Ok(Some(rec))
        }
        ClusterSubject::Cache => {
            let Some(mut rec) = rec.filter(|_| env.event_type == CLUSTER_CACHE_SYNCED) else { return Ok(None) };
            let e = events::ClusterCacheSynced::decode(env.payload.as_slice())?;
            // A failed sync keeps the last good counts; only its incarnation's syncs count.
            if rec.deleted || !e.error.is_empty() || e.cluster_created_at_unix_nanos != rec.created_at_unix_nanos {
                return Ok(None);
            }
            rec.cache_apis_count = e.apis_count;
            rec.cache_resources_count = e.resources_count;
            rec.cache_synced_at_unix = e.synced_at_unix;
            Ok(Some(rec))
        }
        ClusterSubject::Credentials => Ok(None),
    }
}

/// Folds one logged event into the changes it makes to the projection.
pub fn fold(p: &Staged<'_>, ev: &RecordedEvent) -> Result<Changes, RegistryError> {
    let mut changes = Changes::default();
    if let Some((id, on)) = cluster_subject(&ev.subject) {
        if on == ClusterSubject::Credentials {
            return Ok(changes);
        }
        let env = decode_envelope(ev)?;
        if let Some(rec) = fold_cluster_event(cluster_record(p, id)?, id, on, ev, &env)? {
            changes.put(cluster_key(id), rec.encode_to_vec());
        }
    } else if let Some(k) = ev.subject.strip_prefix(subject::CLUSTER_NAME) {
        let env = decode_envelope(ev)?;
        let mut rec = name_record(p, k)?.unwrap_or_default();
        rec.subject_seq = ev.seq;
        rec.version += 1;
        match env.event_type.as_str() {
            CLUSTER_NAME_CLAIMED => {
                let e = events::ClusterNameClaimed::decode(env.payload.as_slice())?;
                rec.cluster_id = e.cluster_id;
                rec.released = false;
                rec.claimed_at_unix_nanos = env.occurred_at_unix_nanos;
            }
            CLUSTER_NAME_RELEASED => {
                rec.released = true;
            }
            other => tracing::warn!(event_type = other, seq = ev.seq, "skipping unknown name event type"),
        }
        changes.put(name_key(k), rec.encode_to_vec());
    }
    Ok(changes)
}

fn time_from_nanos(n: i64) -> Option<Time> {
    (n != 0).then(|| Time { seconds: n.div_euclid(1_000_000_000), nanos: n.rem_euclid(1_000_000_000) as i32 })
}

/// The cluster as the API shows it.
pub fn render(rec: &ClusterRecord) -> v1alpha1::Cluster {
    let spec = rec.spec.clone().unwrap_or_default();
    // Until the first probe the state is Unknown, as Argo CD shows before its first check.
    let connection_state = if rec.connection_status.is_empty() {
        ConnectionState { status: "Unknown".to_string(), message: String::new(), attempted_at: None }
    } else {
        ConnectionState {
            status: rec.connection_status.clone(),
            message: rec.connection_message.clone(),
            attempted_at: time_from_nanos(rec.connection_attempted_at_unix.saturating_mul(1_000_000_000)),
        }
    };
    v1alpha1::Cluster {
        server: spec.server,
        name: spec.name,
        config: Some(rec.redacted_config.clone().unwrap_or_else(|| redact(&ClusterConfig::default()))),
        connection_state: Some(connection_state.clone()),
        server_version: rec.server_version.clone(),
        namespaces: spec.namespaces,
        refresh_requested_at: time_from_nanos(rec.refresh_requested_at_unix_nanos),
        info: Some(v1alpha1::ClusterInfo {
            connection_state: Some(connection_state),
            server_version: rec.server_version.clone(),
            cache_info: Some(if rec.cache_synced_at_unix == 0 {
                v1alpha1::ClusterCacheInfo::default()
            } else {
                v1alpha1::ClusterCacheInfo {
                    resources_count: Some(rec.cache_resources_count),
                    apis_count: Some(rec.cache_apis_count),
                    last_cache_sync_time: time_from_nanos(rec.cache_synced_at_unix.saturating_mul(1_000_000_000)),
                }
            }),
            applications_count: 0,
            api_versions: Vec::new(),
        }),
        shard: spec.shard,
        cluster_resources: spec.cluster_resources,
        project: spec.project,
        labels: spec.labels,
        annotations: spec.annotations,
    }
}
