//! Hosting: models, endpoint configurations and endpoints, and the loop that runs endpoints'
//! instances (one `clary model-server` each) through their state machine:
//! `Creating → InService`, `Updating → InService` (new instances up, traffic switched, old ones
//! drained) or `RollingBack → InService` on a bad config, `Failed`, and `Deleting` (SIGTERM,
//! SIGKILL after 30 s). The loop also replaces lost instances and copies each instance's output
//! into the log group `/aws/sagemaker/Endpoints/<name>`.

use crate::routes::{EndpointRoute, VariantRoute};
use crate::{ControlError, ControlPlane, now_millis, now_secs};
use clary_exec::executor::InstanceLaunch;
use clary_exec::protocol::ModelServerSpec;
use clary_exec::{ExecHandle, HostProcess, Observed, StopSignal};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const ENDPOINT_LOG_GROUP_PREFIX: &str = "/aws/sagemaker/Endpoints/";
/// SIGTERM → SIGKILL for instances being deleted or drained.
const STOP_GRACE_SECS: f64 = 30.0;

/// One variant of a deployment, with its model resolved when the deployment was made (so a
/// model or config deleted later does not disturb a running endpoint, as on SageMaker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantPlan {
    pub name: String,
    pub weight: f64,
    pub count: u32,
    pub instance_type: String,
    pub accelerator_type: Option<String>,
    pub model_name: String,
    pub image: String,
    pub model_data_url: Option<String>,
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    id: String,
    variant: String,
    /// 0 until launched.
    pid: i32,
    start_ticks: u64,
    port: u16,
    work_dir: PathBuf,
    log_stream: String,
    log_offset: u64,
    healthy: bool,
    launched_at: f64,
    stopping_since: Option<f64>,
    /// The Slurm job running this instance, when on Slurm.
    #[serde(default)]
    slurm_job: Option<u64>,
    /// Where its model server listens (the node's address on Slurm, reported with the port).
    #[serde(default = "loopback")]
    address: String,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

impl Instance {
    /// Started (a local process, or a Slurm job), whatever its state now.
    fn launched(&self) -> bool {
        self.pid != 0 || self.slurm_job.is_some()
    }

    /// Back to "not started", so the hosting loop launches a replacement.
    fn forget_launch(&mut self) {
        self.pid = 0;
        self.slurm_job = None;
        self.port = 0;
        self.healthy = false;
    }

    /// Where the executor runs it, once launched.
    fn handle(&self) -> Option<ExecHandle> {
        match (self.slurm_job, self.pid) {
            (Some(id), _) => Some(ExecHandle::SlurmJob(id)),
            (None, 0) => None,
            (None, pid) => Some(ExecHandle::Process(HostProcess {
                pid,
                start_ticks: self.start_ticks,
            })),
        }
    }
    fn log_file(&self) -> PathBuf {
        self.work_dir.join("model-server.log")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    config_name: String,
    plan: Vec<VariantPlan>,
    instances: Vec<Instance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Endpoint {
    name: String,
    arn: String,
    config_name: String,
    status: String,
    failure_reason: Option<String>,
    creation_time: f64,
    last_modified_time: f64,
    plan: Vec<VariantPlan>,
    instances: Vec<Instance>,
    pending: Option<Pending>,
    /// Instances on their way out (drained after an update, or being deleted).
    retiring: Vec<Instance>,
}

/// Filters of the `List*` hosting calls.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub name_contains: Option<String>,
    pub status_equals: Option<String>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

fn arn(cp: &ControlPlane, kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:{kind}/{}",
        cp.config.region,
        cp.config.account,
        name.to_ascii_lowercase()
    )
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

mod endpoints;
mod instances;
mod reconciler;
mod resources;
