//! What every binary shares: the options for NATS, the stream, the sealing key and logging (one
//! set of clap arguments, each also an environment variable, all listed by `--help`), connecting
//! to NATS and opening the log on it, and the line a process prints once it is ready.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_event_log::{EventLog, LogError, NatsLog, NatsLogConfig};
use corral_secrets::{SealingKey, SecretsError};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("invalid NATS URL {url:?}: {message}")]
    NatsUrl { url: String, message: String },
    #[error("{0}")]
    NatsAuth(String),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Key(#[from] SecretsError),
    #[error("cannot listen for operations on {addr}: {source}")]
    Ops { addr: SocketAddr, source: std::io::Error },
}

/// The stream every service follows, and how durable it is made when a process finds it missing.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamOptions {
    /// JetStream stream name.
    #[arg(long, env = "CORRAL_STREAM", default_value = "CORRAL")]
    pub stream: String,
    /// Replicas of the stream, should this process be the one to create it (3 on a three-node
    /// NATS cluster). Every kind of service creates it when it is missing, so give all the same.
    #[arg(long, env = "CORRAL_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

impl StreamOptions {
    /// The log on `client`: the stream, created with these settings if missing.
    pub async fn open(&self, client: async_nats::Client) -> Result<Arc<dyn EventLog>, ProcessError> {
        let config =
            NatsLogConfig { stream: self.stream.clone(), replicas: self.stream_replicas, ..Default::default() };
        open_log(client, config).await
    }
}

/// The public stream of cluster changes.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsOptions {
    /// How long the public event stream keeps events (CORRAL_EVENTS on NATS, <data-dir>/events
    /// embedded): a watch can resume from any revision this recent. A number with s, m, h or d.
    #[arg(long, env = "CORRAL_EVENTS_MAX_AGE", default_value = "7d", value_parser = parse_age)]
    pub events_max_age: Duration,
    /// A watch that asked for bookmarks gets one after this many seconds without a matching event.
    #[arg(long, env = "CORRAL_EVENTS_BOOKMARK_SECONDS", default_value_t = 30)]
    pub events_bookmark_seconds: u64,
}

impl EventsOptions {
    pub fn bookmark_after(&self) -> Duration {
        Duration::from_secs(self.events_bookmark_seconds.max(1))
    }

    /// The public event stream on `client`, created with `replicas` if missing, its retention
    /// set to this one.
    pub async fn open(&self, client: async_nats::Client, replicas: usize) -> Result<Arc<dyn EventLog>, ProcessError> {
        let config = NatsLogConfig {
            stream: corral_events::public::STREAM.into(),
            subjects: vec![corral_events::public::ALL_SUBJECTS.into()],
            replicas,
            max_age: Some(self.events_max_age),
        };
        open_log(client, config).await
    }
}

/// Opens (or creates) the stream of `config`, trying again while JetStream does not answer: a
/// cluster without a quorum, or one electing a leader, serves again in seconds, and a service
/// that gave up would need someone to start it again.
async fn open_log(client: async_nats::Client, config: NatsLogConfig) -> Result<Arc<dyn EventLog>, ProcessError> {
    let what = format!("open the stream {}", config.stream);
    let unavailable = |e: &LogError| matches!(e, LogError::Unavailable(_));
    let log = retry_while(&what, unavailable, || NatsLog::new(client.clone(), config.clone())).await?;
    Ok(Arc::new(log))
}

/// Runs `step` until it succeeds or fails with an error `transient` does not accept (one that
/// trying again would not mend), waiting from 100 ms up to 5 s between tries and saying so in
/// the log.
pub async fn retry_while<T, E, F, Fut>(what: &str, transient: impl Fn(&E) -> bool, mut step: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match step().await {
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot {what} yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// A duration as `90s`, `30m`, `24h` or `7d` (a bare number is seconds).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a number with s, m, h or d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m, h or d)")),
    };
    if n == 0 {
        return Err(format!("{s:?}: must be more than zero"));
    }
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{s:?}: too long"))
}

