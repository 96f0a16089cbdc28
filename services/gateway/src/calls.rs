//! The cluster API's calls, shared by the gRPC and REST front ends: each is authorised against
//! the caller's roles and turns into a registry command or query, with the caller's trace context
//! and a correlation id.
//!
//! Permission is always checked against the stored cluster (its stored project and server), never
//! the one in the request body; a cluster the caller may not `get` answers exactly as one that
//! does not exist.

use std::sync::Arc;

use corral_auth::{Auth, Principal};

use corral_cluster_model::{EncodedList, Queries};
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterUpdateRequest};
use corral_proto::registry::{Command, Query, Reply, RequestContext, RotateAuth, command, query, reply};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use corral_service_api::{ClusterCommands, ClusterQueries, CredentialRotation};
use tonic::Code;

use crate::error::ApiError;

/// Per-request facts the middleware establishes.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub correlation_id: String,
    pub actor: String,
    /// The caller's address, for login rate limits.
    pub source: String,
    /// Set by the authentication layer on every call that needs it.
    pub principal: Option<Principal>,
    /// The token the caller authenticated with, for calls that outlive one check (a watch).
    pub token: Option<BearerToken>,
}

/// A caller's bearer token: never shown by `Debug`.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    pub fn new(token: &str) -> BearerToken {
        BearerToken(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl CallContext {
    /// The context the middleware established for a gRPC call.
    pub fn of<T>(req: &tonic::Request<T>) -> CallContext {
        req.extensions().get::<CallContext>().cloned().unwrap_or_default()
    }

    /// Who is calling; every authenticated call has one.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or_else(|| ApiError::new(Code::Unauthenticated, "no session information"))
    }

    fn request_context(&self) -> RequestContext {
        RequestContext { actor: self.actor.clone(), correlation_id: self.correlation_id.clone() }
    }
}

#[derive(Clone)]
pub struct Clusters {
    commands: Arc<dyn ClusterCommands>,
    queries: Arc<dyn ClusterQueries>,
    rotation: Arc<dyn CredentialRotation>,
    auth: Arc<Auth>,
    /// The highest revision this process has acknowledged a write at. Every query and command
    /// asks for at least it, so a caller sees its own writes through this gateway even when a
    /// registry replica's idea of how far the log goes is behind (seen after a node came back
    /// from being cut off).
    acknowledged: Arc<std::sync::atomic::AtomicU64>,
}

const RESOURCE: &str = "clusters";
const AUTHORISE_ATTEMPTS: usize = 3;

/// What a call sends once the stored cluster is authorised.
enum Outgoing {
    // Boxed: a command holds a whole cluster, and the enum is built on every call.
    Command(Box<command::Kind>),
    Rotate,
}

/// What a command answers: its result, and the revision of the change it made (the one a watch
/// sees it at, and can resume after); 0 when it changed nothing.
#[derive(Debug)]
pub struct Written<T> {
    pub value: T,
    pub revision: u64,
}

/// The header (REST) and metadata key (gRPC) a command's revision is answered in.
pub const REVISION_HEADER: &str = "x-corral-revision";

/// Argo CD's RBAC object for a cluster: `PROJECT/SERVER`, or the server alone outside a project.
pub fn rbac_object(project: &str, server: &str) -> String {
    if project.is_empty() { server.to_string() } else { format!("{project}/{server}") }
}

fn denied() -> ApiError {
    ApiError::new(Code::PermissionDenied, "permission denied")
}

fn not_found(q: &ClusterQuery) -> ApiError {
    let e = Queries::not_found(q);
    ApiError::new(e.code(), e.to_string())
}

fn reply_error(reply: &Reply) -> Option<ApiError> {
    match &reply.result {
        Some(reply::Result::Error(e)) => Some(ApiError::new(corral_service_api::wire_code(e), e.message.clone())),
        None => Some(ApiError::new(Code::Internal, "empty reply from registry")),
        _ => None,
    }
}

fn unexpected() -> ApiError {
    ApiError::new(Code::Internal, "unexpected reply from registry")
}

