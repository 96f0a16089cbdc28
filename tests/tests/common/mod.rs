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

    /// The control plane reading its accounts configuration at `path` (a TOML file or a folder).
    pub async fn start_with_accounts_at(dir: tempfile::TempDir, path: &std::path::Path) -> Embedded {
        let all_in_one = AllInOne::start_with_args(dir, Some(path), &[]).await.expect("the all-in-one");
        let api = wait_for_api_as(all_in_one.addr, "admin", &all_in_one.admin_password()).await;
        Embedded { api, dir: all_in_one.dir.path().to_path_buf(), all_in_one }
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

    /// Where the all-in-one serves /metrics, /healthz and /readyz.
    pub fn ops_addr(&self) -> SocketAddr {
        self.all_in_one.process.ops_addr().expect("the all-in-one's operations line")
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

/// One sample of a scrape, as Prometheus' own OpenMetrics parser read it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    /// The family (a counter's name without `_total`).
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `None` for +Inf and NaN.
    pub value: Option<f64>,
}

/// The Python that has the pinned prometheus_client (scripts/ensure-prometheus-parser.sh).
fn prometheus_python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_prometheus_python).clone()
}

fn find_prometheus_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_PROMETHEUS_PYTHON") {
        return p.into();
    }
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    let out = std::process::Command::new(workspace.join("scripts/ensure-prometheus-parser.sh"))
        .output()
        .expect("run scripts/ensure-prometheus-parser.sh");
    assert!(out.status.success(), "scripts/ensure-prometheus-parser.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().into()
}

const PARSE_OPENMETRICS: &str = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        v = float(s.value)
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels,
                    "value": v if math.isfinite(v) else None})
print(json.dumps(out))
"#;

/// `text` parsed by prometheus_client's strict OpenMetrics parser; panics with its complaint.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(prometheus_python())
        .args(["-c", PARSE_OPENMETRICS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// `GET /metrics` on an operations listener, checked and parsed.
pub async fn scrape(ops: SocketAddr) -> Vec<Sample> {
    let resp = reqwest::get(format!("http://{ops}/metrics")).await.expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap_or_default().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    parse_openmetrics(&resp.text().await.expect("body"))
}

/// The samples named `name` whose labels include every pair of `labels`.
pub fn samples<'a>(all: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

/// The sum of the samples [`samples`] finds (0 when there are none).
pub fn total(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(all, name, labels).iter().filter_map(|s| s.value).sum()
}
