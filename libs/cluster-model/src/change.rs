//! What a change to a cluster is for the public event stream: which of its reasons, and the
//! cluster before and after, built from an allow-list of fields. Pure: the publisher decides each
//! public event with [`diff`], and each watch decides what a change is for its filters with
//! [`watch_type`].

use corral_events::event_type::{
    CLUSTER_CACHE_SYNCED, CLUSTER_CONNECTION_OBSERVED, CLUSTER_CREDENTIALS_ROTATED, CLUSTER_REFRESH_REQUESTED,
    CLUSTER_REGISTERED, CLUSTER_SPEC_CHANGED,
};
use corral_proto::registry::ClusterRecord;
use corral_proto::v1alpha1::{
    AwsAuthConfig, Cluster, ClusterCacheInfo, ClusterConfig, ClusterInfo, ConnectionState, TlsClientConfig,
};

use crate::read_model::render;

/// Why a cluster changed: the last token of its public subject and of its CloudEvents type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Registered,
    Updated,
    Deleted,
    ConnectionChanged,
    CacheSynced,
    CacheInvalidated,
    CredentialsRotated,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Registered,
        Reason::Updated,
        Reason::Deleted,
        Reason::ConnectionChanged,
        Reason::CacheSynced,
        Reason::CacheInvalidated,
        Reason::CredentialsRotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Registered => "registered",
            Reason::Updated => "updated",
            Reason::Deleted => "deleted",
            Reason::ConnectionChanged => "connection_changed",
            Reason::CacheSynced => "cache_synced",
            Reason::CacheInvalidated => "cache_invalidated",
            Reason::CredentialsRotated => "credentials_rotated",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One public change of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub reason: Reason,
    /// After the change; for `Deleted`, the last state.
    pub cluster: Cluster,
    /// Before the change, only when what watches filter on (name, server, project, labels)
    /// changed: a watch that matched before and not after, or the other way round, needs it.
    pub previous: Option<Cluster>,
}

fn live(r: Option<&ClusterRecord>) -> Option<&ClusterRecord> {
    r.filter(|r| !r.deleted)
}

/// The public change an event makes, given the cluster's record before and after it (`None`:
/// no record; a deleted record counts as none). `None` when the event changes nothing a
/// subscriber sees: an observation of a deleted cluster, a failed cache sync, an event type this
/// version does not know.
pub fn diff(event_type: &str, before: Option<&ClusterRecord>, after: Option<&ClusterRecord>) -> Option<Change> {
    match (live(before), live(after)) {
        (None, None) => None,
        (None, Some(after)) => Some(Change { reason: Reason::Registered, cluster: public(after), previous: None }),
        (Some(before), None) => Some(Change { reason: Reason::Deleted, cluster: public(before), previous: None }),
        (Some(before), Some(after)) => {
            let reason = match event_type {
                CLUSTER_SPEC_CHANGED | CLUSTER_REGISTERED => Reason::Updated,
                CLUSTER_REFRESH_REQUESTED => Reason::CacheInvalidated,
                CLUSTER_CREDENTIALS_ROTATED => Reason::CredentialsRotated,
                CLUSTER_CONNECTION_OBSERVED if before != after => Reason::ConnectionChanged,
                CLUSTER_CACHE_SYNCED if before != after => Reason::CacheSynced,
                _ => return None,
            };
            // The state before is rendered only when a watch could match it differently.
            let previous = (filtered_fields(before) != filtered_fields(after)).then(|| public(before));
            Some(Change { reason, cluster: public(after), previous })
        }
    }
}

/// What watches filter on (name, server, project, labels), read off the record.
fn filtered_fields(r: &ClusterRecord) -> Option<(&str, &str, &str, &std::collections::HashMap<String, String>)> {
    r.spec.as_ref().map(|s| (s.name.as_str(), s.server.as_str(), s.project.as_str(), &s.labels))
}

/// The cluster as subscribers see it: the record rendered as Get renders it, then copied field by
/// field from an allow-list, so that a field added to the cluster later is not published until
/// it is named here.
pub fn public(rec: &ClusterRecord) -> Cluster {
    sanitized(&render(rec))
}

