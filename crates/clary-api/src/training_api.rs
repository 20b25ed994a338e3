//! The SageMaker training job operations: typed request shapes named after the botocore model's
//! (`CreateTrainingJobRequest`, `Channel`, `ResourceConfig`, …), their conversion into the
//! domain's `TrainingJobSpec`, and the shaping of `DescribeTrainingJob` and `ListTrainingJobs`
//! answers. Fields Clary only stores and echoes travel in the request kept as the job's echo.

use crate::ApiState;
use crate::errors::ApiError;
use crate::validate;
use crate::wire::{required, tag_pairs};
use clary_control::ControlError;
use clary_control::domain::job::{JobState, Transition};
use clary_control::domain::metrics::{FinalMetric, MetricDefinition};
use clary_control::domain::training::{
    Channel as DomainChannel, Checkpoints, ContainerCommand, InputMode, S3Location, TrainingJob,
    TrainingJobSpec, TrainingJobSummary,
};
use clary_control::training::NewTrainingJob;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `MaxRuntimeInSeconds` when `StoppingCondition` leaves it out (SageMaker's default).
const DEFAULT_MAX_RUNTIME_SECS: u64 = 86_400;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTrainingJobRequest {
    pub training_job_name: String,
    pub algorithm_specification: AlgorithmSpecification,
    #[serde(default)]
    pub hyper_parameters: Map<String, Value>,
    #[serde(default)]
    pub input_data_config: Vec<Channel>,
    pub output_data_config: OutputDataConfig,
    pub resource_config: ResourceConfig,
    #[serde(default)]
    pub stopping_condition: Option<StoppingCondition>,
    #[serde(default)]
    pub environment: Map<String, Value>,
    #[serde(default)]
    pub checkpoint_config: Option<CheckpointConfig>,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlgorithmSpecification {
    #[serde(default)]
    pub training_image: Option<String>,
    pub training_input_mode: String,
    #[serde(default)]
    pub metric_definitions: Vec<MetricDefinitionShape>,
    #[serde(default)]
    pub container_entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub container_arguments: Option<Vec<String>>,
}

/// `MetricDefinition`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDefinitionShape {
    pub name: String,
    pub regex: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Channel {
    pub channel_name: String,
    pub data_source: DataSource,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub compression_type: Option<String>,
    #[serde(default)]
    pub record_wrapper_type: Option<String>,
    #[serde(default)]
    pub input_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataSource {
    #[serde(default)]
    pub s3_data_source: Option<S3DataSource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3DataSource {
    #[serde(rename = "S3DataType", default = "s3_prefix")]
    pub s3_data_type: String,
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(rename = "S3DataDistributionType", default = "fully_replicated")]
    pub s3_data_distribution_type: String,
}

fn s3_prefix() -> String {
    "S3Prefix".into()
}

fn fully_replicated() -> String {
    "FullyReplicated".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutputDataConfig {
    #[serde(rename = "S3OutputPath")]
    pub s3_output_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceConfig {
    pub instance_type: String,
    pub instance_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoppingCondition {
    #[serde(default)]
    pub max_runtime_in_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckpointConfig {
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(default)]
    pub local_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryStrategy {
    pub maximum_retry_attempts: u32,
}

fn string_pairs(map: &Map<String, Value>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn s3_location(uri: &str, at: &str) -> Result<S3Location, String> {
    S3Location::parse(uri).ok_or_else(|| format!("{at} {uri:?} is not an s3:// URI"))
}

fn input_mode(mode: &str, at: &str) -> Result<InputMode, String> {
    InputMode::parse(mode)
        .ok_or_else(|| format!("{at} {mode:?} is not one of File, Pipe, FastFile"))
}

impl CreateTrainingJobRequest {
    /// The domain's spec of the job.
    pub fn spec(&self) -> Result<TrainingJobSpec, String> {
        let channels = self
            .input_data_config
            .iter()
            .map(|c| {
                let s3 = c.data_source.s3_data_source.as_ref().ok_or_else(|| {
                    format!(
                        "channel {} has no DataSource.S3DataSource; Clary reads channels from S3 only",
                        c.channel_name
                    )
                })?;
                Ok(DomainChannel {
                    name: c.channel_name.clone(),
                    source: s3_location(&s3.s3_uri, &format!("channel {}'s S3Uri", c.channel_name))?,
                    data_type: s3.s3_data_type.clone(),
                    distribution: s3.s3_data_distribution_type.clone(),
                    content_type: c.content_type.clone(),
                    compression: c.compression_type.clone(),
                    record_wrapper: c.record_wrapper_type.clone(),
                    input_mode: c
                        .input_mode
                        .as_deref()
                        .map(|m| input_mode(m, "InputMode"))
                        .transpose()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(TrainingJobSpec {
            image: self
                .algorithm_specification
                .training_image
                .clone()
                .unwrap_or_default(),
            input_mode: input_mode(
                &self.algorithm_specification.training_input_mode,
                "TrainingInputMode",
            )?,
            instance_type: self.resource_config.instance_type.clone(),
            instance_count: self.resource_config.instance_count.max(1),
            channels,
            output: s3_location(
                &self.output_data_config.s3_output_path,
                "OutputDataConfig.S3OutputPath",
            )?,
            hyperparameters: string_pairs(&self.hyper_parameters),
            environment: string_pairs(&self.environment),
            max_runtime_secs: self
                .stopping_condition
                .as_ref()
                .and_then(|s| s.max_runtime_in_seconds)
                .unwrap_or(DEFAULT_MAX_RUNTIME_SECS),
            checkpoints: self
                .checkpoint_config
                .as_ref()
                .map(|c| {
                    Ok::<_, String>(Checkpoints {
                        destination: s3_location(&c.s3_uri, "CheckpointConfig.S3Uri")?,
                        local_path: c.local_path.clone(),
                    })
                })
                .transpose()?,
            max_retries: self
                .retry_strategy
                .as_ref()
                .map_or(0, |r| r.maximum_retry_attempts),
            metric_definitions: self
                .algorithm_specification
                .metric_definitions
                .iter()
                .map(|d| MetricDefinition {
                    name: d.name.clone(),
                    regex: d.regex.clone(),
                })
                .collect(),
            container: self
                .algorithm_specification
                .container_entrypoint
                .clone()
                .map(|entrypoint| ContainerCommand {
                    entrypoint,
                    arguments: self
                        .algorithm_specification
                        .container_arguments
                        .clone()
                        .unwrap_or_default(),
                }),
            // Filled in by `create` (it needs the account's default output path).
            profiler: Default::default(),
            debug_rules: Vec::new(),
        })
    }
}

/// The domain spec of a stored request (also for jobs an earlier Clary kept as requests only).
pub fn spec_from_request(request: &str) -> Result<TrainingJobSpec, String> {
    let req: CreateTrainingJobRequest =
        serde_json::from_str(request).map_err(|e| format!("the request does not parse: {e}"))?;
    req.spec()
}

fn create(state: &ApiState, body: Value) -> Result<Value, ControlError> {
    validate::create_training_job(&body, &|b| state.store.bucket_exists(b))?;
    let req: CreateTrainingJobRequest = serde_json::from_value(body.clone())
        .map_err(|e| ControlError::Validation(format!("1 validation error detected: {e}")))?;
    let mut spec = req.spec().map_err(ControlError::Validation)?;
    let default_output = state.control.training.default_profiler_output();
    (spec.profiler, spec.debug_rules) =
        crate::profiler_api::create_settings(&body, &default_output, clary_control::now_secs())?;
    let arn = state.control.training.create(NewTrainingJob {
        name: req.training_job_name,
        spec,
        echo: body.to_string(),
        tags: tag_pairs(&body),
    })?;
    Ok(json!({"TrainingJobArn": arn}))
}

fn transitions_json(transitions: &[Transition]) -> Value {
    Value::Array(
        transitions
            .iter()
            .map(|t| {
                let mut v = json!({
                    "Status": t.status.as_str(),
                    "StartTime": t.start_time,
                    "StatusMessage": t.status_message,
                });
                if let Some(end) = t.end_time {
                    v["EndTime"] = json!(end);
                }
                v
            })
            .collect(),
    )
}

/// `DescribeTrainingJobResponse`.
pub fn describe_json(job: &TrainingJob, finals: &[FinalMetric]) -> Value {
    let req: Value = serde_json::from_str(&job.echo).unwrap_or(Value::Null);
    let s: &JobState = &job.state;
    let mut output = req["OutputDataConfig"].clone();
    if output.get("KmsKeyId").is_none() {
        // The SDK's attach reads this key without a default; AWS returns "" when unset.
        output["KmsKeyId"] = json!("");
    }
    let mut out = json!({
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TrainingJobStatus": s.status.as_str(),
        "SecondaryStatus": s.secondary.as_str(),
        "HyperParameters": req.get("HyperParameters").cloned().unwrap_or_else(|| json!({})),
        "AlgorithmSpecification": req["AlgorithmSpecification"],
        "RoleArn": req["RoleArn"],
        "OutputDataConfig": output,
        "ResourceConfig": req["ResourceConfig"],
        "StoppingCondition": req.get("StoppingCondition").cloned().unwrap_or_else(|| json!({"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME_SECS})),
        "CreationTime": s.creation_time,
        "LastModifiedTime": s.last_modified_time,
        "SecondaryStatusTransitions": transitions_json(&s.transitions),
        "EnableNetworkIsolation": req.get("EnableNetworkIsolation").cloned().unwrap_or(json!(false)),
        "EnableInterContainerTrafficEncryption": req.get("EnableInterContainerTrafficEncryption").cloned().unwrap_or(json!(false)),
        "EnableManagedSpotTraining": req.get("EnableManagedSpotTraining").cloned().unwrap_or(json!(false)),
    });
    for key in [
        "InputDataConfig",
        "VpcConfig",
        "CheckpointConfig",
        "DebugHookConfig",
        "Environment",
        "RetryStrategy",
        "TensorBoardOutputConfig",
        "ExperimentConfig",
        "DebugRuleConfigurations",
        "TuningJobArn",
    ] {
        if let Some(v) = req.get(key) {
            out[key] = v.clone();
        }
    }
    crate::profiler_api::describe_into(&mut out, job);
    out["ModelArtifacts"] = json!({"S3ModelArtifacts": s.artifacts.clone().unwrap_or_default()});
    // The system monitor's samples are metrics of the job too; the final ones are the defined.
    let defined = |f: &&FinalMetric| {
        job.spec
            .metric_definitions
            .iter()
            .any(|d| d.name == f.metric)
    };
    if finals.iter().any(|f| defined(&f)) {
        out["FinalMetricDataList"] = finals
            .iter()
            .filter(defined)
            .map(|f| json!({"MetricName": f.metric, "Value": f.value, "Timestamp": f.timestamp}))
            .collect();
    }
    if let Some(t) = s.start_time {
        out["TrainingStartTime"] = json!(t);
    }
    if let Some(t) = s.end_time {
        out["TrainingEndTime"] = json!(t);
        let secs = (t - s.start_time.unwrap_or(t)).ceil().max(0.0) as i64;
        out["TrainingTimeInSeconds"] = json!(secs);
        out["BillableTimeInSeconds"] = json!(secs);
    }
    if let Some(r) = &s.failure_reason {
        out["FailureReason"] = json!(r);
    }
    out
}

fn summary_json(s: &TrainingJobSummary) -> Value {
    let mut v = json!({
        "TrainingJobName": s.name, "TrainingJobArn": s.arn, "CreationTime": s.creation_time,
        "LastModifiedTime": s.last_modified_time, "TrainingJobStatus": s.status.as_str(),
        "SecondaryStatus": s.secondary.as_str(),
    });
    if let Some(t) = s.end_time {
        v["TrainingEndTime"] = json!(t);
    }
    v
}

fn list(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let Some(q) = crate::job_list::list_query(body, crate::job_list::TRAINING_JOB_STATUSES)? else {
        return Ok(json!({"TrainingJobSummaries": []}));
    };
    let page = state.control.training.list(&q)?;
    let mut out = json!({
        "TrainingJobSummaries": page.items.iter().map(summary_json).collect::<Vec<_>>()
    });
    if let Some(next) = page.next_offset {
        out["NextToken"] = json!(next.to_string());
    }
    Ok(out)
}

/// The training job operations; `None` for any other.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ApiError>> {
    let training = &state.control.training;
    let named = |body: &Value| -> Result<String, ControlError> {
        let name = required(body, "TrainingJobName")?;
        validate::resource_name(name, "trainingJobName")?;
        Ok(name.to_string())
    };
    let result = match op {
        "CreateTrainingJob" => create(state, body.clone()),
        "DescribeTrainingJob" => named(body).and_then(|n| training.get(&n)).and_then(|job| {
            // A job without metric definitions has none: its describe costs no metrics query.
            let finals = if job.spec.metric_definitions.is_empty() {
                Vec::new()
            } else {
                state.control.metrics.final_values(&job.name)?
            };
            Ok(describe_json(&job, &finals))
        }),
        "ListTrainingJobs" => list(state, body),
        "UpdateTrainingJob" => crate::profiler_api::update(state, body),
        "StopTrainingJob" => named(body)
            .and_then(|n| training.stop(&n))
            .map(|()| json!({})),
        _ => return None,
    };
    Some(result.map_err(ApiError::from))
}
