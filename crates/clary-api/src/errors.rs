//! The one table from errors to AWS error codes and HTTP statuses.

use clary_control::ControlError;
use http::StatusCode;

/// What a JSON-protocol call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Control(#[from] ControlError),
    /// An operation of a service Clary speaks that it does not serve.
    #[error("{service} operation {operation} is not served by Clary; it serves {served}")]
    UnknownOperation {
        service: &'static str,
        operation: String,
        served: &'static str,
    },
    /// A CloudWatch parameter that is missing or wrong (`MissingParameter`,
    /// `InvalidParameterValue`, `InvalidParameterCombination`: CloudWatch's own codes).
    #[error("{message}")]
    CloudWatchParameter { code: &'static str, message: String },
    /// A scoped key asked for what it may not do (S3's `AccessDenied`, naming the target).
    #[error("{0}")]
    AccessDenied(String),
}

impl ApiError {
    /// The HTTP status and the AWS error code (`__type`).
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnknownOperation { .. } => {
                (StatusCode::BAD_REQUEST, "UnknownOperationException")
            }
            ApiError::CloudWatchParameter { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
            ApiError::Control(e) => match e {
                ControlError::Validation(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
                // SageMaker's "not found" for the resource a call names is a
                // ValidationException on the wire.
                ControlError::NotFound(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
                ControlError::ResourceNotFound(_) => {
                    (StatusCode::BAD_REQUEST, "ResourceNotFoundException")
                }
                ControlError::ResourceInUse(_) => (StatusCode::BAD_REQUEST, "ResourceInUse"),
                ControlError::Missing(_) => (StatusCode::BAD_REQUEST, "ResourceNotFound"),
                ControlError::ResourceLimitExceeded(_) => {
                    (StatusCode::BAD_REQUEST, "ResourceLimitExceeded")
                }
                ControlError::InvalidParameter(_) => {
                    (StatusCode::BAD_REQUEST, "InvalidParameterException")
                }
                ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_as_validation_and_unknown_operations_are_named() {
        let e = ApiError::from(ControlError::NotFound("x".into()));
        assert_eq!(e.status_and_code().1, "ValidationException");
        let e = ApiError::UnknownOperation {
            service: "SageMaker",
            operation: "CreateHyperParameterTuningJob".into(),
            served: "training jobs",
        };
        assert_eq!(e.status_and_code().1, "UnknownOperationException");
        assert!(
            e.to_string()
                .contains("CreateHyperParameterTuningJob is not served")
        );
        assert_eq!(
            ApiError::from(ControlError::Internal("db".into()))
                .status_and_code()
                .0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
