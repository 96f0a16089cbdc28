//! Every REST operation in one table: the router is built from it and the OpenAPI document
//! (`/swagger.json`) describes it, so neither can name a route the other lacks.

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::accounts_rest::{self as accounts, RestAccounts};
use crate::rest::{self, ClusterRest};

/// The REST operations, one per route and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListClusters,
    CreateCluster,
    GetCluster,
    UpdateCluster,
    DeleteCluster,
    RotateAuth,
    InvalidateCache,
    Login,
    Logout,
    UserInfo,
    ListAccounts,
    GetAccount,
    UpdatePassword,
    CanI,
    CreateToken,
    DeleteToken,
    Version,
    WatchClusters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

/// What a parameter holds, as the OpenAPI document describes it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    /// Read as Go's `strconv.ParseBool`.
    Bool,
    OneOf(&'static [&'static str]),
    /// Repeated keys (`updatedFields=a&updatedFields=b`), each one of these.
    ManyOf(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub kind: Kind,
    pub description: &'static str,
    pub example: Option<&'static str>,
}

const fn query(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param { name, location: In::Query, kind, description, example: None }
}

const fn path(name: &'static str, description: &'static str) -> Param {
    Param { name, location: In::Path, kind: Kind::Str, description, example: None }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anyone,
    /// Anyone; a valid token tells more.
    AnyoneOrToken,
    Token,
}

#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub op: Op,
    /// Lower case, as OpenAPI writes it.
    pub method: &'static str,
    /// The route, in the syntax OpenAPI and the router share (`{id}`).
    pub path: &'static str,
    /// The gRPC method the operation is the REST form of.
    pub rpc: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// The protobuf message the JSON body holds, if any (its full name).
    pub body: Option<&'static str>,
    /// Whether an empty body is refused; otherwise it reads as `{}`, as grpc-gateway reads it.
    pub body_required: bool,
    /// The protobuf message the JSON answer holds.
    pub response: &'static str,
    pub caller: Caller,
}

const CLUSTER: &str = "github.com.argoproj.argo_cd.v3.pkg.apis.application.v1alpha1.Cluster";
const CLUSTER_LIST: &str = "github.com.argoproj.argo_cd.v3.pkg.apis.application.v1alpha1.ClusterList";

/// Argo CD's `{id.value}`: a parameter name with a dot, which some OpenAPI tools cannot take.
const ID_VALUE: Param = Param {
    example: Some("https://10.0.0.1:6443"),
    ..path(
        "id",
        "The cluster's id.value: its server URL (percent-encoded), or its name with id.type=name or name_escaped.",
    )
};
const ID_TYPE: Param = query(
    "id.type",
    Kind::OneOf(&["", "server", "name", "name_escaped"]),
    "How id.value names the cluster: server (the default), name, or name_escaped (a name escaped once more, decoded as Go's url.QueryUnescape: + is a space).",
);
const ACCOUNT_NAME: Param = path("name", "The account's name.");
const ONE_CLUSTER: &[Param] = &[ID_VALUE, ID_TYPE];

