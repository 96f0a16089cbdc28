//! The control plane as its tests run it, from the workspace's own binaries: gateways and
//! registries (and the observing services on demand) as separate processes on a private
//! nats-server, or the all-in-one binary on its embedded log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::NatsCluster;
use crate::{HarnessError, NatsServer, ServiceProcess, parse_listen_addr};

/// The admin password the spawned gateways start with.
pub const ADMIN_PASSWORD: &str = "corral-test-admin-password";

const STARTUP: Duration = Duration::from_secs(60);

/// A binary of this workspace, beside the running test. `cargo test --workspace` only builds the
/// binaries of packages that have integration tests, so a missing one is built here (cargo's own
/// lock serialises racing test binaries).
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

/// A new sealing key, base64 of 32 random bytes.
pub fn new_seal_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a service prints once it is ready.
fn ready(name: &str) -> String {
    corral_process::ready_line(name, None)
}

/// The NATS a deployment runs on: one server, or three clustered as production runs them.
pub enum Nats {
    Server(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// What the services are given: the one URL, or the three comma-separated.
    pub fn url(&self) -> String {
        match self {
            Nats::Server(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }

    /// The folder holding every node's store.
    pub fn store_dir(&self) -> &Path {
        match self {
            Nats::Server(s) => s.store_dir(),
            Nats::Cluster(c) => c.store_dir(),
        }
    }

    /// A connection as the test's tooling (the admin on a secured cluster).
    pub async fn client(&self) -> async_nats::Client {
        match self {
            Nats::Server(s) => async_nats::connect(s.url()).await.expect("nats"),
            Nats::Cluster(c) => c.client("test").await.expect("nats"),
        }
    }

    /// The environment that makes `service` connect as its own user, where the cluster has them.
    pub fn service_env(&self, service: &str) -> Vec<(String, String)> {
        match self {
            Nats::Server(_) => Vec::new(),
            Nats::Cluster(c) => c.service_env(service),
        }
    }

    /// The cluster; panics on a one-server deployment (a test's mistake).
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Nats::Cluster(c) => c,
            Nats::Server(_) => panic!("this deployment runs on one nats-server, not a cluster"),
        }
    }
}

/// Gateways and registries as separate processes on their own nats-server (or cluster).
pub struct Deployment {
    pub nats: Nats,
    pub seal_key: String,
    pub registries: Vec<ServiceProcess>,
    pub registry_dirs: Vec<tempfile::TempDir>,
    pub gateways: Vec<ServiceProcess>,
    pub gateway_addrs: Vec<SocketAddr>,
    /// Accounts and RBAC configuration every gateway reads (CORRAL_ACCOUNTS_FILE).
    pub accounts_file: Option<tempfile::NamedTempFile>,
    /// Environment every process of the deployment gets besides its own.
    pub env: Vec<(String, String)>,
}

impl Deployment {
    pub async fn start(registries: usize, gateways: usize) -> Deployment {
        Self::start_with_accounts(registries, gateways, None).await
    }

    /// A deployment whose gateways read `accounts` (TOML) as their accounts configuration.
    pub async fn start_with_accounts(registries: usize, gateways: usize, accounts: Option<&str>) -> Deployment {
        Self::start_with(registries, gateways, accounts, &[]).await
    }

    /// A deployment whose every process also gets `env`.
    pub async fn start_with(
        registries: usize,
        gateways: usize,
        accounts: Option<&str>,
        env: &[(&str, &str)],
    ) -> Deployment {
        let nats = Nats::Server(NatsServer::start().await.expect("nats-server"));
        Self::start_on(nats, registries, gateways, accounts, env).await
    }

    /// A deployment on a three-node NATS cluster with the stream at three replicas, as the
    /// README's production shape.
    pub async fn start_clustered(registries: usize, gateways: usize, env: &[(&str, &str)]) -> Deployment {
        let nats = Nats::Cluster(NatsCluster::start().await.expect("three nats-server nodes"));
        let mut env = env.to_vec();
        env.push(("CORRAL_STREAM_REPLICAS", "3"));
        Self::start_on(nats, registries, gateways, None, &env).await
    }

    /// As [`Deployment::start_clustered`], with TLS between the services and NATS and each
    /// service connecting as its own least-privilege user (nats/authorization.conf).
    pub async fn start_secured(registries: usize, gateways: usize, env: &[(&str, &str)]) -> Deployment {
        let nats = Nats::Cluster(NatsCluster::start_secured().await.expect("three secured nats-server nodes"));
        let mut env = env.to_vec();
        env.push(("CORRAL_STREAM_REPLICAS", "3"));
        Self::start_on(nats, registries, gateways, None, &env).await
    }

    /// A connection to the deployment's NATS as the test's tooling.
    pub async fn client(&self) -> async_nats::Client {
        self.nats.client().await
    }

