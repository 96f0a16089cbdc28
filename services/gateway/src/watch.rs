//! The public stream of cluster changes, on the gateway's port: `corral.watch.v1.ClusterWatch/Watch`
//! over gRPC (and gRPC-web), and `GET /api/v1/stream/clusters` as newline-delimited JSON or, with
//! `Accept: text/event-stream`, Server-Sent Events that resume by themselves (`Last-Event-ID`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use corral_auth::{Auth, Principal};
use corral_proto::v1alpha1::Cluster;
use corral_proto::watch::WatchClustersRequest;
use corral_watch::{Hub, Rendered, WatchError, WatchRequest, Watcher};
use futures::Stream;
use tokio::sync::mpsc;

use crate::calls::{CallContext, rbac_object};
use crate::error::ApiError;
use crate::rest::Params;

/// Events a watch may have ready before it waits for its caller to read them.
const WATCH_BUFFER: usize = 64;
/// An SSE comment this often keeps proxies from closing a quiet stream, as Argo CD sends.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// The caller of a watch, as the authentication layer found it: what it may see, and whether its
/// token still holds (revoked, expired, logged out or its account disabled ends the watch).
struct Caller {
    auth: Arc<Auth>,
    principal: Principal,
    token: Option<crate::calls::BearerToken>,
}

#[async_trait::async_trait]
impl Watcher for Caller {
    fn may_see(&self, c: &Cluster) -> bool {
        self.auth.enforce(&self.principal, "clusters", "get", &rbac_object(&c.project, &c.server))
    }

    async fn still_authorised(&self) -> Result<(), String> {
        if self.auth.disabled() {
            return Ok(());
        }
        let Some(token) = &self.token else { return Err("no session information".into()) };
        match self.auth.verify(token.expose()).await {
            Ok(p) if p.account == self.principal.account => Ok(()),
            Ok(_) => Err("the token names another account".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct Watches {
    pub hub: Arc<Hub>,
    pub auth: Arc<Auth>,
}

fn api_error(e: &WatchError) -> ApiError {
    ApiError::new(e.code(), e.to_string())
}

impl Watches {
    /// Opens a watch for the caller and starts it; its events (and the error that ends it, last)
    /// come out of the receiver.
    async fn start(
        &self,
        ctx: &CallContext,
        req: WatchRequest,
    ) -> Result<mpsc::Receiver<Result<Arc<Rendered>, WatchError>>, WatchError> {
        let principal =
            ctx.principal.clone().ok_or_else(|| WatchError::Unauthenticated("no session information".into()))?;
        let caller = Caller { auth: self.auth.clone(), principal, token: ctx.token.clone() };
        let watch = self.hub.open(req, Arc::new(caller)).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _open = crate::metrics::OpenWatch::new();
            watch.run(tx).await
        });
        Ok(rx)
    }
}

fn status(e: WatchError) -> tonic::Status {
    tonic::Status::from(api_error(&e))
}

/// The gRPC path of the watch, served by [`watch_grpc`] rather than by the generated service.
pub const WATCH_PATH: &str = "/corral.watch.v1.ClusterWatch/Watch";

/// A `ClusterEvent` already encoded: each event is encoded once however many watches send it,
/// where the generated service would encode it again for every one. Same bytes on the wire.
#[derive(Debug, Clone, Default)]
pub struct EncodedEvent(bytes::Bytes);

impl prost::Message for EncodedEvent {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent: a decoder should use ClusterEvent.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[derive(Clone)]
struct WatchService(Watches);

type EventStream = Pin<Box<dyn Stream<Item = Result<EncodedEvent, tonic::Status>> + Send>>;

impl tonic::server::ServerStreamingService<WatchClustersRequest> for WatchService {
    type Response = EncodedEvent;
    type ResponseStream = EventStream;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<EventStream>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<WatchClustersRequest>) -> Self::Future {
        let watches = self.0.clone();
        Box::pin(async move {
            let ctx = CallContext::of(&req);
            let rx = watches.start(&ctx, req.into_inner().into()).await.map_err(status)?;
            let events = futures::stream::unfold(rx, |mut rx| async move {
                let item = rx.recv().await?;
                Some((item.map(|r| EncodedEvent(r.proto())).map_err(status), rx))
            });
            Ok(tonic::Response::new(Box::pin(events) as EventStream))
        })
    }
}

/// Serves [`WATCH_PATH`] (gRPC, and gRPC-web through the translating layer in front).
pub async fn watch_grpc(
    State((watches, max_body_bytes)): State<(Watches, usize)>,
    req: axum::extract::Request,
) -> Response {
    let codec = tonic_prost::ProstCodec::<EncodedEvent, WatchClustersRequest>::default();
    let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max_body_bytes), None);
    grpc.server_streaming(WatchService(watches), req).await.map(Body::new)
}

