//! Shared set-up for the end-to-end tests: the control plane in its two shapes (all-in-one on the
//! embedded log, and separate gateway and registry processes on a real nats-server), clients for
//! gRPC and REST, and the API behaviour suite both shapes must pass.
#![allow(dead_code)]

pub mod suite;

use std::net::SocketAddr;

use std::time::Duration;

use corral_proto::cluster::cluster_service_client::ClusterServiceClient;
pub use corral_test_harness::deployment::{ADMIN_PASSWORD, AllInOne, Deployment};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Puts the caller's token in the `authorization` metadata of every gRPC call.
#[derive(Clone, Default)]
pub struct TokenInterceptor(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, TokenInterceptor>;

/// A client of one gateway, over both protocols, acting with one token (or none).
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub token: Option<String>,
    /// The user name and password the token was logged in with, if it was.
    pub credentials: Option<(String, String)>,
    pub grpc: ClusterServiceClient<Authed>,
    pub http: reqwest::Client,
}

impl Api {
    /// The same gateway, acting with `token` (None: anonymous).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        let header = token.map(|t| format!("Bearer {t}"));
        let interceptor = TokenInterceptor(header.as_deref().map(|h| h.parse().expect("ascii token")));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(h) = &header {
            headers.insert(reqwest::header::AUTHORIZATION, h.parse().expect("header"));
        }
        Api {
            addr: self.addr,
            channel: self.channel.clone(),
            token: token.map(str::to_string),
            credentials: self.credentials.clone(),
            grpc: ClusterServiceClient::with_interceptor(self.channel.clone(), interceptor),
            http: reqwest::Client::builder().default_headers(headers).build().expect("http client"),
        }
    }

    pub fn anonymous(&self) -> Api {
        self.with_token(None)
    }

    /// A gRPC client of any service on this gateway, with this Api's token.
    pub fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor(self.token.as_ref().map(|t| format!("Bearer {t}").parse().expect("ascii token")))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Logs in over REST; the session token, or the error status and body.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, (u16, serde_json::Value)> {
        let resp = reqwest::Client::new()
            .post(self.url("/api/v1/session"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login request");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        match body["token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_string()),
            _ => Err((status, body)),
        }
    }

    /// Logs in as `username` and returns an Api acting with that session.
    pub async fn as_user(&self, username: &str, password: &str) -> Api {
        let token = self.login(username, password).await.unwrap_or_else(|e| panic!("login as {username}: {e:?}"));
        Api { credentials: Some((username.to_string(), password.to_string())), ..self.with_token(Some(&token)) }
    }

    /// Another session of the same user.
    pub async fn new_session(&self) -> Api {
        let (user, password) = self.credentials.clone().expect("an Api logged in with a password");
        self.as_user(&user, &password).await
    }
}

/// The all-in-one control plane (the `corral` binary) on its embedded log, logged in as the
/// admin with the password it generated.
pub struct Embedded {
    pub api: Api,
    pub dir: std::path::PathBuf,
    all_in_one: AllInOne,
}

impl Embedded {
    pub async fn start() -> Embedded {
        Self::start_in(tempfile::tempdir().expect("tempdir")).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Embedded {
        Self::start_with_accounts(dir, None).await
    }

    /// The control plane reading `accounts` (TOML, argocd-cm / argocd-rbac-cm keys), kept in the
    /// data folder.
    pub async fn start_with_accounts(dir: tempfile::TempDir, accounts: Option<&str>) -> Embedded {
        Self::start_with_args(dir, accounts, &[]).await
    }

    /// As [`Embedded::start_with_accounts`], with more command-line arguments.
    pub async fn start_with_args(dir: tempfile::TempDir, accounts: Option<&str>, args: &[&str]) -> Embedded {
        let accounts_file = accounts.map(|text| {
            let path = dir.path().join("accounts.toml");
            std::fs::write(&path, text).expect("write accounts file");
            path
        });
        let all_in_one = AllInOne::start_with_args(dir, accounts_file.as_deref(), args).await.expect("the all-in-one");
        let api = wait_for_api_as(all_in_one.addr, "admin", &all_in_one.admin_password()).await;
        Embedded { api, dir: all_in_one.dir.path().to_path_buf(), all_in_one }
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.all_in_one.stop().await
    }
}

/// Polls until the gateway answers, then logs in as the admin (test password).
pub async fn wait_for_api(addr: SocketAddr) -> Api {
    wait_for_api_as(addr, "admin", ADMIN_PASSWORD).await
}

/// Polls until the gateway answers gRPC (readiness without sleeps of fixed length), then logs in.
pub async fn wait_for_api_as(addr: SocketAddr, username: &str, password: &str) -> Api {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(Ok(ch)) = tokio::time::timeout(
            Duration::from_secs(2),
            Channel::from_shared(format!("http://{addr}")).expect("uri").connect(),
        )
        .await
        {
            break ch;
        }
        assert!(tokio::time::Instant::now() < deadline, "gateway at {addr} never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let anonymous = Api {
        addr,
        channel: channel.clone(),
        token: None,
        credentials: None,
        grpc: ClusterServiceClient::with_interceptor(channel, TokenInterceptor::default()),
        http: reqwest::Client::new(),
    };
    anonymous.as_user(username, password).await
}

/// A client of gateway `i` of a deployment, logged in as the admin.
pub trait DeploymentApi {
    async fn api(&self, i: usize) -> Api;
}

impl DeploymentApi for Deployment {
    async fn api(&self, i: usize) -> Api {
        wait_for_api(self.gateway_addrs[i]).await
    }
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Lists through the registry replicas' own projection, over NATS, bypassing the gateway's view.
pub async fn registry_list(d: &Deployment) -> corral_proto::v1alpha1::ClusterList {
    use corral_proto::registry::{Query, query, reply};
    use corral_service_api::ClusterQueries as _;
    let client = d.client().await;
    let registry = corral_service_api::nats::NatsClient::new(client, Duration::from_secs(30));
    let q = Query { linearizable: true, kind: Some(query::Kind::List(Default::default())), ..Default::default() };
    match registry.query(q).await.result {
        Some(reply::Result::List(l)) => l,
        other => panic!("registry list failed: {other:?}"),
    }
}
