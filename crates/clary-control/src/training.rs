//! Training jobs: creation, the status machine, the queue that launches host agents, reports
//! from agents, and recovery after a server restart.

use crate::db::Db;
use crate::logs::{Logs, TRAINING_LOG_GROUP};
use crate::{ControlConfig, ControlError, now_secs};
use clary_exec::protocol::{
    ChannelSpec, CheckpointSpec, HostSpec, LogBatch, Outcome, ResultReport, StatusReport,
};
use clary_exec::runtimes::{MXNET_TRAINING_MODULE, Mode, Runtimes};
use clary_exec::slurm::Submission;
use clary_exec::{HostProcess, LocalExecutor};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// One host of a launched job, as kept in the `hosts` column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct HostState {
    host: String,
    pid: i32,
    start_ticks: u64,
    log_stream: String,
    /// The host's loopback address (`127.A.B.i`, one block per running job).
    #[serde(default)]
    address: String,
    /// The Slurm job running this host (all hosts of a job share one), when on Slurm.
    #[serde(default)]
    slurm_job: Option<u64>,
    #[serde(default)]
    result: Option<ResultReport>,
}

impl HostState {
    fn process(&self) -> HostProcess {
        HostProcess {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Transition {
    status: String,
    start_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<f64>,
    status_message: String,
}

/// A row of `training_jobs`.
#[derive(Debug, Clone)]
struct JobRow {
    name: String,
    arn: String,
    request: Value,
    status: String,
    secondary_status: String,
    status_message: String,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
    creation_time: f64,
    last_modified_time: f64,
    training_start_time: Option<f64>,
    training_end_time: Option<f64>,
    model_artifacts: Option<String>,
    transitions: Vec<Transition>,
    hosts: Vec<HostState>,
    stop_requested: bool,
}

const JOB_COLUMNS: &str = "name, arn, request, status, secondary_status, status_message, failure_reason, exit_code,
    creation_time, last_modified_time, training_start_time, training_end_time, model_artifacts, transitions, hosts, stop_requested";

fn parse<T: serde::de::DeserializeOwned>(i: usize, s: String) -> rusqlite::Result<T> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        name: r.get(0)?,
        arn: r.get(1)?,
        request: parse(2, r.get(2)?)?,
        status: r.get(3)?,
        secondary_status: r.get(4)?,
        status_message: r.get(5)?,
        failure_reason: r.get(6)?,
        exit_code: r.get(7)?,
        creation_time: r.get(8)?,
        last_modified_time: r.get(9)?,
        training_start_time: r.get(10)?,
        training_end_time: r.get(11)?,
        model_artifacts: r.get(12)?,
        transitions: parse(13, r.get(13)?)?,
        hosts: parse(14, r.get(14)?)?,
        stop_requested: r.get::<_, i64>(15)? != 0,
    })
}

/// Filters and order of `ListTrainingJobs`.
#[derive(Debug, Default, Clone)]
pub struct ListJobs {
    pub name_contains: Option<String>,
    pub status_equals: Option<String>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    pub last_modified_time_after: Option<f64>,
    pub last_modified_time_before: Option<f64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

pub struct ControlPlane {
    pub(crate) db: Db,
    pub logs: Logs,
    pub config: ControlConfig,
    pub(crate) exec: LocalExecutor,
    runtimes: Runtimes,
    wake: Notify,
    /// Where `InvokeEndpoint` goes: the healthy instances of each in-service endpoint.
    pub routes: crate::routes::Routes,
    /// Addresses and ports model servers on cluster nodes reported, by instance id, until
    /// the hosting loop takes them.
    pub(crate) instance_reports: std::sync::Mutex<std::collections::HashMap<String, (String, u16)>>,
    pub(crate) endpoint_wake: Notify,
    /// Held by the hosting loop during a pass and by calls that change an endpoint, so neither
    /// overwrites the other's change.
    pub(crate) hosting_lock: tokio::sync::Mutex<()>,
}

/// `CheckpointConfig.LocalPath` when the request leaves it out (the SDK's default too).
const DEFAULT_CHECKPOINT_PATH: &str = "/opt/ml/checkpoints";

/// Where a host's checkpoints live: paths under `/opt/ml` move into the host's own stand-in
/// for it (so hosts never share one); any other absolute path is used as given.
fn local_checkpoint_dir(opt_ml: &std::path::Path, local: &str) -> std::path::PathBuf {
    match local.strip_prefix("/opt/ml") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            opt_ml.join(rest.trim_start_matches('/'))
        }
        _ => std::path::PathBuf::from(local),
    }
}

/// The loopback block (`127.A.B.0/24`) a job's hosts live in: derived from the job name so a
/// job keeps its block across restarts, moved on to the next free block when a running job
/// holds it.
fn address_block(name: &str, taken: &std::collections::HashSet<(u8, u8)>) -> (u8, u8) {
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    // 127.0.0.0/24 is left to everything else that uses loopback (127.0.0.1 above all).
    const BLOCKS: u32 = 254 * 256;
    for step in 0..BLOCKS {
        let n = (h.wrapping_add(step)) % BLOCKS;
        let block = ((n / 256 + 1) as u8, (n % 256) as u8);
        if !taken.contains(&block) {
            return block;
        }
    }
    (1, 0)
}

/// A request's string-to-string map (`HyperParameters`, `Environment`); absent is empty.
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Which run of the job this is: one more for each restart it has had.
fn attempt_of(job: &JobRow) -> u32 {
    job.transitions
        .iter()
        .filter(|t| t.status == "Restarting")
        .count() as u32
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "Completed" | "Failed" | "Stopped")
}

