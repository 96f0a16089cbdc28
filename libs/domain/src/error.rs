use std::fmt;

/// Why a command was refused. Each variant maps to one gRPC code at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The request or the resulting spec is invalid (gRPC `InvalidArgument`). `field` uses Argo
    /// CD's JSON names (`labels`, `config.tlsClientConfig.caData`, `updatedFields`). Display is
    /// `invalid cluster: {field}: {message}`, or just `message` when `field` is empty (used for
    /// messages that must read exactly like Argo CD's).
    #[error("{}", InvalidDisplay { field, message })]
    InvalidArgument { field: String, message: String },
    /// The cluster does not exist (gRPC `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The cluster exists already (gRPC `AlreadyExists`). `decide` never returns it (an existing
    /// cluster is handled by the identical / upsert rules); the edge uses it for name clashes.
    #[error("{0}")]
    AlreadyExists(String),
    /// The command targets the built-in in-cluster entry, which cannot be deleted. A distinct
    /// variant so the edge can choose its code; Argo CD-compatible edges map it to `NotFound`.
    #[error("{0}")]
    BuiltIn(String),
}

impl DomainError {
    /// An `InvalidArgument` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> DomainError {
        DomainError::InvalidArgument { field: field.into(), message: message.into() }
    }
}

struct InvalidDisplay<'a> {
    field: &'a str,
    message: &'a str,
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(self.message)
        } else {
            write!(f, "invalid cluster: {}: {}", self.field, self.message)
        }
    }
}
