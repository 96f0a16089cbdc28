//! Three nats-server nodes clustered on loopback, as production runs them: each with its own
//! `server_name`, store, client and cluster ports, routes to the other two, and JetStream with
//! `sync_interval: always` (an acknowledgement means the write is on disk on a majority). Each
//! node pings its routes and clients every 2 s: with NATS's default of 2 minutes, a node cut off
//! by a partition keeps its clients' subscriptions (a registry's queue membership) alive on the
//! others for minutes, and requests routed to them are lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_process::NatsAuthOptions;
use tokio::process::Child;

use crate::{HarnessError, Output, nats_server_binary, spawn_child};

/// The kinds of service and the NATS user each connects as (nats/authorization.conf).
pub const SERVICE_USERS: [(&str, &str); 5] = [
    ("corral-registry", "REGISTRY"),
    ("corral-gateway", "GATEWAY"),
    ("corral-health-probe", "HEALTH_PROBE"),
    ("corral-cache-invalidation", "CACHE_INVALIDATION"),
    ("corral-auth-rotation", "AUTH_ROTATION"),
];

/// TLS on the client port (a certificate from an authority made here) and the repository's
/// least-privilege users, each with a password made here.
pub struct Secured {
    dir: tempfile::TempDir,
    passwords: Vec<(String, String)>,
}

impl Secured {
    pub fn new() -> Result<Secured, HarnessError> {
        let dir = tempfile::tempdir()?;
        let authority = crate::pki::TestAuthority::new("corral test NATS authority")?;
        let (cert, key) = authority.server_certificate()?;
        std::fs::write(dir.path().join("ca.pem"), &authority.ca_pem)?;
        std::fs::write(dir.path().join("server.pem"), cert)?;
        std::fs::write(dir.path().join("server-key.pem"), key)?;
        let passwords = SERVICE_USERS
            .iter()
            .map(|(_, kind)| kind.to_string())
            .chain(["ADMIN".to_string()])
            .map(|kind| (kind, crate::deployment::new_seal_key()))
            .collect();
        Ok(Secured { dir, passwords })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn password(&self, kind: &str) -> String {
        self.passwords.iter().find(|(k, _)| k == kind).map(|(_, p)| p.clone()).unwrap_or_default()
    }

    /// What a node's environment holds for the authorization file.
    fn server_env(&self) -> Vec<(String, String)> {
        self.passwords.iter().map(|(kind, p)| (format!("CORRAL_NATS_PASSWORD_{kind}"), p.clone())).collect()
    }

    /// The environment that makes `service` connect over TLS as its own user.
    pub fn service_env(&self, service: &str) -> Vec<(String, String)> {
        let Some((user, kind)) = SERVICE_USERS.iter().find(|(name, _)| *name == service) else {
            return vec![("CORRAL_NATS_TLS_CA".into(), self.ca().display().to_string())];
        };
        vec![
            ("CORRAL_NATS_TLS_CA".into(), self.ca().display().to_string()),
            ("CORRAL_NATS_USER".into(), user.to_string()),
            ("CORRAL_NATS_PASSWORD".into(), self.password(kind)),
        ]
    }

    /// How `service` connects (the admin for anything else).
    pub fn options_for(&self, service: &str) -> NatsAuthOptions {
        let (user, kind) = SERVICE_USERS
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(u, k)| (u.to_string(), k.to_string()))
            .unwrap_or(("corral-admin".into(), "ADMIN".into()));
        NatsAuthOptions {
            nats_tls_ca: Some(self.ca()),
            nats_user: Some(user),
            nats_password: Some(self.password(&kind)),
            ..Default::default()
        }
    }

    fn config(&self) -> String {
        // NATS includes a file relative to the one including it: the copy beside the nodes'.
        let authorization = "authorization.conf";
        let d = self.dir.path().display();
        format!(
            "tls {{\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/server-key.pem\"\n  timeout: 5\n}}\n\
             include \"{authorization}\"\n"
        )
    }
}

/// The body of a plain HTTP GET to a loopback port.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("monitoring endpoint timed out"))??;
    Ok(answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
    output: Output,
}

/// A three-node JetStream cluster of the pinned nats-server; killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    secured: Option<Secured>,
}

/// `n` distinct loopback ports nothing listens on at the moment of the call (all bound at once,
/// so none is given twice).
fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

fn config_text(name: &str, (client, cluster, monitor): (u16, u16, u16), peers: &[u16], store: &Path) -> String {
    let routes: Vec<String> = peers.iter().map(|p| format!("    \"nats://127.0.0.1:{p}\"")).collect();
    format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\nping_interval: \"2s\"\n\
         jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
         cluster {{\n  name: corral-test\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [\n{}\n  ]\n}}\n",
        store.display(),
        routes.join(",\n")
    )
}

