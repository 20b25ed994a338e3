//! The control plane: training jobs and their state machine, the queue that launches them onto
//! an executor, and CloudWatch-shaped log storage, all kept in SQLite.

pub mod capacity;
pub mod db;
pub mod hosting;
pub mod logs;
pub mod routes;
pub mod training;

use std::path::PathBuf;

pub use training::{ControlPlane, ListJobs};

/// Settings the control plane runs with.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub data_dir: PathBuf,
    pub runtimes_dir: PathBuf,
    pub region: String,
    pub account: String,
    /// The URL agents report to.
    pub control_url: String,
    pub access_key: String,
    pub secret_key: String,
    /// The `clary` binary, started as `clary agent`.
    pub agent_program: PathBuf,
    /// Directory of the Python helper modules given to jobs.
    pub python_shims: PathBuf,
    pub capacity: capacity::Capacity,
    pub stop_grace_secs: u64,
    /// How agents reach objects: `local` (the store's directory) or `http` (the S3 API).
    pub agent_objects: String,
    /// Jobs and endpoint instances go to this Slurm cluster instead of local processes.
    pub slurm: Option<clary_exec::slurm::SlurmExecutor>,
}

/// Domain errors, each with the AWS error code its API maps it to.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceLimitExceeded(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Validation(_) => "ValidationException",
            ControlError::ResourceInUse(_) => "ResourceInUse",
            ControlError::ResourceNotFound(_) => "ResourceNotFound",
            ControlError::ResourceLimitExceeded(_) => "ResourceLimitExceeded",
            ControlError::InvalidParameter(_) => "InvalidParameterException",
            ControlError::Internal(_) => "InternalFailure",
        }
    }
}

pub fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
