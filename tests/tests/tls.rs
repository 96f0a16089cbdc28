//! The public port over TLS: REST, gRPC and gRPC-web on one port (HTTP/2 by ALPN), checked by
//! clients that verify the certificate against the test's own authority; a renewed certificate
//! served without a restart; plaintext outside loopback refused unless asked for.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_test_harness::ServiceProcess;
use corral_test_harness::deployment::workspace_bin;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1 signed by it.
struct Pki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn new_pki(name: &str) -> Pki {
    let authority = corral_test_harness::pki::TestAuthority::new(name).expect("authority");
    let (cert_pem, key_pem) = authority.server_certificate().expect("server certificate");
    let ca = CertificateDer::from_pem_slice(authority.ca_pem.as_bytes()).expect("ca der");
    Pki { ca, cert_pem, key_pem }
}

fn write_pki(pki: &Pki, dir: &Path) {
    // Written beside and renamed into place, as a Secret mount swaps its files.
    for (name, text) in [("tls.crt", &pki.cert_pem), ("tls.key", &pki.key_pem)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

fn client_config(trusted: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// One HTTP/1.1 request over TLS; the status and the body.
async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut tls = connect(addr, config).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(request.as_bytes()).await?;
    tls.write_all(body).await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let start = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(answer.len());
    Ok((status, answer[start..].to_vec()))
}

async fn rest_version(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<(u16, Vec<u8>)> {
    https(addr, config, "GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", b"").await
}

async fn start_all_in_one(dir: &Path, tls: &Path) -> (ServiceProcess, SocketAddr) {
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.display().to_string(),
        "--tls-cert-file",
        &tls.join("tls.crt").display().to_string(),
        "--tls-key-file",
        &tls.join("tls.key").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn_all_in_one(&args).await
}

/// The all-in-one with `args`, probing and cache syncing off (nothing to reach), and its address.
async fn spawn_all_in_one(args: &[String]) -> (ServiceProcess, SocketAddr) {
    let env = [
        ("CORRAL_PROBE_INTERVAL_SECONDS".to_string(), "0".to_string()),
        ("CORRAL_CACHE_CHECK_SECONDS".to_string(), "0".to_string()),
    ];
    let p = ServiceProcess::spawn(&workspace_bin("corral"), args, &env, "listening on", Duration::from_secs(60))
        .await
        .expect("corral");
    let addr = corral_test_harness::parse_listen_addr(&p.ready_line()).expect("addr");
    (p, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_serves_rest_grpc_and_grpc_web_over_tls_and_reloads_its_certificate() {
    let data = tempfile::tempdir().expect("tempdir");
    let tls_dir = tempfile::tempdir().expect("tempdir");
    let first = new_pki("corral test authority one");
    write_pki(&first, tls_dir.path());
    let (_p, addr) = start_all_in_one(data.path(), tls_dir.path()).await;

    // REST over HTTP/1.1, the certificate checked against the authority.
    let (status, body) = rest_version(addr, client_config(&first.ca, &[b"http/1.1"])).await.expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let version: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(version["Version"].is_string(), "{version}");

    // A client that does not trust the authority gets no answer.
    let stranger = new_pki("someone else");
    let refused = rest_version(addr, client_config(&stranger.ca, &[b"http/1.1"])).await;
    assert!(refused.is_err(), "a certificate from an authority the client does not trust was accepted");

    // Plaintext on the TLS port gets nothing either.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    plain.write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "plaintext answered on the TLS port");

    // gRPC over HTTP/2, negotiated by ALPN.
    let config = client_config(&first.ca, &[b"h2"]);
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let tls = connect(addr, config).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 by ALPN");
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("https://localhost")
        .connect_with_connector(connector)
        .await
        .expect("grpc over tls");
    let version = corral_proto::version::version_service_client::VersionServiceClient::new(channel)
        .version(())
        .await
        .expect("gRPC Version over TLS")
        .into_inner();
    assert!(!version.version.is_empty());

    // gRPC-web over HTTP/1.1: an empty message in one frame.
    let frame = [0u8, 0, 0, 0, 0];
    let request = format!(
        "POST /version.VersionService/Version HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        frame.len()
    );
    let (status, body) =
        https(addr, client_config(&first.ca, &[b"http/1.1"]), &request, &frame).await.expect("grpc-web");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("grpc-status:0"), "{:?}", String::from_utf8_lossy(&body));

    // A renewed certificate from another authority is served without a restart.
    let second = new_pki("corral test authority two");
    let renewed = Instant::now();
    write_pki(&second, tls_dir.path());
    loop {
        if rest_version(addr, client_config(&second.ca, &[b"http/1.1"])).await.is_ok_and(|(s, _)| s == 200) {
            break;
        }
        assert!(renewed.elapsed() < Duration::from_secs(15), "the renewed certificate is not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("renewed certificate served {:.1} s after it was written", renewed.elapsed().as_secs_f64());
    assert!(
        rest_version(addr, client_config(&first.ca, &[b"http/1.1"])).await.is_err(),
        "the old certificate is still served"
    );
}

async fn refused_at_start(program: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env = [
        ("CORRAL_SEAL_KEY".to_string(), corral_test_harness::deployment::new_seal_key()),
        // The error itself, not the backtrace of where main returned it.
        ("RUST_BACKTRACE".to_string(), "0".to_string()),
    ];
    match ServiceProcess::spawn(&workspace_bin(program), &args, &env, "listening on", Duration::from_secs(30)).await {
        Ok(_) => panic!("{program} {args:?} started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_outside_loopback_needs_insecure() {
    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().display().to_string();
    let all_in_one = refused_at_start("corral", &["--listen", "0.0.0.0:0", "--data-dir", &data]).await;
    assert!(all_in_one.contains("refusing to serve plaintext on 0.0.0.0:0"), "{all_in_one}");
    // The gateway refuses before it reaches for NATS (nothing listens at this URL).
    let gateway =
        refused_at_start("corral-gateway", &["--listen", "0.0.0.0:0", "--nats-url", "nats://127.0.0.1:1"]).await;
    assert!(gateway.contains("refusing to serve plaintext"), "{gateway}");
    let half =
        refused_at_start("corral", &["--listen", "127.0.0.1:0", "--data-dir", &data, "--tls-cert-file", "x.pem"]).await;
    assert!(half.contains("give both --tls-cert-file and --tls-key-file"), "{half}");

    // With --insecure it serves (on every address, here reached through loopback).
    let args: Vec<String> =
        ["--listen", "0.0.0.0:0", "--insecure", "--data-dir", &data].iter().map(|s| s.to_string()).collect();
    let (_p, addr) = spawn_all_in_one(&args).await;
    let port = addr.port();
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/api/version")).await.expect("get");
    assert!(answer.status().is_success());
}
