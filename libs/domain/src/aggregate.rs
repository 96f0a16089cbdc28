use chrono::{DateTime, Utc};

use crate::{ClusterSpec, DomainError, IN_CLUSTER_SERVER, validate};

/// Argo CD's answer to a create that differs from the stored cluster without `upsert`.
pub const SPEC_IS_DIFFERENT: &str = "existing cluster spec is different; use upsert flag to force update";

/// The `updatedFields` entries an Update accepts, with Argo CD's names.
pub const UPDATABLE_FIELDS: [&str; 8] =
    ["name", "namespaces", "config", "shard", "clusterResources", "labels", "annotations", "project"];

/// A registered cluster. The aggregate state is `Option<ClusterState>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterState {
    pub spec: ClusterSpec,
    /// When a cache refresh was last asked for (Argo CD's `refreshRequestedAt`).
    pub refresh_requested_at: Option<DateTime<Utc>>,
}

/// What a caller asks of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterCommand {
    /// Register `spec`. An identical existing cluster is a no-op; a different one needs `upsert`.
    Create {
        spec: ClusterSpec,
        upsert: bool,
    },
    /// With `updated_fields`, copy only those fields from `patch`; without, replace the whole
    /// spec (an empty `patch.server` keeps the stored server). The server never changes.
    Update {
        patch: ClusterSpec,
        updated_fields: Vec<String>,
    },
    Delete,
    /// Ask for the cluster's cache to be refreshed (Argo CD's InvalidateCache).
    RequestRefresh {
        at: DateTime<Utc>,
    },
}

/// What happened to one cluster. Every event carries what `apply` needs, nothing to compute.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    Registered {
        spec: ClusterSpec,
    },
    /// `spec` is the complete new spec; `updated_fields` lists the fields the request named
    /// (empty: the whole spec was replaced).
    SpecChanged {
        spec: ClusterSpec,
        updated_fields: Vec<String>,
    },
    Deleted {
        server: String,
        name: String,
    },
    RefreshRequested {
        at: DateTime<Utc>,
    },
}

fn not_found() -> DomainError {
    DomainError::NotFound("cluster not found".into())
}

/// Every rule of the aggregate: the events `cmd` produces on `state`, or why it is refused.
/// An empty list means the command is accepted but changes nothing.
pub fn decide(state: &Option<ClusterState>, cmd: ClusterCommand) -> Result<Vec<ClusterEvent>, DomainError> {
    match cmd {
        ClusterCommand::Create { spec, upsert } => {
            validate(&spec)?;
            let Some(current) = state else {
                return Ok(vec![ClusterEvent::Registered { spec }]);
            };
            // The aggregate is keyed by server, so a mismatch is a caller bug, not a rename.
            if current.spec.server != spec.server {
                return Err(DomainError::invalid(
                    "server",
                    format!("{:?} does not match the existing cluster's server {:?}", spec.server, current.spec.server),
                ));
            }
            if current.spec == spec {
                return Ok(vec![]);
            }
            if !upsert {
                return Err(DomainError::invalid("", SPEC_IS_DIFFERENT));
            }
            Ok(vec![ClusterEvent::SpecChanged { spec, updated_fields: vec![] }])
        }
        ClusterCommand::Update { patch, updated_fields } => {
            let Some(current) = state else {
                return Err(not_found());
            };
            let mut next = current.spec.clone();
            let mut fields: Vec<String> = Vec::with_capacity(updated_fields.len());
            if updated_fields.is_empty() {
                if !patch.server.is_empty() && patch.server != current.spec.server {
                    return Err(DomainError::invalid(
                        "server",
                        format!("cannot be changed (is {:?}, request has {:?})", current.spec.server, patch.server),
                    ));
                }
                next = ClusterSpec { server: current.spec.server.clone(), ..patch };
            } else {
                for field in updated_fields {
                    match field.as_str() {
                        "name" => next.name.clone_from(&patch.name),
                        "namespaces" => next.namespaces.clone_from(&patch.namespaces),
                        "config" => next.config.clone_from(&patch.config),
                        "shard" => next.shard = patch.shard,
                        "clusterResources" => next.cluster_resources = patch.cluster_resources,
                        "labels" => next.labels.clone_from(&patch.labels),
                        "annotations" => next.annotations.clone_from(&patch.annotations),
                        "project" => next.project.clone_from(&patch.project),
                        other => {
                            return Err(DomainError::invalid(
                                "updatedFields",
                                format!("unknown field {other:?} (allowed: {})", UPDATABLE_FIELDS.join(", ")),
                            ));
                        }
                    }
                    if !fields.contains(&field) {
                        fields.push(field);
                    }
                }
            }
            validate(&next)?;
            if next == current.spec {
                return Ok(vec![]);
            }
            Ok(vec![ClusterEvent::SpecChanged { spec: next, updated_fields: fields }])
        }
        ClusterCommand::Delete => {
            let Some(current) = state else {
                return Err(not_found());
            };
            if current.spec.server == IN_CLUSTER_SERVER {
                return Err(DomainError::BuiltIn(format!(
                    "cluster {IN_CLUSTER_SERVER:?} is built in and cannot be deleted"
                )));
            }
            Ok(vec![ClusterEvent::Deleted { server: current.spec.server.clone(), name: current.spec.name.clone() }])
        }
        ClusterCommand::RequestRefresh { at } => {
            if state.is_none() {
                return Err(not_found());
            }
            Ok(vec![ClusterEvent::RefreshRequested { at }])
        }
    }
}

