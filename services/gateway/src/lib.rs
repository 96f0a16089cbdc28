//! The gateway: the only public door. gRPC (`cluster.ClusterService`) and REST (`/api/v1/...`)
//! on one port, both mapped onto the same calls to the registry.

pub mod accounts;
pub mod accounts_grpc;
pub mod accounts_rest;
pub mod calls;
pub mod error;
pub mod grpc;
mod limit;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod routes;
pub mod tls;
pub mod version;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use corral_auth::Auth;
use corral_proto::account::account_service_server::AccountServiceServer;
use corral_proto::cluster::cluster_service_server::ClusterServiceServer;
use corral_proto::session::session_service_server::SessionServiceServer;
use corral_proto::version::version_service_server::VersionServiceServer;
use corral_service_api::{ClusterCommands, ClusterQueries, CredentialRotation};
use tonic::Code;
use tracing::Instrument;

pub use calls::{CallContext, Clusters};
pub use error::ApiError;
pub use tls::{PublicListener, TlsOptions};

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body (REST) or message (gRPC).
    pub max_body_bytes: usize,
    /// What `/healthz` on the public port and the gRPC health service report.
    pub readiness: corral_process::Readiness,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let readiness = corral_process::Readiness::new();
        readiness.caught_up();
        GatewayConfig { max_body_bytes: DEFAULT_MAX_BODY_BYTES, readiness }
    }
}

/// Establishes the call context (correlation id) and the request's server span, a child of the
/// caller's trace context when it sent one, and logs access.
async fn context_layer(mut req: Request, next: Next) -> Response {
    // Read headers in a scope of their own: a borrow of the request (whose body is not Sync)
    // must not live across the await below.
    let (parent, correlation_id) = {
        let parent = corral_telemetry::trace::from_http(req.headers());
        let correlation_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        (parent, correlation_id)
    };
    let (method, path) = (metrics::method_name(req.method()), req.uri().path().to_string());
    let grpc = metrics::grpc_method_of(&path);
    // Named for the route once it is known (OpenTelemetry's `{method} {http.route}`, or the
    // gRPC method), never for the raw path, which holds cluster names.
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.request.method_original = tracing::field::Empty,
        url.path = path.as_str(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        rpc.system = tracing::field::Empty,
        rpc.service = tracing::field::Empty,
        rpc.method = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        correlation_id = correlation_id.as_str(),
    );
    corral_telemetry::trace::set_parent(&span, parent);
    if method == metrics::OTHER_METHOD {
        span.record("http.request.method_original", req.method().as_str());
    }
    if let Some((service, rpc_method)) = grpc {
        corral_telemetry::trace::rename(&span, || format!("{service}/{rpc_method}"));
        span.record("rpc.system", "grpc");
        span.record("rpc.service", service);
        span.record("rpc.method", rpc_method);
    }
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    req.extensions_mut().insert(CallContext { correlation_id, source, ..Default::default() });
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let route = metrics::route_of(&response, &path);
    if grpc.is_none() {
        // `HTTP` for a method HTTP does not define, as the conventions name such a span.
        let named = if method == metrics::OTHER_METHOD { "HTTP" } else { method };
        corral_telemetry::trace::rename(&span, || format!("{named} {route}"));
        span.record("http.route", route.as_str());
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
    }
    metrics::http_request(method, route, status, started);
    let elapsed_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| tracing::debug!(status, elapsed_us, "served"));
    response
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Who may make a call.
#[derive(PartialEq)]
enum Access {
    /// Anyone: logging in, the health checks of load balancers and orchestrators, and the
    /// descriptions of the API (reflection, the OpenAPI document), which hold nothing that is not
    /// in the published `.proto` files.
    Public,
    /// Anyone, but a valid token tells more (the version, as in Argo CD); an invalid one is
    /// ignored.
    TokenOptional,
    Token,
}