/// grpc-gateway v1's terminal stream error, as Argo CD's REST streams end.
fn stream_error(e: &WatchError) -> serde_json::Value {
    let status = crate::error::http_status(e.code());
    serde_json::json!({"error": {
        "grpc_code": e.code() as i32,
        "http_code": status.as_u16(),
        "message": e.to_string(),
        "http_status": status.canonical_reason().unwrap_or_default(),
        "details": [],
    }})
}

fn request_from(p: &Params, last_event_id: Option<&str>) -> Result<WatchRequest, ApiError> {
    let send_initial_events = match p.one("sendInitialEvents")?.as_str() {
        "" => None,
        v => Some(
            crate::rest::parse_go_bool(v)
                .ok_or_else(|| ApiError::invalid(format!("sendInitialEvents: expected true or false, got \"{v}\"")))?,
        ),
    };
    let mut resource_version = p.one("resourceVersion")?;
    // A browser's EventSource reconnects with the id of the last event it received.
    if let Some(id) = last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
        resource_version = id.to_string();
    }
    Ok(WatchRequest {
        resource_version,
        selector: p.one("selector")?,
        name: p.one("name")?,
        server: p.one("server")?,
        send_initial_events,
        allow_bookmarks: p.flag("allowBookmarks")?,
    })
}

/// `GET /api/v1/stream/clusters`. Refusals (a bad parameter, a revision no longer kept: 410 Gone)
/// are answered before the first byte; an error after it is the stream's last line.
pub async fn rest_watch(
    State(watches): State<Watches>,
    Extension(ctx): Extension<CallContext>,
    headers: http::HeaderMap,
    params: Params,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sse = header("accept").is_some_and(|a| a.contains("text/event-stream"));
    let req = match request_from(&params, if sse { header("last-event-id") } else { None }) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let rx = match watches.start(&ctx, req).await {
        Ok(rx) => rx,
        Err(e @ WatchError::Expired { .. }) => return api_error(&e).into_response_with_status(http::StatusCode::GONE),
        Err(e) => return api_error(&e).into_response(),
    };
    let content_type = if sse { "text/event-stream" } else { "application/json" };
    let body = Body::from_stream(frames(rx, sse));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    response
}

/// The stream's bytes: one line of JSON per event, or one SSE event per event with a comment
/// every 15 s.
fn frames(
    rx: mpsc::Receiver<Result<Arc<Rendered>, WatchError>>,
    sse: bool,
) -> impl Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send {
    let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + SSE_KEEPALIVE, SSE_KEEPALIVE);
    futures::stream::unfold((rx, keepalive, false), move |(mut rx, mut keepalive, done)| async move {
        if done {
            return None;
        }
        let item = if sse {
            tokio::select! {
                item = rx.recv() => item,
                _ = keepalive.tick() => return Some((Ok(bytes::Bytes::from_static(b":\n\n")), (rx, keepalive, false))),
            }
        } else {
            rx.recv().await
        };
        let (frame, done) = match item? {
            Ok(rendered) => {
                let ev = &rendered.event;
                let line = rendered.json();
                let line = String::from_utf8_lossy(&line);
                // Only a point a watch can resume after carries an id: not the initial ADDED events.
                let resumable = !(ev.r#type == "ADDED" && ev.reason.is_empty());
                let frame = match (sse, resumable) {
                    (false, _) => format!("{line}\n"),
                    (true, true) => format!("id: {}\ndata: {line}\n\n", ev.resource_version),
                    (true, false) => format!("data: {line}\n\n"),
                };
                (frame, false)
            }
            Err(e) => {
                let line = stream_error(&e).to_string();
                (if sse { format!("event: error\ndata: {line}\n\n") } else { format!("{line}\n") }, true)
            }
        };
        Some((Ok(bytes::Bytes::from(frame)), (rx, keepalive, done)))
    })
}
