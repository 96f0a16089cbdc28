//! The interfaces, and the replies they answer with.

use corral_cluster_model::{EncodedList, Queries, RegistryError};
use corral_proto::registry::{Command, Query, Reply, RotateAuth, reply};
use tonic::Code;
use tracing::{Instrument, debug_span};

/// Commands on the cluster aggregate: the registry's.
#[async_trait::async_trait]
pub trait ClusterCommands: Send + Sync + 'static {
    /// Runs a command; the reply carries the revision it produced, or an error.
    async fn command(&self, command: Command) -> Reply;
}

/// Queries of the clusters, answered from a projection once it has applied what they ask for.
#[async_trait::async_trait]
pub trait ClusterQueries: Send + Sync + 'static {
    async fn query(&self, query: Query) -> Reply;
    /// A List query's clusters, encoded: what a gRPC List sends. A local view answers from
    /// clusters it encoded once; elsewhere they come from `query` and are encoded here.
    async fn list_encoded(&self, query: Query) -> Result<(u64, EncodedList), Reply> {
        let reply = self.query(query).await;
        match reply.result {
            Some(reply::Result::List(list)) => Ok((reply.revision, EncodedList::from_clusters(list.items))),
            _ => Err(reply),
        }
    }
}

/// Rotating a cluster's credentials: the auth-rotation service's.
#[async_trait::async_trait]
pub trait CredentialRotation: Send + Sync + 'static {
    /// Rotates the cluster's bearer token; the reply is empty or an error.
    async fn rotate(&self, request: RotateAuth) -> Reply;
}

/// An error as replies carry it between services: its gRPC code (the one classification every
/// edge maps to its own statuses) and a message fit for the client.
pub fn wire_error(code: Code, message: impl Into<String>) -> corral_proto::registry::Error {
    corral_proto::registry::Error { code: code as i32, message: message.into() }
}

/// The code of an error a reply carries; a number no code has is Unknown.
pub fn wire_code(e: &corral_proto::registry::Error) -> Code {
    Code::from(e.code)
}

/// A reply carrying only an error.
pub fn error_reply(code: Code, message: impl Into<String>) -> Reply {
    Reply { revision: 0, result: Some(reply::Result::Error(wire_error(code, message))), cluster_version: 0 }
}

/// The reply for a result: internal detail stays in the log line written here.
pub fn to_reply(result: Result<(u64, reply::Result), RegistryError>) -> Reply {
    match result {
        Ok((revision, result)) => Reply { revision, result: Some(result), cluster_version: 0 },
        Err(e) => {
            if matches!(e, RegistryError::Internal(_)) {
                tracing::error!(error = %e, "registry call failed");
            }
            error_reply(e.code(), e.client_message())
        }
    }
}

#[async_trait::async_trait]
impl ClusterQueries for Queries {
    async fn list_encoded(&self, query: Query) -> Result<(u64, EncodedList), Reply> {
        let span = debug_span!("registry.list", min_revision = query.min_revision, linearizable = query.linearizable);
        let listed = async {
            let revision = self.reach(&query).await?;
            match &query.kind {
                Some(corral_proto::registry::query::Kind::List(q)) => Ok((revision, self.list_selected(q)?)),
                _ => Err(RegistryError::InvalidArgument("not a List query".into())),
            }
        };
        listed.instrument(span).await.map_err(|e| to_reply(Err(e)))
    }

    async fn query(&self, query: Query) -> Reply {
        let span = debug_span!("registry.query", min_revision = query.min_revision, linearizable = query.linearizable);
        match self.handle_query(query).instrument(span).await {
            Ok((revision, result, cluster_version)) => {
                let mut reply = to_reply(Ok((revision, result)));
                reply.cluster_version = cluster_version;
                reply
            }
            Err(e) => to_reply(Err(e)),
        }
    }
}
