//! The public events as stored and published: one message per change on
//! `corral-events.v1.clusters.<cluster-id>.<reason>`, CloudEvents 1.0 in binary mode (attributes
//! as `ce-` headers), the cluster as Argo CD's REST JSON for payload.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use corral_cluster_model::change::{Change, Reason};
use corral_event_log::{NewEvent, RecordedEvent};
use corral_proto::v1alpha1::Cluster;

use crate::error::WatchError;

pub use corral_events::public::{ALL_SUBJECTS, CLUSTER_SUBJECT_PREFIX, SOURCE, STREAM, TYPE_PREFIX};

pub const CE_SPECVERSION: &str = "ce-specversion";
pub const CE_ID: &str = "ce-id";
pub const CE_SOURCE: &str = "ce-source";
pub const CE_TYPE: &str = "ce-type";
pub const CE_SUBJECT: &str = "ce-subject";
pub const CE_TIME: &str = "ce-time";
pub const CE_SEQUENCE: &str = "ce-sequence";
pub const CE_DATACONTENTTYPE: &str = "ce-datacontenttype";
/// The revision of the public event before this one (0 for the first): with it a reader knows
/// that no change lies between the two, so a resume can be judged exactly.
pub const PREVIOUS_REVISION: &str = "corral-previous-revision";
/// The cluster before the change, as JSON, when what watches filter on changed.
pub const PREVIOUS_CLUSTER: &str = "corral-previous-cluster";

/// The namespace of the public event ids: each is derived from the id of the internal event it
/// announces, so every publisher names an event alike.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d1c_1f0e_58b4_4c43_9a57_43a4_3b4f_7c21);

/// One public change, as a watch reads it back.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicEvent {
    pub revision: u64,
    pub previous_revision: u64,
    pub reason: Reason,
    pub cluster_id: String,
    pub cluster: Cluster,
    pub previous: Option<Cluster>,
    pub occurred_at: DateTime<Utc>,
}

/// The subject of a cluster's public events for one reason.
pub fn subject(cluster_id: &str, reason: Reason) -> String {
    format!("{CLUSTER_SUBJECT_PREFIX}{cluster_id}.{}", reason.as_str())
}

/// `ce-sequence`: the revision, zero-padded so that it orders as text too (CloudEvents'
/// sequence extension).
pub fn sequence(revision: u64) -> String {
    format!("{revision:020}")
}

fn json(c: &Cluster) -> String {
    corral_api_json::cluster_to_json(c).to_string()
}

/// The message announcing `change`, made by the internal event `internal_id` at `revision`.
pub struct Announcement<'a> {
    pub change: &'a Change,
    pub cluster_id: &'a str,
    pub revision: u64,
    pub previous_revision: u64,
    pub internal_event_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub traceparent: Option<&'a str>,
}

impl Announcement<'_> {
    pub fn id(&self) -> String {
        uuid::Uuid::new_v5(&ID_NAMESPACE, self.internal_event_id.as_bytes()).to_string()
    }

    pub fn to_event(&self) -> NewEvent {
        let reason = self.change.reason;
        let id = self.id();
        let mut headers = vec![
            (CE_SPECVERSION.to_string(), "1.0".to_string()),
            (CE_ID.to_string(), id.clone()),
            (CE_SOURCE.to_string(), SOURCE.to_string()),
            (CE_TYPE.to_string(), format!("{TYPE_PREFIX}{}", reason.as_str())),
            (CE_SUBJECT.to_string(), self.cluster_id.to_string()),
            (CE_TIME.to_string(), self.occurred_at.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            (CE_SEQUENCE.to_string(), sequence(self.revision)),
            (CE_DATACONTENTTYPE.to_string(), "application/json".to_string()),
            (PREVIOUS_REVISION.to_string(), self.previous_revision.to_string()),
        ];
        if let Some(previous) = &self.change.previous {
            headers.push((PREVIOUS_CLUSTER.to_string(), json(previous)));
        }
        if let Some(tp) = self.traceparent.filter(|t| !t.is_empty()) {
            headers.push((corral_events::TRACEPARENT_HEADER.to_string(), tp.to_string()));
        }
        NewEvent {
            subject: subject(self.cluster_id, reason),
            msg_id: id,
            expected_subject_seq: None,
            headers,
            payload: json(&self.change.cluster).into(),
        }
    }
}

fn header<'a>(ev: &'a RecordedEvent, name: &str) -> Option<&'a str> {
    ev.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn corrupt(ev: &RecordedEvent, what: &str) -> WatchError {
    WatchError::Internal(format!("public event {} is unreadable: {what}", ev.seq))
}

