//! The calls of `account.AccountService` and `session.SessionService`, shared by the gRPC
//! ([`crate::accounts_grpc`]) and REST ([`crate::accounts_rest`]) front ends.

use std::sync::Arc;

use corral_auth::{Auth, AuthError, ISSUER};
use corral_proto::account::{
    Account, AccountsList, CanIRequest, CanIResponse, CreateTokenRequest, CreateTokenResponse, EmptyResponse,
    UpdatePasswordRequest, UpdatePasswordResponse,
};
use corral_proto::session::{GetUserInfoResponse, SessionCreateRequest, SessionResponse};
use tonic::Code;

use crate::calls::CallContext;
use crate::error::ApiError;

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
            crate::metrics::login(false);
            // Argo CD's SSO token exchange (`token`) is not served here.
            return Err(ApiError::new(Code::Unauthenticated, "username and password are required"));
        }
        let token = self.auth.login(&req.username, &req.password, &ctx.source).await;
        crate::metrics::login(token.is_ok());
        Ok(SessionResponse { token: token? })
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
