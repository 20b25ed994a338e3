//! The SageMaker processing job operations: request shapes named after the botocore model's
//! (`CreateProcessingJobRequest`, `ProcessingInput`, `ProcessingS3Input`, …), validation with
//! AWS's messages, conversion into the domain's `ProcessingJobSpec`, and the shaping of
//! `DescribeProcessingJob` and `ListProcessingJobs`. Fields Clary accepts only to echo
//! (`NetworkConfig`, `RoleArn`, `ExperimentConfig`, `KmsKeyId`, `VolumeSizeInGB`) travel in
//! the request kept as the job's echo.

use crate::ApiState;
use crate::errors::ApiError;
use crate::validate::{self, fail, need, one_of, string};
use crate::wire::{required, tag_pairs};
use clary_control::ControlError;
use clary_control::domain::processing::{
    DEFAULT_MAX_RUNTIME_SECS, ProcessingInput, ProcessingInputMode, ProcessingJob,
    ProcessingJobSpec, ProcessingOutput, UploadMode, exit_message,
};
use clary_control::domain::training::S3Location;
use clary_control::processing::NewProcessingJob;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateProcessingJobRequest {
    pub processing_job_name: String,
    #[serde(default)]
    pub processing_inputs: Vec<ProcessingInputShape>,
    #[serde(default)]
    pub processing_output_config: Option<ProcessingOutputConfig>,
    pub processing_resources: ProcessingResources,
    #[serde(default)]
    pub stopping_condition: Option<StoppingCondition>,
    pub app_specification: AppSpecification,
    #[serde(default)]
    pub environment: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingInputShape {
    pub input_name: String,
    #[serde(default)]
    pub app_managed: bool,
    #[serde(default)]
    pub s3_input: Option<ProcessingS3Input>,
    #[serde(default)]
    pub dataset_definition: Option<Value>,
}

#[derive(Deserialize)]
pub struct ProcessingS3Input {
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(rename = "LocalPath", default)]
    pub local_path: Option<String>,
    #[serde(rename = "S3DataType")]
    pub s3_data_type: String,
    #[serde(rename = "S3InputMode", default)]
    pub s3_input_mode: Option<String>,
    #[serde(rename = "S3DataDistributionType", default)]
    pub s3_data_distribution_type: Option<String>,
    #[serde(rename = "S3CompressionType", default)]
    pub s3_compression_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingOutputConfig {
    pub outputs: Vec<ProcessingOutputShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingOutputShape {
    pub output_name: String,
    #[serde(rename = "S3Output", default)]
    pub s3_output: Option<ProcessingS3Output>,
    #[serde(default)]
    pub feature_store_output: Option<Value>,
    #[serde(default)]
    pub app_managed: bool,
}

#[derive(Deserialize)]
pub struct ProcessingS3Output {
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(rename = "LocalPath", default)]
    pub local_path: Option<String>,
    #[serde(rename = "S3UploadMode")]
    pub s3_upload_mode: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingResources {
    pub cluster_config: ProcessingClusterConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessingClusterConfig {
    #[serde(default)]
    pub instance_count: Option<u32>,
    #[serde(default)]
    pub instance_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoppingCondition {
    pub max_runtime_in_seconds: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AppSpecification {
    pub image_uri: String,
    #[serde(default)]
    pub container_entrypoint: Vec<String>,
    #[serde(default)]
    pub container_arguments: Vec<String>,
}

fn s3_location(uri: &str, at: &str) -> Result<S3Location, ControlError> {
    S3Location::parse(uri).ok_or_else(|| {
        fail(
            uri,
            at,
            "Member must satisfy regular expression pattern: (https|s3)://([^/]+)/?(.*)",
        )
    })
}

/// A string list of the model's `ContainerEntrypoint`/`ContainerArguments`: 1 to 100 items
/// of at most 256 characters.
fn string_list(v: Option<&Value>, at: &str) -> Result<(), ControlError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let items = v
        .as_array()
        .ok_or_else(|| fail(&v.to_string(), at, "Member must be a list"))?;
    if items.is_empty() || items.len() > 100 {
        return Err(fail(
            &format!("{} items", items.len()),
            at,
            "Member must have length between 1 and 100",
        ));
    }
    for item in items {
        let s = string(item, at)?;
        if s.chars().count() > 256 {
            return Err(fail(
                s,
                at,
                "Member must have length less than or equal to 256",
            ));
        }
    }
    Ok(())
}

/// Checks the request against the model's constraints (and what Clary cannot serve), with
/// AWS's messages; `bucket_exists` checks the output buckets.
pub fn validate_create(
    req: &Value,
    bucket_exists: &dyn Fn(&str) -> bool,
) -> Result<(), ControlError> {
    let name = string(
        need(req, "ProcessingJobName", "processingJobName")?,
        "processingJobName",
    )?;
    validate::resource_name(name, "processingJobName")?;
    let role = string(need(req, "RoleArn", "roleArn")?, "roleArn")?;
    if !validate::role_arn(role) {
        return Err(fail(
            role,
            "roleArn",
            "Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
        ));
    }
    let app = need(req, "AppSpecification", "appSpecification")?;
    let image = string(
        need(app, "ImageUri", "appSpecification.imageUri")?,
        "appSpecification.imageUri",
    )?;
    if image.len() > 255 {
        return Err(fail(
            image,
            "appSpecification.imageUri",
            "Member must have length less than or equal to 255",
        ));
    }
    string_list(
        app.get("ContainerEntrypoint"),
        "appSpecification.containerEntrypoint",
    )?;
    string_list(
        app.get("ContainerArguments"),
        "appSpecification.containerArguments",
    )?;
    let cluster = need(
        need(req, "ProcessingResources", "processingResources")?,
        "ClusterConfig",
        "processingResources.clusterConfig",
    )?;
    string(
        need(
            cluster,
            "InstanceType",
            "processingResources.clusterConfig.instanceType",
        )?,
        "processingResources.clusterConfig.instanceType",
    )?;
    let count = need(
        cluster,
        "InstanceCount",
        "processingResources.clusterConfig.instanceCount",
    )?;
    let n = count.as_i64().unwrap_or(0);
    if !(1..=100).contains(&n) {
        return Err(fail(
            &count.to_string(),
            "processingResources.clusterConfig.instanceCount",
            "Member must have value between 1 and 100",
        ));
    }
    if n > 20 {
        return Err(ControlError::ResourceLimitExceeded(format!(
            "The account-level service limit 'Number of instances across all processing jobs' is 20 Instances, and this job asks for {n}; use fewer instances"
        )));
    }
    if let Some(max) = req
        .get("StoppingCondition")
        .filter(|s| !s.is_null())
        .map(|s| {
            need(
                s,
                "MaxRuntimeInSeconds",
                "stoppingCondition.maxRuntimeInSeconds",
            )
        })
        .transpose()?
    {
        let m = max.as_i64().unwrap_or(0);
        if !(1..=777_600).contains(&m) {
            return Err(fail(
                &max.to_string(),
                "stoppingCondition.maxRuntimeInSeconds",
                "Member must have value between 1 and 777600",
            ));
        }
    }
    if let Some(env) = req.get("Environment").filter(|e| !e.is_null()) {
        let env = env
            .as_object()
            .ok_or_else(|| fail(&env.to_string(), "environment", "Member must be a map"))?;
        if env.len() > 100 {
            return Err(fail(
                &format!("{} entries", env.len()),
                "environment",
                "Member must have length less than or equal to 100",
            ));
        }
        for (k, v) in env {
            let key_ok = k.len() <= 256
                && k.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(fail(
                    k,
                    "environment",
                    "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*, Member must have length less than or equal to 256]",
                ));
            }
            let v = string(v, &format!("environment.{k}"))?;
            if v.chars().count() > 256 {
                return Err(fail(
                    v,
                    &format!("environment.{k}"),
                    "Member must have length less than or equal to 256",
                ));
            }
        }
    }
    let inputs = req
        .get("ProcessingInputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if inputs.len() > 10 {
        return Err(fail(
            &format!("{} items", inputs.len()),
            "processingInputs",
            "Member must have length less than or equal to 10",
        ));
    }
    for (i, input) in inputs.iter().enumerate() {
        let at = format!("processingInputs.{}", i + 1);
        let name = string(
            need(input, "InputName", &format!("{at}.inputName"))?,
            &format!("{at}.inputName"),
        )?;
        if input.get("DatasetDefinition").is_some_and(|d| !d.is_null()) {
            return Err(ControlError::Validation(format!(
                "ProcessingInput {name}: DatasetDefinition (Athena and Redshift datasets) is not supported by Clary; query the data into S3 first and pass it as S3Input"
            )));
        }
        if input.get("AppManaged").and_then(Value::as_bool) == Some(true) {
            return Err(ControlError::Validation(format!(
                "ProcessingInput {name}: AppManaged inputs are not supported by Clary; give an S3Input with a LocalPath for Clary to stage"
            )));
        }
        let Some(s3) = input.get("S3Input").filter(|s| !s.is_null()) else {
            return Err(ControlError::Validation(format!(
                "ProcessingInput {name} has no S3Input; Clary reads processing inputs from S3 only"
            )));
        };
        let uri = string(need(s3, "S3Uri", &format!("{at}.s3Input.s3Uri"))?, "s3Uri")?;
        s3_location(uri, &format!("{at}.s3Input.s3Uri"))?;
        let dt = string(
            need(s3, "S3DataType", &format!("{at}.s3Input.s3DataType"))?,
            "s3DataType",
        )?;
        one_of(
            dt,
            &["ManifestFile", "S3Prefix"],
            &format!("{at}.s3Input.s3DataType"),
        )?;
        if s3.get("LocalPath").and_then(Value::as_str).is_none() {
            return Err(ControlError::Validation(format!(
                "ProcessingInput {name}: S3Input.LocalPath is required (a path under /opt/ml/processing/ where the input appears)"
            )));
        }
        for (field, allowed) in [
            ("S3InputMode", &["Pipe", "File"][..]),
            (
                "S3DataDistributionType",
                &["FullyReplicated", "ShardedByS3Key"][..],
            ),
            ("S3CompressionType", &["None", "Gzip"][..]),
        ] {
            if let Some(v) = s3.get(field).filter(|v| !v.is_null()) {
                let mut camel = field.to_string();
                camel.replace_range(..2, "s3");
                one_of(string(v, field)?, allowed, &format!("{at}.s3Input.{camel}"))?;
            }
        }
    }
    if let Some(config) = req.get("ProcessingOutputConfig").filter(|c| !c.is_null()) {
        let outputs = need(config, "Outputs", "processingOutputConfig.outputs")?
            .as_array()
            .cloned()
            .unwrap_or_default();
        if outputs.len() > 10 {
            return Err(fail(
                &format!("{} items", outputs.len()),
                "processingOutputConfig.outputs",
                "Member must have length less than or equal to 10",
            ));
        }
        for (i, output) in outputs.iter().enumerate() {
            let at = format!("processingOutputConfig.outputs.{}", i + 1);
            let name = string(
                need(output, "OutputName", &format!("{at}.outputName"))?,
                &format!("{at}.outputName"),
            )?;
            if output
                .get("FeatureStoreOutput")
                .is_some_and(|d| !d.is_null())
            {
                return Err(ControlError::Validation(format!(
                    "ProcessingOutput {name}: FeatureStoreOutput is not supported by Clary; write to an S3Output"
                )));
            }
            if output.get("AppManaged").and_then(Value::as_bool) == Some(true) {
                return Err(ControlError::Validation(format!(
                    "ProcessingOutput {name}: AppManaged outputs are not supported by Clary; give an S3Output with a LocalPath for Clary to upload"
                )));
            }
            let Some(s3) = output.get("S3Output").filter(|s| !s.is_null()) else {
                return Err(ControlError::Validation(format!(
                    "ProcessingOutput {name} has no S3Output; Clary writes processing outputs to S3 only"
                )));
            };
            let uri = string(need(s3, "S3Uri", &format!("{at}.s3Output.s3Uri"))?, "s3Uri")?;
            let loc = s3_location(uri, &format!("{at}.s3Output.s3Uri"))?;
            let mode = string(
                need(s3, "S3UploadMode", &format!("{at}.s3Output.s3UploadMode"))?,
                "s3UploadMode",
            )?;
            one_of(
                mode,
                &["Continuous", "EndOfJob"],
                &format!("{at}.s3Output.s3UploadMode"),
            )?;
            if s3.get("LocalPath").and_then(Value::as_str).is_none() {
                return Err(ControlError::Validation(format!(
                    "ProcessingOutput {name}: S3Output.LocalPath is required (a path under /opt/ml/processing/ whose files are uploaded)"
                )));
            }
            if !bucket_exists(&loc.bucket) {
                return Err(ControlError::Validation(format!(
                    "The S3 bucket {:?} of ProcessingOutput {name} ({uri}) does not exist; create it first (aws s3 mb s3://{})",
                    loc.bucket, loc.bucket
                )));
            }
        }
    }
    Ok(())
}

impl CreateProcessingJobRequest {
    /// The domain's spec of the job (after [`validate_create`]).
    pub fn spec(&self) -> Result<ProcessingJobSpec, ControlError> {
        let inputs = self
            .processing_inputs
            .iter()
            .map(|i| {
                let s3 = i.s3_input.as_ref().ok_or_else(|| {
                    ControlError::Validation(format!(
                        "ProcessingInput {} has no S3Input",
                        i.input_name
                    ))
                })?;
                Ok(ProcessingInput {
                    name: i.input_name.clone(),
                    source: s3_location(&s3.s3_uri, "s3Input.s3Uri")?,
                    local_path: s3.local_path.clone().unwrap_or_default(),
                    data_type: s3.s3_data_type.clone(),
                    input_mode: match s3.s3_input_mode.as_deref() {
                        Some("Pipe") => ProcessingInputMode::Pipe,
                        _ => ProcessingInputMode::File,
                    },
                    distribution: s3
                        .s3_data_distribution_type
                        .clone()
                        .unwrap_or_else(|| "FullyReplicated".into()),
                    gzip: s3.s3_compression_type.as_deref() == Some("Gzip"),
                })
            })
            .collect::<Result<_, ControlError>>()?;
        let outputs = self
            .processing_output_config
            .iter()
            .flat_map(|c| &c.outputs)
            .map(|o| {
                let s3 = o.s3_output.as_ref().ok_or_else(|| {
                    ControlError::Validation(format!(
                        "ProcessingOutput {} has no S3Output",
                        o.output_name
                    ))
                })?;
                Ok(ProcessingOutput {
                    name: o.output_name.clone(),
                    destination: s3_location(&s3.s3_uri, "s3Output.s3Uri")?,
                    local_path: s3.local_path.clone().unwrap_or_default(),
                    upload_mode: if s3.s3_upload_mode == "Continuous" {
                        UploadMode::Continuous
                    } else {
                        UploadMode::EndOfJob
                    },
                })
            })
            .collect::<Result<_, ControlError>>()?;
        let cluster = &self.processing_resources.cluster_config;
        let spec = ProcessingJobSpec {
            image: self.app_specification.image_uri.clone(),
            runtime: String::new(),
            entrypoint: self.app_specification.container_entrypoint.clone(),
            arguments: self.app_specification.container_arguments.clone(),
            instance_type: cluster.instance_type.clone().unwrap_or_default(),
            instance_count: cluster.instance_count.unwrap_or(1).max(1),
            inputs,
            outputs,
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            max_runtime_secs: self
                .stopping_condition
                .as_ref()
                .map_or(DEFAULT_MAX_RUNTIME_SECS, |s| s.max_runtime_in_seconds),
        };
        spec.check()
            .map_err(|e| ControlError::Validation(e.to_string()))?;
        Ok(spec)
    }
}

fn create(state: &ApiState, body: Value) -> Result<Value, ControlError> {
    validate_create(&body, &|b| state.store.bucket_exists(b))?;
    let req: CreateProcessingJobRequest = serde_json::from_value(body.clone())
        .map_err(|e| ControlError::Validation(format!("1 validation error detected: {e}")))?;
    let spec = req.spec()?;
    let arn = state.control.processing.create(NewProcessingJob {
        name: req.processing_job_name,
        spec,
        echo: body.to_string(),
        tags: tag_pairs(&body),
    })?;
    Ok(json!({"ProcessingJobArn": arn}))
}

/// The request's inputs with the defaults SageMaker fills in shown.
fn inputs_json(req: &Value) -> Option<Value> {
    let mut inputs = req.get("ProcessingInputs")?.clone();
    for input in inputs.as_array_mut()? {
        input
            .as_object_mut()?
            .entry("AppManaged")
            .or_insert(json!(false));
        if let Some(s3) = input.get_mut("S3Input").and_then(Value::as_object_mut) {
            s3.entry("S3InputMode").or_insert(json!("File"));
            s3.entry("S3DataDistributionType")
                .or_insert(json!("FullyReplicated"));
            s3.entry("S3CompressionType").or_insert(json!("None"));
        }
    }
    Some(inputs)
}

fn outputs_json(req: &Value) -> Option<Value> {
    let mut config = req.get("ProcessingOutputConfig")?.clone();
    if let Some(outputs) = config.get_mut("Outputs").and_then(Value::as_array_mut) {
        for o in outputs {
            if let Some(o) = o.as_object_mut() {
                o.entry("AppManaged").or_insert(json!(false));
            }
        }
    }
    Some(config)
}

/// `DescribeProcessingJobResponse`.
pub fn describe_json(job: &ProcessingJob) -> Value {
    let req: Value = serde_json::from_str(&job.echo).unwrap_or(Value::Null);
    let s = &job.state;
    let mut out = json!({
        "ProcessingJobName": job.name,
        "ProcessingJobArn": job.arn,
        "ProcessingJobStatus": s.status.as_str(),
        "ProcessingResources": req["ProcessingResources"],
        "AppSpecification": req["AppSpecification"],
        "StoppingCondition": req.get("StoppingCondition").filter(|v| !v.is_null()).cloned()
            .unwrap_or_else(|| json!({"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME_SECS})),
        "RoleArn": req["RoleArn"],
        "CreationTime": s.creation_time,
        "LastModifiedTime": s.last_modified_time,
    });
    if let Some(v) = inputs_json(&req) {
        out["ProcessingInputs"] = v;
    }
    if let Some(v) = outputs_json(&req) {
        out["ProcessingOutputConfig"] = v;
    }
    for key in ["Environment", "NetworkConfig", "ExperimentConfig"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            out[key] = v.clone();
        }
    }
    if let Some(t) = s.start_time {
        out["ProcessingStartTime"] = json!(t);
    }
    if let Some(t) = s.end_time {
        out["ProcessingEndTime"] = json!(t);
    }
    if let Some(r) = &s.failure_reason {
        out["FailureReason"] = json!(r);
    }
    if let Some(m) = exit_message(job) {
        out["ExitMessage"] = json!(m.chars().take(1024).collect::<String>());
    }
    out
}

fn summary_json(job: &ProcessingJob) -> Value {
    let s = &job.state;
    let mut v = json!({
        "ProcessingJobName": job.name, "ProcessingJobArn": job.arn, "CreationTime": s.creation_time,
        "LastModifiedTime": s.last_modified_time, "ProcessingJobStatus": s.status.as_str(),
    });
    if let Some(t) = s.end_time {
        v["ProcessingEndTime"] = json!(t);
    }
    if let Some(r) = &s.failure_reason {
        v["FailureReason"] = json!(r);
    }
    if let Some(m) = exit_message(job) {
        v["ExitMessage"] = json!(m.chars().take(1024).collect::<String>());
    }
    v
}

fn list(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let statuses = crate::job_list::PROCESSING_JOB_STATUSES;
    let Some(q) = crate::job_list::list_query(body, statuses)? else {
        return Ok(json!({"ProcessingJobSummaries": []}));
    };
    let page = state.control.processing.list(&q)?;
    let mut out = json!({
        "ProcessingJobSummaries": page.items.iter().map(summary_json).collect::<Vec<_>>()
    });
    if let Some(next) = page.next_offset {
        out["NextToken"] = json!(next.to_string());
    }
    Ok(out)
}

/// The processing job operations; `None` for any other.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ApiError>> {
    let processing = &state.control.processing;
    let named = |body: &Value| -> Result<String, ControlError> {
        let name = required(body, "ProcessingJobName")?;
        validate::resource_name(name, "processingJobName")?;
        Ok(name.to_string())
    };
    let result = match op {
        "CreateProcessingJob" => create(state, body.clone()),
        "DescribeProcessingJob" => named(body)
            .and_then(|n| processing.get(&n))
            .map(|job| describe_json(&job)),
        "ListProcessingJobs" => list(state, body),
        "StopProcessingJob" => named(body)
            .and_then(|n| processing.stop(&n))
            .map(|()| json!({})),
        _ => return None,
    };
    Some(result.map_err(ApiError::from))
}

#[cfg(test)]
#[path = "processing_api_tests.rs"]
mod tests;
