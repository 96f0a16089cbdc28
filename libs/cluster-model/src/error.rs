use corral_domain::DomainError;
use corral_event_log::LogError;
use tonic::Code;

/// Everything a registry call can fail with. The gateway turns these into gRPC and HTTP statuses
/// through the code carried in the reply.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Another writer appended to the aggregate first; the caller retries on fresh state.
    #[error("concurrent update")]
    Conflict,
    /// The cluster is no longer the version the command was authorised against.
    #[error("the cluster changed while the request was being authorised; retry")]
    Changed,
}

impl RegistryError {
    /// A judgement on the request against the registry's state, which a replica behind the log
    /// may get wrong; not a failure to reach the log or to store.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::InvalidArgument(_)
                | Self::NotFound(_)
                | Self::AlreadyExists(_)
                | Self::FailedPrecondition(_)
                | Self::Changed
        )
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unavailable(_) | Self::Conflict => Code::Unavailable,
            Self::Changed => Code::Aborted,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// What the client is told: internal detail stays in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_string(),
            Self::Conflict => "too many concurrent updates; try again".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<DomainError> for RegistryError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidArgument { .. } => Self::InvalidArgument(e.to_string()),
            DomainError::NotFound(_) | DomainError::BuiltIn(_) => Self::NotFound(e.to_string()),
            DomainError::AlreadyExists(_) => Self::AlreadyExists(e.to_string()),
        }
    }
}

impl From<LogError> for RegistryError {
    fn from(e: LogError) -> Self {
        match e {
            // A repeated batch is retried on fresh state, like a lost race.
            LogError::Conflict { .. } | LogError::DuplicateBatch => Self::Conflict,
            LogError::Unavailable(m) => Self::Unavailable(format!("event log unavailable: {m}")),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<corral_projection::ProjectionError> for RegistryError {
    fn from(e: corral_projection::ProjectionError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<prost::DecodeError> for RegistryError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Internal(format!("corrupt record: {e}"))
    }
}