pub const OPERATIONS: &[Operation] = &[
    Operation {
        op: Op::ListClusters,
        method: "get",
        path: "/api/v1/clusters",
        rpc: "cluster.ClusterService/List",
        summary: "The clusters the caller may get, filtered by server, name or label selector.",
        params: &[
            query("server", Kind::Str, "Only the cluster with this server URL."),
            query("name", Kind::Str, "Only the cluster with this name."),
            query("id.value", Kind::Str, "Another way to give server or name, as id.type says."),
            ID_TYPE,
            query("selector", Kind::Str, "A Kubernetes label selector (env=prod,tier in (a,b),!legacy)."),
        ],
        body: None,
        body_required: false,
        response: CLUSTER_LIST,
        caller: Caller::Token,
    },
    Operation {
        op: Op::CreateCluster,
        method: "post",
        path: "/api/v1/clusters",
        rpc: "cluster.ClusterService/Create",
        summary: "Registers a cluster. An identical one already registered is returned as it is; a different one needs upsert.",
        params: &[query("upsert", Kind::Bool, "Replace the spec of a cluster already registered with this server.")],
        body: Some(CLUSTER),
        body_required: true,
        response: CLUSTER,
        caller: Caller::Token,
    },
    Operation {
        op: Op::GetCluster,
        method: "get",
        path: "/api/v1/clusters/{id}",
        rpc: "cluster.ClusterService/Get",
        summary: "One cluster, its credentials blanked.",
        params: ONE_CLUSTER,
        body: None,
        body_required: false,
        response: CLUSTER,
        caller: Caller::Token,
    },
    Operation {
        op: Op::UpdateCluster,
        method: "put",
        path: "/api/v1/clusters/{id}",
        rpc: "cluster.ClusterService/Update",
        summary: "Replaces a cluster's spec, or only the updatedFields. The server URL never changes. The body may also be {\"cluster\": ..., \"updatedFields\": [...]}.",
        params: &[
            ID_VALUE,
            ID_TYPE,
            query("updatedFields", Kind::ManyOf(&corral_domain::UPDATABLE_FIELDS), "Change only these fields."),
        ],
        body: Some(CLUSTER),
        body_required: true,
        response: CLUSTER,
        caller: Caller::Token,
    },
    Operation {
        op: Op::DeleteCluster,
        method: "delete",
        path: "/api/v1/clusters/{id}",
        rpc: "cluster.ClusterService/Delete",
        summary: "Removes a cluster. The built-in in-cluster entry cannot be removed.",
        params: ONE_CLUSTER,
        body: None,
        body_required: false,
        response: "cluster.ClusterResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::RotateAuth,
        method: "post",
        path: "/api/v1/clusters/{id}/rotate-auth",
        rpc: "cluster.ClusterService/RotateAuth",
        summary: "Gives the cluster a new service-account token; the old one keeps working for the grace period.",
        params: ONE_CLUSTER,
        body: None,
        body_required: false,
        response: "cluster.ClusterResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::InvalidateCache,
        method: "post",
        path: "/api/v1/clusters/{id}/invalidate-cache",
        rpc: "cluster.ClusterService/InvalidateCache",
        summary: "Drops the cluster's cache info and has it synced again.",
        params: ONE_CLUSTER,
        body: None,
        body_required: false,
        response: CLUSTER,
        caller: Caller::Token,
    },
    Operation {
        op: Op::Login,
        method: "post",
        path: "/api/v1/session",
        rpc: "session.SessionService/Create",
        summary: "Logs in with a user name and password: a session token (also set as the argocd.token cookie).",
        params: &[],
        body: Some("session.SessionCreateRequest"),
        body_required: false,
        response: "session.SessionResponse",
        caller: Caller::Anyone,
    },
    Operation {
        op: Op::Logout,
        method: "delete",
        path: "/api/v1/session",
        rpc: "session.SessionService/Delete",
        summary: "Logs the session out: its token stops working on every replica.",
        params: &[],
        body: None,
        body_required: false,
        response: "session.SessionResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::UserInfo,
        method: "get",
        path: "/api/v1/session/userinfo",
        rpc: "session.SessionService/GetUserInfo",
        summary: "Who the caller is.",
        params: &[],
        body: None,
        body_required: false,
        response: "session.GetUserInfoResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::ListAccounts,
        method: "get",
        path: "/api/v1/account",
        rpc: "account.AccountService/ListAccounts",
        summary: "The accounts the caller may get, with their capabilities and token ids.",
        params: &[],
        body: None,
        body_required: false,
        response: "account.AccountsList",
        caller: Caller::Token,
    },
    Operation {
        op: Op::UpdatePassword,
        method: "put",
        path: "/api/v1/account/password",
        rpc: "account.AccountService/UpdatePassword",
        summary: "Changes a password (the caller's own unless name says otherwise); ends the account's older sessions.",
        params: &[],
        body: Some("account.UpdatePasswordRequest"),
        body_required: false,
        response: "account.UpdatePasswordResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::CanI,
        method: "get",
        path: "/api/v1/account/can-i/{resource}/{action}/{subresource}",
        rpc: "account.AccountService/CanI",
        summary: "Whether the caller may do action on resource (yes or no).",
        params: &[
            path("resource", "clusters, accounts, ..."),
            path("action", "get, create, update, delete, ..."),
            path(
                "subresource",
                "The object, as RBAC policies name it (a server URL, PROJECT/SERVER, an account name).",
            ),
        ],
        body: None,
        body_required: false,
        response: "account.CanIResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::GetAccount,
        method: "get",
        path: "/api/v1/account/{name}",
        rpc: "account.AccountService/GetAccount",
        summary: "One account: capabilities and token ids and times, never a token.",
        params: &[ACCOUNT_NAME],
        body: None,
        body_required: false,
        response: "account.Account",
        caller: Caller::Token,
    },
    Operation {
        op: Op::CreateToken,
        method: "post",
        path: "/api/v1/account/{name}/token",
        rpc: "account.AccountService/CreateToken",
        summary: "Issues an API token for an account with the apiKey capability; it is shown once.",
        params: &[ACCOUNT_NAME],
        body: Some("account.CreateTokenRequest"),
        body_required: false,
        response: "account.CreateTokenResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::DeleteToken,
        method: "delete",
        path: "/api/v1/account/{name}/token/{id}",
        rpc: "account.AccountService/DeleteToken",
        summary: "Revokes one API token: it stops working on every replica.",
        params: &[ACCOUNT_NAME, path("id", "The token's id.")],
        body: None,
        body_required: false,
        response: "account.EmptyResponse",
        caller: Caller::Token,
    },
    Operation {
        op: Op::Version,
        method: "get",
        path: "/api/version",
        rpc: "version.VersionService/Version",
        summary: "The server's version; the build's details for a caller with a valid token.",
        params: &[],
        body: None,
        body_required: false,
        response: "version.VersionMessage",
        caller: Caller::AnyoneOrToken,
    },
    Operation {
        op: Op::WatchClusters,
        method: "get",
        path: "/api/v1/stream/clusters",
        rpc: "corral.watch.v1.ClusterWatch/Watch",
        summary: "Streams cluster changes: newline-delimited {\"result\": event} (or Server-Sent Events with Accept: text/event-stream, resumed by Last-Event-ID). A resourceVersion no longer kept answers 410.",
        params: &[
            query("resourceVersion", Kind::Str, "Deliver every change after this revision; empty: from now."),
            query("selector", Kind::Str, "A Kubernetes label selector (env=prod,tier in (a,b),!legacy)."),
            query("name", Kind::Str, "Only the cluster with this name."),
            query("server", Kind::Str, "Only the cluster with this server URL."),
            query(
                "sendInitialEvents",
                Kind::Bool,
                "First an ADDED per matching cluster, then a BOOKMARK with initialEventsEnd; the default without resourceVersion.",
            ),
            query(
                "allowBookmarks",
                Kind::Bool,
                "A BOOKMARK with the latest revision after 30 s without a matching event.",
            ),
        ],
        body: None,
        body_required: false,
        response: "corral.watch.v1.ClusterEvent",
        caller: Caller::Token,
    },
];