/// An allow-list copy of a cluster: everything Get shows, and nothing that is a credential
/// (username, password, bearer token, TLS data, the exec provider).
pub fn sanitized(c: &Cluster) -> Cluster {
    let state = |s: &Option<ConnectionState>| {
        s.as_ref().map(|s| ConnectionState {
            status: s.status.clone(),
            message: s.message.clone(),
            attempted_at: s.attempted_at,
        })
    };
    let config = c.config.as_ref().map(|k| ClusterConfig {
        tls_client_config: k.tls_client_config.as_ref().map(|t| TlsClientConfig {
            insecure: t.insecure,
            server_name: t.server_name.clone(),
            ..Default::default()
        }),
        aws_auth_config: k.aws_auth_config.as_ref().map(|a| AwsAuthConfig {
            cluster_name: a.cluster_name.clone(),
            role_arn: a.role_arn.clone(),
            profile: a.profile.clone(),
        }),
        disable_compression: k.disable_compression,
        proxy_url: k.proxy_url.clone(),
        ..Default::default()
    });
    let info = c.info.as_ref().map(|i| ClusterInfo {
        connection_state: state(&i.connection_state),
        server_version: i.server_version.clone(),
        cache_info: i.cache_info.as_ref().map(|k| ClusterCacheInfo {
            resources_count: k.resources_count,
            apis_count: k.apis_count,
            last_cache_sync_time: k.last_cache_sync_time,
        }),
        applications_count: i.applications_count,
        api_versions: i.api_versions.clone(),
    });
    Cluster {
        server: c.server.clone(),
        name: c.name.clone(),
        config,
        connection_state: state(&c.connection_state),
        server_version: c.server_version.clone(),
        namespaces: c.namespaces.clone(),
        refresh_requested_at: c.refresh_requested_at,
        info,
        shard: c.shard,
        cluster_resources: c.cluster_resources,
        project: c.project.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
    }
}

