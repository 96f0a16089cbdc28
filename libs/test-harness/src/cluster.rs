//! Three nats-server nodes clustered on loopback, as production runs them: each with its own
//! `server_name`, store, client and cluster ports, routes to the other two, and JetStream with
//! `sync_interval: always` (an acknowledgement means the write is on disk on a majority).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Child;

use crate::{HarnessError, Output, nats_server_binary, spawn_child};

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    config: PathBuf,
    child: Option<Child>,
    output: Output,
}

/// A three-node JetStream cluster of the pinned nats-server; killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// A loopback port nothing listens on at the moment of the call.
fn free_port() -> Result<u16, HarnessError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config_text(name: &str, client: u16, cluster: u16, peers: &[u16], store: &Path) -> String {
    let routes: Vec<String> = peers.iter().map(|p| format!("    \"nats://127.0.0.1:{p}\"")).collect();
    format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
         cluster {{\n  name: corral-test\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [\n{}\n  ]\n}}\n",
        store.display(),
        routes.join(",\n")
    )
}

impl NatsCluster {
    pub async fn start() -> Result<NatsCluster, HarnessError> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> =
            (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_, HarnessError>>()?;
        let mut nodes = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let peers: Vec<u16> = ports.iter().filter(|(c, _)| c != client).map(|(_, cl)| *cl).collect();
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store)?;
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config, config_text(&name, *client, *cluster, &peers, &store))?;
            nodes.push(Node {
                name,
                client_port: *client,
                cluster_port: *cluster,
                config,
                child: None,
                output: Output::default(),
            });
        }
        let mut c = NatsCluster { nodes, dir };
        for i in 0..3 {
            c.launch(i)?;
        }
        for i in 0..3 {
            c.wait_ready(i).await?;
        }
        c.wait_for_jetstream().await?;
        Ok(c)
    }

    fn launch(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = &mut self.nodes[i];
        let args = vec!["-c".to_string(), node.config.display().to_string()];
        let (child, output) = spawn_child(&nats_server_binary(), &args, &[])?;
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
            let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
            if let Ok(client) = async_nats::connect(urls).await {
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
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        let client = async_nats::connect(urls).await.ok()?;
        let answer = client.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()).await.ok()?;
        let info: serde_json::Value = serde_json::from_slice(&answer.payload).ok()?;
        let leader = info["cluster"]["leader"].as_str()?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// The last lines node `i` wrote.
    pub fn tail(&self, i: usize, lines: usize) -> String {
        self.nodes[i].output.tail(lines)
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
