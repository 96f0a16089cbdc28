//! Starts real processes for tests and kills them on drop: a private `nats-server` with
//! JetStream on a free loopback port and its own temporary store, and the workspace's service
//! binaries. Readiness comes from a line the process prints, never from a fixed sleep; a failing
//! test gets the process's last log lines on stderr.

pub mod cluster;
pub mod deployment;
pub mod otlp;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

pub const NATS_VERSION: &str = "2.15.1";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} was not ready within {timeout:?}; last output:\n{logs}")]
    NotReady { program: String, timeout: Duration, logs: String },
    #[error("{program} exited before it was ready; last output:\n{logs}")]
    Exited { program: String, logs: String },
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// The pinned nats-server: `CORRAL_NATS_SERVER`, or the copy `scripts/ensure-nats-server.sh`
/// installs under `.tools/`. Never the system's (Debian's is too old) and never a running one.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join(format!(".tools/nats-server-{NATS_VERSION}/nats-server"));
    assert!(
        p.exists(),
        "nats-server {NATS_VERSION} not found at {}: run scripts/ensure-nats-server.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Output lines of a child, shared with the readers that collect them.
#[derive(Clone, Default)]
struct Output {
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Output {
    fn collect(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let out = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                out.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                out.changed.notify_waiters();
            }
            out.changed.notify_waiters();
        });
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.snapshot();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.snapshot().into_iter().find(|l| l.contains(needle))
    }

    /// Waits for a line containing `needle`, or for the child to exit, or for the timeout.
    async fn wait_for(
        &self,
        child: &mut Child,
        program: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(line) = self.find(needle) {
                return Ok(line);
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Give the readers a moment to drain what the child printed last.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(HarnessError::Exited { program: program.to_string(), logs: self.tail(60) });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::NotReady { program: program.to_string(), timeout, logs: self.tail(60) });
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

fn spawn_child(program: &Path, args: &[String], envs: &[(String, String)]) -> Result<(Child, Output), HarnessError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    // Each service's operations listener on a port of its own (the gateway's default, 8083,
    // would be taken by the first); a test that wants another gives it.
    cmd.env("CORRAL_OPS_LISTEN", "127.0.0.1:0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child =
        cmd.spawn().map_err(|source| HarnessError::Spawn { program: program.display().to_string(), source })?;
    let output = Output::default();
    if let Some(s) = child.stdout.take() {
        output.collect(s);
    }
    if let Some(s) = child.stderr.take() {
        output.collect(s);
    }
    Ok((child, output))
}

pub(crate) fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    }
}

/// A private nats-server with JetStream, on a free loopback port, with its own store.
pub struct NatsServer {
    child: Option<Child>,
    output: Output,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start() -> Result<NatsServer, HarnessError> {
        let store = tempfile::tempdir()?;
        let (child, output, port) = Self::launch(store.path(), None).await?;
        Ok(NatsServer { child: Some(child), output, port, store })
    }

    async fn launch(store: &Path, port: Option<u16>) -> Result<(Child, Output, u16), HarnessError> {
        let bin = nats_server_binary();
        let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".to_string());
        let args = vec![
            "-js".to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port_arg,
            "-sd".into(),
            store.display().to_string(),
        ];
        let (mut child, output) = spawn_child(&bin, &args, &[])?;
        let program = bin.display().to_string();
        let line = output
            .wait_for(&mut child, &program, "Listening for client connections on", Duration::from_secs(30))
            .await?;
        let port = line.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok()).ok_or_else(|| {
            HarnessError::NotReady { program: program.clone(), timeout: Duration::ZERO, logs: line.clone() }
        })?;
        output.wait_for(&mut child, &program, "Server is ready", Duration::from_secs(30)).await?;
        Ok((child, output, port))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    pub fn logs(&self) -> Vec<String> {
        self.output.snapshot()
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Stops the server and starts it again on the same port and store.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill().await;
        let (child, output, _) = Self::launch(self.store.path(), Some(self.port)).await?;
        self.child = Some(child);
        self.output = output;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- nats-server output ----\n{}", self.output.tail(100));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// A workspace binary run as a child process.
pub struct ServiceProcess {
    child: Option<Child>,
    output: Output,
    program: String,
    ready_line: String,
}

impl ServiceProcess {
    /// Starts `program` and waits for a line containing `ready` on stdout or stderr.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        ready: &str,
        timeout: Duration,
    ) -> Result<ServiceProcess, HarnessError> {
        let (mut child, output) = spawn_child(program, args, envs)?;
        let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ready_line = output.wait_for(&mut child, &name, ready, timeout).await?;
        Ok(ServiceProcess { child: Some(child), output, program: name, ready_line })
    }

    pub fn ready_line(&self) -> String {
        self.ready_line.clone()
    }

    pub fn logs(&self) -> Vec<String> {
        self.output.snapshot()
    }

    /// Where the process serves /metrics, /healthz and /readyz (from its `operations on` line).
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.output.snapshot().iter().find_map(|line| parse_ops_addr(line))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether the process has ended by itself (never the case for a service that rides out
    /// faults), with its exit status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub async fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "KILL");
            let _ = c.wait().await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.program, self.output.tail(100));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// The address in a "NAME operations on 127.0.0.1:PORT" line.
pub fn parse_ops_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(" operations on ")? + " operations on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The address in a "listening on 127.0.0.1:PORT" line.
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.trim_end_matches([',', '.']).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_lines() {
        assert_eq!(parse_listen_addr("listening on 127.0.0.1:8080"), "127.0.0.1:8080".parse().ok());
        assert_eq!(parse_listen_addr("x listening on 127.0.0.1:1 more"), "127.0.0.1:1".parse().ok());
        assert_eq!(parse_listen_addr("nothing here"), None);
    }

    #[tokio::test]
    async fn private_nats_server_keeps_jetstream_data_across_restart() {
        let mut nats = NatsServer::start().await.expect("start");
        assert_ne!(nats.port(), 4222, "never the shared default port");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        js.publish("t.a", "hello".into()).await.expect("publish").await.expect("ack");
        nats.restart().await.expect("restart");
        let client = async_nats::connect(nats.url()).await.expect("reconnect");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("T").await.expect("stream survives");
        assert_eq!(stream.info().await.expect("info").state.messages, 1);
    }
}