impl NatsCluster {
    pub async fn start() -> Result<NatsCluster, HarnessError> {
        Self::start_with(None).await
    }

    /// A cluster serving clients over TLS, with the repository's least-privilege users.
    pub async fn start_secured() -> Result<NatsCluster, HarnessError> {
        Self::start_with(Some(Secured::new()?)).await
    }

    /// A port picked free may be taken by another process before the node binds it (tests run
    /// side by side): then the cluster is started again on other ports.
    async fn start_with(secured: Option<Secured>) -> Result<NatsCluster, HarnessError> {
        let mut secured = secured;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(secured.take()).await {
                Ok(c) => return Ok(c),
                Err((HarnessError::Exited { logs, .. }, s))
                    if attempt < 5 && logs.contains("address already in use") =>
                {
                    secured = s;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn start_once(secured: Option<Secured>) -> Result<NatsCluster, (HarnessError, Option<Secured>)> {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return Err((e.into(), secured)),
        };
        let mut c = NatsCluster { nodes: Vec::new(), dir, secured };
        match c.configure_and_launch().await {
            Ok(()) => Ok(c),
            Err(e) => {
                for node in &mut c.nodes {
                    if let Some(child) = node.child.as_mut() {
                        let _ = child.start_kill();
                    }
                }
                let secured = c.secured.take();
                Err((e, secured))
            }
        }
    }

    async fn configure_and_launch(&mut self) -> Result<(), HarnessError> {
        let dir = &self.dir;
        let secured = &self.secured;
        if secured.is_some() {
            let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats/authorization.conf");
            std::fs::copy(repository, dir.path().join("authorization.conf"))?;
        }
        let picked = free_ports(9)?;
        let ports: Vec<(u16, u16, u16)> = picked.chunks(3).map(|p| (p[0], p[1], p[2])).collect();
        let mut nodes = Vec::new();
        for (i, &(client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let peers: Vec<u16> = ports.iter().filter(|(c, _, _)| *c != client).map(|(_, cl, _)| *cl).collect();
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store)?;
            let config = dir.path().join(format!("{name}.conf"));
            let mut text = config_text(&name, (client, cluster, monitor), &peers, &store);
            if let Some(secured) = &secured {
                text.push_str(&secured.config());
            }
            std::fs::write(&config, text)?;
            nodes.push(Node {
                name,
                client_port: client,
                cluster_port: cluster,
                monitor_port: monitor,
                config,
                child: None,
                output: Output::default(),
            });
        }
        self.nodes = nodes;
        for i in 0..3 {
            self.launch(i)?;
        }
        for i in 0..3 {
            self.wait_ready(i).await?;
        }
        self.wait_for_jetstream().await
    }

    fn launch(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = &mut self.nodes[i];
        let args = vec!["-c".to_string(), node.config.display().to_string()];
        let env = self.secured.as_ref().map(Secured::server_env).unwrap_or_default();
        let (child, output) = spawn_child(&nats_server_binary(), &args, &env)?;
        node.child = Some(child);
        node.output = output;
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = &mut self.nodes[i];
        let program = format!("nats-server {}", node.name);
        let child = node
            .child
            .as_mut()
            .ok_or_else(|| HarnessError::Exited { program: program.clone(), logs: String::new() })?;
        node.output.wait_for(child, &program, "Server is ready", Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Waits until the JetStream API answers, which it does once the nodes have elected a
    /// meta leader.
    async fn wait_for_jetstream(&self) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(client) = self.client("harness").await {
                let answer = client.request("$JS.API.INFO", "".into()).await;
                if answer.is_ok_and(|m| !String::from_utf8_lossy(&m.payload).contains("\"error\"")) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    program: "nats-server cluster".into(),
                    timeout: Duration::from_secs(30),
                    logs: self.nodes.iter().map(|n| n.output.tail(20)).collect::<Vec<_>>().join("\n"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How `service` connects: over TLS as its own user on a secured cluster.
    pub fn auth_for(&self, service: &str) -> NatsAuthOptions {
        self.secured.as_ref().map(|s| s.options_for(service)).unwrap_or_default()
    }

    /// The environment that makes `service` connect as [`NatsCluster::auth_for`] says.
    pub fn service_env(&self, service: &str) -> Vec<(String, String)> {
        self.secured.as_ref().map(|s| s.service_env(service)).unwrap_or_default()
    }

    /// A connection to the cluster as `service` (anything not a service: the admin).
    pub async fn client(&self, service: &str) -> Result<async_nats::Client, HarnessError> {
        corral_process::connect(&self.urls(), service, &self.auth_for(service))
            .await
            .map_err(|e| HarnessError::Io(std::io::Error::other(e.to_string())))
    }

    /// The three client URLs, comma-separated, as the services take them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn cluster_port(&self, i: usize) -> u16 {
        self.nodes[i].cluster_port
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL of node `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts node `i` again with its ports, store and routes.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i).await;
        self.launch(i)?;
        self.wait_ready(i).await
    }

    /// Stops node `i` politely (SIGTERM: it leaves the cluster as an upgrade would stop it) and
    /// waits for it to exit.
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            crate::signal(&c, "TERM");
            if tokio::time::timeout(Duration::from_secs(30), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open but nothing answers, as a node cut off
    /// by a partition looks to its peers and clients.
    pub fn freeze(&self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            crate::signal(c, "STOP");
        }
    }

    /// Lets a frozen node `i` run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            crate::signal(c, "CONT");
        }
    }

    /// The node leading `stream`'s replicas, as the JetStream API tells it.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let client = self.client("harness").await.ok()?;
        let answer = client.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()).await.ok()?;
        let info: serde_json::Value = serde_json::from_slice(&answer.payload).ok()?;
        let leader = info["cluster"]["leader"].as_str()?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// The nodes holding a client connection named `name`, from each node's monitoring
    /// endpoint (`/connz`).
    pub async fn nodes_with_client(&self, name: &str) -> Vec<usize> {
        let mut found = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let Ok(body) = http_get(node.monitor_port, "/connz?limit=4096").await else { continue };
            let Ok(connz) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
            let connections = connz["connections"].as_array().cloned().unwrap_or_default();
            if connections.iter().any(|c| c["name"] == name) {
                found.push(i);
            }
        }
        found
    }

    /// What each node answers on its monitoring endpoint, for a test to print when something
    /// stalls: its client connections (name, subscriptions, pending bytes, idle time) and its
    /// streams' and consumers' cluster state (leader, replicas, lag). A frozen node answers
    /// nothing within 5 s and says so.
    pub async fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for node in &self.nodes {
            if node.child.is_none() {
                let _ = writeln!(out, "{}: not running", node.name);
                continue;
            }
            let connz = http_get(node.monitor_port, "/connz?limit=4096").await;
            let jsz = http_get(node.monitor_port, "/jsz?streams=true&consumers=true").await;
            let (Ok(connz), Ok(jsz)) = (connz, jsz) else {
                let _ = writeln!(out, "{}: its monitoring endpoint does not answer", node.name);
                continue;
            };
            let connz: serde_json::Value = serde_json::from_str(&connz).unwrap_or_default();
            let jsz: serde_json::Value = serde_json::from_str(&jsz).unwrap_or_default();
            let _ = writeln!(out, "{}: meta leader {}", node.name, jsz["meta_cluster"]["leader"]);
            if let Ok(routez) = http_get(node.monitor_port, "/routez").await {
                let routez: serde_json::Value = serde_json::from_str(&routez).unwrap_or_default();
                let routes: Vec<String> = routez["routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| format!("{} (rtt {}, pending {})", r["remote_name"], r["rtt"], r["pending_size"]))
                    .collect();
                let _ = writeln!(out, "  routes: {}", routes.join(", "));
            }
            for c in connz["connections"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  client {} port {} subs {} pending {} idle {} in/out msgs {}/{}",
                    c["name"],
                    c["port"],
                    c["subscriptions"],
                    c["pending_bytes"],
                    c["idle"],
                    c["in_msgs"],
                    c["out_msgs"]
                );
            }
            for account in jsz["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  stream {} leader {} replicas {} last_seq {}",
                        s["name"], s["cluster"]["leader"], s["cluster"]["replicas"], s["state"]["last_seq"]
                    );
                    for c in s["consumer_detail"].as_array().into_iter().flatten() {
                        let _ = writeln!(
                            out,
                            "    consumer {} leader {} delivered {} ack_floor {} pending {} waiting {}",
                            c["name"],
                            c["cluster"]["leader"],
                            c["delivered"]["stream_seq"],
                            c["ack_floor"]["stream_seq"],
                            c["num_pending"],
                            c["num_waiting"]
                        );
                    }
                }
            }
        }
        out
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if std::thread::panicking() {
                eprintln!("---- nats-server {} output ----\n{}", node.name, node.output.tail(40));
            }
            if let Some(c) = node.child.as_mut() {
                let _ = c.start_kill();
            }
        }
    }
}