    /// A deployment on `nats`.
    pub async fn start_on(
        nats: Nats,
        registries: usize,
        gateways: usize,
        accounts: Option<&str>,
        env: &[(&str, &str)],
    ) -> Deployment {
        let accounts_file = accounts.map(|text| {
            let f = tempfile::NamedTempFile::new().expect("accounts file");
            std::fs::write(f.path(), text).expect("write accounts file");
            f
        });
        let mut d = Deployment {
            nats,
            seal_key: new_seal_key(),
            registries: Vec::new(),
            registry_dirs: Vec::new(),
            gateways: Vec::new(),
            gateway_addrs: Vec::new(),
            accounts_file,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
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

    fn nats_args(&self) -> Vec<String> {
        vec!["--nats-url".into(), self.nats.url()]
    }

    /// Starts `name` with the deployment's environment, then its NATS user's, then `own` (the
    /// last given wins).
    async fn spawn(&self, name: &str, args: Vec<String>, own: Vec<(String, String)>) -> ServiceProcess {
        let args: Vec<String> = self.nats_args().into_iter().chain(args).collect();
        let mut env = self.env.clone();
        env.extend(self.nats.service_env(name));
        env.extend(own);
        match ServiceProcess::spawn(&workspace_bin(name), &args, &env, &ready(name), STARTUP).await {
            Ok(p) => p,
            Err(e) => {
                if let Nats::Cluster(c) = &self.nats {
                    eprintln!("---- the NATS cluster as {name} failed to start ----\n{}", c.describe().await);
                }
                panic!("{name}: {e}")
            }
        }
    }

    pub async fn spawn_registry(&self, dir: &Path) -> ServiceProcess {
        self.spawn("corral-registry", vec!["--data-dir".into(), dir.display().to_string()], self.key_env()).await
    }

    pub async fn spawn_gateway(&self) -> (ServiceProcess, SocketAddr) {
        self.spawn_gateway_with(&[]).await
    }

    /// A gateway with more environment variables than the deployment's.
    pub async fn spawn_gateway_with(&self, extra_env: &[(&str, &str)]) -> (ServiceProcess, SocketAddr) {
        let args = vec!["--listen".into(), "127.0.0.1:0".into(), "--max-body-bytes".into(), "65536".into()];
        let mut env = self.gateway_env();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let p = self.spawn("corral-gateway", args, env).await;
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
        let mut env = self.key_env();
        // Example credentials for clusters with AWS IAM authentication (never sent to AWS: the
        // fake API servers only check the token's shape).
        env.extend([
            ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            ("AWS_REGION".into(), "eu-west-1".into()),
        ]);
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let args = vec![
            "--probe-interval-seconds".into(),
            interval_seconds.to_string(),
            "--probe-timeout-seconds".into(),
            timeout_seconds.to_string(),
        ];
        self.spawn("corral-health-probe", args, env).await
    }

    /// A cache-invalidation process checking every `check_seconds`.
    pub async fn spawn_cache_invalidation(&self, check_seconds: f64) -> ServiceProcess {
        let args = vec![
            "--cache-check-seconds".into(),
            check_seconds.to_string(),
            "--cache-timeout-seconds".into(),
            "2".into(),
        ];
        self.spawn("corral-cache-invalidation", args, self.key_env()).await
    }

    /// An auth-rotation process whose old tokens live `grace_seconds` after a rotation.
    pub async fn spawn_auth_rotation(&self, grace_seconds: f64) -> ServiceProcess {
        let args = vec!["--rotation-grace-seconds".into(), grace_seconds.to_string()];
        self.spawn("corral-auth-rotation", args, self.service_env()).await
    }

    fn key_env(&self) -> Vec<(String, String)> {
        vec![("CORRAL_SEAL_KEY".to_string(), self.seal_key.clone())]
    }

    /// The sealing key, and the accounts file when the deployment has one.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let mut env = self.key_env();
        if let Some(f) = &self.accounts_file {
            env.push(("CORRAL_ACCOUNTS_FILE".to_string(), f.path().display().to_string()));
        }
        env
    }

    pub fn gateway_env(&self) -> Vec<(String, String)> {
        let mut env = self.service_env();
        env.push(("CORRAL_ADMIN_PASSWORD".to_string(), ADMIN_PASSWORD.to_string()));
        env
    }
}

/// The all-in-one binary on its embedded log, in a data folder of its own. Probing and cache
/// syncing are off: the tests' clusters are made-up hosts, and probing them would leave loopback.
pub struct AllInOne {
    pub process: ServiceProcess,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl AllInOne {
    pub async fn start_in(dir: tempfile::TempDir, accounts_file: Option<&Path>) -> Result<AllInOne, HarnessError> {
        Self::start_with_args(dir, accounts_file, &[]).await
    }

    /// As [`AllInOne::start_in`], with more command-line arguments.
    pub async fn start_with_args(
        dir: tempfile::TempDir,
        accounts_file: Option<&Path>,
        extra: &[&str],
    ) -> Result<AllInOne, HarnessError> {
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().display().to_string(),
            "--max-body-bytes",
            "65536",
            "--probe-interval-seconds",
            "0",
            "--cache-check-seconds",
            "0",
        ]
        .map(String::from)
        .into();
        if let Some(f) = accounts_file {
            args.extend(["--accounts-file".to_string(), f.display().to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = ServiceProcess::spawn(&workspace_bin("corral"), &args, &[], &ready("corral"), STARTUP).await?;
        let addr = parse_listen_addr(&process.ready_line()).expect("the all-in-one's address");
        Ok(AllInOne { process, addr, dir })
    }

    /// The admin password generated on first start, from the data folder.
    pub fn admin_password(&self) -> String {
        let file = self.dir.path().join("admin.password");
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).trim().to_string()
    }

    /// Stops the process (SIGTERM, as an orchestrator does) and hands back its data folder.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.process.terminate().await;
        self.dir
    }
}
