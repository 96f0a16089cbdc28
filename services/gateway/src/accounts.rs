//! `account.AccountService` and `session.SessionService`, over gRPC and REST.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use corral_auth::{Auth, AuthError, ISSUER};
use corral_proto::account::account_service_server::AccountService;
use corral_proto::account::{
    Account, AccountsList, CanIRequest, CanIResponse, CreateTokenRequest, CreateTokenResponse, DeleteTokenRequest,
    EmptyResponse, GetAccountRequest, ListAccountRequest, UpdatePasswordRequest, UpdatePasswordResponse,
};
use corral_proto::session::session_service_server::SessionService;
use corral_proto::session::{
    GetUserInfoRequest, GetUserInfoResponse, SessionCreateRequest, SessionDeleteRequest, SessionResponse,
};
use serde::Deserialize;
use tonic::{Code, Request, Response as GrpcResponse, Status};

use crate::calls::CallContext;
use crate::error::{ApiError, payload_too_large};

/// The cookie Argo CD's UI keeps its session token in.
pub const TOKEN_COOKIE: &str = "argocd.token";

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "auth failure");
            return ApiError::new(code, "internal error");
        }
        let retry = match e {
            AuthError::TooManyAttempts { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        ApiError { retry_after_secs: retry, ..ApiError::new(code, e.to_string()) }
    }
}

/// The calls both front ends share.
#[derive(Clone)]
pub struct Accounts {
    pub auth: Arc<Auth>,
}

impl Accounts {
    pub async fn login(&self, ctx: &CallContext, req: SessionCreateRequest) -> Result<SessionResponse, ApiError> {
        if req.username.is_empty() || req.password.is_empty() {
            // Argo CD's SSO token exchange (`token`) is not served here.
            return Err(ApiError::new(Code::Unauthenticated, "username and password are required"));
        }
        let token = self.auth.login(&req.username, &req.password, &ctx.source).await?;
        Ok(SessionResponse { token })
    }

    pub async fn logout(&self, ctx: &CallContext) -> Result<SessionResponse, ApiError> {
        self.auth.logout(ctx.principal()?).await?;
        Ok(SessionResponse { token: String::new() })
    }

    pub fn user_info(&self, ctx: &CallContext) -> Result<GetUserInfoResponse, ApiError> {
        let who = ctx.principal()?;
        Ok(GetUserInfoResponse { logged_in: true, username: who.account.clone(), iss: ISSUER.into(), groups: vec![] })
    }

    pub fn can_i(&self, ctx: &CallContext, req: CanIRequest) -> Result<CanIResponse, ApiError> {
        let who = ctx.principal()?;
        let yes = self.auth.enforce(who, &req.resource, &req.action, &req.subresource);
        Ok(CanIResponse { value: if yes { "yes" } else { "no" }.into() })
    }

    pub async fn update_password(
        &self,
        ctx: &CallContext,
        req: UpdatePasswordRequest,
    ) -> Result<UpdatePasswordResponse, ApiError> {
        self.auth.update_password(ctx.principal()?, &req.name, &req.current_password, &req.new_password).await?;
        Ok(UpdatePasswordResponse {})
    }

    pub async fn list(&self, ctx: &CallContext) -> Result<AccountsList, ApiError> {
        Ok(self.auth.list_accounts(ctx.principal()?).await?)
    }

    pub async fn get(&self, ctx: &CallContext, name: &str) -> Result<Account, ApiError> {
        Ok(self.auth.get_account(ctx.principal()?, name).await?)
    }

    pub async fn create_token(
        &self,
        ctx: &CallContext,
        req: CreateTokenRequest,
    ) -> Result<CreateTokenResponse, ApiError> {
        let token = self.auth.create_token(ctx.principal()?, &req.name, req.expires_in, &req.id).await?;
        Ok(CreateTokenResponse { token })
    }

    pub async fn delete_token(&self, ctx: &CallContext, name: &str, id: &str) -> Result<EmptyResponse, ApiError> {
        self.auth.delete_token(ctx.principal()?, name, id).await?;
        Ok(EmptyResponse {})
    }
}

