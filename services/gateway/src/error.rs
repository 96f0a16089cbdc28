//! The one mapping from an error to its gRPC status, HTTP status and Argo CD error body, used by
//! both the gRPC and the REST path.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// The Argo CD error body under an HTTP status other than the code's usual one.
    pub fn into_response_with_status(self, status: StatusCode) -> Response {
        let body = corral_api_json::error_body(self.code as i32, &self.message);
        (status, axum::Json(body)).into_response()
    }
}

/// gRPC code to HTTP status, as grpc-gateway (and so Argo CD) maps them.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        tonic::Status::new(e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = corral_api_json::error_body(self.code as i32, &self.message);
        (http_status(self.code), axum::Json(body)).into_response()
    }
}

/// An over-long body: 413 on REST (as the limit is about the body), ResourceExhausted in the body.
pub fn payload_too_large(limit: usize) -> Response {
    let message = format!("request body is larger than the limit of {limit} bytes");
    let body = corral_api_json::error_body(Code::ResourceExhausted as i32, &message);
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}