impl Clusters {
    pub fn new(
        commands: Arc<dyn ClusterCommands>,
        queries: Arc<dyn ClusterQueries>,
        rotation: Arc<dyn CredentialRotation>,
        auth: Arc<Auth>,
    ) -> Clusters {
        Clusters { commands, queries, rotation, auth, acknowledged: Default::default() }
    }

    fn may(&self, who: &Principal, action: &str, c: &Cluster) -> bool {
        self.auth.enforce(who, RESOURCE, action, &rbac_object(&c.project, &c.server))
    }

    /// The stored cluster `q` names and its version, if the caller may see it and may `action`
    /// it; otherwise NotFound exactly as for a missing cluster, or PermissionDenied when it may
    /// only see it.
    async fn authorised_target(
        &self,
        ctx: &CallContext,
        q: &ClusterQuery,
        action: &str,
    ) -> Result<(Cluster, u64), ApiError> {
        let who = ctx.principal()?;
        let reply = self.query(ctx, query::Kind::Get(q.clone())).await?;
        let version = reply.cluster_version;
        let stored = Self::cluster(reply)?;
        if !self.may(who, "get", &stored) {
            return Err(not_found(q));
        }
        if action != "get" && !self.may(who, action, &stored) {
            return Err(denied());
        }
        Ok((stored, version))
    }

    /// Authorises `action` on the stored cluster, then sends what `prepare` makes of it, which
    /// applies only if the cluster is still the version that was authorised, so a concurrent move
    /// to another project cannot slip through; if it changed in between (Aborted), authorises
    /// again.
    async fn authorised(
        &self,
        ctx: &CallContext,
        q: &ClusterQuery,
        action: &str,
        prepare: impl Fn(&Cluster) -> Result<Outgoing, ApiError>,
    ) -> Result<Reply, ApiError> {
        let mut last = None;
        for _ in 0..AUTHORISE_ATTEMPTS {
            let (stored, version) = self.authorised_target(ctx, q, action).await?;
            let sent = match prepare(&stored)? {
                Outgoing::Command(kind) => self.command_expecting(ctx, *kind, version).await,
                Outgoing::Rotate => {
                    let request = RotateAuth {
                        context: Some(ctx.request_context()),
                        server: stored.server.clone(),
                        expected_version: version,
                    };
                    let reply = self.rotation.rotate(request).await;
                    reply_error(&reply).map_or_else(|| Ok(self.acknowledge(reply)), Err)
                }
            };
            match sent {
                Err(e) if e.code == Code::Aborted => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ApiError::new(Code::Aborted, "the cluster keeps changing; retry")))
    }

    /// A command that only applies if the cluster is still at `expected_version` (0: any).
    async fn command_expecting(
        &self,
        ctx: &CallContext,
        kind: command::Kind,
        expected_version: u64,
    ) -> Result<Reply, ApiError> {
        let cmd = Command {
            context: Some(ctx.request_context()),
            kind: Some(kind),
            expected_version,
            min_revision: self.min_revision(),
        };
        let reply = self.commands.command(cmd).await;
        match reply_error(&reply) {
            Some(e) => Err(e),
            None => Ok(self.acknowledge(reply)),
        }
    }

    fn acknowledge(&self, reply: Reply) -> Reply {
        self.acknowledged.fetch_max(reply.revision, std::sync::atomic::Ordering::Relaxed);
        reply
    }

