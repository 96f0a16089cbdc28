//! The interfaces over NATS request/reply: replicas share the work through a queue group, and
//! the clients speak the same traits as the services in-process.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::registry::{Command, Query, Reply};
use prost::Message;
use tonic::Code;

use crate::api::{ClusterCommands, ClusterQueries, CredentialRotation, error_reply};

/// Outside the event stream's subjects, so requests are never stored.
pub const COMMAND_SUBJECT: &str = "corralrpc.registry.command";
pub const QUERY_SUBJECT: &str = "corralrpc.registry.query";
pub const QUEUE_GROUP: &str = "corral-registry";
pub const ROTATE_SUBJECT: &str = "corralrpc.auth-rotation.rotate";
pub const ROTATION_QUEUE_GROUP: &str = "corral-auth-rotation";

/// Serves commands and queries until `shutdown` resolves.
pub async fn serve_registry<R: ClusterCommands + ClusterQueries>(
    client: async_nats::Client,
    registry: Arc<R>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError> {
    let handle = move |subject: usize, msg: async_nats::Message| {
        let registry = registry.clone();
        async move {
            let reply = if subject == 0 {
                match Command::decode(msg.payload.as_ref()) {
                    Ok(c) => registry.command(c).await,
                    Err(e) => error_reply(Code::InvalidArgument, format!("malformed command: {e}")),
                }
            } else {
                match Query::decode(msg.payload.as_ref()) {
                    Ok(q) => registry.query(q).await,
                    Err(e) => error_reply(Code::InvalidArgument, format!("malformed query: {e}")),
                }
            };
            reply.encode_to_vec()
        }
    };
    corral_nats_rpc::serve(client, QUEUE_GROUP, &[COMMAND_SUBJECT, QUERY_SUBJECT], handle, shutdown).await
}

/// The callers' handle on the service replicas: the registry's commands and queries, rotation.
#[derive(Clone)]
pub struct NatsClient {
    client: async_nats::Client,
    timeout: Duration,
}

impl NatsClient {
    pub fn new(client: async_nats::Client, timeout: Duration) -> NatsClient {
        NatsClient { client, timeout }
    }

    async fn call(&self, subject: &'static str, payload: Vec<u8>) -> Reply {
        match corral_nats_rpc::request(&self.client, subject, payload, self.timeout).await {
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
impl ClusterCommands for NatsClient {
    async fn command(&self, command: Command) -> Reply {
        self.call(COMMAND_SUBJECT, command.encode_to_vec()).await
    }
}

#[async_trait::async_trait]
impl ClusterQueries for NatsClient {
    async fn query(&self, query: Query) -> Reply {
        self.call(QUERY_SUBJECT, query.encode_to_vec()).await
    }
}

/// Serves rotation requests from the gateways until `shutdown` resolves.
pub async fn serve_rotation(
    client: async_nats::Client,
    api: Arc<dyn CredentialRotation>,
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
impl CredentialRotation for NatsClient {
    async fn rotate(&self, request: corral_proto::registry::RotateAuth) -> Reply {
        self.call(ROTATE_SUBJECT, request.encode_to_vec()).await
    }
}