/// The state every REST handler takes its part of.
#[derive(Clone)]
pub struct RestState {
    pub clusters: ClusterRest,
    pub accounts: RestAccounts,
    pub watches: crate::watch::Watches,
}

impl FromRef<RestState> for crate::watch::Watches {
    fn from_ref(s: &RestState) -> crate::watch::Watches {
        s.watches.clone()
    }
}

impl FromRef<RestState> for ClusterRest {
    fn from_ref(s: &RestState) -> ClusterRest {
        s.clusters.clone()
    }
}

impl FromRef<RestState> for RestAccounts {
    fn from_ref(s: &RestState) -> RestAccounts {
        s.accounts.clone()
    }
}

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "put" => MethodFilter::PUT,
        "delete" => MethodFilter::DELETE,
        "patch" => MethodFilter::PATCH,
        other => unreachable!("no method {other:?} in the operation table"),
    }
}

fn handler(op: Op, filter: MethodFilter) -> MethodRouter<RestState> {
    match op {
        Op::ListClusters => on(filter, rest::list),
        Op::CreateCluster => on(filter, rest::create),
        Op::GetCluster => on(filter, rest::get_one),
        Op::UpdateCluster => on(filter, rest::update),
        Op::DeleteCluster => on(filter, rest::delete),
        Op::RotateAuth => on(filter, rest::rotate_auth),
        Op::InvalidateCache => on(filter, rest::invalidate_cache),
        Op::Login => on(filter, accounts::rest_login),
        Op::Logout => on(filter, accounts::rest_logout),
        Op::UserInfo => on(filter, accounts::rest_user_info),
        Op::ListAccounts => on(filter, accounts::rest_list),
        Op::GetAccount => on(filter, accounts::rest_get),
        Op::UpdatePassword => on(filter, accounts::rest_update_password),
        Op::CanI => on(filter, accounts::rest_can_i),
        Op::CreateToken => on(filter, accounts::rest_create_token),
        Op::DeleteToken => on(filter, accounts::rest_delete_token),
        Op::Version => on(filter, crate::version::rest_version),
        Op::WatchClusters => on(filter, crate::watch::rest_watch),
    }
}

/// The REST API: one route per entry of [`OPERATIONS`].
pub fn router(state: RestState) -> Router {
    OPERATIONS
        .iter()
        .fold(Router::new(), |router, o| router.route(o.path, handler(o.op, method_filter(o.method))))
        .with_state(state)
}
