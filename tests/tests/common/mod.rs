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
use tonic::transport::Channel;

/// A client of one gateway, over both protocols.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub grpc: ClusterServiceClient<Channel>,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn connect(addr: SocketAddr) -> Api {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("grpc connect");
        Api { addr, grpc: ClusterServiceClient::new(channel), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = corral::Config {
            listen: addr,
            data_dir: dir.path().to_path_buf(),
            nats_url: None,
            seal_key_file: None,
            max_body_bytes: 64 * 1024,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            corral::run(config, listener, async move {
                let _ = rx.await;
            })
            .await
            .expect("control plane");
        });
        let api = wait_for_api(addr).await;
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

/// Polls until the gateway answers gRPC (readiness without sleeps of fixed length).
pub async fn wait_for_api(addr: SocketAddr) -> Api {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(ch)) = tokio::time::timeout(
            Duration::from_secs(2),
            Channel::from_shared(format!("http://{addr}")).expect("uri").connect(),
        )
        .await
        {
            return Api { addr, grpc: ClusterServiceClient::new(ch), http: reqwest::Client::new() };
        }
        assert!(tokio::time::Instant::now() < deadline, "gateway at {addr} never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xff) as u8
}

/// Gateways and registries as separate processes on their own nats-server.
pub struct Deployment {
    pub nats: NatsServer,
    pub seal_key: String,
    pub registries: Vec<ServiceProcess>,
    pub registry_dirs: Vec<tempfile::TempDir>,
    pub gateways: Vec<ServiceProcess>,
    pub gateway_addrs: Vec<SocketAddr>,
}

impl Deployment {
    pub async fn start(registries: usize, gateways: usize) -> Deployment {
        let nats = NatsServer::start().await.expect("nats-server");
        let mut d = Deployment {
            nats,
            seal_key: new_seal_key(),
            registries: Vec::new(),
            registry_dirs: Vec::new(),
            gateways: Vec::new(),
            gateway_addrs: Vec::new(),
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
            &["--nats-url".into(), self.nats.url(), "--listen".into(), "127.0.0.1:0".into(), "--max-body-bytes".into(), "65536".into()],
            &[],
            "listening on",
            Duration::from_secs(60),
        )
        .await
        .expect("gateway process");
        let addr = parse_listen_addr(&p.ready_line()).expect("gateway address");
        (p, addr)
    }

    pub async fn api(&self, i: usize) -> Api {
        wait_for_api(self.gateway_addrs[i]).await
    }
}
