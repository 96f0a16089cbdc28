//! `/api/v1/session` and `/api/v1/account` over REST, with Argo CD's JSON (`corral_api_json`).

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use corral_proto::account::CanIRequest;
use serde_json::json;

use crate::accounts::{Accounts, TOKEN_COOKIE};
use crate::calls::CallContext;
use crate::error::ApiError;
use crate::rest::{LimitedBody, Params};

/// What the account handlers need; their routes are in [`crate::routes`].
#[derive(Clone)]
pub struct RestAccounts {
    pub accounts: Accounts,
    pub max_body_bytes: usize,
}

fn invalid(e: corral_api_json::JsonError) -> ApiError {
    ApiError::invalid(format!("request body: {e}"))
}

fn json(v: serde_json::Value) -> Response {
    axum::Json(v).into_response()
}

/// A cookie for the UI, as Argo CD sets and clears it.
fn with_cookie(mut resp: Response, value: &str, max_age_zero: bool) -> Response {
    let cookie = format!(
        "{TOKEN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}",
        if max_age_zero { "; Max-Age=0" } else { "" }
    );
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(http::header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn rest_login(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req = corral_api_json::session_create_from_slice(&body).map_err(invalid)?;
    let r = s.accounts.login(&ctx, req).await?;
    // As Argo CD, REST login also sets the UI's cookie.
    Ok(with_cookie(json(json!({"token": r.token})), &r.token, false))
}

pub(crate) async fn rest_logout(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
) -> Result<Response, ApiError> {
    s.accounts.logout(&ctx).await?;
    Ok(with_cookie(json(json!({})), "", true))
}

pub(crate) async fn rest_user_info(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
) -> Result<Response, ApiError> {
    Ok(json(corral_api_json::user_info_to_json(&s.accounts.user_info(&ctx)?)))
}

pub(crate) async fn rest_list(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
) -> Result<Response, ApiError> {
    Ok(json(corral_api_json::accounts_to_json(&s.accounts.list(&ctx).await?)))
}

pub(crate) async fn rest_get(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(corral_api_json::account_to_json(&s.accounts.get(&ctx, &name).await?)))
}

pub(crate) async fn rest_update_password(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req = corral_api_json::update_password_from_slice(&body).map_err(invalid)?;
    s.accounts.update_password(&ctx, req).await?;
    Ok(json(json!({})))
}

pub(crate) async fn rest_can_i(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path((resource, action, subresource)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let r = s.accounts.can_i(&ctx, CanIRequest { resource, action, subresource })?;
    Ok(json(json!({"value": r.value})))
}

pub(crate) async fn rest_create_token(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path(name): Path<String>,
    p: Params,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let mut req = corral_api_json::create_token_from_slice(&name, &body).map_err(invalid)?;
    // grpc-gateway fills fields from the query string too.
    let expires_in = p.one("expiresIn")?;
    if req.expires_in == 0 && !expires_in.is_empty() {
        req.expires_in =
            expires_in.parse().map_err(|_| ApiError::invalid(format!("expiresIn: not a number: {expires_in:?}")))?;
    }
    if req.id.is_empty() {
        req.id = p.one("id")?;
    }
    Ok(json(json!({"token": s.accounts.create_token(&ctx, req).await?.token})))
}

pub(crate) async fn rest_delete_token(
    State(s): State<RestAccounts>,
    Extension(ctx): Extension<CallContext>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.accounts.delete_token(&ctx, &name, &id).await?;
    Ok(json(json!({})))
}
