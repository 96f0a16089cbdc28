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
    /// Seconds after which a retry can succeed: `Retry-After` on REST, `retry-after` metadata on
    /// gRPC.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after_secs: None }
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// The Argo CD error body under an HTTP status other than the code's usual one.
    pub fn into_response_with_status(self, status: StatusCode) -> Response {
        let body = corral_api_json::error_body(self.code as i32, &self.message);
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
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

/// The gRPC code of an HTTP status the router or an extractor answers with by itself (no
/// handler ran), as grpc-gateway reports its own routing errors: a known path with another method
/// is Unimplemented.
pub fn code_for_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 414 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 501 => Code::Unimplemented,
        409 => Code::AlreadyExists,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        s if s < 500 => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(secs) = e.retry_after_secs {
            metadata.insert("retry-after", tonic::metadata::MetadataValue::from(secs));
        }
        tonic::Status::with_metadata(e.code, e.message, metadata)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(self.code);
        self.into_response_with_status(status)
    }
}

/// An over-long body: 413 on REST (as the limit is about the body), ResourceExhausted in the body.
pub fn payload_too_large(limit: usize) -> Response {
    let message = format!("request body is larger than the limit of {limit} bytes");
    let body = corral_api_json::error_body(Code::ResourceExhausted as i32, &message);
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}
