//! The control plane's errors. Each says what was wrong and what to do; the API maps each kind
//! to an AWS error code and HTTP status in one table.

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The request is not acceptable as given.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ResourceInUse(String),
    /// The job or resource a SageMaker call names does not exist (SageMaker answers these
    /// with `ValidationException`, "Requested resource not found").
    #[error("{0}")]
    NotFound(String),
    /// A resource of another service (a log group, an instance) does not exist
    /// (`ResourceNotFoundException`).
    #[error("{0}")]
    ResourceNotFound(String),
    /// A SageMaker resource that does not exist, where SageMaker answers with its own
    /// `ResourceNotFound` (tuning jobs).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    ResourceLimitExceeded(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Internal(String),
}