/// A service's NATS connection and stream.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsOptions {
    /// NATS server URLs, comma-separated (nats://a:4222,nats://b:4222); the client tries each.
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: String,
    #[command(flatten)]
    pub auth: NatsAuthOptions,
    #[command(flatten)]
    pub stream: StreamOptions,
}

impl NatsOptions {
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ProcessError> {
        connect(&self.nats_url, name, &self.auth).await
    }

    /// The connection and the log on it.
    pub async fn connect_log(&self, name: &str) -> Result<(async_nats::Client, Arc<dyn EventLog>), ProcessError> {
        let client = self.connect(name).await?;
        let log = self.stream.open(client.clone()).await?;
        Ok((client, log))
    }
}

/// How a service proves itself to NATS and checks the servers: TLS (the servers' authority, a
/// client certificate) and at most one of user and password, token, credentials file or nkey.
#[derive(Clone, Default, clap::Args)]
pub struct NatsAuthOptions {
    /// PEM file of the authority that signed the NATS servers' certificates; with it the
    /// connection requires TLS.
    #[arg(long, env = "CORRAL_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (`verify: true`).
    #[arg(long, env = "CORRAL_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "CORRAL_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// NATS user name (with a password).
    #[arg(long, env = "CORRAL_NATS_USER")]
    pub nats_user: Option<String>,
    /// The NATS user's password. Give it in the environment or a file, not on the command line.
    #[arg(long, env = "CORRAL_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// File holding the NATS user's password.
    #[arg(long, env = "CORRAL_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A NATS authentication token. Give it in the environment or a file, not on the command
    /// line.
    #[arg(long, env = "CORRAL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// File holding a NATS authentication token.
    #[arg(long, env = "CORRAL_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// NATS credentials file (.creds: a user JWT and its nkey seed, as `nsc` writes it).
    #[arg(long, env = "CORRAL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey seed (SU...).
    #[arg(long, env = "CORRAL_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuthOptions")
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &self.nats_password.as_ref().map(|_| "[redacted]"))
            .field("nats_password_file", &self.nats_password_file)
            .field("nats_token", &self.nats_token.as_ref().map(|_| "[redacted]"))
            .field("nats_token_file", &self.nats_token_file)
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey_file", &self.nats_nkey_file)
            .finish()
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String, ProcessError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProcessError::NatsAuth(format!("cannot read the {what} file {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

impl NatsAuthOptions {
    /// `options` with this TLS and these credentials.
    async fn apply(&self, mut options: async_nats::ConnectOptions) -> Result<async_nats::ConnectOptions, ProcessError> {
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        let password = match (&self.nats_password, &self.nats_password_file) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(file)) => Some(read_secret(file, "NATS password")?),
            _ => None,
        };
        let token = match (&self.nats_token, &self.nats_token_file) {
            (Some(t), _) if !t.is_empty() => Some(t.clone()),
            (_, Some(file)) => Some(read_secret(file, "NATS token")?),
            _ => None,
        };
        let given = [password.is_some(), token.is_some(), self.nats_creds.is_some(), self.nats_nkey_file.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ProcessError::NatsAuth(
                "give one of a NATS password, token, credentials file or nkey file".into(),
            ));
        }
        match (&self.nats_user, password) {
            (Some(user), Some(password)) => options = options.user_and_password(user.clone(), password),
            (None, None) => {}
            _ => return Err(ProcessError::NatsAuth("a NATS user needs a password, and a password a user".into())),
        }
        if let Some(token) = token {
            options = options.token(token);
        }
        if let Some(file) = &self.nats_nkey_file {
            options = options.nkey(read_secret(file, "nkey seed")?);
        }
        if let Some(creds) = &self.nats_creds {
            options = options.credentials_file(creds).await.map_err(|e| {
                ProcessError::NatsAuth(format!("cannot read the NATS credentials file {}: {e}", creds.display()))
            })?;
        }
        Ok(options)
    }
}