/// The revision a stored public event announces.
pub fn revision_of(ev: &RecordedEvent) -> Result<u64, WatchError> {
    header(ev, CE_SEQUENCE).and_then(|s| s.parse().ok()).ok_or_else(|| corrupt(ev, "no ce-sequence"))
}

/// The revision of the public event before a stored one.
pub fn previous_revision_of(ev: &RecordedEvent) -> Result<u64, WatchError> {
    header(ev, PREVIOUS_REVISION).and_then(|s| s.parse().ok()).ok_or_else(|| corrupt(ev, "no previous revision"))
}

fn cluster_from(ev: &RecordedEvent, bytes: &[u8]) -> Result<Cluster, WatchError> {
    corral_api_json::cluster_from_slice(bytes).map_err(|e| corrupt(ev, &e.to_string()))
}

/// Reads a stored public event back.
pub fn decode(ev: &RecordedEvent) -> Result<PublicEvent, WatchError> {
    let reason = header(ev, CE_TYPE)
        .and_then(|t| t.strip_prefix(TYPE_PREFIX))
        .and_then(Reason::parse)
        .ok_or_else(|| corrupt(ev, "unknown ce-type"))?;
    let cluster_id = header(ev, CE_SUBJECT).ok_or_else(|| corrupt(ev, "no ce-subject"))?.to_string();
    let occurred_at = header(ev, CE_TIME)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.timestamp_nanos(0));
    let previous = header(ev, PREVIOUS_CLUSTER).map(|p| cluster_from(ev, p.as_bytes())).transpose()?;
    Ok(PublicEvent {
        revision: revision_of(ev)?,
        previous_revision: previous_revision_of(ev)?,
        reason,
        cluster_id,
        cluster: cluster_from(ev, &ev.payload)?,
        previous,
        occurred_at,
    })
}

#[cfg(test)]
mod tests {
    use corral_proto::v1alpha1::{ClusterCacheInfo, ClusterConfig, ClusterInfo, ConnectionState, TlsClientConfig};

    use super::*;

    fn cluster() -> Cluster {
        let state = ConnectionState {
            status: "Successful".into(),
            message: "ok".into(),
            attempted_at: Some(corral_proto::meta::Time { seconds: 1_700_000_000, nanos: 0 }),
        };
        Cluster {
            server: "https://a.example:6443".into(),
            name: "a".into(),
            config: Some(ClusterConfig {
                tls_client_config: Some(TlsClientConfig { insecure: true, ..Default::default() }),
                ..Default::default()
            }),
            connection_state: Some(state.clone()),
            server_version: "1.31".into(),
            namespaces: vec!["ns".into()],
            info: Some(ClusterInfo {
                connection_state: Some(state),
                server_version: "1.31".into(),
                cache_info: Some(ClusterCacheInfo {
                    resources_count: Some(3),
                    apis_count: Some(2),
                    last_cache_sync_time: Some(corral_proto::meta::Time { seconds: 1_700_000_001, nanos: 0 }),
                }),
                ..Default::default()
            }),
            shard: Some(1),
            project: "p".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            annotations: [("note".to_string(), "x y".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_announcement_reads_back_as_it_was_written_with_cloudevents_headers() {
        let mut before = cluster();
        before.labels.insert("env".into(), "dev".into());
        let change = Change { reason: Reason::Updated, cluster: cluster(), previous: Some(before.clone()) };
        let at = Utc.timestamp_opt(1_700_000_002, 5).single().expect("a time");
        let a = Announcement {
            change: &change,
            cluster_id: "0123abcd",
            revision: 42,
            previous_revision: 40,
            internal_event_id: "e-1",
            occurred_at: at,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        };
        let new = a.to_event();
        assert_eq!(new.subject, "corral-events.v1.clusters.0123abcd.updated");
        assert_eq!(new.msg_id, a.id());
        assert_eq!(a.id(), Announcement { internal_event_id: "e-1", ..a }.id(), "the same event, the same id");
        let find = |k: &str| new.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(find(CE_TYPE).as_deref(), Some("io.corral.cluster.v1.updated"));
        assert_eq!(find(CE_SEQUENCE).as_deref(), Some("00000000000000000042"));
        assert_eq!(find(CE_SPECVERSION).as_deref(), Some("1.0"));
        assert!(new.headers.iter().all(|(_, v)| !v.contains('\n') && !v.contains('\r')));
        let stored = RecordedEvent {
            seq: 7,
            subject: new.subject,
            headers: new.headers,
            payload: new.payload,
            time: Utc::now(),
        };
        let back = decode(&stored).expect("decodes");
        assert_eq!(
            back,
            PublicEvent {
                revision: 42,
                previous_revision: 40,
                reason: Reason::Updated,
                cluster_id: "0123abcd".into(),
                cluster: cluster(),
                previous: Some(before),
                occurred_at: at,
            }
        );
    }
}