/// Splits `s3://bucket/prefix` into its parts.
pub fn parse_s3_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

impl ControlPlane {
    pub fn open(config: ControlConfig) -> Result<Arc<Self>, ControlError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ControlError::Internal(format!("creating {}: {e}", config.data_dir.display()))
        })?;
        let db = Db::open(&config.data_dir.join("clary.db"))?;
        let logs = Logs::new(db.clone(), &config.region, &config.account);
        let runtimes = Runtimes::new(config.runtimes_dir.clone());
        Ok(Arc::new(ControlPlane {
            db,
            logs,
            config,
            exec: LocalExecutor,
            runtimes,
            wake: Notify::new(),
            routes: Default::default(),
            instance_reports: Default::default(),
            endpoint_wake: Notify::new(),
            hosting_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn job_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sagemaker:{}:{}:training-job/{}",
            self.config.region,
            self.config.account,
            name.to_ascii_lowercase()
        )
    }

    fn load(&self, name: &str) -> Result<Option<JobRow>, ControlError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE name = ?1"),
                params![name],
                row_to_job,
            )
            .optional()?)
    }

    fn require(&self, name: &str) -> Result<JobRow, ControlError> {
        self.load(name)?.ok_or_else(|| {
            ControlError::ResourceNotFound(format!(
                "Requested resource not found: training job {name:?} does not exist"
            ))
        })
    }

    fn save(&self, job: &JobRow) -> Result<(), ControlError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE training_jobs SET status = ?2, secondary_status = ?3, status_message = ?4, failure_reason = ?5,
                exit_code = ?6, last_modified_time = ?7, training_start_time = ?8, training_end_time = ?9,
                model_artifacts = ?10, transitions = ?11, hosts = ?12, stop_requested = ?13
             WHERE name = ?1",
            params![
                job.name,
                job.status,
                job.secondary_status,
                job.status_message,
                job.failure_reason,
                job.exit_code,
                job.last_modified_time,
                job.training_start_time,
                job.training_end_time,
                job.model_artifacts,
                serde_json::to_string(&job.transitions).unwrap_or_default(),
                serde_json::to_string(&job.hosts).unwrap_or_default(),
                job.stop_requested as i64,
            ],
        )?;
        Ok(())
    }

    /// `CreateTrainingJob`, for a request the API layer has validated against the service model.
    pub fn create_training_job(&self, request: Value) -> Result<String, ControlError> {
        let name = request["TrainingJobName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let image = request["AlgorithmSpecification"]["TrainingImage"]
            .as_str()
            .unwrap_or_default();
        if image.is_empty() {
            return Err(ControlError::Validation(
                "AlgorithmSpecification.TrainingImage is required: Clary runs MXNet training images (AlgorithmName is not supported)".into(),
            ));
        }
        let image = Runtimes::new(self.config.runtimes_dir.clone())
            .training_image(image)
            .map_err(ControlError::Validation)?;
        let instance_type = request["ResourceConfig"]["InstanceType"]
            .as_str()
            .unwrap_or_default();
        if self.config.capacity.demand(instance_type).is_none() {
            return Err(ControlError::Validation(format!(
                "Value {instance_type:?} at 'resourceConfig.instanceType' is not an ml.<family>.<size> instance type Clary can size; use e.g. ml.c5.xlarge or add it to the capacity table"
            )));
        }
        let arn = self.job_arn(&name);
        let now = now_secs();
        let transitions = vec![Transition {
            status: "Starting".into(),
            start_time: now,
            end_time: None,
            status_message: "Launching requested ML instances".into(),
        }];
        let conn = self.db.lock();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO training_jobs (name, arn, request, status, secondary_status, status_message,
                creation_time, last_modified_time, transitions, runtime)
             VALUES (?1, ?2, ?3, 'InProgress', 'Starting', 'Launching requested ML instances', ?4, ?4, ?5, ?6)",
            params![name, arn, request.to_string(), now, serde_json::to_string(&transitions).unwrap_or_default(), image.runtime.name],
        )?;
        if inserted == 0 {
            return Err(ControlError::ResourceInUse(format!(
                "Training job names must be unique within an AWS account and region, and a training job with this name already exists ({arn})"
            )));
        }
        if let Some(tags) = request["Tags"].as_array() {
            for t in tags {
                if let (Some(k), Some(v)) = (t["Key"].as_str(), t["Value"].as_str()) {
                    conn.execute("INSERT OR REPLACE INTO tags (resource_arn, key, value) VALUES (?1, ?2, ?3)", params![arn, k, v])?;
                }
            }
        }
        drop(conn);
        self.wake.notify_one();
        Ok(arn)
    }

    pub fn describe_training_job(&self, name: &str) -> Result<Value, ControlError> {
        let job = self.require(name)?;
        Ok(self.describe(&job))
    }

    fn describe(&self, job: &JobRow) -> Value {
        let req = &job.request;
        let mut output = req["OutputDataConfig"].clone();
        if output.get("KmsKeyId").is_none() {
            // The SDK's attach reads this key without a default; AWS returns "" when unset.
            output["KmsKeyId"] = json!("");
        }
        let mut out = json!({
            "TrainingJobName": job.name,
            "TrainingJobArn": job.arn,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary_status,
            "HyperParameters": req.get("HyperParameters").cloned().unwrap_or_else(|| json!({})),
            "AlgorithmSpecification": req["AlgorithmSpecification"],
            "RoleArn": req["RoleArn"],
            "OutputDataConfig": output,
            "ResourceConfig": req["ResourceConfig"],
            "StoppingCondition": req.get("StoppingCondition").cloned().unwrap_or_else(|| json!({"MaxRuntimeInSeconds": 86400})),
            "CreationTime": job.creation_time,
            "LastModifiedTime": job.last_modified_time,
            "SecondaryStatusTransitions": job.transitions,
            "EnableNetworkIsolation": req.get("EnableNetworkIsolation").cloned().unwrap_or(json!(false)),
            "EnableInterContainerTrafficEncryption": req.get("EnableInterContainerTrafficEncryption").cloned().unwrap_or(json!(false)),
            "EnableManagedSpotTraining": req.get("EnableManagedSpotTraining").cloned().unwrap_or(json!(false)),
        });
        for key in [
            "InputDataConfig",
            "VpcConfig",
            "CheckpointConfig",
            "DebugHookConfig",
            "ProfilerConfig",
            "Environment",
            "RetryStrategy",
            "TensorBoardOutputConfig",
            "ExperimentConfig",
            "DebugRuleConfigurations",
        ] {
            if let Some(v) = req.get(key) {
                out[key] = v.clone();
            }
        }
        out["ModelArtifacts"] =
            json!({"S3ModelArtifacts": job.model_artifacts.clone().unwrap_or_default()});
        if let Some(t) = job.training_start_time {
            out["TrainingStartTime"] = json!(t);
        }
        if let Some(t) = job.training_end_time {
            out["TrainingEndTime"] = json!(t);
            let secs = (t - job.training_start_time.unwrap_or(t)).ceil().max(0.0) as i64;
            out["TrainingTimeInSeconds"] = json!(secs);
            out["BillableTimeInSeconds"] = json!(secs);
        }
        if let Some(r) = &job.failure_reason {
            out["FailureReason"] = json!(r);
        }
        out
    }

    pub fn list_training_jobs(&self, q: &ListJobs) -> Result<Value, ControlError> {
        let max = q.max_results.unwrap_or(10).clamp(1, 100);
        let offset: i64 = match &q.next_token {
            Some(t) => t.parse().map_err(|_| {
                ControlError::Validation(format!(
                    "Invalid pagination token {t:?}; pass the NextToken of the previous response"
                ))
            })?,
            None => 0,
        };
        let order_col = match q.sort_by.as_deref().unwrap_or("CreationTime") {
            "Name" => "name",
            "Status" => "status",
            _ => "creation_time",
        };
        let dir = if q.sort_order.as_deref() == Some("Ascending") {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM training_jobs
             WHERE (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR creation_time > ?3) AND (?4 IS NULL OR creation_time < ?4)
               AND (?5 IS NULL OR last_modified_time > ?5) AND (?6 IS NULL OR last_modified_time < ?6)
             ORDER BY {order_col} {dir}, name {dir} LIMIT ?7 OFFSET ?8"
        );
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows: Vec<JobRow> = stmt
            .query_map(
                params![
                    q.name_contains,
                    q.status_equals,
                    q.creation_time_after,
                    q.creation_time_before,
                    q.last_modified_time_after,
                    q.last_modified_time_before,
                    max + 1,
                    offset
                ],
                row_to_job,
            )?
            .collect::<Result<_, _>>()?;
        let more = rows.len() as i64 > max;
        let summaries: Vec<Value> = rows
            .iter()
            .take(max as usize)
            .map(|j| {
                let mut s = json!({
                    "TrainingJobName": j.name, "TrainingJobArn": j.arn, "CreationTime": j.creation_time,
                    "LastModifiedTime": j.last_modified_time, "TrainingJobStatus": j.status, "SecondaryStatus": j.secondary_status,
                });
                if let Some(t) = j.training_end_time {
                    s["TrainingEndTime"] = json!(t);
                }
                s
            })
            .collect();
        let mut out = json!({"TrainingJobSummaries": summaries});
        if more {
            out["NextToken"] = json!((offset + max).to_string());
        }
        Ok(out)
    }

    pub fn stop_training_job(&self, name: &str) -> Result<(), ControlError> {
        let mut job = self.require(name)?;
        if is_terminal(&job.status) {
            return Err(ControlError::Validation(format!(
                "The training job {name} has already ended with status {}; only InProgress jobs can be stopped",
                job.status
            )));
        }
        if job.status == "Stopping" {
            return Ok(());
        }
        job.stop_requested = true;
        if job.hosts.is_empty() {
            // Still queued: nothing runs yet, so it stops at once.
            self.finish(&mut job, Outcome::Stopped, None, None, None);
        } else {
            self.set_secondary(&mut job, "Stopping", "Stopping the training job");
            job.status = "Stopping".into();
            self.stop_hosts(&job);
        }
        self.save(&job)
    }

    pub fn list_tags(&self, arn: &str) -> Result<Value, ControlError> {
        self.require_resource(arn)?;
        let conn = self.db.lock();
        let mut stmt =
            conn.prepare("SELECT key, value FROM tags WHERE resource_arn = ?1 ORDER BY key")?;
        let tags: Vec<Value> = stmt
            .query_map(params![arn], |r| {
                Ok(json!({"Key": r.get::<_, String>(0)?, "Value": r.get::<_, String>(1)?}))
            })?
            .collect::<Result<_, _>>()?;
        Ok(json!({"Tags": tags}))
    }

    pub fn add_tags(&self, arn: &str, tags: &[(String, String)]) -> Result<Value, ControlError> {
        self.require_resource(arn)?;
        let conn = self.db.lock();
        for (k, v) in tags {
            conn.execute(
                "INSERT OR REPLACE INTO tags (resource_arn, key, value) VALUES (?1, ?2, ?3)",
                params![arn, k, v],
            )?;
        }
        drop(conn);
        self.list_tags(arn)
    }

    pub fn delete_tags(&self, arn: &str, keys: &[String]) -> Result<(), ControlError> {
        self.require_resource(arn)?;
        let conn = self.db.lock();
        for k in keys {
            conn.execute(
                "DELETE FROM tags WHERE resource_arn = ?1 AND key = ?2",
                params![arn, k],
            )?;
        }
        Ok(())
    }

    fn require_resource(&self, arn: &str) -> Result<(), ControlError> {
        let n: i64 = self.db.lock().query_row(
            "SELECT (SELECT COUNT(*) FROM training_jobs WHERE arn = ?1) + (SELECT COUNT(*) FROM models WHERE arn = ?1)
                + (SELECT COUNT(*) FROM endpoint_configs WHERE arn = ?1) + (SELECT COUNT(*) FROM endpoints WHERE arn = ?1)",
            params![arn],
            |r| r.get(0),
        )?;
        if n == 0 {
            return Err(ControlError::Validation(format!(
                "Resource {arn} does not exist; pass the ARN of an existing training job, model, endpoint configuration or endpoint"
            )));
        }
        Ok(())
    }

    fn set_secondary(&self, job: &mut JobRow, status: &str, message: &str) {
        let now = now_secs();
        if let Some(last) = job.transitions.last_mut() {
            if last.status == status && last.status_message == message {
                return;
            }
            last.end_time.get_or_insert(now);
        }
        job.transitions.push(Transition {
            status: status.into(),
            start_time: now,
            end_time: None,
            status_message: message.into(),
        });
        job.secondary_status = status.into();
        job.status_message = message.into();
        job.last_modified_time = now;
    }

    /// Moves a job to its terminal status.
    fn finish(
        &self,
        job: &mut JobRow,
        outcome: Outcome,
        reason: Option<String>,
        exit_code: Option<i32>,
        artifacts: Option<String>,
    ) {
        let (status, secondary, message) = match outcome {
            Outcome::Completed => (
                "Completed",
                "Completed",
                "Training job completed".to_string(),
            ),
            Outcome::Failed => ("Failed", "Failed", "Training job failed".to_string()),
            Outcome::Stopped => ("Stopped", "Stopped", "Training job stopped".to_string()),
            Outcome::MaxRuntimeExceeded => (
                "Stopped",
                "MaxRuntimeExceeded",
                "Training job stopped because it exceeded MaxRuntimeInSeconds".to_string(),
            ),
        };
        let message = match exit_code {
            Some(code) if outcome != Outcome::Completed => {
                format!("{message} (the training script exited with code {code})")
            }
            _ => message,
        };
        self.set_secondary(job, secondary, &message);
        if let Some(last) = job.transitions.last_mut() {
            last.end_time = Some(last.start_time);
        }
        job.status = status.into();
        job.training_end_time = Some(now_secs());
        job.training_start_time.get_or_insert(job.creation_time);
        job.exit_code = exit_code.map(i64::from);
        if let Some(a) = artifacts {
            job.model_artifacts = Some(a);
        }
        job.failure_reason = match outcome {
            Outcome::Completed | Outcome::Stopped => None,
            Outcome::MaxRuntimeExceeded => Some(reason.unwrap_or_else(|| {
                "MaxRuntimeExceeded: Training job exceeded MaxRuntimeInSeconds".into()
            })),
            Outcome::Failed => {
                Some(reason.unwrap_or_else(|| "AlgorithmError: the training job failed".into()))
            }
        };
    }

    pub fn report_status(&self, r: &StatusReport) -> Result<(), ControlError> {
        let mut job = self.require(&r.job_name)?;
        // The job's secondary status only moves forward: with several hosts it follows the
        // first host to reach each stage, not every host's report of it.
        let stage = |s: &str| {
            ["Starting", "Downloading", "Training", "Uploading"]
                .iter()
                .position(|x| *x == s)
        };
        let forward = match (stage(&job.secondary_status), stage(&r.status)) {
            (Some(now), Some(next)) => next > now,
            _ => true,
        };
        // A stop in progress owns the secondary status until the agent's result arrives.
        if job.status == "InProgress" && forward {
            self.set_secondary(&mut job, &r.status, &r.message);
            self.save(&job)?;
        }
        Ok(())
    }

    pub fn report_logs(&self, b: &LogBatch) -> Result<(), ControlError> {
        self.require(&b.job_name)?;
        let events: Vec<(i64, String)> = b
            .events
            .iter()
            .map(|e| (e.timestamp, e.message.clone()))
            .collect();
        self.logs.append(TRAINING_LOG_GROUP, &b.log_stream, &events)
    }

    pub fn report_result(&self, r: &ResultReport) -> Result<(), ControlError> {
        let mut job = self.require(&r.job_name)?;
        if is_terminal(&job.status) {
            return Ok(());
        }
        if r.attempt != attempt_of(&job) {
            // A host of an attempt that was replaced by a restart.
            return Ok(());
        }
        let Some(host) = job.hosts.iter_mut().find(|h| h.host == r.host) else {
            return Err(ControlError::Validation(format!(
                "{} is not a host of training job {}",
                r.host, r.job_name
            )));
        };
        host.result = Some(r.clone());
        let failed = job
            .hosts
            .iter()
            .filter_map(|h| h.result.as_ref())
            .find(|res| res.outcome != Outcome::Completed)
            .cloned();
        let all_done = job.hosts.iter().all(|h| h.result.is_some());
        if let Some(bad) = failed {
            // One host ending badly ends the job; the others are told to stop.
            self.stop_hosts(&job);
            if bad.outcome == Outcome::Failed && bad.transient {
                let why = bad.failure_reason.clone().unwrap_or_default();
                if self.restart(&mut job, &bad.host, &why) {
                    return self.save(&job);
                }
            }
            let reason = bad.failure_reason.clone().map(|f| {
                if job.hosts.len() > 1 {
                    format!("{} (host {})", f, bad.host)
                } else {
                    f
                }
            });
            let artifacts = job
                .hosts
                .iter()
                .find_map(|h| h.result.as_ref().and_then(|r| r.model_artifacts.clone()));
            let outcome = if job.stop_requested && bad.outcome == Outcome::Failed {
                Outcome::Stopped
            } else {
                bad.outcome
            };
            self.finish(&mut job, outcome, reason, bad.exit_code, artifacts);
        } else if all_done {
            let artifacts = job
                .hosts
                .iter()
                .find_map(|h| h.result.as_ref().and_then(|r| r.model_artifacts.clone()));
            self.finish(&mut job, Outcome::Completed, None, Some(0), artifacts);
        }
        self.save(&job)
    }

    /// The queue and the watch over running agents; runs for the server's lifetime.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.recover_after_restart();
        loop {
            if let Err(e) = self.schedule_once() {
                tracing::error!("scheduler: {e}");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn active_jobs(&self) -> Result<Vec<JobRow>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM training_jobs WHERE status IN ('InProgress', 'Stopping') ORDER BY creation_time, name"
        ))?;
        let rows = stmt.query_map([], row_to_job)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Jobs that were running when the server went down: agents still alive are watched again
    /// (they kept reporting to this address); jobs whose agents are gone fail with a reason.
    fn recover_after_restart(&self) {
        let Ok(jobs) = self.active_jobs() else { return };
        for mut job in jobs.into_iter().filter(|j| !j.hosts.is_empty()) {
            let lost: Vec<String> = self
                .lost_hosts(&job, None)
                .map(|h| format!("{} (pid {})", h.host, h.pid))
                .collect();
            if lost.is_empty() {
                tracing::info!("re-attached to training job {} after restart", job.name);
                continue;
            }
            let reason = format!(
                "InternalServerError: the Clary server restarted while this job was running and the host agent of {} was gone; create the job again under a new name",
                lost.join(", ")
            );
            self.finish(&mut job, Outcome::Failed, Some(reason), None, None);
            let _ = self.save(&job);
        }
    }

    fn schedule_once(&self) -> Result<(), ControlError> {
        let jobs = self.active_jobs()?;
        let demand_of = |job: &JobRow| {
            let rc = &job.request["ResourceConfig"];
            let it = rc["InstanceType"].as_str().unwrap_or_default();
            let n = rc["InstanceCount"].as_u64().unwrap_or(1).max(1) as u32;
            let (c, m) = self.config.capacity.demand(it).unwrap_or((1, 1.0));
            (
                (c * n).min(self.config.capacity.cpus),
                (m * n as f64).min(self.config.capacity.memory_gib),
            )
        };
        let (mut used_cpus, mut used_mem) = (0u32, 0f64);
        for job in jobs.iter().filter(|j| !j.hosts.is_empty()) {
            let (c, m) = demand_of(job);
            used_cpus += c;
            used_mem += m;
        }
        for mut job in jobs {
            if job.hosts.is_empty() {
                let (c, m) = demand_of(&job);
                // On Slurm, Slurm queues the job until its nodes are free.
                if self.config.slurm.is_none()
                    && (used_cpus + c > self.config.capacity.cpus
                        || used_mem + m > self.config.capacity.memory_gib + 1e-9)
                {
                    // First in, first out: a big job at the head is not overtaken by small ones.
                    let msg = format!(
                        "Launching requested ML instances: waiting for capacity ({c} vCPUs needed, {} of {} in use)",
                        used_cpus, self.config.capacity.cpus
                    );
                    if job.status_message != msg {
                        self.set_secondary(&mut job, "Starting", &msg);
                        self.save(&job)?;
                    }
                    break;
                }
                used_cpus += c;
                used_mem += m;
                if let Err(e) = self.launch(&mut job) {
                    self.finish(
                        &mut job,
                        Outcome::Failed,
                        Some(format!("InternalServerError: could not start the job: {e}")),
                        None,
                        None,
                    );
                }
                self.save(&job)?;
            } else {
                self.watch(&mut job)?;
            }
        }
        Ok(())
    }

    /// Hosts that have not reported a result and whose agent is no longer running (on Slurm:
    /// whose Slurm job is no longer queued or running).
    /// `slurm` is the job's Slurm state when the caller has already asked for it (one
    /// `scontrol` per job and pass, not two).
    fn lost_hosts<'a>(
        &'a self,
        job: &'a JobRow,
        slurm: Option<&clary_exec::slurm::SlurmJobState>,
    ) -> impl Iterator<Item = &'a HostState> + 'a {
        let slurm_active = match slurm {
            Some(s) => Some(s.is_active()),
            None => self.slurm_state(job).map(|s| s.is_active()),
        };
        job.hosts.iter().filter(move |h| {
            h.result.is_none()
                && !match h.slurm_job {
                    Some(_) => slurm_active.unwrap_or(false),
                    None => self.exec.is_alive(h.process()),
                }
        })
    }

    /// Slurm's view of the job, when it runs there.
    fn slurm_state(&self, job: &JobRow) -> Option<clary_exec::slurm::SlurmJobState> {
        let id = job.hosts.iter().find_map(|h| h.slurm_job)?;
        self.config.slurm.as_ref()?.state(id)
    }

    /// Tells every host still running to stop: SIGTERM to the local agents, or to the
    /// agents of the Slurm job (`scancel --signal=TERM`); each agent forwards it to the script
    /// and escalates to SIGKILL after the grace period.
    fn stop_hosts(&self, job: &JobRow) {
        let mut cancelled = std::collections::HashSet::new();
        for h in job.hosts.iter().filter(|h| h.result.is_none()) {
            match (h.slurm_job, &self.config.slurm) {
                (Some(id), Some(slurm)) => {
                    if cancelled.insert(id) {
                        slurm.cancel(id, Some("TERM"));
                    }
                }
                _ => self.exec.terminate(h.process()),
            }
        }
    }

    fn watch(&self, job: &mut JobRow) -> Result<(), ControlError> {
        let slurm = self.slurm_state(job);
        if let Some(state) = slurm.as_ref().filter(|s| s.state == "PENDING")
            && job.status == "InProgress"
        {
            // Slurm's reason (Resources, Priority, …) is what the user waits on.
            let reason = match state.reason.as_str() {
                "None" => "not yet scheduled",
                r => r,
            };
            let msg = format!("Launching requested ML instances: pending in Slurm ({reason})");
            if job.status_message != msg {
                self.set_secondary(job, "Starting", &msg);
                self.save(job)?;
            }
            return Ok(());
        }
        if let (Some(state), Some(exec)) = (&slurm, &self.config.slurm)
            && job.status == "Stopping"
            && state.is_active()
        {
            // The agents escalate to SIGKILL themselves; this is for an agent that cannot.
            let since = job
                .transitions
                .iter()
                .rev()
                .find(|t| t.status == "Stopping")
                .map(|t| t.start_time);
            let limit = (self.config.stop_grace_secs + 30) as f64;
            if let (Some(t), Some(id)) = (since, job.hosts.iter().find_map(|h| h.slurm_job))
                && now_secs() - t > limit
            {
                exec.cancel(id, Some("KILL"));
            }
        }
        let dead: Vec<String> = self
            .lost_hosts(job, slurm.as_ref())
            .map(|h| h.host.clone())
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // A result may have landed between our read and the liveness check.
        let fresh = self.require(&job.name)?;
        if is_terminal(&fresh.status)
            || dead.iter().all(|d| {
                fresh
                    .hosts
                    .iter()
                    .any(|h| &h.host == d && h.result.is_some())
            })
        {
            return Ok(());
        }
        *job = fresh;
        self.stop_hosts(job);
        let slurm_job = job.hosts.iter().find_map(|h| h.slurm_job);
        let (reason, transient) = match (&slurm, slurm_job, &self.config.slurm) {
            (state, Some(id), Some(exec)) => {
                let how = state.as_ref().map_or_else(
                    || "is no longer known to Slurm".to_string(),
                    |s| {
                        format!(
                            "ended {} (reason {}, exit code {})",
                            s.state, s.reason, s.exit_code
                        )
                    },
                );
                (
                    format!(
                        "InternalServerError: Slurm job {id} {how} before {} reported a result; its output is {}",
                        dead.join(", "),
                        exec.config
                            .output_dir
                            .join(format!("slurm-{id}.out"))
                            .display()
                    ),
                    state.as_ref().is_some_and(|s| s.is_transient()),
                )
            }
            _ => {
                // The directory of the attempt that was running.
                let log = self.host_dir(job, &dead[0]).join("agent.log");
                (
                    format!(
                        "InternalServerError: the host agent of {} exited without reporting a result; its log is {}",
                        dead.join(", "),
                        log.display()
                    ),
                    true,
                )
            }
        };
        if transient && self.restart(job, &dead[0], &reason) {
            return self.save(job);
        }
        let outcome = if job.stop_requested {
            Outcome::Stopped
        } else {
            Outcome::Failed
        };
        self.finish(job, outcome, Some(reason), None, None);
        self.save(job)
    }

    /// `RetryStrategy`: when attempts are left, the job goes back to the queue for a fresh
    /// launch of all its hosts (the secondary status says `Restarting` and why). The hosts of
    /// the failed attempt have been told to stop; their late reports are ignored.
    fn restart(&self, job: &mut JobRow, host: &str, why: &str) -> bool {
        let max = job.request["RetryStrategy"]["MaximumRetryAttempts"]
            .as_u64()
            .unwrap_or(0) as u32;
        let used = attempt_of(job);
        if job.stop_requested || used >= max {
            return false;
        }
        // The failure text on one line, short enough for a status message.
        let mut brief: String = why.split_whitespace().collect::<Vec<_>>().join(" ");
        if brief.chars().count() > 400 {
            brief = brief.chars().take(400).collect::<String>() + "…";
        }
        let msg = format!(
            "Restarting the training job (attempt {} of {}) after a transient failure on {host}: {brief}",
            used + 2,
            max + 1
        );
        self.set_secondary(job, "Restarting", &msg);
        job.hosts.clear();
        self.wake.notify_one();
        true
    }

    /// A distinct loopback address per host, in a block no other running job uses.
    fn host_addresses(&self, job_name: &str, count: usize) -> Result<Vec<String>, String> {
        let taken = self
            .active_jobs()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|j| j.name != job_name)
            .flat_map(|j| j.hosts.iter())
            .filter_map(|h| {
                let mut o = h.address.split('.').skip(1).map(|p| p.parse::<u8>());
                match (o.next(), o.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
                    _ => None,
                }
            })
            .collect();
        let (a, b) = address_block(job_name, &taken);
        Ok((1..=count).map(|i| format!("127.{a}.{b}.{i}")).collect())
    }

    fn launch(&self, job: &mut JobRow) -> Result<(), String> {
        let req = job.request.clone();
        let rc = &req["ResourceConfig"];
        let count = rc["InstanceCount"].as_u64().unwrap_or(1).max(1);
        let hosts: Vec<String> = (1..=count).map(|i| format!("algo-{i}")).collect();
        let image = Runtimes::new(self.config.runtimes_dir.clone()).training_image(
            req["AlgorithmSpecification"]["TrainingImage"]
                .as_str()
                .unwrap_or_default(),
        )?;
        let (output_bucket, output_prefix) = parse_s3_uri(
            req["OutputDataConfig"]["S3OutputPath"]
                .as_str()
                .unwrap_or_default(),
        )
        .ok_or("OutputDataConfig.S3OutputPath is not an s3:// URI")?;
        let input_mode = req["AlgorithmSpecification"]["TrainingInputMode"]
            .as_str()
            .unwrap_or("File")
            .to_string();
        let mut channels = Vec::new();
        for ch in req["InputDataConfig"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = ch["ChannelName"].as_str().unwrap_or_default().to_string();
            let s3 = &ch["DataSource"]["S3DataSource"];
            let (bucket, prefix) = parse_s3_uri(s3["S3Uri"].as_str().unwrap_or_default())
                .ok_or(format!("channel {name} has no S3Uri"))?;
            let mut config = serde_json::Map::new();
            if let Some(ct) = ch.get("ContentType") {
                config.insert("ContentType".into(), ct.clone());
            }
            config.insert(
                "TrainingInputMode".into(),
                ch.get("InputMode").cloned().unwrap_or(json!(input_mode)),
            );
            config.insert(
                "S3DistributionType".into(),
                s3.get("S3DataDistributionType")
                    .cloned()
                    .unwrap_or(json!("FullyReplicated")),
            );
            config.insert(
                "RecordWrapperType".into(),
                ch.get("RecordWrapperType")
                    .cloned()
                    .unwrap_or(json!("None")),
            );
            if let Some(c) = ch.get("CompressionType") {
                config.insert("CompressionType".into(), c.clone());
            }
            let channel_mode = match ch["InputMode"].as_str().unwrap_or(&input_mode) {
                // FastFile streams on demand on AWS; here the objects are local files anyway.
                "Pipe" => "Pipe",
                _ => "File",
            };
            channels.push(ChannelSpec {
                name,
                bucket,
                prefix,
                config: Value::Object(config),
                input_mode: channel_mode.into(),
                data_type: s3["S3DataType"].as_str().unwrap_or("S3Prefix").into(),
                sharded: s3["S3DataDistributionType"].as_str() == Some("ShardedByS3Key"),
                gzip: ch["CompressionType"].as_str() == Some("Gzip"),
                record_io: ch["RecordWrapperType"].as_str() == Some("RecordIO"),
            });
        }
        let hyperparameters = string_map(&req["HyperParameters"]);
        let environment = string_map(&req["Environment"]);
        let python = self.runtimes.python(&image.runtime);
        let addresses = self.host_addresses(&job.name, hosts.len())?;
        let checkpoint = match req["CheckpointConfig"]["S3Uri"].as_str() {
            Some(uri) => {
                let (bucket, prefix) = parse_s3_uri(uri)
                    .ok_or_else(|| format!("CheckpointConfig.S3Uri {uri:?} is not an s3:// URI"))?;
                let local = req["CheckpointConfig"]["LocalPath"]
                    .as_str()
                    .unwrap_or(DEFAULT_CHECKPOINT_PATH)
                    .to_string();
                Some((bucket, prefix, local))
            }
            None => None,
        };
        let epoch = chrono::Utc::now().timestamp();
        let now = now_secs();
        job.training_start_time = Some(now);
        self.set_secondary(job, "Starting", "Preparing the instances for training");
        for (host, address) in hosts.iter().zip(&addresses) {
            // A restarted attempt gets fresh directories, as a replaced instance would, while
            // the agents of the failed one wind down in theirs.
            let base_dir = self.host_dir(job, host);
            std::fs::create_dir_all(&base_dir)
                .map_err(|e| format!("creating {}: {e}", base_dir.display()))?;
            let opt_ml = base_dir.join("opt_ml");
            let log_stream = format!("{}/{host}-{epoch}", job.name);
            self.logs
                .create_stream(TRAINING_LOG_GROUP, &log_stream)
                .map_err(|e| e.to_string())?;
            let spec = HostSpec {
                job_name: job.name.clone(),
                job_arn: job.arn.clone(),
                region: self.config.region.clone(),
                current_host: host.clone(),
                hosts: hosts.clone(),
                instance_type: rc["InstanceType"].as_str().unwrap_or_default().to_string(),
                addresses: addresses.clone(),
                base_dir: opt_ml.clone(),
                hyperparameters: hyperparameters.clone(),
                channels: channels.clone(),
                training_input_mode: input_mode.clone(),
                output_bucket: output_bucket.clone(),
                output_prefix: output_prefix.clone(),
                python: python.clone(),
                framework_module: MXNET_TRAINING_MODULE.into(),
                environment: environment.clone(),
                max_runtime_secs: req["StoppingCondition"]["MaxRuntimeInSeconds"]
                    .as_u64()
                    .unwrap_or(86_400),
                stop_grace_secs: self.config.stop_grace_secs,
                store_root: self.config.data_dir.join("objects"),
                object_access: self.config.agent_objects.clone(),
                control_url: self.config.control_url.clone(),
                access_key: self.config.access_key.clone(),
                secret_key: self.config.secret_key.clone(),
                log_stream: log_stream.clone(),
                python_shims: self.config.python_shims.clone(),
                runtimes_dir: self.config.runtimes_dir.clone(),
                runtime: image.runtime.name.clone(),
                framework_version: image.framework_version.clone(),
                device: image.device.clone(),
                legacy: image.mode == Mode::Legacy,
                attempt: attempt_of(job),
                checkpoint: checkpoint
                    .as_ref()
                    .map(|(bucket, prefix, local)| CheckpointSpec {
                        bucket: bucket.clone(),
                        prefix: prefix.clone(),
                        local_path: local_checkpoint_dir(&opt_ml, local),
                    }),
            };
            let spec_path = base_dir.join("spec.json");
            let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
            std::fs::write(&spec_path, bytes)
                .map_err(|e| format!("writing {}: {e}", spec_path.display()))?;
            // On Slurm the agents start with the Slurm job below and fetch this spec.
            let (pid, start_ticks) = if self.config.slurm.is_some() {
                (0, 0)
            } else {
                let proc = self
                    .exec
                    .launch(
                        &self.config.agent_program,
                        &spec_path,
                        &base_dir.join("agent.log"),
                    )
                    .map_err(|e| e.to_string())?;
                (proc.pid, proc.start_ticks)
            };
            job.hosts.push(HostState {
                host: host.clone(),
                pid,
                start_ticks,
                log_stream,
                address: address.clone(),
                slurm_job: None,
                result: None,
            });
        }
        if let Some(slurm) = &self.config.slurm {
            let max_runtime = req["StoppingCondition"]["MaxRuntimeInSeconds"]
                .as_u64()
                .unwrap_or(86_400);
            let id = slurm.submit(&Submission {
                name: format!("clary-{}", job.name),
                nodes: count as u32,
                instance_type: rc["InstanceType"].as_str().unwrap_or_default(),
                // The agent enforces MaxRuntimeInSeconds itself; Slurm's limit is the backstop.
                time_limit_secs: Some(max_runtime + self.config.stop_grace_secs + 60),
                command: self.node_command(slurm, "agent", &[("--job", &job.name)]),
                env: self.node_credentials(),
                output: None,
            })?;
            for h in &mut job.hosts {
                h.slurm_job = Some(id);
            }
            self.set_secondary(
                job,
                "Starting",
                &format!("Preparing the instances for training: Slurm job {id}"),
            );
        }
        Ok(())
    }

    /// What a cluster node runs: `clary <subcommand> --from-control <this server> …`; it
    /// fetches the rest from this server.
    pub(crate) fn node_command(
        &self,
        slurm: &clary_exec::slurm::SlurmExecutor,
        subcommand: &str,
        args: &[(&str, &str)],
    ) -> Vec<String> {
        let mut cmd = vec![
            self.config.agent_program.display().to_string(),
            subcommand.to_string(),
            "--from-control".into(),
            self.config.control_url.clone(),
            "--region".into(),
            self.config.region.clone(),
            "--node-dir".into(),
            slurm.config.node_dir.display().to_string(),
        ];
        for (k, v) in args {
            cmd.push(k.to_string());
            cmd.push(v.to_string());
        }
        cmd
    }

    /// The key pair a node signs its calls with, exported to the Slurm job's environment
    /// (never on a command line, where `ps` and `squeue` would show it).
    pub(crate) fn node_credentials(&self) -> Vec<(String, String)> {
        vec![
            (
                "CLARY_AGENT_ACCESS_KEY".into(),
                self.config.access_key.clone(),
            ),
            (
                "CLARY_AGENT_SECRET_KEY".into(),
                self.config.secret_key.clone(),
            ),
        ]
    }

    /// The spec of one host of the job's current attempt, for an agent that starts on a node
    /// which does not share this server's disk (`ClaryAgent.GetHostSpec`).
    pub fn host_spec(&self, job_name: &str, host: &str) -> Result<Value, ControlError> {
        let job = self.require(job_name)?;
        if !job.hosts.iter().any(|h| h.host == host) {
            return Err(ControlError::Validation(format!(
                "{host} is not a host of the current attempt of training job {job_name}"
            )));
        }
        let path = self.host_dir(&job, host).join("spec.json");
        let text = std::fs::read(&path)
            .map_err(|e| ControlError::Internal(format!("reading {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// A host's directory on the server for the job's current attempt.
    fn host_dir(&self, job: &JobRow, host: &str) -> std::path::PathBuf {
        let job_dir = self.config.data_dir.join("jobs").join(&job.name);
        match attempt_of(job) {
            0 => job_dir.join(host),
            n => job_dir.join(format!("attempt-{n}")).join(host),
        }
    }
}
