//! Stable ids. Ids are UUID v5, so every process derives the same id from the
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

/// A name sent with `id.type=name_escaped`, decoded as Go's `url.QueryUnescape` decodes it (which
/// Argo CD uses): `%XX` is a byte, `+` a space; a `%` without two hex digits after it, or bytes
/// that are not UTF-8, are refused (`None`).
pub fn unescape_name(escaped: &str) -> Option<String> {
    let b = escaped.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (hi, lo) = (b.get(i + 1).copied().and_then(hex)?, b.get(i + 2).copied().and_then(hex)?);
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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
    fn escaped_names_decode_as_go_query_unescape() {
        assert_eq!(unescape_name("a+b").as_deref(), Some("a b"));
        assert_eq!(unescape_name("a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(unescape_name("a%2fb%2F").as_deref(), Some("a/b/"));
        assert_eq!(unescape_name("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(unescape_name("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "a%g1", "%ff"] {
            assert_eq!(unescape_name(bad), None, "{bad:?}");
        }
    }
}
