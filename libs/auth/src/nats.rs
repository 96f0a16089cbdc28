//! API-token issuing and revocation over NATS: the gateways' client and the auth-rotation
//! service's server (a queue group, so any replica answers).

use std::sync::Arc;
use std::time::Duration;

use corral_proto::registry::{Error as WireError, IssueApiToken, RequestContext, RevokeApiToken, TokenReply};
use prost::Message;

use crate::{Auth, AuthError, TokenIssuer};

pub const ISSUE_SUBJECT: &str = "corralrpc.auth-rotation.token.issue";
pub const REVOKE_SUBJECT: &str = "corralrpc.auth-rotation.token.revoke";
pub const QUEUE_GROUP: &str = "corral-auth-rotation-tokens";

fn to_wire(e: &AuthError) -> WireError {
    corral_service_api::wire_error(e.code(), e.to_string())
}

fn from_wire(e: WireError) -> AuthError {
    AuthError::from_code(corral_service_api::wire_code(&e), e.message)
}

/// The gateways' handle on the auth-rotation replicas.
pub struct NatsTokenIssuer {
    client: async_nats::Client,
    timeout: Duration,
}

impl NatsTokenIssuer {
    pub fn new(client: async_nats::Client, timeout: Duration) -> NatsTokenIssuer {
        NatsTokenIssuer { client, timeout }
    }

    async fn call(&self, subject: &'static str, payload: Vec<u8>) -> Result<TokenReply, AuthError> {
        let payload = corral_nats_rpc::request(&self.client, subject, payload, self.timeout)
            .await
            .map_err(|e| AuthError::Unavailable(format!("the auth-rotation service did not answer: {}", e.kind())))?;
        let reply = TokenReply::decode(payload.as_ref())
            .map_err(|e| AuthError::Internal(format!("malformed token reply: {e}")))?;
        match reply.error {
            Some(e) => Err(from_wire(e)),
            None => Ok(reply),
        }
    }
}

fn context(actor: &str) -> Option<RequestContext> {
    Some(RequestContext { actor: actor.to_string(), ..Default::default() })
}

#[async_trait::async_trait]
impl TokenIssuer for NatsTokenIssuer {
    async fn issue(&self, account: &str, expires_in: i64, id: &str, actor: &str) -> Result<(String, u64), AuthError> {
        let req = IssueApiToken { context: context(actor), account: account.into(), expires_in, id: id.into() };
        let reply = self.call(ISSUE_SUBJECT, req.encode_to_vec()).await?;
        Ok((reply.token, reply.revision))
    }

    async fn revoke(&self, account: &str, id: &str, actor: &str) -> Result<u64, AuthError> {
        let req = RevokeApiToken { context: context(actor), account: account.into(), id: id.into() };
        Ok(self.call(REVOKE_SUBJECT, req.encode_to_vec()).await?.revision)
    }
}

/// Serves token requests with `auth` until `shutdown` resolves.
pub async fn serve(
    client: async_nats::Client,
    auth: Arc<Auth>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError> {
    let handle = move |subject: usize, msg: async_nats::Message| {
        let auth = auth.clone();
        async move {
            let result = if subject == 0 {
                match IssueApiToken::decode(msg.payload.as_ref()) {
                    Ok(r) => {
                        let actor = r.context.map(|c| c.actor).unwrap_or_default();
                        auth.issue_api_token(&r.account, r.expires_in, &r.id, &actor).await
                    }
                    Err(e) => Err(AuthError::InvalidArgument(format!("malformed request: {e}"))),
                }
            } else {
                match RevokeApiToken::decode(msg.payload.as_ref()) {
                    Ok(r) => {
                        let actor = r.context.map(|c| c.actor).unwrap_or_default();
                        auth.revoke_api_token(&r.account, &r.id, &actor).await.map(|rev| (String::new(), rev))
                    }
                    Err(e) => Err(AuthError::InvalidArgument(format!("malformed request: {e}"))),
                }
            };
            let reply = match result {
                Ok((token, revision)) => TokenReply { token, revision, error: None },
                Err(e) => TokenReply { error: Some(to_wire(&e)), ..Default::default() },
            };
            reply.encode_to_vec()
        }
    };
    corral_nats_rpc::serve(client, QUEUE_GROUP, &[ISSUE_SUBJECT, REVOKE_SUBJECT], handle, shutdown).await
}
