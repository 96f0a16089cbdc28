use std::collections::BTreeMap;
use std::fmt;

use corral_proto::v1alpha1::{self, ClusterConfig, TlsClientConfig};

/// Server URL of the built-in entry for the cluster Argo CD runs in.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// Name of the built-in in-cluster entry.
pub const IN_CLUSTER_NAME: &str = "in-cluster";

/// The desired state of a cluster: the spec fields of Argo CD's `v1alpha1.Cluster` (no
/// connection state, info or refresh time). Maps are ordered so equal specs compare and encode
/// equally.
///
/// `Debug` is written by hand and never prints credentials.
#[derive(Clone, PartialEq, Default)]
pub struct ClusterSpec {
    pub server: String,
    pub name: String,
    pub config: ClusterConfig,
    pub namespaces: Vec<String>,
    pub cluster_resources: bool,
    pub project: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub shard: Option<i64>,
}

impl ClusterSpec {
    /// Takes the spec fields of an API cluster; a missing config becomes the empty config.
    pub fn from_api(cluster: &v1alpha1::Cluster) -> ClusterSpec {
        ClusterSpec {
            server: cluster.server.clone(),
            name: cluster.name.clone(),
            config: cluster.config.clone().unwrap_or_default(),
            namespaces: cluster.namespaces.clone(),
            cluster_resources: cluster.cluster_resources,
            project: cluster.project.clone(),
            labels: cluster.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: cluster.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            shard: cluster.shard,
        }
    }

    /// An API cluster with the spec fields set and everything else (info, connection state,
    /// refresh time) left empty for the caller to fill in.
    pub fn to_api(&self) -> v1alpha1::Cluster {
        v1alpha1::Cluster {
            server: self.server.clone(),
            name: self.name.clone(),
            config: Some(self.config.clone()),
            namespaces: self.namespaces.clone(),
            cluster_resources: self.cluster_resources,
            project: self.project.clone(),
            labels: self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            shard: self.shard,
            ..Default::default()
        }
    }
}

/// The built-in entry for the cluster Argo CD runs in: no credentials (the service account is
/// used), as Argo CD synthesises it.
pub fn in_cluster_spec() -> ClusterSpec {
    ClusterSpec { server: IN_CLUSTER_SERVER.to_owned(), name: IN_CLUSTER_NAME.to_owned(), ..Default::default() }
}

impl fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("config", &ConfigDebug(&self.config))
            .field("namespaces", &self.namespaces)
            .field("cluster_resources", &self.cluster_resources)
            .field("project", &self.project)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("shard", &self.shard)
            .finish()
    }
}

/// Shows whether a secret is set, never its value.
struct Redacted(bool);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "[redacted]" } else { "[empty]" })
    }
}

struct ConfigDebug<'a>(&'a ClusterConfig);

impl fmt::Debug for ConfigDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        f.debug_struct("ClusterConfig")
            .field("username", &c.username)
            .field("password", &Redacted(!c.password.is_empty()))
            .field("bearer_token", &Redacted(!c.bearer_token.is_empty()))
            .field("tls_client_config", &c.tls_client_config.as_ref().map(TlsDebug))
            // Cluster name, role ARN and profile name are identifiers, not secrets.
            .field("aws_auth_config", &c.aws_auth_config)
            // Exec args and env commonly carry tokens, so nothing of it is shown.
            .field("exec_provider_config", &c.exec_provider_config.as_ref().map(|_| Redacted(true)))
            .field("disable_compression", &c.disable_compression)
            .field("proxy_url", &ProxyDebug(&c.proxy_url))
            .finish()
    }
}

struct TlsDebug<'a>(&'a TlsClientConfig);

impl fmt::Debug for TlsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        f.debug_struct("TlsClientConfig")
            .field("insecure", &t.insecure)
            .field("server_name", &t.server_name)
            .field("cert_data", &Redacted(!t.cert_data.is_empty()))
            .field("key_data", &Redacted(!t.key_data.is_empty()))
            .field("ca_data", &Redacted(!t.ca_data.is_empty()))
            .finish()
    }
}