fn access(req: &Request) -> Access {
    let path = req.uri().path();
    if path == "/session.SessionService/Create"
        || (path == "/api/v1/session" && req.method() == http::Method::POST)
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path == openapi::DOCUMENT_PATH
        || path == HEALTHZ_PATH
    {
        Access::Public
    } else if path == "/api/version" || path == "/version.VersionService/Version" {
        Access::TokenOptional
    } else {
        Access::Token
    }
}

fn unauthenticated(grpc: bool, message: &str) -> Response {
    if grpc {
        return tonic::Status::unauthenticated(message.to_string()).into_http();
    }
    ApiError::new(Code::Unauthenticated, message).into_response()
}

/// Where a token can come from, as in Argo CD. A cookie marks a browser.
enum TokenSource {
    Header(String),
    Cookie(String),
}

fn find_token(req: &Request) -> Option<TokenSource> {
    let headers = req.headers();
    if let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v);
        return Some(TokenSource::Header(token.trim().to_string()));
    }
    if let Some(v) = headers.get("token").and_then(|v| v.to_str().ok()) {
        return Some(TokenSource::Header(v.trim().to_string()));
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == accounts::TOKEN_COOKIE)
        .map(|(_, v)| TokenSource::Cookie(v.to_string()))
}

/// Authenticates every call but login: verifies the token and records who is calling.
async fn auth_layer(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let access = access(&req);
    if access == Access::Public {
        return next.run(req).await;
    }
    let grpc = is_grpc(&req);
    let (principal, token) = if auth.disabled() {
        (auth.anonymous_admin(), None)
    } else if access == Access::TokenOptional {
        let token = match find_token(&req) {
            Some(TokenSource::Header(t) | TokenSource::Cookie(t)) => t,
            None => return next.run(req).await,
        };
        match auth.verify(&token).await {
            Ok(p) => (p, None),
            Err(_) => return next.run(req).await,
        }
    } else {
        let (token, from_cookie) = match find_token(&req) {
            Some(TokenSource::Header(t)) => (t, false),
            Some(TokenSource::Cookie(t)) => (t, true),
            None => return unauthenticated(grpc, "no session information"),
        };
        let principal = match auth.verify(&token).await {
            Ok(p) => (p, Some(calls::BearerToken::new(&token))),
            Err(e) => {
                let e = ApiError::from(e);
                if e.code == Code::Unauthenticated {
                    return unauthenticated(grpc, &e.message);
                }
                return if grpc { tonic::Status::from(e).into_http() } else { e.into_response() };
            }
        };
        // A browser sends cookies with cross-site form posts; Argo CD refuses non-JSON writes for
        // them. Header-token API clients are not affected, and a bad cookie is refused as any bad
        // token is, first.
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if from_cookie && !grpc && req.method() != http::Method::GET && req.method() != http::Method::HEAD && !json {
            return ApiError::new(Code::InvalidArgument, "Content-Type must be application/json")
                .into_response_with_status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        principal
    };
    if let Some(ctx) = req.extensions_mut().get_mut::<CallContext>() {
        ctx.actor = principal.account.clone();
        ctx.principal = Some(principal);
        ctx.token = token;
    }
    next.run(req).await
}

/// Errors the router or an extractor answers by itself (405 for a known path and another method,
/// 400 for a path segment that is not UTF-8, ...) come with an empty or plain-text body: they get
/// Argo CD's JSON error body like every other REST error, keeping their status and headers
/// (`Allow` on a 405).
async fn json_error_bodies(req: Request, next: Next) -> Response {
    if is_grpc(&req) {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok());
    let message = match text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = corral_api_json::error_body(error::code_for_status(status) as i32, &message).to_string();
    parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn not_found() -> Response {
    ApiError::new(Code::NotFound, "no such route").into_response()
}

/// The whole public API as one router: REST routes, gRPC services, and the shared layers.
pub fn app(
    commands: Arc<dyn ClusterCommands>,
    queries: Arc<dyn ClusterQueries>,
    rotation: Arc<dyn CredentialRotation>,
    auth: Arc<Auth>,
    hub: Arc<corral_watch::Hub>,
    config: &GatewayConfig,
) -> Router {
    let clusters = Clusters::new(commands, queries, rotation, auth.clone());
    let watches = watch::Watches { hub, auth: auth.clone() };
    let accounts = accounts::Accounts { auth: auth.clone() };
    metrics::register_metrics();
    let limit = config.max_body_bytes;
    let readiness = config.readiness.clone();
    // Beyond what the message limit layer lets through, so that it is the one that refuses.
    let tonic_limit = limit.saturating_add(1);
    let grpc_clusters = ClusterServiceServer::new(grpc::GrpcClusters { clusters: clusters.clone() })
        .max_decoding_message_size(tonic_limit);
    let grpc_accounts =
        AccountServiceServer::new(accounts_grpc::GrpcAccounts(accounts.clone())).max_decoding_message_size(tonic_limit);
    let grpc_sessions =
        SessionServiceServer::new(accounts_grpc::GrpcSessions(accounts.clone())).max_decoding_message_size(tonic_limit);
    let grpc_version = VersionServiceServer::new(version::GrpcVersion);
    let grpc_router = tonic::service::Routes::new(grpc_clusters)
        .add_service(grpc_accounts)
        .add_service(grpc_sessions)
        .add_service(grpc_version)
        .add_service(health_service(config.readiness.clone()))
        .add_service(reflection_v1())
        .add_service(reflection_v1alpha())
        .into_axum_router()
        .merge(
            Router::new().route(grpc::LIST_PATH, axum::routing::post(grpc::list)).with_state((clusters.clone(), limit)),
        )
        .merge(
            Router::new()
                .route(watch::WATCH_PATH, axum::routing::post(watch::watch_grpc))
                .with_state((watches.clone(), limit)),
        )
        .layer(from_fn(move |req, next| limit::grpc_message_limit(limit, req, next)));
    let rest_router = routes::router(routes::RestState {
        clusters: rest::ClusterRest { clusters, max_body_bytes: limit },
        accounts: accounts_rest::RestAccounts { accounts, max_body_bytes: limit },
        watches,
    })
    .route(openapi::DOCUMENT_PATH, axum::routing::get(openapi::serve))
    .route(HEALTHZ_PATH, axum::routing::get(move || async move { readiness.response() }))
    .route_layer(from_fn(metrics::route_layer));
    let app = rest_router
        .merge(grpc_router)
        .fallback(not_found)
        .layer(from_fn_with_state(auth, auth_layer))
        // Outside authentication: refused calls are counted, as go-grpc-prometheus counts them.
        .layer(from_fn(metrics::grpc_layer))
        .layer(from_fn(json_error_bodies))
        .layer(from_fn(context_layer));
    with_grpc_web(app)
}

/// gRPC-web calls (Argo CD's CLI with --grpc-web, browsers) are translated to gRPC before
/// anything else, so they meet the same authentication and answers; the translator is given
/// nothing else, as it refuses every other HTTP/1 request.
fn with_grpc_web(app: Router) -> Router {
    use tower::ServiceExt as _;
    let web = tower::Layer::layer(&tonic_web::GrpcWebLayer::new(), app.clone());
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let (app, web) = (app.clone(), web.clone());
        async move {
            let grpc_web = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc-web"));
            if grpc_web { web.oneshot(req).await.map(IntoResponse::into_response) } else { app.oneshot(req).await }
        }
    }))
}

