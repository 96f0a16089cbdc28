//! A Kubernetes client for one registered cluster, built from its Argo CD `ClusterConfig`: bearer
//! token, basic auth, TLS client certificate and key, CA data, `insecure`, `serverName`, and exec
//! credential plugins (kube-rs runs the command and uses the token it prints, as kubectl does),
//! and AWS IAM authentication for EKS (`crate::aws`).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corral_proto::v1alpha1::ClusterConfig;
use kube::config::{AuthInfo, ExecConfig, ExecInteractiveMode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL: {0}")]
    ServerUrl(String),
    #[error("invalid CA data: {0}")]
    CaData(String),
    #[error("AWS IAM authentication: {0}")]
    Aws(#[from] crate::aws::AwsError),
    #[error("cannot build a client: {0}")]
    Build(String),
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Every request of the client is bounded by `timeout`.
pub async fn build(server: &str, config: &ClusterConfig, timeout: Duration) -> Result<kube::Client, ClientError> {
    let uri: http::Uri = server.parse().map_err(|e: http::uri::InvalidUri| ClientError::ServerUrl(e.to_string()))?;
    let mut cfg = kube::Config::new(uri);
    cfg.connect_timeout = Some(timeout);
    cfg.read_timeout = Some(timeout);
    cfg.write_timeout = Some(timeout);
    // A probe is one attempt; the next interval is the retry.
    cfg.default_retry = false;
    cfg.disable_compression = config.disable_compression;
    let tls = config.tls_client_config.clone().unwrap_or_default();
    cfg.accept_invalid_certs = tls.insecure;
    cfg.tls_server_name = some(&tls.server_name);
    if !tls.ca_data.is_empty() {
        let roots: Result<Vec<Vec<u8>>, _> =
            CertificateDer::pem_slice_iter(&tls.ca_data).map(|c| c.map(|c| c.as_ref().to_vec())).collect();
        let roots = roots.map_err(|e| ClientError::CaData(e.to_string()))?;
        if roots.is_empty() {
            return Err(ClientError::CaData("no PEM certificate found".into()));
        }
        cfg.root_cert = Some(roots);
    }
    let mut auth = AuthInfo::default();
    if !config.bearer_token.is_empty() {
        auth.token = Some(SecretString::from(config.bearer_token.clone()));
    }
    if let Some(aws) = config.aws_auth_config.as_ref().filter(|a| !a.cluster_name.is_empty()) {
        // An EKS token lasts 15 minutes; `Clients` rebuilds such clients well before that.
        let mut creds = crate::aws::Credentials::load(&aws.profile)?;
        let region = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")).unwrap_or_default();
        if !aws.role_arn.is_empty() {
            creds = crate::aws::assume_role(&creds, &aws.role_arn, &region, chrono::Utc::now()).await?;
        }
        let token = crate::aws::eks_token(&aws.cluster_name, &region, &creds, chrono::Utc::now());
        auth.token = Some(SecretString::from(token));
    }
    if !config.username.is_empty() {
        auth.username = Some(config.username.clone());
        auth.password = Some(SecretString::from(config.password.clone()));
    }
    if !tls.cert_data.is_empty() {
        auth.client_certificate_data = Some(BASE64.encode(&tls.cert_data));
    }
    if !tls.key_data.is_empty() {
        auth.client_key_data = Some(SecretString::from(BASE64.encode(&tls.key_data)));
    }
    if let Some(exec) = config.exec_provider_config.as_ref().filter(|e| !e.command.is_empty()) {
        let env: Vec<HashMap<String, String>> = exec
            .env
            .iter()
            .map(|(k, v)| HashMap::from([("name".to_string(), k.clone()), ("value".to_string(), v.clone())]))
            .collect();
        auth.exec = Some(ExecConfig {
            api_version: some(&exec.api_version).or_else(|| Some("client.authentication.k8s.io/v1".into())),
            command: Some(exec.command.clone()),
            args: Some(exec.args.clone()),
            env: (!env.is_empty()).then_some(env),
            drop_env: None,
            install_hint: some(&exec.install_hint),
            interactive_mode: Some(ExecInteractiveMode::Never),
            ..Default::default()
        });
    }
    cfg.auth_info = auth;
    kube::Client::try_from(cfg).map_err(|e| ClientError::Build(e.to_string()))
}