/// Folds one event into the state. Never fails: events are facts. Events that make no sense
/// on the state (which `decide` never produces) are folded as leniently as possible.
pub fn apply(state: &mut Option<ClusterState>, event: &ClusterEvent) {
    match event {
        ClusterEvent::Registered { spec } => {
            *state = Some(ClusterState { spec: spec.clone(), refresh_requested_at: None });
        }
        ClusterEvent::SpecChanged { spec, .. } => match state {
            Some(s) => s.spec = spec.clone(),
            None => {
                *state = Some(ClusterState { spec: spec.clone(), refresh_requested_at: None });
            }
        },
        ClusterEvent::Deleted { .. } => *state = None,
        ClusterEvent::RefreshRequested { at } => {
            if let Some(s) = state {
                s.refresh_requested_at = Some(*at);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use corral_proto::v1alpha1::ClusterConfig;

    use super::*;
    use crate::{IN_CLUSTER_NAME, in_cluster_spec};

    fn spec() -> ClusterSpec {
        ClusterSpec {
            server: "https://c1.example.com".into(),
            name: "c1".into(),
            config: ClusterConfig { bearer_token: "token".into(), ..Default::default() },
            namespaces: vec!["a".into()],
            project: "default".into(),
            labels: BTreeMap::from([("env".into(), "dev".into())]),
            ..Default::default()
        }
    }

    /// given: the state after folding `events` from nothing
    fn given(events: &[ClusterEvent]) -> Option<ClusterState> {
        let mut state = None;
        for e in events {
            apply(&mut state, e);
        }
        state
    }

    fn registered() -> Option<ClusterState> {
        given(&[ClusterEvent::Registered { spec: spec() }])
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    // ----- Create

    #[test]
    fn create_on_missing_registers() {
        // given nothing
        let state = given(&[]);
        // when
        let events = decide(&state, ClusterCommand::Create { spec: spec(), upsert: false }).unwrap();
        // then
        assert_eq!(events, vec![ClusterEvent::Registered { spec: spec() }]);
        let after = given(&events);
        assert_eq!(after.unwrap().spec, spec());
    }

    #[test]
    fn create_validates_the_spec() {
        let state = given(&[]);
        let mut bad = spec();
        bad.server = "not a url".into();
        let err = decide(&state, ClusterCommand::Create { spec: bad, upsert: false }).unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "server"));
    }

    #[test]
    fn create_identical_is_a_no_op() {
        // given a registered cluster
        let state = registered();
        // when the same spec is created again, with or without upsert
        for upsert in [false, true] {
            let events = decide(&state, ClusterCommand::Create { spec: spec(), upsert });
            // then nothing happens
            assert_eq!(events, Ok(vec![]));
        }
    }

    #[test]
    fn create_different_without_upsert_is_refused_like_argo_cd() {
        // given a registered cluster
        let state = registered();
        // when a different spec is created without upsert
        let mut other = spec();
        other.namespaces = vec!["b".into()];
        let err = decide(&state, ClusterCommand::Create { spec: other, upsert: false }).unwrap_err();
        // then the error reads exactly like Argo CD's
        assert!(matches!(err, DomainError::InvalidArgument { .. }));
        assert_eq!(err.to_string(), "existing cluster spec is different; use upsert flag to force update");
    }

    #[test]
    fn create_different_with_upsert_replaces_the_spec() {
        // given a registered cluster with a refresh pending
        let state = given(&[ClusterEvent::Registered { spec: spec() }, ClusterEvent::RefreshRequested { at: at(5) }]);
        // when a different spec is created with upsert
        let mut other = spec();
        other.config.bearer_token = "new-token".into();
        other.labels.clear();
        let events = decide(&state, ClusterCommand::Create { spec: other.clone(), upsert: true }).unwrap();
        // then the whole spec changes
        assert_eq!(events, vec![ClusterEvent::SpecChanged { spec: other.clone(), updated_fields: vec![] }]);
        let mut after = state.clone();
        apply(&mut after, &events[0]);
        let after = after.unwrap();
        assert_eq!(after.spec, other);
        assert_eq!(after.refresh_requested_at, Some(at(5)));
    }

    #[test]
    fn create_for_another_server_on_this_aggregate_is_refused() {
        let state = registered();
        let mut other = spec();
        other.server = "https://elsewhere".into();
        let err = decide(&state, ClusterCommand::Create { spec: other, upsert: true }).unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "server"));
    }

    #[test]
    fn create_after_delete_registers_again() {
        let state = given(&[
            ClusterEvent::Registered { spec: spec() },
            ClusterEvent::Deleted { server: spec().server, name: spec().name },
        ]);
        let events = decide(&state, ClusterCommand::Create { spec: spec(), upsert: false }).unwrap();
        assert_eq!(events, vec![ClusterEvent::Registered { spec: spec() }]);
    }

    // ----- Update

    #[test]
    fn update_on_missing_is_not_found() {
        let err = decide(&given(&[]), ClusterCommand::Update { patch: spec(), updated_fields: vec![] }).unwrap_err();
        assert!(matches!(err, DomainError::NotFound(_)));
    }

    #[test]
    fn update_with_updated_fields_only_touches_listed_fields() {
        // given a registered cluster
        let state = registered();
        // when a patch differing everywhere names only "name" and "labels"
        let patch = ClusterSpec {
            server: "https://ignored.example.com".into(),
            name: "renamed".into(),
            config: ClusterConfig::default(),
            namespaces: vec!["zzz".into()],
            cluster_resources: true,
            project: "other".into(),
            labels: BTreeMap::from([("team".into(), "x".into())]),
            annotations: BTreeMap::from([("a".into(), "b".into())]),
            shard: Some(3),
        };
        let events = decide(
            &state,
            ClusterCommand::Update { patch, updated_fields: vec!["name".into(), "labels".into(), "name".into()] },
        )
        .unwrap();
        // then only those two change; the server and everything else is kept
        let mut expected = spec();
        expected.name = "renamed".into();
        expected.labels = BTreeMap::from([("team".into(), "x".into())]);
        assert_eq!(
            events,
            vec![ClusterEvent::SpecChanged { spec: expected, updated_fields: vec!["name".into(), "labels".into()] }]
        );
    }

    #[test]
    fn update_with_each_allowed_field() {
        let state = registered();
        let patch = ClusterSpec {
            server: String::new(),
            name: "n2".into(),
            config: ClusterConfig { username: "u".into(), ..Default::default() },
            namespaces: vec!["x".into()],
            cluster_resources: true,
            project: "p2".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::from([("k".into(), "v".into())]),
            shard: Some(1),
        };
        let events = decide(
            &state,
            ClusterCommand::Update {
                patch: patch.clone(),
                updated_fields: UPDATABLE_FIELDS.iter().map(|s| s.to_string()).collect(),
            },
        )
        .unwrap();
        let expected = ClusterSpec { server: spec().server, ..patch };
        assert!(matches!(&events[..], [ClusterEvent::SpecChanged { spec, .. }] if *spec == expected));
    }

    #[test]
    fn update_with_unknown_field_is_refused() {
        let err = decide(
            &registered(),
            ClusterCommand::Update { patch: spec(), updated_fields: vec!["name".into(), "foo".into()] },
        )
        .unwrap_err();
        assert!(
            matches!(&err, DomainError::InvalidArgument { field, message } if field == "updatedFields" && message.starts_with(r#"unknown field "foo""#)),
            "{err:?}"
        );
        assert!(err.to_string().contains(r#"updatedFields: unknown field "foo""#));
        // "server" is not updatable either
        let err =
            decide(&registered(), ClusterCommand::Update { patch: spec(), updated_fields: vec!["server".into()] })
                .unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { .. }));
    }

    #[test]
    fn update_without_fields_replaces_the_spec_but_keeps_the_server() {
        // given a registered cluster
        let state = registered();
        // when the whole spec is sent with an empty server
        let patch = ClusterSpec { server: String::new(), name: "c1".into(), ..Default::default() };
        let events = decide(&state, ClusterCommand::Update { patch, updated_fields: vec![] }).unwrap();
        // then every field is replaced except the server
        let expected = ClusterSpec { server: spec().server, name: "c1".into(), ..Default::default() };
        assert_eq!(events, vec![ClusterEvent::SpecChanged { spec: expected, updated_fields: vec![] }]);
    }

    #[test]
    fn update_without_fields_cannot_change_the_server() {
        let mut patch = spec();
        patch.server = "https://other.example.com".into();
        let err = decide(&registered(), ClusterCommand::Update { patch, updated_fields: vec![] }).unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "server"));
    }

    #[test]
    fn update_that_changes_nothing_emits_nothing() {
        let state = registered();
        assert_eq!(decide(&state, ClusterCommand::Update { patch: spec(), updated_fields: vec![] }), Ok(vec![]));
        let mut patch = spec();
        patch.project = "changed but not listed".into();
        assert_eq!(decide(&state, ClusterCommand::Update { patch, updated_fields: vec!["name".into()] }), Ok(vec![]));
    }

    #[test]
    fn update_validates_the_resulting_spec() {
        let mut patch = spec();
        patch.labels = BTreeMap::from([("bad key".into(), "v".into())]);
        let err = decide(
            &registered(),
            ClusterCommand::Update { patch: patch.clone(), updated_fields: vec!["labels".into()] },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid cluster: labels: key "bad key" is not a valid label key: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"#
        );
        // a bad value in a field that is not listed is not taken, so it does not matter
        assert_eq!(
            decide(&registered(), ClusterCommand::Update { patch, updated_fields: vec!["name".into()] }),
            Ok(vec![])
        );
        // an empty name is refused
        let err = decide(
            &registered(),
            ClusterCommand::Update { patch: ClusterSpec::default(), updated_fields: vec!["name".into()] },
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "name"));
    }

    #[test]
    fn update_rejects_bad_pem() {
        let mut patch = spec();
        patch.config.tls_client_config = Some(corral_proto::v1alpha1::TlsClientConfig {
            ca_data: b"definitely not pem".to_vec(),
            ..Default::default()
        });
        let err =
            decide(&registered(), ClusterCommand::Update { patch, updated_fields: vec!["config".into()] }).unwrap_err();
        assert!(
            matches!(&err, DomainError::InvalidArgument { field, .. } if field == "config.tlsClientConfig.caData"),
            "{err:?}"
        );
    }

    // ----- Delete

    #[test]
    fn delete_on_missing_is_not_found() {
        assert!(matches!(decide(&given(&[]), ClusterCommand::Delete), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn delete_removes_the_cluster() {
        let state = registered();
        let events = decide(&state, ClusterCommand::Delete).unwrap();
        assert_eq!(events, vec![ClusterEvent::Deleted { server: spec().server, name: spec().name }]);
        let mut after = state;
        apply(&mut after, &events[0]);
        assert_eq!(after, None);
        // and a second delete finds nothing
        assert!(matches!(decide(&after, ClusterCommand::Delete), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn delete_of_in_cluster_is_refused_as_built_in() {
        let state = given(&[ClusterEvent::Registered { spec: in_cluster_spec() }]);
        let err = decide(&state, ClusterCommand::Delete).unwrap_err();
        assert!(matches!(err, DomainError::BuiltIn(_)));
        assert!(err.to_string().contains("built in"), "{err}");
        assert!(err.to_string().contains(IN_CLUSTER_SERVER), "{err}");
    }

    #[test]
    fn in_cluster_spec_is_valid_and_named() {
        let s = in_cluster_spec();
        assert_eq!(s.server, IN_CLUSTER_SERVER);
        assert_eq!(s.name, IN_CLUSTER_NAME);
        assert_eq!(s.config, ClusterConfig::default());
        assert_eq!(
            decide(&None, ClusterCommand::Create { spec: s.clone(), upsert: false }),
            Ok(vec![ClusterEvent::Registered { spec: s }])
        );
    }

    // ----- RequestRefresh

    #[test]
    fn refresh_on_missing_is_not_found() {
        assert!(matches!(
            decide(&given(&[]), ClusterCommand::RequestRefresh { at: at(1) }),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn refresh_records_the_time() {
        let state = registered();
        let events = decide(&state, ClusterCommand::RequestRefresh { at: at(7) }).unwrap();
        assert_eq!(events, vec![ClusterEvent::RefreshRequested { at: at(7) }]);
        let mut after = state;
        apply(&mut after, &events[0]);
        assert_eq!(after.unwrap().refresh_requested_at, Some(at(7)));
    }

    // ----- apply

    #[test]
    fn apply_is_lenient_on_impossible_histories() {
        // a refresh of nothing stays nothing
        assert_eq!(given(&[ClusterEvent::RefreshRequested { at: at(1) }]), None);
        // a spec change of nothing materialises the cluster
        let s = given(&[ClusterEvent::SpecChanged { spec: spec(), updated_fields: vec![] }]);
        assert_eq!(s.map(|s| s.spec), Some(spec()));
    }

    #[test]
    fn commands_and_events_debug_without_credentials() {
        let cmd = ClusterCommand::Create { spec: spec(), upsert: false };
        let dbg = format!("{cmd:?} {:?}", registered());
        assert!(!dbg.contains("token\""), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
    }
}
