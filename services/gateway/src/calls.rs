//! The cluster API's calls, shared by the gRPC and REST front ends: each turns into a registry
//! command or query, with the caller's trace context and a correlation id.

use std::sync::Arc;

use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterUpdateRequest};
use corral_proto::registry::{Command, Query, Reply, RequestContext, command, query, reply};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use corral_registry::RegistryApi;
use tonic::Code;

use crate::error::ApiError;

/// Per-request facts the middleware establishes.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub traceparent: String,
    pub correlation_id: String,
    pub actor: String,
}

impl CallContext {
    fn request_context(&self) -> RequestContext {
        RequestContext {
            actor: self.actor.clone(),
            correlation_id: self.correlation_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Clusters {
    api: Arc<dyn RegistryApi>,
}

fn reply_error(reply: &Reply) -> Option<ApiError> {
    match &reply.result {
        Some(reply::Result::Error(e)) => Some(ApiError::new(Code::from(e.code), e.message.clone())),
        None => Some(ApiError::new(Code::Internal, "empty reply from registry")),
        _ => None,
    }
}

fn unexpected() -> ApiError {
    ApiError::new(Code::Internal, "unexpected reply from registry")
}

impl Clusters {
    pub fn new(api: Arc<dyn RegistryApi>) -> Clusters {
        Clusters { api }
    }

    async fn command(&self, ctx: &CallContext, kind: command::Kind) -> Result<Reply, ApiError> {
        let reply = self.api.command(Command { context: Some(ctx.request_context()), kind: Some(kind) }).await;
        match reply_error(&reply) {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }

    /// Queries are linearizable: they see every write acknowledged before they started, through
    /// any gateway and any registry replica.
    async fn query(&self, ctx: &CallContext, kind: query::Kind) -> Result<Reply, ApiError> {
        let q = Query { context: Some(ctx.request_context()), min_revision: 0, linearizable: true, kind: Some(kind) };
        let reply = self.api.query(q).await;
        match reply_error(&reply) {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }

    fn cluster(reply: Reply) -> Result<Cluster, ApiError> {
        match reply.result {
            Some(reply::Result::Cluster(c)) => Ok(c),
            _ => Err(unexpected()),
        }
    }

    pub async fn list(&self, ctx: &CallContext, q: ClusterQuery) -> Result<ClusterList, ApiError> {
        match self.query(ctx, query::Kind::List(q)).await?.result {
            Some(reply::Result::List(l)) => Ok(l),
            _ => Err(unexpected()),
        }
    }

    pub async fn get(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Cluster, ApiError> {
        Self::cluster(self.query(ctx, query::Kind::Get(q)).await?)
    }

    pub async fn create(&self, ctx: &CallContext, req: ClusterCreateRequest) -> Result<Cluster, ApiError> {
        Self::cluster(self.command(ctx, command::Kind::Create(req)).await?)
    }

    pub async fn update(&self, ctx: &CallContext, req: ClusterUpdateRequest) -> Result<Cluster, ApiError> {
        Self::cluster(self.command(ctx, command::Kind::Update(req)).await?)
    }

    pub async fn delete(&self, ctx: &CallContext, q: ClusterQuery) -> Result<(), ApiError> {
        self.command(ctx, command::Kind::Delete(q)).await.map(|_| ())
    }

    pub async fn invalidate_cache(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Cluster, ApiError> {
        Self::cluster(self.command(ctx, command::Kind::InvalidateCache(q)).await?)
    }

    pub async fn rotate_auth(&self, _ctx: &CallContext, _q: ClusterQuery) -> Result<(), ApiError> {
        Err(ApiError::new(
            Code::Unimplemented,
            "rotate-auth is not available yet: it comes with the auth-rotation service",
        ))
    }
}
