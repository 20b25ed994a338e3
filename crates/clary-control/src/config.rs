//! Settings the control plane runs with.

use crate::domain::capacity::Capacity;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub data_dir: PathBuf,
    pub runtimes_dir: PathBuf,
    pub region: String,
    pub account: String,
    /// The URL agents report to.
    pub control_url: String,
    /// Directory of the Python helper modules given to jobs.
    pub python_shims: PathBuf,
    pub capacity: Capacity,
    pub stop_grace_secs: u64,
    /// How agents reach objects: `local` (the store's directory), `http` (the server's S3
    /// API) or `presigned` (an external store, with URLs the server presigns for each request).
    pub agent_objects: String,
}

impl ControlConfig {
    /// `arn:aws:sagemaker:<region>:<account>:<kind>/<name, lower-cased>`.
    pub fn arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:sagemaker:{}:{}:{kind}/{}",
            self.region,
            self.account,
            name.to_ascii_lowercase()
        )
    }
}
