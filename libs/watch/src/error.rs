use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The revision asked for is older than what is still kept, or the watch fell that far behind.
    #[error("resource version {asked} is too old: the oldest one a watch can resume from is {oldest}")]
    Expired { asked: u64, oldest: u64 },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl WatchError {
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Expired { .. } => Code::OutOfRange,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<corral_event_log::LogError> for WatchError {
    fn from(e: corral_event_log::LogError) -> Self {
        WatchError::Unavailable(e.to_string())
    }
}

impl From<corral_cluster_model::RegistryError> for WatchError {
    fn from(e: corral_cluster_model::RegistryError) -> Self {
        match e.code() {
            Code::InvalidArgument => WatchError::InvalidArgument(e.to_string()),
            Code::Unavailable => WatchError::Unavailable(e.to_string()),
            _ => WatchError::Internal(e.to_string()),
        }
    }
}
