//! The registry's interface over NATS request/reply: replicas share the work through a queue
//! group, and the gateway's client speaks the same `RegistryApi` as the in-process registry.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use corral_proto::registry::{Command, Query, Reply, reply};
use futures::StreamExt;
use prost::Message;
use tonic::Code;

use crate::api::RegistryApi;

/// Outside the event stream's subjects, so requests are never stored.
pub const COMMAND_SUBJECT: &str = "corralrpc.registry.command";
pub const QUERY_SUBJECT: &str = "corralrpc.registry.query";
pub const QUEUE_GROUP: &str = "corral-registry";
pub const ROTATE_SUBJECT: &str = "corralrpc.auth-rotation.rotate";
pub const ROTATION_QUEUE_GROUP: &str = "corral-auth-rotation";

fn error_reply(code: Code, message: impl Into<String>) -> Reply {
    Reply {
        revision: 0,
        result: Some(reply::Result::Error(corral_proto::registry::Error {
            code: code as i32,
            message: message.into(),
        })),
        cluster_version: 0,
    }
}

/// Serves commands and queries until `shutdown` resolves.
pub async fn serve(
    client: async_nats::Client,
    api: Arc<dyn RegistryApi>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError> {
    let mut commands = client.queue_subscribe(COMMAND_SUBJECT, QUEUE_GROUP.to_string()).await?;
    let mut queries = client.queue_subscribe(QUERY_SUBJECT, QUEUE_GROUP.to_string()).await?;
    tokio::pin!(shutdown);
    loop {
        let (msg, is_command) = tokio::select! {
            _ = &mut shutdown => break,
            Some(m) = commands.next() => (m, true),
            Some(m) = queries.next() => (m, false),
            else => break,
        };
        let (api, client) = (api.clone(), client.clone());
        tokio::spawn(async move {
            let Some(reply_to) = msg.reply.clone() else { return };
            let reply = if is_command {
                match Command::decode(msg.payload.as_ref()) {
                    Ok(c) => api.command(c).await,
                    Err(e) => error_reply(Code::InvalidArgument, format!("malformed command: {e}")),
                }
            } else {
                match Query::decode(msg.payload.as_ref()) {
                    Ok(q) => api.query(q).await,
                    Err(e) => error_reply(Code::InvalidArgument, format!("malformed query: {e}")),
                }
            };
            if let Err(e) = client.publish(reply_to, reply.encode_to_vec().into()).await {
                tracing::warn!(error = %e, "could not send registry reply");
            }
        });
    }
    let _ = commands.unsubscribe().await;
    let _ = queries.unsubscribe().await;
    Ok(())
}

/// The gateway's handle on the registry replicas.
#[derive(Clone)]
pub struct NatsRegistryClient {
    client: async_nats::Client,
    timeout: Duration,
}

impl NatsRegistryClient {
    pub fn new(client: async_nats::Client, timeout: Duration) -> NatsRegistryClient {
        NatsRegistryClient { client, timeout }
    }

    pub(crate) async fn call(&self, subject: &'static str, traceparent: &str, payload: Vec<u8>) -> Reply {
        let mut headers = HeaderMap::new();
        if !traceparent.is_empty() {
            headers.insert("traceparent", traceparent);
        }
        let request = async_nats::Request::new().payload(payload.into()).headers(headers).timeout(Some(self.timeout));
        match self.client.send_request(subject, request).await {
            Ok(msg) => Reply::decode(msg.payload.as_ref())
                .unwrap_or_else(|e| error_reply(Code::Internal, format!("malformed registry reply: {e}"))),
            Err(e) => {
                tracing::warn!(error = %e, subject, "registry request failed");
                let code = match e.kind() {
                    async_nats::RequestErrorKind::TimedOut => Code::Unavailable,
                    async_nats::RequestErrorKind::NoResponders => Code::Unavailable,
                    _ => Code::Unavailable,
                };
                error_reply(code, "registry unavailable")
            }
        }
    }
}

#[async_trait::async_trait]
impl RegistryApi for NatsRegistryClient {
    async fn command(&self, command: Command) -> Reply {
        let tp = command.context.as_ref().map(|c| c.traceparent.clone()).unwrap_or_default();
        self.call(COMMAND_SUBJECT, &tp, command.encode_to_vec()).await
    }

    async fn query(&self, query: Query) -> Reply {
        let tp = query.context.as_ref().map(|c| c.traceparent.clone()).unwrap_or_default();
        self.call(QUERY_SUBJECT, &tp, query.encode_to_vec()).await
    }
}

/// Serves rotation requests from the gateways until `shutdown` resolves.
pub async fn serve_rotation(
    client: async_nats::Client,
    api: Arc<dyn crate::api::RotationApi>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client.queue_subscribe(ROTATE_SUBJECT, ROTATION_QUEUE_GROUP.to_string()).await?;
    tokio::pin!(shutdown);
    loop {
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            Some(m) = requests.next() => m,
            else => break,
        };
        let (api, client) = (api.clone(), client.clone());
        tokio::spawn(async move {
            let Some(reply_to) = msg.reply.clone() else { return };
            let reply = match corral_proto::registry::RotateAuth::decode(msg.payload.as_ref()) {
                Ok(r) => api.rotate(r).await,
                Err(e) => error_reply(Code::InvalidArgument, format!("malformed rotation request: {e}")),
            };
            if let Err(e) = client.publish(reply_to, reply.encode_to_vec().into()).await {
                tracing::warn!(error = %e, "could not send rotation reply");
            }
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}

#[async_trait::async_trait]
impl crate::api::RotationApi for NatsRegistryClient {
    async fn rotate(&self, request: corral_proto::registry::RotateAuth) -> Reply {
        let tp = request.context.as_ref().map(|c| c.traceparent.clone()).unwrap_or_default();
        self.call(ROTATE_SUBJECT, &tp, request.encode_to_vec()).await
    }
}
