//! Stable ids and log subjects. Ids are UUID v5, so every process derives the same id from the
//! same server URL or name without coordination.

use uuid::Uuid;

/// Namespace of cluster ids (UUID v5 over the server URL). Never change: ids are stored.
pub const CLUSTER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f2a_1c3e_8d4b_5e7f_9a0b_1c2d_3e4f_5a6b);
/// Namespace of cluster-name keys (UUID v5 over the name). Never change: keys are stored.
pub const CLUSTER_NAME_NAMESPACE: Uuid = Uuid::from_u128(0x0b7e_4d21_c9f8_4a63_b215_7e8d_9c0a_f1e2);

/// The aggregate id of the cluster with this server URL: 32 lowercase hex characters.
pub fn cluster_id(server: &str) -> String {
    Uuid::new_v5(&CLUSTER_ID_NAMESPACE, server.as_bytes()).simple().to_string()
}

/// The key of a cluster name claim: 32 lowercase hex characters, safe in a NATS subject.
pub fn name_key(name: &str) -> String {
    Uuid::new_v5(&CLUSTER_NAME_NAMESPACE, name.as_bytes()).simple().to_string()
}

/// The log subject of a cluster's events.
pub fn cluster_subject(id: &str) -> String {
    format!("corral.cluster.{id}")
}

/// The log subject of a cluster name's claims.
pub fn name_subject(key: &str) -> String {
    format!("corral.clustername.{key}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = cluster_id("https://a.example.com");
        assert_eq!(a, cluster_id("https://a.example.com"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, cluster_id("https://b.example.com"));
        // Names and servers live in different namespaces.
        assert_ne!(name_key("https://a.example.com"), a);
        // Pinned: a change here would orphan every stored cluster.
        assert_eq!(cluster_id("https://kubernetes.default.svc"), "87be6b76145c5cd0ad4a5c25422539a9");
        assert_eq!(name_key("in-cluster"), "8ccc9961872a5d989a7a4dd03c8bde0c");
    }

    #[test]
    fn subjects() {
        assert_eq!(cluster_subject("abc"), "corral.cluster.abc");
        assert_eq!(name_subject("def"), "corral.clustername.def");
    }
}
