//! Shared set-up for the end-to-end tests: the control plane in its two shapes (all-in-one on the
//! embedded log, and separate gateway and registry processes on a real nats-server), clients for
//! gRPC and REST, and the API behaviour suite both shapes must pass.
#![allow(dead_code)]

pub mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use corral_proto::cluster::cluster_service_client::ClusterServiceClient;
use corral_test_harness::{NatsServer, ServiceProcess, parse_listen_addr};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The admin password the spawned gateways start with (CORRAL_ADMIN_PASSWORD).
pub const ADMIN_PASSWORD: &str = "corral-test-admin-password";

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

/// The all-in-one control plane, in this process, on the embedded log.
pub struct Embedded {
    pub api: Api,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Embedded {
    pub async fn start() -> Embedded {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Embedded {
        Self::start_with_accounts(dir, None).await
    }

    /// The control plane reading `accounts` (TOML, argocd-cm / argocd-rbac-cm keys), kept in the
    /// data folder.
    pub async fn start_with_accounts(dir: tempfile::TempDir, accounts: Option<&str>) -> Embedded {
        let accounts_file = accounts.map(|text| {
            let path = dir.path().join("accounts.toml");
            std::fs::write(&path, text).expect("write accounts file");
            path
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = corral::Config {
            listen: addr,
            data_dir: dir.path().to_path_buf(),
            nats_url: None,
            seal_key_file: None,
            max_body_bytes: 64 * 1024,
            auth: corral_gateway::AuthOptions { accounts_file, disable_auth: false, admin_password_out: None },
            // The suite's clusters are made-up hosts: probing them would leave loopback.
            probe_interval_seconds: 0.0,
            cache_check_seconds: 0.0,
            rotation_grace_seconds: 300.0,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            corral::run(config, listener, async move {
                let _ = rx.await;
            })
            .await
            .expect("control plane");
        });
        // First start: the generated admin password is in the data folder, for its owner only.
        let file = dir.path().join("admin.password");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let password = loop {
            match std::fs::read_to_string(&file) {
                Ok(p) if !p.trim().is_empty() => break p,
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "no generated admin password in {}", file.display())
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let api = wait_for_api_as(addr, "admin", password.trim()).await;
        Embedded { api, dir, stop: Some(tx), task: Some(task) }
    }

    pub async fn stop(self) -> tempfile::TempDir {
        let Embedded { dir, stop, task, .. } = self;
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        if let Some(t) = task {
            let _ = t.await;
        }
        dir
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

/// A binary of this workspace. `cargo test --workspace` only builds the binaries of packages that
/// have integration tests, so a missing one is built here (cargo's own lock serialises racing
/// test binaries).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--workspace", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    }
    assert!(path.exists(), "{} is missing after cargo build --workspace --bins", path.display());
    path
}

pub fn new_seal_key() -> String {
    let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(rand_byte()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rand_byte() -> u8 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xff)
        as u8
}

/// Gateways and registries as separate processes on their own nats-server.
pub struct Deployment {
    pub nats: NatsServer,
    pub seal_key: String,
    pub registries: Vec<ServiceProcess>,
    pub registry_dirs: Vec<tempfile::TempDir>,
    pub gateways: Vec<ServiceProcess>,
    pub gateway_addrs: Vec<SocketAddr>,
    /// Accounts and RBAC configuration every gateway reads (CORRAL_ACCOUNTS_FILE).
    pub accounts_file: Option<tempfile::NamedTempFile>,
}

impl Deployment {
    pub async fn start(registries: usize, gateways: usize) -> Deployment {
        Self::start_with_accounts(registries, gateways, None).await
    }

    /// A deployment whose gateways read `accounts` (TOML) as their accounts configuration.
    pub async fn start_with_accounts(registries: usize, gateways: usize, accounts: Option<&str>) -> Deployment {
        let accounts_file = accounts.map(|text| {
            let f = tempfile::NamedTempFile::new().expect("accounts file");
            std::fs::write(f.path(), text).expect("write accounts file");
            f
        });
        let nats = NatsServer::start().await.expect("nats-server");
        let mut d = Deployment {
            nats,
            seal_key: new_seal_key(),
            registries: Vec::new(),
            registry_dirs: Vec::new(),
            gateways: Vec::new(),
            gateway_addrs: Vec::new(),
            accounts_file,
        };
        for _ in 0..registries {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = d.spawn_registry(dir.path()).await;
            d.registries.push(p);
            d.registry_dirs.push(dir);
        }
        for _ in 0..gateways {
            let (p, addr) = d.spawn_gateway().await;
            d.gateways.push(p);
            d.gateway_addrs.push(addr);
        }
        d
    }

    pub async fn spawn_registry(&self, dir: &std::path::Path) -> ServiceProcess {
        ServiceProcess::spawn(
            &workspace_bin("corral-registry"),
            &["--nats-url".into(), self.nats.url(), "--data-dir".into(), dir.display().to_string()],
            &[("CORRAL_SEAL_KEY".into(), self.seal_key.clone())],
            "registry ready",
            Duration::from_secs(60),
        )
        .await
        .expect("registry process")
    }

    pub async fn spawn_gateway(&self) -> (ServiceProcess, SocketAddr) {
        let p = ServiceProcess::spawn(
            &workspace_bin("corral-gateway"),
            &[
                "--nats-url".into(),
                self.nats.url(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--max-body-bytes".into(),
                "65536".into(),
            ],
            &self.gateway_env(),
            "listening on",
            Duration::from_secs(60),
        )
        .await
        .expect("gateway process");
        let addr = parse_listen_addr(&p.ready_line()).expect("gateway address");
        (p, addr)
    }

    /// A health-probe process probing every `interval_seconds`, each request bounded by `timeout_seconds`.
    pub async fn spawn_health_probe(&self, interval_seconds: f64, timeout_seconds: f64) -> ServiceProcess {
        self.spawn_health_probe_with(interval_seconds, timeout_seconds, &[]).await
    }

    /// A health-probe process with extra environment variables.
    pub async fn spawn_health_probe_with(
        &self,
        interval_seconds: f64,
        timeout_seconds: f64,
        extra_env: &[(&str, &str)],
    ) -> ServiceProcess {
        let mut env: Vec<(String, String)> = vec![
            ("CORRAL_SEAL_KEY".into(), self.seal_key.clone()),
            // Example credentials for clusters with AWS IAM authentication (never sent to AWS:
            // the fake API servers only check the token's shape).
            ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            ("AWS_REGION".into(), "eu-west-1".into()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ServiceProcess::spawn(
            &workspace_bin("corral-health-probe"),
            &[
                "--nats-url".into(),
                self.nats.url(),
                "--interval-seconds".into(),
                interval_seconds.to_string(),
                "--timeout-seconds".into(),
                timeout_seconds.to_string(),
            ],
            &env,
            "health-probe ready",
            Duration::from_secs(60),
        )
        .await
        .expect("health-probe process")
    }

    /// A cache-invalidation process checking every `check_seconds`.
    pub async fn spawn_cache_invalidation(&self, check_seconds: f64) -> ServiceProcess {
        ServiceProcess::spawn(
            &workspace_bin("corral-cache-invalidation"),
            &[
                "--nats-url".into(),
                self.nats.url(),
                "--check-seconds".into(),
                check_seconds.to_string(),
                "--timeout-seconds".into(),
                "2".into(),
            ],
            &[("CORRAL_SEAL_KEY".into(), self.seal_key.clone())],
            "cache-invalidation ready",
            Duration::from_secs(60),
        )
        .await
        .expect("cache-invalidation process")
    }

    /// An auth-rotation process whose old tokens live `grace_seconds` after a rotation.
    pub async fn spawn_auth_rotation(&self, grace_seconds: f64) -> ServiceProcess {
        ServiceProcess::spawn(
            &workspace_bin("corral-auth-rotation"),
            &["--nats-url".into(), self.nats.url(), "--grace-seconds".into(), grace_seconds.to_string()],
            &self.service_env(),
            "auth-rotation ready",
            Duration::from_secs(60),
        )
        .await
        .expect("auth-rotation process")
    }

    /// The sealing key, and the accounts file when the deployment has one.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("CORRAL_SEAL_KEY".to_string(), self.seal_key.clone())];
        if let Some(f) = &self.accounts_file {
            env.push(("CORRAL_ACCOUNTS_FILE".to_string(), f.path().display().to_string()));
        }
        env
    }

    pub fn gateway_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("CORRAL_SEAL_KEY".to_string(), self.seal_key.clone()),
            ("CORRAL_ADMIN_PASSWORD".to_string(), ADMIN_PASSWORD.to_string()),
        ];
        if let Some(f) = &self.accounts_file {
            env.push(("CORRAL_ACCOUNTS_FILE".to_string(), f.path().display().to_string()));
        }
        env
    }

    pub async fn api(&self, i: usize) -> Api {
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