/// The event type a change is for a watch, given whether the cluster matched the watch (its
/// filters and the watcher's permission) before and after it: Kubernetes' rule for filtered
/// watches. `None`: the watch does not see this change.
pub fn watch_type(reason: Reason, matched_before: bool, matches_after: bool) -> Option<WatchType> {
    match reason {
        Reason::Registered => matches_after.then_some(WatchType::Added),
        Reason::Deleted => matched_before.then_some(WatchType::Deleted),
        _ => match (matched_before, matches_after) {
            (true, true) => Some(WatchType::Modified),
            (false, true) => Some(WatchType::Added),
            (true, false) => Some(WatchType::Deleted),
            (false, false) => None,
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

impl WatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
            WatchType::Bookmark => "BOOKMARK",
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_proto::events::ClusterSpec;
    use corral_proto::v1alpha1::ExecProviderConfig;

    use super::*;

    fn record(name: &str, labels: &[(&str, &str)]) -> ClusterRecord {
        ClusterRecord {
            cluster_id: "c1".into(),
            spec: Some(ClusterSpec {
                server: "https://a.example:6443".into(),
                name: name.into(),
                project: "p".into(),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            redacted_config: Some(crate::codec::redact(&ClusterConfig::default())),
            version: 1,
            ..Default::default()
        }
    }

    fn deleted(mut r: ClusterRecord) -> ClusterRecord {
        r.deleted = true;
        r
    }

    #[test]
    fn given_no_cluster_when_it_is_registered_then_registered_with_the_new_cluster() {
        let after = record("a", &[]);
        let change = diff(CLUSTER_REGISTERED, None, Some(&after)).expect("a change");
        assert_eq!(change.reason, Reason::Registered);
        assert_eq!(change.cluster.name, "a");
        assert_eq!(change.previous, None);
    }

    #[test]
    fn given_a_deleted_cluster_when_it_is_registered_again_then_registered() {
        let before = deleted(record("a", &[]));
        let change = diff(CLUSTER_REGISTERED, Some(&before), Some(&record("a", &[]))).expect("a change");
        assert_eq!(change.reason, Reason::Registered);
    }

    #[test]
    fn given_a_cluster_when_it_is_deleted_then_deleted_with_its_last_state() {
        let before = record("a", &[("env", "prod")]);
        let change = diff("ClusterDeleted", Some(&before), Some(&deleted(before.clone()))).expect("a change");
        assert_eq!(change.reason, Reason::Deleted);
        assert_eq!(change.cluster.labels.get("env").map(String::as_str), Some("prod"));
    }

    #[test]
    fn given_a_cluster_when_its_labels_change_then_updated_with_the_state_before() {
        let before = record("a", &[("env", "dev")]);
        let after = record("a", &[("env", "prod")]);
        let change = diff(CLUSTER_SPEC_CHANGED, Some(&before), Some(&after)).expect("a change");
        assert_eq!(change.reason, Reason::Updated);
        assert_eq!(change.previous.map(|p| p.labels["env"].clone()).as_deref(), Some("dev"));
    }

    #[test]
    fn given_a_cluster_when_an_update_leaves_what_watches_filter_on_then_no_state_before() {
        let before = record("a", &[("env", "dev")]);
        let mut after = before.clone();
        after.version = 2;
        let change = diff(CLUSTER_SPEC_CHANGED, Some(&before), Some(&after)).expect("a change");
        assert_eq!(change.reason, Reason::Updated);
        assert_eq!(change.previous, None);
    }

    #[test]
    fn given_a_cluster_when_it_is_observed_then_connection_changed_only_if_something_changed() {
        let before = record("a", &[]);
        let mut after = before.clone();
        assert_eq!(diff(CLUSTER_CONNECTION_OBSERVED, Some(&before), Some(&after)), None);
        after.connection_status = "Successful".into();
        let change = diff(CLUSTER_CONNECTION_OBSERVED, Some(&before), Some(&after)).expect("a change");
        assert_eq!(change.reason, Reason::ConnectionChanged);
        assert_eq!(change.cluster.connection_state.map(|s| s.status).as_deref(), Some("Successful"));
    }

    #[test]
    fn given_a_cluster_when_its_cache_syncs_is_invalidated_or_its_credentials_rotate_then_that_reason() {
        let before = record("a", &[]);
        let mut synced = before.clone();
        synced.cache_synced_at_unix = 1_700_000_000;
        assert_eq!(
            diff(CLUSTER_CACHE_SYNCED, Some(&before), Some(&synced)).map(|c| c.reason),
            Some(Reason::CacheSynced)
        );
        assert_eq!(diff(CLUSTER_CACHE_SYNCED, Some(&before), Some(&before)), None);
        let mut refreshed = before.clone();
        refreshed.refresh_requested_at_unix_nanos = 1;
        assert_eq!(
            diff(CLUSTER_REFRESH_REQUESTED, Some(&before), Some(&refreshed)).map(|c| c.reason),
            Some(Reason::CacheInvalidated)
        );
        assert_eq!(
            diff(CLUSTER_CREDENTIALS_ROTATED, Some(&before), Some(&before)).map(|c| c.reason),
            Some(Reason::CredentialsRotated)
        );
    }

    #[test]
    fn given_a_deleted_cluster_when_it_is_observed_then_nothing() {
        let gone = deleted(record("a", &[]));
        assert_eq!(diff(CLUSTER_CONNECTION_OBSERVED, Some(&gone), Some(&gone)), None);
        assert_eq!(diff("SomethingNewer", Some(&record("a", &[])), Some(&record("a", &[]))), None);
    }

    #[test]
    fn the_public_cluster_is_what_get_shows_and_never_a_credential() {
        let mut rec = record("a", &[("env", "prod")]);
        let config = ClusterConfig {
            username: "canary-user".into(),
            password: "canary-password".into(),
            bearer_token: "canary-token".into(),
            tls_client_config: Some(TlsClientConfig {
                insecure: true,
                server_name: "sni".into(),
                cert_data: b"canary-cert".to_vec(),
                key_data: b"canary-key".to_vec(),
                ca_data: b"canary-ca".to_vec(),
            }),
            aws_auth_config: Some(AwsAuthConfig { cluster_name: "eks".into(), ..Default::default() }),
            exec_provider_config: Some(ExecProviderConfig { command: "canary-exec".into(), ..Default::default() }),
            disable_compression: true,
            proxy_url: "http://proxy".into(),
        };
        rec.redacted_config = Some(crate::codec::redact(&config));
        let get = render(&rec);
        assert_eq!(public(&rec), get);
        // Even given a cluster with credentials in clear, the copy has none of them.
        let mut clear = get.clone();
        clear.config = Some(config);
        let text = format!("{:?}", sanitized(&clear));
        assert!(!text.contains("canary"), "{text}");
        assert!(text.contains("eks") && text.contains("http://proxy") && text.contains("sni"));
    }

    #[test]
    fn a_watch_sees_a_cluster_start_and_stop_matching_as_added_and_deleted() {
        use WatchType::*;
        assert_eq!(watch_type(Reason::Updated, true, true), Some(Modified));
        assert_eq!(watch_type(Reason::Updated, false, true), Some(Added));
        assert_eq!(watch_type(Reason::Updated, true, false), Some(Deleted));
        assert_eq!(watch_type(Reason::Updated, false, false), None);
        assert_eq!(watch_type(Reason::Registered, false, true), Some(Added));
        assert_eq!(watch_type(Reason::Registered, false, false), None);
        assert_eq!(watch_type(Reason::Deleted, true, false), Some(Deleted));
        assert_eq!(watch_type(Reason::Deleted, false, false), None);
        assert_eq!(watch_type(Reason::ConnectionChanged, true, true), Some(Modified));
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
    }
}