pub struct GrpcAccounts(pub Accounts);

#[tonic::async_trait]
impl AccountService for GrpcAccounts {
    async fn can_i(&self, req: Request<CanIRequest>) -> Result<GrpcResponse<CanIResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(GrpcResponse::new(self.0.can_i(&c, req.into_inner())?))
    }

    async fn update_password(
        &self,
        req: Request<UpdatePasswordRequest>,
    ) -> Result<GrpcResponse<UpdatePasswordResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(GrpcResponse::new(self.0.update_password(&c, req.into_inner()).await?))
    }

    async fn list_accounts(&self, req: Request<ListAccountRequest>) -> Result<GrpcResponse<AccountsList>, Status> {
        Ok(GrpcResponse::new(self.0.list(&CallContext::of(&req)).await?))
    }

    async fn get_account(&self, req: Request<GetAccountRequest>) -> Result<GrpcResponse<Account>, Status> {
        let c = CallContext::of(&req);
        Ok(GrpcResponse::new(self.0.get(&c, &req.into_inner().name).await?))
    }

    async fn create_token(
        &self,
        req: Request<CreateTokenRequest>,
    ) -> Result<GrpcResponse<CreateTokenResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(GrpcResponse::new(self.0.create_token(&c, req.into_inner()).await?))
    }

    async fn delete_token(&self, req: Request<DeleteTokenRequest>) -> Result<GrpcResponse<EmptyResponse>, Status> {
        let c = CallContext::of(&req);
        let r = req.into_inner();
        Ok(GrpcResponse::new(self.0.delete_token(&c, &r.name, &r.id).await?))
    }
}

pub struct GrpcSessions(pub Accounts);

#[tonic::async_trait]
impl SessionService for GrpcSessions {
    async fn get_user_info(
        &self,
        req: Request<GetUserInfoRequest>,
    ) -> Result<GrpcResponse<GetUserInfoResponse>, Status> {
        Ok(GrpcResponse::new(self.0.user_info(&CallContext::of(&req))?))
    }

    async fn create(&self, req: Request<SessionCreateRequest>) -> Result<GrpcResponse<SessionResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(GrpcResponse::new(self.0.login(&c, req.into_inner()).await?))
    }

    async fn delete(&self, req: Request<SessionDeleteRequest>) -> Result<GrpcResponse<SessionResponse>, Status> {
        Ok(GrpcResponse::new(self.0.logout(&CallContext::of(&req)).await?))
    }
}

#[derive(Clone)]
pub struct RestAccounts {
    pub accounts: Accounts,
    pub max_body_bytes: usize,
}

fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Reads a JSON body of at most `limit` bytes; an empty body reads as `{}`.
async fn json_body<T: for<'de> Deserialize<'de> + Default>(body: Body, limit: usize) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| payload_too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let invalid = |e: String| ApiError::invalid(format!("request body: {e}")).into_response();
    // A JSON object, whose null members count as absent, as grpc-gateway reads a message (serde
    // alone would also take an array for a struct, and refuse null for a string).
    let serde_json::Value::Object(mut members) = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?
    else {
        return Err(invalid("expected a JSON object".into()));
    };
    members.retain(|_, v| !v.is_null());
    serde_json::from_value(serde_json::Value::Object(members)).map_err(|e| invalid(e.to_string()))
}

// Go-style JSON bodies with Argo CD's field names; unknown keys are ignored as grpc-gateway does.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginBody {
    username: String,
    password: String,
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PasswordBody {
    new_password: String,
    current_password: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TokenBody {
    #[serde(deserialize_with = "int_or_string")]
    expires_in: i64,
    id: String,
    /// The account is the one in the path; a name in the body must still be text, as in the
    /// request message.
    #[serde(rename = "name")]
    _name: String,
}

/// grpc-gateway accepts an int64 as a JSON number or a string.
fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        S(String),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) if s.is_empty() => Ok(0),
        N::S(s) => s.parse().map_err(|_| serde::de::Error::custom(format!("expiresIn: not a number: {s:?}"))),
    }
}

