//! The SageMaker batch transform operations: the request shapes named after the botocore
//! model's (`CreateTransformJobRequest`, `TransformInput`, `TransformOutput`, …), validated with
//! AWS's messages and converted into the domain's `TransformJobSpec`, and the shaping of
//! `DescribeTransformJob` and `ListTransformJobs`. Fields Clary only echoes (`ExperimentConfig`,
//! `KmsKeyId`s) travel in the request kept as the job's echo.

use crate::ApiState;
use crate::errors::ApiError;
use crate::validate::{self, fail};
use crate::wire::{required, tag_pairs};
use clary_control::ControlError;

use clary_control::domain::training::S3Location;
use clary_control::domain::transform::{
    BatchStrategy, DEFAULT_INVOCATIONS_MAX_RETRIES, DEFAULT_INVOCATIONS_TIMEOUT_SECS,
    DEFAULT_MAX_PAYLOAD_MB, DataCapture, DataProcessing, DataType, MAX_PAYLOAD_MB_LIMIT, SplitType,
    TransformInput as DomainInput, TransformJob, TransformOutput as DomainOutput, TransformRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `TransformJobStatus` as the model lists it.
pub const TRANSFORM_JOB_STATUSES: &[&str] =
    &["InProgress", "Completed", "Failed", "Stopping", "Stopped"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTransformJobRequest {
    pub transform_job_name: String,
    pub model_name: String,
    #[serde(default)]
    pub max_concurrent_transforms: Option<u32>,
    #[serde(default)]
    pub model_client_config: Option<ModelClientConfig>,
    #[serde(default, rename = "MaxPayloadInMB")]
    pub max_payload_in_mb: Option<u32>,
    #[serde(default)]
    pub batch_strategy: Option<String>,
    #[serde(default)]
    pub environment: Map<String, Value>,
    pub transform_input: TransformInput,
    pub transform_output: TransformOutput,
    #[serde(default)]
    pub data_capture_config: Option<BatchDataCaptureConfig>,
    pub transform_resources: TransformResources,
    #[serde(default)]
    pub data_processing: Option<DataProcessingShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelClientConfig {
    #[serde(default)]
    pub invocations_timeout_in_seconds: Option<u64>,
    #[serde(default)]
    pub invocations_max_retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransformInput {
    pub data_source: TransformDataSource,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub compression_type: Option<String>,
    #[serde(default)]
    pub split_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransformDataSource {
    #[serde(rename = "S3DataSource")]
    pub s3_data_source: TransformS3DataSource,
}

#[derive(Deserialize)]
pub struct TransformS3DataSource {
    #[serde(rename = "S3DataType")]
    pub s3_data_type: String,
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransformOutput {
    #[serde(rename = "S3OutputPath")]
    pub s3_output_path: String,
    #[serde(default)]
    pub accept: Option<String>,
    #[serde(default)]
    pub assemble_with: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchDataCaptureConfig {
    #[serde(rename = "DestinationS3Uri")]
    pub destination_s3_uri: String,
    #[serde(default)]
    pub generate_inference_id: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransformResources {
    pub instance_type: String,
    pub instance_count: u32,
}

/// `DataProcessing`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataProcessingShape {
    #[serde(default)]
    pub input_filter: Option<String>,
    #[serde(default)]
    pub output_filter: Option<String>,
    #[serde(default)]
    pub join_source: Option<String>,
}

fn s3(uri: &str, at: &str) -> Result<S3Location, ControlError> {
    S3Location::parse(uri).ok_or_else(|| {
        fail(
            uri,
            at,
            "Member must be an s3://bucket/prefix URI (Clary serves S3 only, not https:// locations)",
        )
    })
}

fn one_of(value: &str, allowed: &[&str], at: &str) -> Result<(), ControlError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(fail(
            value,
            at,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        ))
    }
}

fn max_len(value: &str, max: usize, at: &str) -> Result<(), ControlError> {
    if value.chars().count() > max {
        return Err(fail(
            value,
            at,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// `[a-zA-Z_][a-zA-Z0-9_]{0,1023}`.
fn env_key(key: &str) -> bool {
    (1..=1024).contains(&key.len())
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl CreateTransformJobRequest {
    /// Checks the request against the model's constraints and SageMaker's documented limits,
    /// and converts it into what the control plane needs.
    pub fn into_request(self, echo: &Value) -> Result<TransformRequest, ControlError> {
        validate::resource_name(&self.transform_job_name, "transformJobName")?;
        validate::resource_name(&self.model_name, "modelName")?;
        let input = &self.transform_input;
        let source = &input.data_source.s3_data_source;
        const DATA_TYPES: &[&str] = &[
            "ManifestFile",
            "S3Prefix",
            "AugmentedManifestFile",
            "Converse",
        ];
        one_of(
            &source.s3_data_type,
            DATA_TYPES,
            "transformInput.dataSource.s3DataSource.s3DataType",
        )?;
        let data_type = match source.s3_data_type.as_str() {
            "S3Prefix" => DataType::S3Prefix,
            "ManifestFile" => DataType::ManifestFile,
            other => {
                return Err(ControlError::Validation(format!(
                    "S3DataType {other} is not supported for batch transform by Clary; use S3Prefix or ManifestFile"
                )));
            }
        };
        max_len(
            &source.s3_uri,
            1024,
            "transformInput.dataSource.s3DataSource.s3Uri",
        )?;
        let source_loc = s3(
            &source.s3_uri,
            "transformInput.dataSource.s3DataSource.s3Uri",
        )?;
        if let Some(ct) = &input.content_type {
            max_len(ct, 256, "transformInput.contentType")?;
        }
        let compression = input.compression_type.as_deref().unwrap_or("None");
        one_of(
            compression,
            &["None", "Gzip"],
            "transformInput.compressionType",
        )?;
        let split = input.split_type.as_deref().unwrap_or("None");
        one_of(
            split,
            &["None", "Line", "RecordIO", "TFRecord"],
            "transformInput.splitType",
        )?;
        let split = match split {
            "None" => SplitType::None,
            "Line" => SplitType::Line,
            "RecordIO" => SplitType::RecordIO,
            _ => {
                return Err(ControlError::Validation(
                    "SplitType TFRecord is not supported by Clary (MXNet models read RecordIO); use None, Line or RecordIO".into(),
                ));
            }
        };
        let output = &self.transform_output;
        max_len(&output.s3_output_path, 1024, "transformOutput.s3OutputPath")?;
        let out_loc = s3(&output.s3_output_path, "transformOutput.s3OutputPath")?;
        if let Some(a) = &output.accept {
            max_len(a, 256, "transformOutput.accept")?;
        }
        let assemble = output.assemble_with.as_deref().unwrap_or("None");
        one_of(assemble, &["None", "Line"], "transformOutput.assembleWith")?;
        for (field, at) in [
            (
                &echo["TransformOutput"]["KmsKeyId"],
                "transformOutput.kmsKeyId",
            ),
            (
                &echo["DataCaptureConfig"]["KmsKeyId"],
                "dataCaptureConfig.kmsKeyId",
            ),
            (
                &echo["TransformResources"]["VolumeKmsKeyId"],
                "transformResources.volumeKmsKeyId",
            ),
        ] {
            if let Some(k) = field.as_str() {
                max_len(k, 2048, at)?;
                if !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
                {
                    return Err(fail(
                        k,
                        at,
                        "Member must satisfy regular expression pattern: [a-zA-Z0-9:/_-]*",
                    ));
                }
            }
        }
        let strategy = match self.batch_strategy.as_deref() {
            None => None,
            Some(s) => {
                one_of(s, &["MultiRecord", "SingleRecord"], "batchStrategy")?;
                Some(if s == "MultiRecord" {
                    BatchStrategy::MultiRecord
                } else {
                    BatchStrategy::SingleRecord
                })
            }
        };
        if let Some(mb) = self.max_payload_in_mb
            && mb > MAX_PAYLOAD_MB_LIMIT
        {
            return Err(fail(
                &mb.to_string(),
                "maxPayloadInMB",
                &format!("Member must have value less than or equal to {MAX_PAYLOAD_MB_LIMIT}"),
            ));
        }
        if self.max_payload_in_mb == Some(0) && split != SplitType::None {
            return Err(ControlError::Validation(
                "MaxPayloadInMB 0 (no limit) works only with SplitType None; give a limit (default 6) to split records".into(),
            ));
        }
        if self.environment.len() > 16 {
            return Err(fail(
                &format!("{} entries", self.environment.len()),
                "environment",
                "Member must have length less than or equal to 16",
            ));
        }
        let mut environment = Vec::new();
        for (k, v) in &self.environment {
            if !env_key(k) {
                return Err(fail(
                    k,
                    "environment",
                    "Map keys must satisfy regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]{0,1023}",
                ));
            }
            let v = v.as_str().ok_or_else(|| {
                fail(
                    &v.to_string(),
                    &format!("environment.{k}"),
                    "Member must be a string",
                )
            })?;
            max_len(v, 10240, &format!("environment.{k}"))?;
            environment.push((k.clone(), v.to_string()));
        }
        let client = self.model_client_config.as_ref();
        let timeout = client
            .and_then(|c| c.invocations_timeout_in_seconds)
            .unwrap_or(DEFAULT_INVOCATIONS_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout) {
            return Err(fail(
                &timeout.to_string(),
                "modelClientConfig.invocationsTimeoutInSeconds",
                "Member must have value between 1 and 3600",
            ));
        }
        let retries = client
            .and_then(|c| c.invocations_max_retries)
            .unwrap_or(DEFAULT_INVOCATIONS_MAX_RETRIES);
        if retries > 3 {
            return Err(fail(
                &retries.to_string(),
                "modelClientConfig.invocationsMaxRetries",
                "Member must have value less than or equal to 3",
            ));
        }
        let processing = match &self.data_processing {
            None => DataProcessing::default(),
            Some(d) => {
                for (f, at) in [
                    (&d.input_filter, "dataProcessing.inputFilter"),
                    (&d.output_filter, "dataProcessing.outputFilter"),
                ] {
                    if let Some(f) = f {
                        max_len(f, 63, at)?;
                    }
                }
                let join = d.join_source.as_deref().unwrap_or("None");
                one_of(join, &["Input", "None"], "dataProcessing.joinSource")?;
                DataProcessing {
                    input_filter: d.input_filter.clone(),
                    output_filter: d.output_filter.clone(),
                    join_input: join == "Input",
                }
            }
        };
        let capture = self
            .data_capture_config
            .as_ref()
            .map(|c| {
                max_len(
                    &c.destination_s3_uri,
                    1024,
                    "dataCaptureConfig.destinationS3Uri",
                )?;
                Ok::<_, ControlError>(DataCapture {
                    destination: s3(&c.destination_s3_uri, "dataCaptureConfig.destinationS3Uri")?,
                    generate_inference_id: c.generate_inference_id.unwrap_or(false),
                })
            })
            .transpose()?;
        let resources = &self.transform_resources;
        if resources.instance_count < 1 {
            return Err(fail(
                "0",
                "transformResources.instanceCount",
                "Member must have value greater than or equal to 1",
            ));
        }
        Ok(TransformRequest {
            name: self.transform_job_name,
            model_name: self.model_name,
            input: DomainInput {
                source: source_loc,
                data_type,
                content_type: input.content_type.clone(),
                gzip: compression == "Gzip",
                split,
            },
            output: DomainOutput {
                path: out_loc,
                accept: output.accept.clone(),
                assemble_lines: assemble == "Line",
            },
            instance_type: resources.instance_type.clone(),
            instance_count: resources.instance_count,
            batch_strategy: strategy,
            max_payload_mb: self.max_payload_in_mb,
            max_concurrent_transforms: self.max_concurrent_transforms,
            environment,
            invocations_timeout_secs: timeout,
            invocations_max_retries: retries,
            data_processing: processing,
            capture,
        })
    }
}

fn create(state: &ApiState, body: Value) -> Result<Value, ControlError> {
    let tags = tag_pairs(&body);
    if tags.len() > 50 {
        return Err(fail(
            &format!("{} tags", tags.len()),
            "tags",
            "Member must have length less than or equal to 50",
        ));
    }
    let req: CreateTransformJobRequest = serde_json::from_value(body.clone())
        .map_err(|e| ControlError::Validation(format!("1 validation error detected: {e}")))?;
    let request = req.into_request(&body)?;
    for (loc, what) in [
        (Some(&request.input.source), "TransformInput's S3Uri"),
        (Some(&request.output.path), "TransformOutput.S3OutputPath"),
        (
            request.capture.as_ref().map(|c| &c.destination),
            "DataCaptureConfig.DestinationS3Uri",
        ),
    ] {
        if let Some(loc) = loc
            && !state.store.bucket_exists(&loc.bucket)
        {
            return Err(ControlError::Validation(format!(
                "The bucket {:?} of {what} does not exist; create it first",
                loc.bucket
            )));
        }
    }
    let arn = state
        .control
        .transform
        .create(request, body.to_string(), tags)?;
    Ok(json!({"TransformJobArn": arn}))
}

/// `DescribeTransformJobResponse`: what was asked, with the values the job runs with filled in
/// where the request left them out.
pub fn describe_json(job: &TransformJob) -> Value {
    let req: Value = serde_json::from_str(&job.echo).unwrap_or(Value::Null);
    let s = &job.state;
    let spec = &job.spec;
    let mut input = req["TransformInput"].clone();
    input["CompressionType"] = json!(if spec.input.gzip { "Gzip" } else { "None" });
    input["SplitType"] = json!(spec.input.split.as_str());
    let mut output = req["TransformOutput"].clone();
    output["AssembleWith"] = json!(if spec.output.assemble_lines {
        "Line"
    } else {
        "None"
    });
    let mut out = json!({
        "TransformJobName": job.name,
        "TransformJobArn": job.arn,
        "TransformJobStatus": s.status.as_str(),
        "ModelName": spec.model_name,
        "MaxPayloadInMB": spec.max_payload_mb.unwrap_or(DEFAULT_MAX_PAYLOAD_MB),
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": spec.invocations_timeout_secs,
            "InvocationsMaxRetries": spec.invocations_max_retries,
        },
        "TransformInput": input,
        "TransformOutput": output,
        "TransformResources": req["TransformResources"],
        "CreationTime": s.creation_time,
        "DataProcessing": {
            "InputFilter": spec.data_processing.input_filter.as_deref().unwrap_or("$"),
            "OutputFilter": spec.data_processing.output_filter.as_deref().unwrap_or("$"),
            "JoinSource": if spec.data_processing.join_input { "Input" } else { "None" },
        },
    });
    if let Some(b) = spec.batch_strategy {
        out["BatchStrategy"] = json!(b.as_str());
    }
    if let Some(n) = spec.max_concurrent_transforms {
        out["MaxConcurrentTransforms"] = json!(n);
    }
    for key in ["Environment", "DataCaptureConfig", "ExperimentConfig"] {
        if let Some(v) = req.get(key) {
            out[key] = v.clone();
        }
    }
    if let Some(t) = s.start_time {
        out["TransformStartTime"] = json!(t);
    }
    if let Some(t) = s.end_time {
        out["TransformEndTime"] = json!(t);
    }
    if let Some(r) = &s.failure_reason {
        out["FailureReason"] = json!(r.chars().take(1024).collect::<String>());
    }
    out
}

fn summary_json(job: &TransformJob) -> Value {
    let s = &job.state;
    let mut v = json!({
        "TransformJobName": job.name, "TransformJobArn": job.arn, "CreationTime": s.creation_time,
        "LastModifiedTime": s.last_modified_time, "TransformJobStatus": s.status.as_str(),
    });
    if let Some(t) = s.end_time {
        v["TransformEndTime"] = json!(t);
    }
    if let Some(r) = &s.failure_reason {
        v["FailureReason"] = json!(r.chars().take(1024).collect::<String>());
    }
    v
}

fn list(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let Some(q) = crate::job_list::list_query(body, TRANSFORM_JOB_STATUSES)? else {
        return Ok(json!({"TransformJobSummaries": []}));
    };
    let page = state.control.transform.list(&q)?;
    let mut out = json!({
        "TransformJobSummaries": page.items.iter().map(summary_json).collect::<Vec<_>>()
    });
    if let Some(next) = page.next_offset {
        out["NextToken"] = json!(next.to_string());
    }
    Ok(out)
}

/// The transform job operations; `None` for any other.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ApiError>> {
    let transform = &state.control.transform;
    let named = |body: &Value| -> Result<String, ControlError> {
        let name = required(body, "TransformJobName")?;
        validate::resource_name(name, "transformJobName")?;
        Ok(name.to_string())
    };
    let result = match op {
        "CreateTransformJob" => create(state, body.clone()),
        "DescribeTransformJob" => named(body)
            .and_then(|n| transform.get(&n))
            .map(|job| describe_json(&job)),
        "ListTransformJobs" => list(state, body),
        "StopTransformJob" => named(body)
            .and_then(|n| transform.stop(&n))
            .map(|()| json!({})),
        _ => return None,
    };
    Some(result.map_err(ApiError::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: Value) -> Value {
        let mut v = json!({
            "TransformJobName": "job-1",
            "ModelName": "model-1",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
        });
        for (k, val) in extra.as_object().cloned().unwrap_or_default() {
            v[k] = val;
        }
        v
    }

    fn convert(v: Value) -> Result<TransformRequest, String> {
        let req: CreateTransformJobRequest =
            serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        req.into_request(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_sagemaker() {
        let r = convert(request(json!({}))).unwrap();
        assert_eq!(r.input.split, SplitType::None);
        assert!(!r.input.gzip);
        assert!(!r.output.assemble_lines);
        assert_eq!(r.invocations_timeout_secs, 600);
        assert_eq!(r.invocations_max_retries, 3);
        assert_eq!(r.max_payload_mb, None);
        assert_eq!(r.data_processing, DataProcessing::default());
        assert_eq!(r.instance_count, 2);
    }

    #[test]
    fn every_field_converts() {
        let r = convert(request(json!({
            "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 4,
            "Environment": {"K": "V"},
            "ModelClientConfig": {"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 0},
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m.json"}},
                               "ContentType": "text/csv", "CompressionType": "Gzip", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": "s3://b/out", "Accept": "text/csv", "AssembleWith": "Line", "KmsKeyId": "k"},
            "DataProcessing": {"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]", "JoinSource": "Input"},
            "DataCaptureConfig": {"DestinationS3Uri": "s3://b/cap", "GenerateInferenceId": true},
        })))
        .unwrap();
        assert_eq!(r.batch_strategy, Some(BatchStrategy::MultiRecord));
        assert_eq!(r.input.data_type, DataType::ManifestFile);
        assert!(r.input.gzip && r.output.assemble_lines && r.data_processing.join_input);
        assert_eq!(r.input.split, SplitType::Line);
        assert_eq!(r.environment, vec![("K".to_string(), "V".to_string())]);
        assert_eq!(r.capture.unwrap().destination.prefix, "cap");
        assert_eq!(r.invocations_max_retries, 0);
    }

    #[test]
    fn what_the_model_refuses_is_refused_with_awss_message() {
        let cases = [
            (
                json!({"BatchStrategy": "Many"}),
                "at 'batchStrategy' failed to satisfy constraint: Member must satisfy enum value set: [MultiRecord, SingleRecord]",
            ),
            (
                json!({"ModelClientConfig": {"InvocationsMaxRetries": 4}}),
                "Member must have value less than or equal to 3",
            ),
            (
                json!({"ModelClientConfig": {"InvocationsTimeoutInSeconds": 3601}}),
                "Member must have value between 1 and 3600",
            ),
            (json!({"MaxPayloadInMB": 101}), "less than or equal to 100"),
            (
                json!({"DataProcessing": {"JoinSource": "Output"}}),
                "[Input, None]",
            ),
            (
                json!({"DataProcessing": {"InputFilter": format!("$.{}", "a".repeat(63))}}),
                "at 'dataProcessing.inputFilter'",
            ),
            (
                json!({"TransformOutput": {"S3OutputPath": "s3://b/o", "AssembleWith": "Record"}}),
                "[None, Line]",
            ),
            (
                json!({"TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/"}}, "SplitType": "TFRecord"}}),
                "TFRecord is not supported",
            ),
            (
                json!({"TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "AugmentedManifestFile", "S3Uri": "s3://b/"}}}}),
                "use S3Prefix or ManifestFile",
            ),
            (
                json!({"TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/"}}, "CompressionType": "Zip"}}),
                "[None, Gzip]",
            ),
            (
                json!({"TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/"}}, "SplitType": "Line"}, "MaxPayloadInMB": 0}),
                "only with SplitType None",
            ),
            (
                json!({"Environment": {"1BAD": "x"}}),
                "[a-zA-Z_][a-zA-Z0-9_]{0,1023}",
            ),
            (
                json!({"TransformJobName": "bad_name"}),
                "at 'transformJobName'",
            ),
            (
                json!({"TransformOutput": {"S3OutputPath": "https://b/o"}}),
                "s3://bucket/prefix URI",
            ),
        ];
        for (extra, want) in cases {
            let e = convert(request(extra.clone())).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