/// A proxy URL may embed `user:password@`; only the part after the userinfo is shown.
struct ProxyDebug<'a>(&'a str);

impl fmt::Debug for ProxyDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.rfind('@') {
            Some(at) => {
                let scheme_end = self.0.find("://").map_or(0, |i| i + 3);
                let scheme = self.0.get(..scheme_end).unwrap_or("");
                let rest = self.0.get(at + 1..).unwrap_or("");
                write!(f, "{:?}", format!("{scheme}[redacted]@{rest}"))
            }
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::HashMap;

    use corral_proto::v1alpha1::{AwsAuthConfig, ExecProviderConfig};

    use super::*;

    fn full_spec() -> ClusterSpec {
        ClusterSpec {
            server: "https://c1.example.com".into(),
            name: "c1".into(),
            config: ClusterConfig {
                username: "admin".into(),
                password: "PASSWORD-SECRET".into(),
                bearer_token: "TOKEN-SECRET".into(),
                tls_client_config: Some(TlsClientConfig {
                    insecure: false,
                    server_name: "c1.internal".into(),
                    cert_data: b"CERT-SECRET".to_vec(),
                    key_data: b"KEY-SECRET".to_vec(),
                    ca_data: b"CA-SECRET".to_vec(),
                }),
                aws_auth_config: Some(AwsAuthConfig {
                    cluster_name: "eks-1".into(),
                    role_arn: "arn:aws:iam::1:role/x".into(),
                    profile: String::new(),
                }),
                exec_provider_config: Some(ExecProviderConfig {
                    command: "EXEC-COMMAND-SECRET".into(),
                    args: vec!["EXEC-ARG-SECRET".into()],
                    env: HashMap::from([("TOKEN".into(), "EXEC-ENV-SECRET".into())]),
                    api_version: "client.authentication.k8s.io/v1".into(),
                    install_hint: String::new(),
                }),
                disable_compression: true,
                proxy_url: "http://proxyuser:PROXY-SECRET@proxy:3128".into(),
            },
            namespaces: vec!["ns1".into()],
            cluster_resources: true,
            project: "p".into(),
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            annotations: BTreeMap::from([("note".into(), "hi".into())]),
            shard: Some(2),
        }
    }

    #[test]
    fn debug_never_prints_credentials() {
        // given a spec with every kind of credential set
        let spec = full_spec();
        // when it is formatted with Debug, plain and pretty
        for dbg in [format!("{spec:?}"), format!("{spec:#?}")] {
            // then no secret appears, but the harmless fields do
            assert!(!dbg.contains("SECRET"), "{dbg}");
            assert!(dbg.contains("admin"), "{dbg}");
            assert!(dbg.contains("c1.internal"), "{dbg}");
            assert!(dbg.contains("https://c1.example.com"), "{dbg}");
            assert!(dbg.contains("[redacted]"), "{dbg}");
            assert!(dbg.contains("proxy:3128"), "{dbg}");
        }
    }

    #[test]
    fn debug_shows_empty_secrets_as_empty() {
        let dbg = format!("{:?}", in_cluster_spec());
        assert!(dbg.contains("password: [empty]"), "{dbg}");
        assert!(!dbg.contains("[redacted]"), "{dbg}");
    }

    #[test]
    fn api_roundtrip_keeps_spec_fields() {
        // given a spec
        let spec = full_spec();
        // when it goes to the API type and back
        let api = spec.to_api();
        // then nothing is lost
        assert_eq!(ClusterSpec::from_api(&api), spec);
        assert_eq!(api.labels.get("env").map(String::as_str), Some("prod"));
        assert!(api.info.is_none() && api.refresh_requested_at.is_none());
    }

    #[test]
    fn from_api_ignores_status_fields_and_defaults_config() {
        let api = v1alpha1::Cluster {
            server: "https://x".into(),
            name: "x".into(),
            server_version: "1.30".into(),
            info: Some(v1alpha1::ClusterInfo::default()),
            ..Default::default()
        };
        let spec = ClusterSpec::from_api(&api);
        assert_eq!(spec.config, ClusterConfig::default());
        assert_eq!(spec.server, "https://x");
    }
}
