//! The registry's interface as the gateway sees it, the same in-process and over NATS.

use corral_proto::registry::{Command, Query, Reply, RotateAuth, reply};

use crate::queries::EncodedList;

#[async_trait::async_trait]
pub trait RegistryApi: Send + Sync + 'static {
    /// Runs a command; the reply carries the revision it produced, or an error.
    async fn command(&self, command: Command) -> Reply;
    /// Answers a query from the projection, once it has applied what the query asks for.
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

/// The auth-rotation service's interface as the gateway sees it, the same in-process and over
/// NATS.
#[async_trait::async_trait]
pub trait RotationApi: Send + Sync + 'static {
    /// Rotates the cluster's bearer token; the reply is empty or an error.
    async fn rotate(&self, request: RotateAuth) -> Reply;
}
