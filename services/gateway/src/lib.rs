//! The gateway: the only public door. gRPC (`cluster.ClusterService`) and REST (`/api/v1/...`)
//! on one port, both mapped onto the same calls to the registry.

pub mod calls;
pub mod error;
pub mod grpc;
pub mod rest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use corral_proto::cluster::cluster_service_server::ClusterServiceServer;
use corral_registry::RegistryApi;
use tonic::Code;
use tracing::Instrument;

pub use calls::{CallContext, Clusters};
pub use error::ApiError;

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body (REST) or message (gRPC).
    pub max_body_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { max_body_bytes: DEFAULT_MAX_BODY_BYTES }
    }
}

/// Establishes the call context (trace, correlation id) and the request span, and logs access.
async fn context_layer(mut req: Request, next: Next) -> Response {
    // Read headers in a scope of their own: a borrow of the request (whose body is not Sync)
    // must not live across the await below.
    let (traceparent, correlation_id) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let traceparent = corral_telemetry::traceparent_or_new(header("traceparent").as_deref());
        let correlation_id = header("x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        (traceparent, correlation_id)
    };
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        trace_id = corral_telemetry::trace_id(&traceparent),
        correlation_id = %correlation_id,
    );
    req.extensions_mut().insert(CallContext { traceparent, correlation_id, actor: String::new() });
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| tracing::debug!(status, elapsed_us, "served"));
    response
}

/// tonic reports a message over the size limit as OutOfRange; Argo CD clients (and the REST
/// side) see an over-long request as ResourceExhausted.
async fn grpc_size_limit_status(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

async fn not_found() -> Response {
    ApiError::new(Code::NotFound, "no such route").into_response()
}

/// The whole public API as one router: REST routes, gRPC services, and the shared layers.
pub fn app(api: Arc<dyn RegistryApi>, config: &GatewayConfig) -> Router {
    let clusters = Clusters::new(api);
    let grpc = ClusterServiceServer::new(grpc::GrpcClusters { clusters: clusters.clone() })
        .max_decoding_message_size(config.max_body_bytes);
    let grpc_router = tonic::service::Routes::new(grpc).into_axum_router().layer(from_fn(grpc_size_limit_status));
    let rest_router = rest::router(rest::RestState { clusters, max_body_bytes: config.max_body_bytes });
    rest_router.merge(grpc_router).fallback(not_found).layer(from_fn(context_layer))
}

/// Serves `app` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Configuration of the stand-alone gateway process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-gateway", about = "The public API gateway (NATS mode)")]
pub struct ServiceConfig {
    /// NATS server URL.
    #[arg(long, env = "CORRAL_NATS_URL")]
    pub nats_url: String,
    /// Address to listen on for gRPC and REST.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How long to wait for a registry replica to answer, in milliseconds.
    #[arg(long, env = "CORRAL_REGISTRY_TIMEOUT_MS", default_value_t = 15_000)]
    pub registry_timeout_ms: u64,
    /// JetStream stream name.
    #[arg(long, env = "CORRAL_STREAM", default_value = "CORRAL")]
    pub stream: String,
}

/// Runs the gateway against NATS until `shutdown` resolves.
pub async fn run(config: ServiceConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let client = async_nats::connect(&config.nats_url).await?;
    let timeout = Duration::from_millis(config.registry_timeout_ms);
    let commands = Arc::new(corral_registry::nats_rpc::NatsRegistryClient::new(client.clone(), timeout));
    // Reads are answered from this replica's own view of the log: no hop to a registry.
    let log_config = corral_registry::NatsLogConfig { stream: config.stream.clone(), ..Default::default() };
    let log: Arc<dyn corral_registry::EventLog> = Arc::new(corral_registry::NatsLog::new(client, log_config).await?);
    let view_db = corral_registry::open_projection_db(None)?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let view_stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let queries = corral_registry::start_view(log, &view_db, timeout, view_stop).await?;
    let api = Arc::new(corral_registry::SplitApi { commands, queries });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    tracing::info!(%addr, "gateway listening");
    serve(listener, app(api, &GatewayConfig { max_body_bytes: config.max_body_bytes }), shutdown).await?;
    let _ = stop_tx.send(true);
    Ok(())
}
