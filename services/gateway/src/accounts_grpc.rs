//! `account.AccountService` and `session.SessionService` over gRPC: each method is its call.

use corral_proto::account::account_service_server::AccountService;
use corral_proto::account::{
    Account, AccountsList, CanIRequest, CanIResponse, CreateTokenRequest, CreateTokenResponse, DeleteTokenRequest,
    EmptyResponse, GetAccountRequest, ListAccountRequest, UpdatePasswordRequest, UpdatePasswordResponse,
};
use corral_proto::session::session_service_server::SessionService;
use corral_proto::session::{
    GetUserInfoRequest, GetUserInfoResponse, SessionCreateRequest, SessionDeleteRequest, SessionResponse,
};
use tonic::{Request, Response as GrpcResponse, Status};

use crate::accounts::Accounts;
use crate::calls::CallContext;

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
