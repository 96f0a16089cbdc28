//! The event catalogue: every subject and event type the log holds, and the one writer of event
//! envelopes, which every appender uses. Each event is an [`EventEnvelope`] on the subject of its
//! aggregate, with its type and W3C trace context also in the message headers, so a follower can
//! filter and trace without decoding.

use chrono::{DateTime, TimeZone, Utc};
use corral_event_log::NewEvent;
use corral_proto::events::EventEnvelope;
use prost::Message;

/// Every internal subject: the stream `CORRAL` captures `corral.>`.
pub const ALL_SUBJECTS: &str = "corral.>";

/// The version of the envelope and payload schemas this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Header naming the event type.
pub const EVENT_TYPE_HEADER: &str = "Corral-Event-Type";
/// W3C trace context headers, lower case as the W3C and OpenTelemetry write them.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The subjects, one family per aggregate; ids are 32 lowercase hex characters.
pub mod subject {
    /// A cluster's spec: `ClusterRegistered`, `ClusterSpecChanged`, `ClusterDeleted`,
    /// `ClusterRefreshRequested` (the registry).
    pub const CLUSTER: &str = "corral.cluster.";
    /// A cluster name's claims: `ClusterNameClaimed`, `ClusterNameReleased` (the registry).
    pub const CLUSTER_NAME: &str = "corral.clustername.";
    /// A cluster's observed connection: `ClusterConnectionObserved` (the health probe).
    pub const CLUSTER_STATE: &str = "corral.clusterstate.";
    /// A cluster's cache info: `ClusterCacheSynced` (cache invalidation).
    pub const CLUSTER_CACHE: &str = "corral.clustercache.";
    /// A cluster's credential rotations: `ClusterCredentialsRotated`, `OldCredentialsRetired`
    /// (auth rotation).
    pub const CLUSTER_AUTH: &str = "corral.clusterauth.";
    /// An account's passwords and tokens: `PasswordSet`, `ApiTokenIssued`, `ApiTokenRevoked`,
    /// `SessionRevoked`.
    pub const ACCOUNT: &str = "corral.account.";
    /// A user name's login attempts: `LoginFailed`, `LoginSucceeded`.
    pub const LOGIN: &str = "corral.login.";
    /// The token signing key: `SigningKeyCreated`.
    pub const SIGNING_KEY: &str = "corral.auth.key";

    pub fn cluster(id: &str) -> String {
        format!("{CLUSTER}{id}")
    }

    pub fn cluster_name(key: &str) -> String {
        format!("{CLUSTER_NAME}{key}")
    }

    pub fn cluster_state(id: &str) -> String {
        format!("{CLUSTER_STATE}{id}")
    }

    pub fn cluster_cache(id: &str) -> String {
        format!("{CLUSTER_CACHE}{id}")
    }

    pub fn cluster_auth(id: &str) -> String {
        format!("{CLUSTER_AUTH}{id}")
    }

    /// A filter for every subject of a family (`corral.cluster.>`).
    pub fn all(prefix: &str) -> String {
        format!("{prefix}>")
    }
}

/// The public stream of cluster changes: a stream of its own, outside `corral.>`, holding only
/// what subscribers may see.
pub mod public {
    /// The JetStream stream of public events. It captures [`ALL_SUBJECTS`] only, and is never a
    /// mirror or source of the internal stream, which holds sealed configs and login records.
    pub const STREAM: &str = "CORRAL_EVENTS";
    pub const ALL_SUBJECTS: &str = "corral-events.v1.>";
    /// `corral-events.v1.clusters.<cluster-id>.<reason>`.
    pub const CLUSTER_SUBJECT_PREFIX: &str = "corral-events.v1.clusters.";
    /// The CloudEvents source of every public cluster event.
    pub const SOURCE: &str = "/corral/clusters";
    /// The CloudEvents type of a public cluster event is this and its reason.
    pub const TYPE_PREFIX: &str = "io.corral.cluster.v1.";
}

/// The event types, by the subject family they are appended on.
pub mod event_type {
    pub const CLUSTER_REGISTERED: &str = "ClusterRegistered";
    pub const CLUSTER_SPEC_CHANGED: &str = "ClusterSpecChanged";
    pub const CLUSTER_DELETED: &str = "ClusterDeleted";
    pub const CLUSTER_REFRESH_REQUESTED: &str = "ClusterRefreshRequested";
    pub const CLUSTER_NAME_CLAIMED: &str = "ClusterNameClaimed";
    pub const CLUSTER_NAME_RELEASED: &str = "ClusterNameReleased";
    pub const CLUSTER_CONNECTION_OBSERVED: &str = "ClusterConnectionObserved";
    pub const CLUSTER_CACHE_SYNCED: &str = "ClusterCacheSynced";
    pub const CLUSTER_CREDENTIALS_ROTATED: &str = "ClusterCredentialsRotated";
    pub const OLD_CREDENTIALS_RETIRED: &str = "OldCredentialsRetired";
    pub const SIGNING_KEY_CREATED: &str = "SigningKeyCreated";
    pub const PASSWORD_SET: &str = "PasswordSet";
    pub const API_TOKEN_ISSUED: &str = "ApiTokenIssued";
    pub const API_TOKEN_REVOKED: &str = "ApiTokenRevoked";
    pub const SESSION_REVOKED: &str = "SessionRevoked";
    pub const LOGIN_FAILED: &str = "LoginFailed";
    pub const LOGIN_SUCCEEDED: &str = "LoginSucceeded";
}