/// How often a service pings its NATS server.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How long one attempt to connect to a NATS server may take. A frozen or partitioned server's
/// kernel still accepts the TCP connection but nothing answers it: each attempt on it costs this
/// much before the client tries another server (async-nats' default is 5 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the NATS servers in `urls` (comma-separated) as `auth` says, naming the
/// connection `name`. A server that is down at start is retried rather than refused: the
/// others, or it, will answer. Replies come on `_INBOX.<name>.>`, so a server's permissions can
/// let each service read its own replies only.
pub async fn connect(urls: &str, name: &str, auth: &NatsAuthOptions) -> Result<async_nats::Client, ProcessError> {
    let addrs = server_addrs(urls)?;
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(format!("_INBOX.{name}"))
        .retry_on_initial_connect()
        // A request nobody answers (a JetStream API call while the stream has no leader) is
        // given up soon, so that the caller's retry reaches the new leader.
        .request_timeout(Some(corral_event_log::JETSTREAM_TIMEOUT))
        // The client gives a server up after three unanswered pings: with async-nats' 60 s a
        // service on a node cut off by a partition stood still for three minutes before it
        // moved to another node.
        .ping_interval(PING_INTERVAL)
        .connection_timeout(CONNECT_TIMEOUT);
    Ok(auth.apply(options).await?.connect(addrs).await?)
}

fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, ProcessError> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().map_err(|e: std::io::Error| ProcessError::NatsUrl { url: u.into(), message: e.to_string() }))
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(ProcessError::NatsUrl { url: urls.into(), message: "no URL given".into() });
    }
    Ok(addrs)
}

/// What every service on NATS takes: its connection and stream, the sealing key, logging, and
/// the operations listener.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceOptions {
    #[command(flatten)]
    pub nats: NatsOptions,
    #[command(flatten)]
    pub seal_key: SealKeyOptions,
    #[command(flatten)]
    pub log: LogOptions,
    #[command(flatten)]
    pub ops: OpsOptions,
}

impl ServiceOptions {
    /// The sealing key, the NATS connection named `name`, and the log on it. `readiness` from
    /// then on requires the connection to be up.
    pub async fn connect(
        &self,
        name: &str,
        readiness: &Readiness,
    ) -> Result<(Arc<SealingKey>, async_nats::Client, Arc<dyn EventLog>), ProcessError> {
        let key = self.seal_key.load(None)?;
        let client = self.nats.connect(name).await?;
        require_connection(readiness, &client);
        let log = self.nats.stream.open(client.clone()).await?;
        Ok((key, client, log))
    }
}

/// `readiness` requires `client` to be connected: a service whose NATS server went away is not
/// ready until the client has reconnected (to it or to another node).
pub fn require_connection(readiness: &Readiness, client: &async_nats::Client) {
    let client = client.clone();
    readiness
        .require("connected to NATS", move || client.connection_state() == async_nats::connection::State::Connected);
}

pub use corral_telemetry::ops::Readiness;

/// Argo CD's API server metrics port, where the gateway and the all-in-one answer by default.
pub const DEFAULT_OPS_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8083);

/// Where a service answers `/metrics` (Prometheus), `/healthz` (alive) and `/readyz` (caught up
/// with the log and connected).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OpsOptions {
    /// Address of the operations listener: /metrics (Prometheus), /healthz and /readyz. The
    /// gateway and the all-in-one listen on 127.0.0.1:8083 unless told otherwise; the other
    /// services only when given one.
    #[arg(long, env = "CORRAL_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
}

impl OpsOptions {
    /// Starts the operations listener of `service` on the address given, else on `default`, and
    /// says where on stdout (`NAME operations on ADDR`). `None` when there is no address.
    pub async fn start(
        &self,
        service: &str,
        default: Option<SocketAddr>,
        readiness: &Readiness,
    ) -> Result<Option<SocketAddr>, ProcessError> {
        let Some(addr) = self.ops_listen.or(default) else { return Ok(None) };
        let bound = corral_telemetry::ops::start(addr, readiness.clone())
            .await
            .map_err(|source| ProcessError::Ops { addr, source })?;
        println!("{}", ops_line(service, bound));
        tracing::info!(service, addr = %bound, "operations listener (/metrics, /healthz, /readyz)");
        Ok(Some(bound))
    }
}

/// The line a process prints on stdout once its operations listener is bound.
pub fn ops_line(service: &str, addr: SocketAddr) -> String {
    format!("{service} operations on {addr}")
}

