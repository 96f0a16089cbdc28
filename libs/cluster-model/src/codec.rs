//! Domain events to and from their stored form. Credentials are sealed here, at the edge of the
//! domain, so that nothing in clear reaches the log or a projection.

use corral_domain::{ClusterEvent, ClusterSpec};
use corral_events::event_type::{CLUSTER_DELETED, CLUSTER_REFRESH_REQUESTED, CLUSTER_REGISTERED, CLUSTER_SPEC_CHANGED};
use corral_events::unix_nanos;
use corral_proto::events;
use corral_proto::v1alpha1::ClusterConfig;
use corral_secrets::SealingKey;
use prost::Message;

use crate::error::RegistryError;

/// The cluster id is the associated data of its sealed config: a sealed config copied onto
/// another cluster does not open.
fn config_aad(cluster_id: &str) -> Vec<u8> {
    format!("cluster-config/{cluster_id}").into_bytes()
}

pub fn seal_spec(spec: &ClusterSpec, cluster_id: &str, key: &SealingKey) -> events::ClusterSpec {
    events::ClusterSpec {
        server: spec.server.clone(),
        name: spec.name.clone(),
        sealed_config: Some(key.seal(&spec.config.encode_to_vec(), &config_aad(cluster_id))),
        namespaces: spec.namespaces.clone(),
        cluster_resources: spec.cluster_resources,
        project: spec.project.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        annotations: spec.annotations.clone().into_iter().collect(),
        shard: spec.shard,
        redacted_config: Some(redact(&spec.config)),
    }
}

/// Blanks what Argo CD never returns: username, password, bearer token, the TLS data and the
/// whole exec provider config.
pub fn redact(config: &ClusterConfig) -> ClusterConfig {
    let mut c = config.clone();
    c.username.clear();
    c.password.clear();
    c.bearer_token.clear();
    c.exec_provider_config = None;
    let mut tls = c.tls_client_config.unwrap_or_default();
    tls.cert_data.clear();
    tls.key_data.clear();
    tls.ca_data.clear();
    c.tls_client_config = Some(tls);
    c
}

pub fn open_config(
    spec: &events::ClusterSpec,
    cluster_id: &str,
    key: &SealingKey,
) -> Result<ClusterConfig, RegistryError> {
    let Some(sealed) = &spec.sealed_config else {
        return Ok(ClusterConfig::default());
    };
    let clear = key
        .open(sealed, &config_aad(cluster_id))
        .map_err(|e| RegistryError::Internal(format!("cannot open sealed config of {cluster_id}: {e}")))?;
    Ok(ClusterConfig::decode(clear.as_slice())?)
}

pub fn open_spec(spec: &events::ClusterSpec, cluster_id: &str, key: &SealingKey) -> Result<ClusterSpec, RegistryError> {
    Ok(ClusterSpec {
        server: spec.server.clone(),
        name: spec.name.clone(),
        config: open_config(spec, cluster_id, key)?,
        namespaces: spec.namespaces.clone(),
        cluster_resources: spec.cluster_resources,
        project: spec.project.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        annotations: spec.annotations.clone().into_iter().collect(),
        shard: spec.shard,
    })
}

/// Encodes a domain event as (type, payload).
pub fn encode_event(event: &ClusterEvent, cluster_id: &str, key: &SealingKey) -> (&'static str, Vec<u8>) {
    match event {
        ClusterEvent::Registered { spec } => (
            CLUSTER_REGISTERED,
            events::ClusterRegistered { spec: Some(seal_spec(spec, cluster_id, key)) }.encode_to_vec(),
        ),
        ClusterEvent::SpecChanged { spec, updated_fields } => (
            CLUSTER_SPEC_CHANGED,
            events::ClusterSpecChanged {
                spec: Some(seal_spec(spec, cluster_id, key)),
                updated_fields: updated_fields.clone(),
            }
            .encode_to_vec(),
        ),
        ClusterEvent::Deleted { server, name } => {
            (CLUSTER_DELETED, events::ClusterDeleted { server: server.clone(), name: name.clone() }.encode_to_vec())
        }
        ClusterEvent::RefreshRequested { at } => (
            CLUSTER_REFRESH_REQUESTED,
            events::ClusterRefreshRequested { requested_at_unix_nanos: unix_nanos(at) }.encode_to_vec(),
        ),
    }
}
