//! The gateway's metrics: Argo CD's API server names where the meaning is the same
//! (`argocd_login_request_total`, go-grpc-prometheus' `grpc_server_*` with its label values), so
//! that existing dashboards and alerts work, and our own per-route latency and open watches.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use corral_telemetry::metrics::{register, seconds_histogram};
use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(seconds_histogram as fn() -> Histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCodeLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    code: u16,
}

struct Metrics {
    logins: Family<LoginLabels, Counter>,
    grpc_started: Family<GrpcLabels, Counter>,
    grpc_handled: Family<GrpcCodeLabels, Counter>,
    grpc_seconds: Histograms<GrpcLabels>,
    http_seconds: Histograms<HttpLabels>,
    watches_open: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    logins: register("argocd_login_request", "Number of login requests", Family::default()),
    grpc_started: register("grpc_server_started", "Total number of RPCs started on the server", Family::default()),
    grpc_handled: register(
        "grpc_server_handled",
        "Total number of RPCs completed on the server, regardless of success or failure",
        Family::default(),
    ),
    grpc_seconds: register(
        "grpc_server_handling_seconds",
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
        histograms(),
    ),
    http_seconds: register(
        "corral_http_request_duration_seconds",
        "Time to answer a request on the public port (to the response's head for streams), by method, route and status",
        histograms(),
    ),
    watches_open: register("corral_watch_streams_open", "Watch streams open on this gateway", Gauge::default()),
});

/// Registers the gateway's metrics, so that they are scraped before anything happened.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// A login, counted as Argo CD counts it.
pub(crate) fn login(ok: bool) {
    let status = if ok { "success" } else { "failure" };
    METRICS.logins.get_or_create(&LoginLabels { status }).inc();
}

/// Counts a watch stream while it lives.
pub(crate) struct OpenWatch(());

impl OpenWatch {
    pub(crate) fn new() -> OpenWatch {
        METRICS.watches_open.inc();
        OpenWatch(())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        METRICS.watches_open.dec();
    }
}

/// The gRPC methods the gateway serves, as (service, method, type). Anything else is not
/// counted: a label value per path a caller makes up would grow without bound.
const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("cluster.ClusterService", "Create", UNARY),
    ("cluster.ClusterService", "Get", UNARY),
    ("cluster.ClusterService", "List", UNARY),
    ("cluster.ClusterService", "Update", UNARY),
    ("cluster.ClusterService", "Delete", UNARY),
    ("cluster.ClusterService", "RotateAuth", UNARY),
    ("cluster.ClusterService", "InvalidateCache", UNARY),
    ("account.AccountService", "CanI", UNARY),
    ("account.AccountService", "UpdatePassword", UNARY),
    ("account.AccountService", "ListAccounts", UNARY),
    ("account.AccountService", "GetAccount", UNARY),
    ("account.AccountService", "CreateToken", UNARY),
    ("account.AccountService", "DeleteToken", UNARY),
    ("session.SessionService", "Create", UNARY),
    ("session.SessionService", "Delete", UNARY),
    ("session.SessionService", "GetUserInfo", UNARY),
    ("version.VersionService", "Version", UNARY),
    ("corral.watch.v1.ClusterWatch", "Watch", "server_stream"),
    ("grpc.health.v1.Health", "Check", UNARY),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", "bidi_stream"),
    ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", "bidi_stream"),
];

const UNARY: &str = "unary";

/// The (service, method) of a gRPC path the gateway serves.
pub(crate) fn grpc_method_of(path: &str) -> Option<(&'static str, &'static str)> {
    grpc_method(path).map(|l| (l.grpc_service, l.grpc_method))
}

fn grpc_method(path: &str) -> Option<GrpcLabels> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    GRPC_METHODS.iter().find(|(s, m, _)| *s == service && *m == method).map(|(s, m, t)| GrpcLabels {
        grpc_type: t,
        grpc_service: s,
        grpc_method: m,
    })
}

/// grpc-go's names of the status codes, which go-grpc-prometheus puts in `grpc_code`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

/// Where a gRPC call's outcome is recorded, once: when its status is known (in the response's
/// head for an immediate error, else in the trailers at the end of the body), or as Canceled
/// when the caller went away first.
struct GrpcCall {
    labels: GrpcLabels,
    started: Instant,
    /// The request's server span, which gets the status code.
    span: tracing::Span,
}

/// The codes for which a gRPC server span is an error (OpenTelemetry's gRPC conventions).
fn server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}

impl GrpcCall {
    fn finish(self, code: tonic::Code) {
        self.span.record("rpc.grpc.status_code", code as i64);
        if server_error(code) {
            self.span.record("otel.status_code", "error");
        }
        let GrpcLabels { grpc_type, grpc_service, grpc_method } = self.labels.clone();
        let handled = GrpcCodeLabels { grpc_type, grpc_service, grpc_method, grpc_code: code_name(code) };
        METRICS.grpc_handled.get_or_create(&handled).inc();
        METRICS.grpc_seconds.get_or_create(&self.labels).observe(self.started.elapsed().as_secs_f64());
    }
}

/// The gRPC server metrics around every call the gateway serves (gRPC-web ones are gRPC by
/// then).
pub(crate) async fn grpc_layer(req: Request, next: Next) -> Response {
    let Some(labels) = grpc_method(req.uri().path()) else { return next.run(req).await };
    METRICS.grpc_started.get_or_create(&labels).inc();
    let call = GrpcCall { labels, started: Instant::now(), span: tracing::Span::current() };
    let response = next.run(req).await;
    if let Some(code) = grpc_status(response.headers()) {
        call.finish(code);
        return response;
    }
    response.map(|body| Body::new(TrailerWatch { inner: body, call: Some(call) }))
}

/// A gRPC response body that records the call when its trailers go by.
struct TrailerWatch {
    inner: Body,
    call: Option<GrpcCall>,
}

impl http_body::Body for TrailerWatch {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(tonic::Code::Unknown);
                    if let Some(call) = self.call.take() {
                        call.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrailerWatch {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(tonic::Code::Cancelled);
        }
    }
}

/// The route a request was matched to, handed from the route layer to the outer layers in the
/// response (a request's extensions do not come back out).
#[derive(Clone)]
pub(crate) struct Route(pub(crate) String);

/// On every REST route: tells the outer layers which route answered.
pub(crate) async fn route_layer(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// The route to record for a response: the REST route that matched, a known gRPC method's path,
/// else one label for everything else.
pub(crate) fn route_of(response: &Response, path: &str) -> String {
    if let Some(Route(r)) = response.extensions().get::<Route>() {
        return r.clone();
    }
    if grpc_method(path).is_some() {
        return path.to_string();
    }
    "other".to_string()
}

/// A method's name as OpenTelemetry's conventions write it: one of the methods HTTP defines, else
/// `_OTHER`, so that a client cannot make a label value (a new series) per invented method.
pub(crate) fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

pub(crate) const OTHER_METHOD: &str = "_OTHER";

/// Records a request's latency on the public port.
/// `method` as [`method_name`] gives it.
pub(crate) fn http_request(method: &'static str, route: String, code: u16, started: Instant) {
    let labels = HttpLabels { method, route, code };
    METRICS.http_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
}