/// The public port's health check for load balancers (Argo CD's API server has it too): it
/// answers as the operations listener's `/readyz` does, so that no traffic is sent to a gateway
/// that cannot serve it.
pub const HEALTHZ_PATH: &str = "/healthz";

/// The standard gRPC health service: the server as a whole ("") and each API service answer
/// SERVING while `readiness` holds, NOT_SERVING while it does not (followed every second).
fn health_service(
    readiness: corral_process::Readiness,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    use futures::FutureExt as _;
    let (reporter, service) = tonic_health::server::health_reporter();
    let status = |ready: bool| {
        if ready { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing }
    };
    let mut ready = readiness.is_ready();
    for name in HEALTH_SERVICES {
        // The reporter is new and not shared yet, so its lock is free and this completes at once:
        // the statuses are in place before the first call can arrive.
        let _ = reporter.set_service_status(name, status(ready)).now_or_never();
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let now = readiness.is_ready();
            if now != ready {
                ready = now;
                for name in HEALTH_SERVICES {
                    reporter.set_service_status(name, status(ready)).await;
                }
            }
        }
    });
    service
}

const HEALTH_SERVICES: [&str; 5] = ["", CLUSTER_SERVICE, ACCOUNT_SERVICE, SESSION_SERVICE, WATCH_SERVICE];

