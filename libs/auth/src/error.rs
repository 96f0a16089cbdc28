//! What an authentication call can fail with, and the gRPC code each failure answers with.

use corral_event_log::LogError;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("permission denied")]
    PermissionDenied,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Locked out until the failure window lets a try through, in `retry_after_secs`.
    #[error("too many failed login attempts; try again later")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The gRPC code this error answers with, on every transport.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Unauthenticated(_) => Code::Unauthenticated,
            AuthError::PermissionDenied => Code::PermissionDenied,
            AuthError::InvalidArgument(_) => Code::InvalidArgument,
            AuthError::NotFound(_) => Code::NotFound,
            AuthError::AlreadyExists(_) => Code::AlreadyExists,
            AuthError::TooManyAttempts { .. } => Code::ResourceExhausted,
            AuthError::Unavailable(_) => Code::Unavailable,
            AuthError::Config(_) | AuthError::Internal(_) => Code::Internal,
        }
    }

    /// The error another replica answered with `code`: the inverse of [`AuthError::code`].
    pub fn from_code(code: Code, message: String) -> AuthError {
        match code {
            Code::Unauthenticated => AuthError::Unauthenticated(message),
            Code::PermissionDenied => AuthError::PermissionDenied,
            Code::InvalidArgument => AuthError::InvalidArgument(message),
            Code::NotFound => AuthError::NotFound(message),
            Code::AlreadyExists => AuthError::AlreadyExists(message),
            Code::ResourceExhausted => AuthError::TooManyAttempts { retry_after_secs: 0 },
            Code::Unavailable => AuthError::Unavailable(message),
            _ => AuthError::Internal(message),
        }
    }
}

impl From<LogError> for AuthError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(m) => AuthError::Unavailable(m),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

/// The same answer for an unknown user and a wrong password.
pub(crate) fn bad_login() -> AuthError {
    AuthError::Unauthenticated("Invalid username or password".into())
}

pub(crate) fn invalid_token() -> AuthError {
    AuthError::Unauthenticated("invalid session: token is not valid".into())
}