/// Who and what caused an event: copied from the request that led to it.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub correlation_id: String,
    /// The event or request this event follows from; the correlation id when empty.
    pub causation_id: String,
    /// W3C trace context of the event; empty: the current span's (none without tracing).
    pub traceparent: String,
    pub actor: String,
}

/// One event to append.
pub struct Draft<'a> {
    pub subject: String,
    pub aggregate_id: String,
    /// The aggregate's version once this event is applied (1 for the first).
    pub aggregate_version: u64,
    /// Append only if the subject's last sequence is this (0: none), as the log checks.
    pub expected_subject_seq: Option<u64>,
    pub event_type: &'a str,
    pub payload: Vec<u8>,
    /// The de-duplication id: a retry of the same step must send the same one. `None`: the
    /// event's own id (no retry is expected to repeat it).
    pub msg_id: Option<String>,
}

/// The envelope and the log entry of a draft, with the event type and trace context as headers.
pub fn write(draft: Draft<'_>, origin: &Origin) -> (NewEvent, EventEnvelope) {
    let event_id = uuid::Uuid::new_v4().to_string();
    let causation = if origin.causation_id.is_empty() { &origin.correlation_id } else { &origin.causation_id };
    let traceparent = if origin.traceparent.is_empty() {
        corral_telemetry::trace::current_traceparent()
    } else {
        origin.traceparent.clone()
    };
    let envelope = EventEnvelope {
        event_id: event_id.clone(),
        event_type: draft.event_type.to_string(),
        aggregate_id: draft.aggregate_id,
        aggregate_version: draft.aggregate_version,
        occurred_at_unix_nanos: unix_nanos(&Utc::now()),
        correlation_id: origin.correlation_id.clone(),
        causation_id: causation.clone(),
        traceparent: traceparent.clone(),
        tracestate: String::new(),
        schema_version: SCHEMA_VERSION,
        actor: origin.actor.clone(),
        payload: draft.payload,
    };
    let mut headers = vec![(EVENT_TYPE_HEADER.to_string(), draft.event_type.to_string())];
    if !traceparent.is_empty() {
        headers.push((TRACEPARENT_HEADER.to_string(), traceparent));
    }
    let event = NewEvent {
        subject: draft.subject,
        msg_id: draft.msg_id.unwrap_or(event_id),
        expected_subject_seq: draft.expected_subject_seq,
        headers,
        payload: envelope.encode_to_vec().into(),
    };
    (event, envelope)
}

pub fn unix_nanos(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub fn from_unix_nanos(n: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(n)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn every_event_carries_its_type_and_trace_in_headers_and_envelope() {
        let origin = Origin {
            correlation_id: "req-1".into(),
            causation_id: String::new(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            actor: "alice".into(),
        };
        let draft = Draft {
            subject: subject::cluster("abc"),
            aggregate_id: "abc".into(),
            aggregate_version: 3,
            expected_subject_seq: Some(7),
            event_type: event_type::CLUSTER_DELETED,
            payload: vec![1, 2, 3],
            msg_id: Some("req-1:corral.cluster.abc:3".into()),
        };
        let (event, envelope) = write(draft, &origin);
        assert_eq!(event.subject, "corral.cluster.abc");
        assert_eq!(event.msg_id, "req-1:corral.cluster.abc:3");
        assert_eq!(event.expected_subject_seq, Some(7));
        assert!(event.headers.contains(&(EVENT_TYPE_HEADER.into(), "ClusterDeleted".into())));
        assert!(event.headers.contains(&(TRACEPARENT_HEADER.into(), origin.traceparent.clone())));
        assert_eq!(EventEnvelope::decode(event.payload.as_ref()).unwrap(), envelope);
        assert_eq!(envelope.schema_version, SCHEMA_VERSION);
        assert_eq!(envelope.causation_id, "req-1", "caused by the request when nothing else");
        assert_eq!((envelope.actor.as_str(), envelope.aggregate_version), ("alice", 3));
        assert!(!envelope.event_id.is_empty() && envelope.occurred_at_unix_nanos > 0);
    }

    #[test]
    fn without_a_trace_or_a_retry_id() {
        let draft = Draft {
            subject: subject::SIGNING_KEY.into(),
            aggregate_id: subject::SIGNING_KEY.into(),
            aggregate_version: 1,
            expected_subject_seq: Some(0),
            event_type: event_type::SIGNING_KEY_CREATED,
            payload: vec![],
            msg_id: None,
        };
        let (event, envelope) = write(draft, &Origin::default());
        assert_eq!(event.msg_id, envelope.event_id, "the event's own id de-duplicates it");
        assert_eq!(event.headers, vec![(EVENT_TYPE_HEADER.to_string(), "SigningKeyCreated".to_string())]);
    }

    #[test]
    fn subjects_are_the_stored_ones() {
        // Stored on every log: a change would orphan what is there.
        assert_eq!(subject::cluster("x"), "corral.cluster.x");
        assert_eq!(subject::cluster_name("x"), "corral.clustername.x");
        assert_eq!(subject::cluster_state("x"), "corral.clusterstate.x");
        assert_eq!(subject::cluster_cache("x"), "corral.clustercache.x");
        assert_eq!(subject::cluster_auth("x"), "corral.clusterauth.x");
        assert_eq!(subject::all(subject::ACCOUNT), "corral.account.>");
        for prefix in [subject::CLUSTER, subject::ACCOUNT, subject::LOGIN, subject::SIGNING_KEY] {
            assert!(prefix.starts_with("corral."), "inside {ALL_SUBJECTS}");
        }
    }
}