/// gRPC server reflection (v1, and v1alpha for older tools), so that grpcurl and the like list
/// and call every public service without the `.proto` files. It describes the public API only.
fn reflection_v1()
-> tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection> {
    reflection_builder().build_v1().unwrap_or_else(|e| panic!("the public descriptor set is broken: {e}"))
}

fn reflection_v1alpha()
-> tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection> {
    reflection_builder().build_v1alpha().unwrap_or_else(|e| panic!("the public descriptor set is broken: {e}"))
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(corral_proto::PUBLIC_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

const CLUSTER_SERVICE: &str = "cluster.ClusterService";
const ACCOUNT_SERVICE: &str = "account.AccountService";
const SESSION_SERVICE: &str = "session.SessionService";
const WATCH_SERVICE: &str = "corral.watch.v1.ClusterWatch";

/// Serves `app` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: PublicListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // The peer address feeds the per-source login rate limit.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match listener {
        PublicListener::Plain(listener) => {
            // Replies go out at once: with Nagle's algorithm a response's last frame waits for
            // the client's delayed ACK, up to 40 ms, whenever a connection is not busy.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            });
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        // TCP_NODELAY is set before the handshake; the tap gives the peer address to handlers.
        PublicListener::Tls(listener) => {
            axum::serve(listener.tap_io(|_| {}), app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// Configuration of the stand-alone gateway process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "corral-gateway", about = "The public API gateway (NATS mode)")]
pub struct ServiceConfig {
    #[command(flatten)]
    pub service: corral_process::ServiceOptions,
    /// Address to listen on for gRPC and REST.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How long to wait for a registry replica to answer, in milliseconds.
    #[arg(long, env = "CORRAL_REGISTRY_TIMEOUT_MS", default_value_t = 15_000)]
    pub registry_timeout_ms: u64,
    #[command(flatten)]
    pub events: corral_process::EventsOptions,
    #[command(flatten)]
    pub auth: AuthOptions,
}

pub const NAME: &str = "corral-gateway";

/// Authentication settings shared by the gateway and the all-in-one binary.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthOptions {
    /// Accounts and RBAC configuration: a TOML file of argocd-cm / argocd-rbac-cm keys, or a
    /// folder of one file per key (argocd-cm and argocd-rbac-cm mounted as Kubernetes mounts a
    /// ConfigMap); reloaded when it changes. Without it the gateway has the admin account only,
    /// and the all-in-one reads <data-dir>/accounts.toml (written on first start with how to
    /// fill it in).
    #[arg(long, env = "CORRAL_ACCOUNTS_FILE")]
    pub accounts_file: Option<PathBuf>,
    /// Serve every call as the admin without authentication (as Argo CD's --disable-auth).
    #[arg(long, env = "CORRAL_DISABLE_AUTH", default_value_t = false)]
    pub disable_auth: bool,
    /// The admin's first password (used when the log has none yet). Give it in the environment
    /// or a file, not on the command line. Without any of the three, one is generated.
    #[arg(long, env = "CORRAL_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// File holding the admin's first password.
    #[arg(long, env = "CORRAL_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// The admin's first password as a bcrypt hash (Argo CD's admin.password, imported as is).
    #[arg(long, env = "CORRAL_ADMIN_PASSWORD_BCRYPT", hide_env_values = true)]
    pub admin_password_bcrypt: Option<String>,
    /// Where to write the admin password when it is generated on first start (mode 0600).
    #[arg(long, env = "CORRAL_ADMIN_PASSWORD_OUT")]
    pub admin_password_out: Option<PathBuf>,
}

/// Starts authentication on `log`: the auth projection, the signing key, the admin's first
/// password (shown once when generated) and the configuration file watch.
pub async fn start_auth(
    log: Arc<dyn corral_event_log::EventLog>,
    key: Arc<corral_secrets::SealingKey>,
    options: &AuthOptions,
) -> anyhow::Result<Arc<Auth>> {
    let config = match &options.accounts_file {
        Some(path) => corral_auth::AuthConfig::load(path)?,
        None => corral_auth::AuthConfig::default(),
    };
    let auth = Auth::start(log, key, config, options.disable_auth).await?;
    let first = corral_auth::InitialAdminPassword::from_options(
        options.admin_password.as_deref(),
        options.admin_password_file.as_deref(),
        options.admin_password_bcrypt.as_deref(),
    )?;
    if let Some(password) = auth.ensure_admin_password(first).await? {
        if let Some(path) = &options.admin_password_out {
            // A file left from an earlier data folder holds a password that no longer works.
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            corral_secrets::write_new_private_file(path, password.expose())?;
            println!("admin password generated; it is in {} (readable by its owner only)", path.display());
        } else {
            println!("admin password (shown once): {}", password.expose());
        }
    }
    if let Some(path) = &options.accounts_file {
        auth.watch_config_file(path.clone());
    }
    if options.disable_auth {
        tracing::warn!("authentication is disabled: every caller acts as the admin");
    }
    Ok(auth)
}

/// Runs the gateway against NATS until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Refused before anything else starts.
    config.tls.check(config.listen)?;
    let readiness = corral_process::Readiness::new();
    config.service.ops.start(NAME, Some(corral_process::DEFAULT_OPS_LISTEN), &readiness).await?;
    let (key, client, log) = config.service.connect(NAME, &readiness).await?;
    let timeout = Duration::from_millis(config.registry_timeout_ms);
    let services = Arc::new(corral_service_api::nats::NatsClient::new(client.clone(), timeout));
    let auth = start_auth(log.clone(), key, &config.auth).await?;
    // API tokens are issued and revoked by the auth-rotation service; the gateway authorises.
    auth.delegate_tokens(Arc::new(corral_auth::nats::NatsTokenIssuer::new(client.clone(), timeout)));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let view_stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    // Reads are answered from this replica's own view of the log: no hop to a registry.
    let queries = corral_cluster_model::start_view(log.clone(), timeout, view_stop).await?;
    let public = config.events.open(client.clone(), config.service.nats.stream.stream_replicas).await?;
    let mut hub_stop = stop_tx.subscribe();
    let hub_config = corral_watch::HubConfig { bookmark_after: config.events.bookmark_after(), ..Default::default() };
    let hub = corral_watch::Hub::start_with(log, public, queries.clone(), hub_config, async move {
        let _ = hub_stop.wait_for(|s| *s).await;
    })
    .await?;
    let listener = PublicListener::bind(config.listen, &config.tls).await?;
    let addr = listener.local_addr()?;
    // Ready (caught up) before the app is built, so that its health service starts SERVING.
    corral_process::announce_ready(NAME, Some(addr), &readiness);
    let gateway = GatewayConfig { max_body_bytes: config.max_body_bytes, readiness };
    let app = app(services.clone(), queries, services, auth, hub, &gateway);
    serve(listener, app, shutdown).await?;
    let _ = stop_tx.send(true);
    Ok(())
}