    fn min_revision(&self) -> u64 {
        self.acknowledged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queries are linearizable: they see every write acknowledged before they started, through
    /// any gateway and any registry replica.
    async fn query(&self, ctx: &CallContext, kind: query::Kind) -> Result<Reply, ApiError> {
        let q = Query {
            context: Some(ctx.request_context()),
            min_revision: self.min_revision(),
            linearizable: true,
            kind: Some(kind),
        };
        let reply = self.queries.query(q).await;
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

    fn written_cluster(reply: Reply) -> Result<Written<Cluster>, ApiError> {
        let revision = reply.revision;
        Ok(Written { value: Self::cluster(reply)?, revision })
    }

    pub async fn list(&self, ctx: &CallContext, q: ClusterQuery) -> Result<ClusterList, ApiError> {
        let items = self.list_encoded(ctx, q).await?.clusters().cloned().collect();
        Ok(ClusterList { metadata: Some(Default::default()), items })
    }

    /// The clusters the caller may see among those the query selects, already encoded.
    pub async fn list_encoded(&self, ctx: &CallContext, q: ClusterQuery) -> Result<EncodedList, ApiError> {
        let who = ctx.principal()?;
        let query = Query {
            context: Some(ctx.request_context()),
            min_revision: self.min_revision(),
            linearizable: true,
            kind: Some(query::Kind::List(q)),
        };
        let (_, mut list) =
            self.queries.list_encoded(query).await.map_err(|reply| reply_error(&reply).unwrap_or_else(unexpected))?;
        // One look at the configuration for the whole fleet, and no work when unrestricted.
        let can = self.auth.enforcer(who);
        if !can.unrestricted() {
            list.retain(|c| can.allows(RESOURCE, "get", &rbac_object(&c.project, &c.server)));
        }
        Ok(list)
    }

    pub async fn get(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Cluster, ApiError> {
        Ok(self.authorised_target(ctx, &q, "get").await?.0)
    }

    pub async fn create(&self, ctx: &CallContext, req: ClusterCreateRequest) -> Result<Written<Cluster>, ApiError> {
        let who = ctx.principal()?;
        let body = req.cluster.clone().unwrap_or_default();
        if !self.may(who, "create", &body) {
            return Err(denied());
        }
        let mut expected_version = 0;
        if req.upsert && !body.server.is_empty() {
            // An upsert that lands on an existing cluster changes it: that needs update on it,
            // and the change applies only to the version that was authorised.
            let q = ClusterQuery { server: body.server.clone(), ..Default::default() };
            match self.authorised_target(ctx, &q, "update").await {
                Ok((_, version)) => expected_version = version,
                Err(e) if e.code == Code::NotFound && self.exists(ctx, &q).await? => return Err(denied()),
                Err(e) if e.code == Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Self::written_cluster(self.command_expecting(ctx, command::Kind::Create(req), expected_version).await?)
    }

    async fn exists(&self, ctx: &CallContext, q: &ClusterQuery) -> Result<bool, ApiError> {
        match self.query(ctx, query::Kind::Get(q.clone())).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == Code::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn update(&self, ctx: &CallContext, req: ClusterUpdateRequest) -> Result<Written<Cluster>, ApiError> {
        let who = ctx.principal()?;
        let body = req.cluster.clone().unwrap_or_default();
        let q = ClusterQuery {
            server: body.server.clone(),
            name: body.name.clone(),
            id: req.id.clone(),
            selector: String::new(),
        };
        // Moving a cluster into another project needs update there too.
        let moves = req.updated_fields.is_empty() || req.updated_fields.iter().any(|f| f == "project");
        let reply = self
            .authorised(ctx, &q, "update", |stored| {
                if moves
                    && body.project != stored.project
                    && !self.auth.enforce(who, RESOURCE, "update", &rbac_object(&body.project, &stored.server))
                {
                    return Err(denied());
                }
                Ok(Outgoing::Command(Box::new(command::Kind::Update(req.clone()))))
            })
            .await?;
        Self::written_cluster(reply)
    }

    pub async fn delete(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Written<()>, ApiError> {
        self.authorised(ctx, &q, "delete", |_| Ok(Outgoing::Command(Box::new(command::Kind::Delete(q.clone())))))
            .await
            .map(|reply| Written { value: (), revision: reply.revision })
    }

    /// Needs `update`, as in Argo CD.
    pub async fn invalidate_cache(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Written<Cluster>, ApiError> {
        let reply = self
            .authorised(ctx, &q, "update", |_| {
                Ok(Outgoing::Command(Box::new(command::Kind::InvalidateCache(q.clone()))))
            })
            .await?;
        Self::written_cluster(reply)
    }

    /// Needs `update`, as in Argo CD; the auth-rotation service does the work.
    pub async fn rotate_auth(&self, ctx: &CallContext, q: ClusterQuery) -> Result<Written<()>, ApiError> {
        self.authorised(ctx, &q, "update", |_| Ok(Outgoing::Rotate))
            .await
            .map(|reply| Written { value: (), revision: reply.revision })
    }
}
