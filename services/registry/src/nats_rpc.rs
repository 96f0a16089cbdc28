//! The registry's interface over NATS request/reply: replicas share the work through a queue
//! group, and the gateway's client speaks the same `RegistryApi` as the in-process registry.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::registry::{Command, Query, Reply, reply};
use prost::Message;
use tonic::Code;

use crate::api::RegistryApi;

/// Outside the event stream's subjects, so requests are never stored.
pub const COMMAND_SUBJECT: &str = "corralrpc.registry.command";
pub const QUERY_SUBJECT: &str = "corralrpc.registry.query";
pub const QUEUE_GROUP: &str = "corral-registry";
pub const ROTATE_SUBJECT: &str = "corralrpc.auth-rotation.rotate";
pub const ROTATION_QUEUE_GROUP: &str = "corral-auth-rotation";

/// A reply carrying only an error.
pub fn error_reply(code: Code, message: impl Into<String>) -> Reply {
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
    let handle = move |subject: usize, msg: async_nats::Message| {
        let api = api.clone();
        async move {
            let reply = if subject == 0 {
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
            reply.encode_to_vec()
        }
    };
    corral_nats_rpc::serve(client, QUEUE_GROUP, &[COMMAND_SUBJECT, QUERY_SUBJECT], handle, shutdown).await
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
        match corral_nats_rpc::request(&self.client, subject, traceparent, payload, self.timeout).await {
            Ok(payload) => Reply::decode(payload.as_ref())
                .unwrap_or_else(|e| error_reply(Code::Internal, format!("malformed registry reply: {e}"))),
            Err(e) => {
                // No replica answered in time, or none is running: either way, try again later.
                tracing::warn!(error = %e, subject, "registry request failed");
                error_reply(Code::Unavailable, "registry unavailable")
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
    let handle = move |_: usize, msg: async_nats::Message| {
        let api = api.clone();
        async move {
            let reply = match corral_proto::registry::RotateAuth::decode(msg.payload.as_ref()) {
                Ok(r) => api.rotate(r).await,
                Err(e) => error_reply(Code::InvalidArgument, format!("malformed rotation request: {e}")),
            };
            reply.encode_to_vec()
        }
    };
    corral_nats_rpc::serve(client, ROTATION_QUEUE_GROUP, &[ROTATE_SUBJECT], handle, shutdown).await
}

#[async_trait::async_trait]
impl crate::api::RotationApi for NatsRegistryClient {
    async fn rotate(&self, request: corral_proto::registry::RotateAuth) -> Reply {
        let tp = request.context.as_ref().map(|c| c.traceparent.clone()).unwrap_or_default();
        self.call(ROTATE_SUBJECT, &tp, request.encode_to_vec()).await
    }
}