pub(crate) async fn rest_login(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    body: Body,
) -> Response {
    let b: LoginBody = match json_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = SessionCreateRequest { username: b.username, password: b.password, token: b.token };
    match s.accounts.login(&ctx, req).await {
        Ok(r) => {
            // As Argo CD, REST login also sets the UI's cookie.
            let cookie = format!("{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", r.token);
            let mut resp = axum::Json(serde_json::json!({"token": r.token})).into_response();
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(http::header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn rest_logout(State(s): State<RestAccounts>, Extension(ctx): Extension<CallContext>) -> Response {
    match s.accounts.logout(&ctx).await {
        Ok(_) => {
            let mut resp = axum::Json(serde_json::json!({})).into_response();
            let clear = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
            if let Ok(v) = http::HeaderValue::from_str(&clear) {
                resp.headers_mut().insert(http::header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn rest_user_info(State(s): State<RestAccounts>, Extension(ctx): Extension<CallContext>) -> Response {
    respond(s.accounts.user_info(&ctx).map(|u| {
        let mut v = serde_json::json!({"loggedIn": u.logged_in, "username": u.username, "iss": u.iss});
        if !u.groups.is_empty() {
            v["groups"] = serde_json::json!(u.groups);
        }
        v
    }))
}

fn token_json(t: &corral_proto::account::Token) -> serde_json::Value {
    let mut v = serde_json::json!({"id": t.id, "issuedAt": t.issued_at});
    if t.expires_at != 0 {
        v["expiresAt"] = serde_json::json!(t.expires_at);
    }
    v
}

fn account_json(a: &Account) -> serde_json::Value {
    let mut v = serde_json::json!({"name": a.name});
    if a.enabled {
        v["enabled"] = serde_json::json!(true);
    }
    if !a.capabilities.is_empty() {
        v["capabilities"] = serde_json::json!(a.capabilities);
    }
    if !a.tokens.is_empty() {
        v["tokens"] = a.tokens.iter().map(token_json).collect();
    }
    v
}

pub(crate) async fn rest_list(State(s): State<RestAccounts>, Extension(ctx): Extension<CallContext>) -> Response {
    respond(s.accounts.list(&ctx).await.map(|l| {
        let items: Vec<_> = l.items.iter().map(account_json).collect();
        serde_json::json!({"items": items})
    }))
}

pub(crate) async fn rest_get(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path(name): Path<String>,
) -> Response {
    respond(s.accounts.get(&ctx, &name).await.map(|a| account_json(&a)))
}

pub(crate) async fn rest_update_password(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    body: Body,
) -> Response {
    let b: PasswordBody = match json_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req =
        UpdatePasswordRequest { new_password: b.new_password, current_password: b.current_password, name: b.name };
    respond(s.accounts.update_password(&ctx, req).await.map(|_| serde_json::json!({})))
}

pub(crate) async fn rest_can_i(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path((resource, action, subresource)): Path<(String, String, String)>,
) -> Response {
    respond(
        s.accounts
            .can_i(&ctx, CanIRequest { resource, action, subresource })
            .map(|r| serde_json::json!({"value": r.value})),
    )
}

pub(crate) async fn rest_create_token(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let mut b: TokenBody = match json_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // grpc-gateway fills fields from the query string too.
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "expiresIn" if b.expires_in == 0 => match v.parse() {
                Ok(n) => b.expires_in = n,
                Err(_) => return ApiError::invalid(format!("expiresIn: not a number: {v:?}")).into_response(),
            },
            "id" if b.id.is_empty() => b.id = v.into_owned(),
            _ => {}
        }
    }
    let req = CreateTokenRequest { name, expires_in: b.expires_in, id: b.id };
    respond(s.accounts.create_token(&ctx, req).await.map(|r| serde_json::json!({"token": r.token})))
}

pub(crate) async fn rest_delete_token(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    respond(s.accounts.delete_token(&ctx, &name, &id).await.map(|_| serde_json::json!({})))
}