/// The key that seals credentials in events.
#[derive(Debug, Clone, clap::Args)]
pub struct SealKeyOptions {
    /// The sealing key, base64 of 32 bytes. Give it in the environment, not on the command line;
    /// it wins over the file.
    #[arg(long, env = "CORRAL_SEAL_KEY", hide_env_values = true)]
    pub seal_key: Option<String>,
    /// File holding the sealing key (base64).
    #[arg(long, env = "CORRAL_SEAL_KEY_FILE")]
    pub seal_key_file: Option<PathBuf>,
}

impl SealKeyOptions {
    /// The key; with `generate_at`, a key file made there (mode 0600) when none is given.
    pub fn load(&self, generate_at: Option<&Path>) -> Result<Arc<SealingKey>, ProcessError> {
        if let Some(k) = self.seal_key.as_deref().filter(|k| !k.trim().is_empty()) {
            return Ok(Arc::new(SealingKey::from_base64(k)?));
        }
        let file = self.seal_key_file.as_deref().or(generate_at);
        Ok(Arc::new(SealingKey::load_file(file, generate_at.is_some())?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the process logs (to stderr; stdout carries only the readiness line).
#[derive(Debug, Clone, clap::Args)]
pub struct LogOptions {
    /// Log line format. What is logged is chosen with RUST_LOG (default info).
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogOptions {
    pub fn init(&self, service: &str) -> corral_telemetry::Guard {
        corral_telemetry::init(service, self.log_format == LogFormat::Json)
    }
}

/// The line a process prints on stdout once it serves: `NAME ready`, with the address it listens
/// on when it has one. Tests and orchestration wait for it.
pub fn ready_line(service: &str, listening: Option<SocketAddr>) -> String {
    match listening {
        Some(addr) => format!("{service} ready, listening on {addr}"),
        None => format!("{service} ready"),
    }
}

/// Marks `readiness` caught up, prints [`ready_line`] and logs it.
pub fn announce_ready(service: &str, listening: Option<SocketAddr>, readiness: &Readiness) {
    readiness.caught_up();
    println!("{}", ready_line(service, listening));
    match listening {
        Some(addr) => tracing::info!(service, %addr, "ready"),
        None => tracing::info!(service, "ready"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn nats_urls_are_a_comma_separated_list() {
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        let three = server_addrs("nats://a:4222, nats://b:4223,nats://c:4224").unwrap();
        assert_eq!(three.len(), 3);
        assert_eq!(three[1].port(), 4223);
        assert!(matches!(server_addrs(""), Err(ProcessError::NatsUrl { .. })));
        assert!(matches!(server_addrs("nats://a:notaport"), Err(ProcessError::NatsUrl { .. })));
    }

    #[test]
    fn nats_secrets_stay_out_of_debug_output() {
        let auth = NatsAuthOptions {
            nats_user: Some("corral-registry".into()),
            nats_password: Some("hunter2-canary".into()),
            nats_token: Some("token-canary".into()),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("corral-registry") && shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[tokio::test]
    async fn nats_credentials_are_one_kind_and_a_user_goes_with_a_password() {
        let two = NatsAuthOptions {
            nats_user: Some("u".into()),
            nats_password: Some("p".into()),
            nats_token: Some("t".into()),
            ..Default::default()
        };
        let e = two.apply(async_nats::ConnectOptions::new()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("give one of"), "{e}");
        let alone = NatsAuthOptions { nats_user: Some("u".into()), ..Default::default() };
        let e = alone.apply(async_nats::ConnectOptions::new()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("needs a password"), "{e}");
        let missing = NatsAuthOptions { nats_token_file: Some("/nonexistent/token".into()), ..Default::default() };
        let e = missing.apply(async_nats::ConnectOptions::new()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cannot read the NATS token file /nonexistent/token"), "{e}");
    }

    #[test]
    fn the_ready_line() {
        assert_eq!(ready_line("corral-registry", None), "corral-registry ready");
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(ready_line("corral", Some(addr)), "corral ready, listening on 127.0.0.1:8080");
    }
}
