//! The public port, plaintext or TLS. With TLS, gRPC, gRPC-web and REST share the one port
//! (HTTP/2 or HTTP/1.1 chosen by ALPN), and the certificate and key are read again whenever
//! either file changes, so a renewed certificate (cert-manager, a Secret mount) is served
//! without a restart. Plaintext anywhere but loopback needs `--insecure`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("cannot read the TLS key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the TLS certificate and key do not go together: {0}")]
    Config(String),
    #[error(
        "refusing to serve plaintext on {0}, which is not a loopback address: give --tls-cert-file and \
         --tls-key-file, or --insecure to serve without TLS (behind a proxy that terminates it)"
    )]
    PlaintextOutsideLoopback(SocketAddr),
    #[error("give both --tls-cert-file and --tls-key-file, or neither")]
    Incomplete,
}

/// How the public port is served.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOptions {
    /// PEM certificate chain for the public port (gRPC, gRPC-web and REST over TLS); read again
    /// when it changes.
    #[arg(long, env = "CORRAL_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate; read again when it changes.
    #[arg(long, env = "CORRAL_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plaintext on an address other than loopback (as Argo CD's --insecure): for a proxy
    /// or ingress that terminates TLS in front.
    #[arg(long, env = "CORRAL_INSECURE", default_value_t = false)]
    pub insecure: bool,
}

impl TlsOptions {
    /// The certificate and key files, when both are given; an error when serving `addr` as
    /// these options say is not allowed.
    pub fn check(&self, addr: SocketAddr) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) if !addr.ip().is_loopback() && !self.insecure => Err(TlsError::PlaintextOutsideLoopback(addr)),
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        }
    }
}

/// The public port: accepted connections, in clear or after their TLS handshake.
pub enum PublicListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl PublicListener {
    /// Binds `addr` as `options` say, refusing plaintext outside loopback unless `--insecure`.
    pub async fn bind(addr: SocketAddr, options: &TlsOptions) -> Result<PublicListener, BindError> {
        match options.check(addr)? {
            None => Ok(PublicListener::Plain(TcpListener::bind(addr).await?)),
            Some((cert, key)) => {
                let config = Arc::new(RwLock::new(server_config(&cert, &key)?));
                let tcp = TcpListener::bind(addr).await?;
                Ok(PublicListener::Tls(TlsListener::start(tcp, config, cert, key)?))
            }
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            PublicListener::Plain(l) => l.local_addr(),
            PublicListener::Tls(l) => Ok(l.local),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The server side of TLS from PEM files: the chain, its key, ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificate = |message: String| TlsError::Certificate { path: cert.to_path_buf(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| certificate(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.to_path_buf(), message: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connections after their handshake. Handshakes run on their own tasks, so a client that
/// stalls in one holds up nobody else.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate and key files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

type Shared = Arc<RwLock<Arc<rustls::ServerConfig>>>;

impl TlsListener {
    fn start(tcp: TcpListener, config: Shared, cert: PathBuf, key: PathBuf) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(reload(Arc::downgrade(&config), cert, key));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let current = config.read().unwrap_or_else(|p| p.into_inner()).clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(current);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accepting task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Reads the files again whenever one changes; a pair that does not load keeps the one served.
async fn reload(config: std::sync::Weak<RwLock<Arc<rustls::ServerConfig>>>, cert: PathBuf, key: PathBuf) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stamp = || -> (Option<SystemTime>, Option<SystemTime>) { (modified(&cert), modified(&key)) };
    let mut last = stamp();
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        let Some(config) = config.upgrade() else { return };
        let now = stamp();
        if now == last {
            continue;
        }
        // A pair caught half written fails to load and is tried again at the next look.
        match server_config(&cert, &key) {
            Ok(new) => {
                last = now;
                *config.write().unwrap_or_else(|p| p.into_inner()) = new;
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; serving the previous one"),
        }
    }
}
