//! A batch transform job: what was asked for (a typed spec, the model resolved when the job
//! was created) and where it stands (the shared job lifecycle state). No wire format here.

use super::hosting::Container;
use super::job::{JobWords, Kind};
use super::training::S3Location;
use serde::{Deserialize, Serialize};

pub const TRANSFORM: JobWords = Kind::TransformJob.words();

/// `ModelClientConfig` when the request leaves a value out (SageMaker's documented defaults).
pub const DEFAULT_INVOCATIONS_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_INVOCATIONS_MAX_RETRIES: u32 = 3;
/// `MaxPayloadInMB` when neither the request nor the model server says (SageMaker's default).
pub const DEFAULT_MAX_PAYLOAD_MB: u32 = 6;
/// SageMaker's ceiling on `MaxPayloadInMB`.
pub const MAX_PAYLOAD_MB_LIMIT: u32 = 100;

/// `S3DataType` of a transform input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    S3Prefix,
    ManifestFile,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::S3Prefix => "S3Prefix",
            DataType::ManifestFile => "ManifestFile",
        }
    }
}

/// `SplitType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitType {
    None,
    Line,
    RecordIO,
}

impl SplitType {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitType::None => "None",
            SplitType::Line => "Line",
            SplitType::RecordIO => "RecordIO",
        }
    }
}

/// `BatchStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchStrategy {
    MultiRecord,
    SingleRecord,
}

impl BatchStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStrategy::MultiRecord => "MultiRecord",
            BatchStrategy::SingleRecord => "SingleRecord",
        }
    }

    /// `SAGEMAKER_BATCH_STRATEGY` in the model's environment.
    pub fn env_value(self) -> &'static str {
        match self {
            BatchStrategy::MultiRecord => "MULTI_RECORD",
            BatchStrategy::SingleRecord => "SINGLE_RECORD",
        }
    }
}

/// `TransformInput`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformInput {
    pub source: S3Location,
    pub data_type: DataType,
    pub content_type: Option<String>,
    pub gzip: bool,
    pub split: SplitType,
}

/// `TransformOutput`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformOutput {
    pub path: S3Location,
    pub accept: Option<String>,
    /// `AssembleWith: Line`.
    pub assemble_lines: bool,
}

/// `DataProcessing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataProcessing {
    pub input_filter: Option<String>,
    pub output_filter: Option<String>,
    /// `JoinSource: Input`.
    pub join_input: bool,
}

/// `DataCaptureConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCapture {
    pub destination: S3Location,
    pub generate_inference_id: bool,
}

/// What a transform job runs, on what, from what, to where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformJobSpec {
    pub model_name: String,
    /// The model's container as it was when the job was created: deleting the model later
    /// does not disturb the job.
    pub model: Container,
    pub input: TransformInput,
    pub output: TransformOutput,
    pub instance_type: String,
    pub instance_count: u32,
    pub batch_strategy: Option<BatchStrategy>,
    pub max_payload_mb: Option<u32>,
    pub max_concurrent_transforms: Option<u32>,
    pub environment: Vec<(String, String)>,
    pub invocations_timeout_secs: u64,
    pub invocations_max_retries: u32,
    pub data_processing: DataProcessing,
    pub capture: Option<DataCapture>,
}

impl TransformJobSpec {
    /// The model server's environment: the model's own, the job's `Environment` over it, and
    /// the batch variables SageMaker sets in a transform container.
    pub fn model_environment(&self) -> std::collections::BTreeMap<String, String> {
        let mut env = self.model.environment.clone();
        env.extend(self.environment.iter().cloned());
        env.insert("SAGEMAKER_BATCH".into(), "true".into());
        if let Some(s) = self.batch_strategy {
            env.insert("SAGEMAKER_BATCH_STRATEGY".into(), s.env_value().into());
        }
        if let Some(mb) = self.max_payload_mb {
            env.insert("SAGEMAKER_MAX_PAYLOAD_IN_MB".into(), mb.to_string());
        }
        if let Some(n) = self.max_concurrent_transforms.filter(|n| *n > 0) {
            env.insert("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS".into(), n.to_string());
        }
        // A request may take as long as the job allows it to.
        env.entry("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS".into())
            .or_insert_with(|| self.invocations_timeout_secs.to_string());
        env
    }
}

/// `CreateTransformJob` as the edge validated it: the spec before its model is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformRequest {
    pub name: String,
    pub model_name: String,
    pub input: TransformInput,
    pub output: TransformOutput,
    pub instance_type: String,
    pub instance_count: u32,
    pub batch_strategy: Option<BatchStrategy>,
    pub max_payload_mb: Option<u32>,
    pub max_concurrent_transforms: Option<u32>,
    pub environment: Vec<(String, String)>,
    pub invocations_timeout_secs: u64,
    pub invocations_max_retries: u32,
    pub data_processing: DataProcessing,
    pub capture: Option<DataCapture>,
}

impl TransformRequest {
    /// The job's spec, with the model's container as it is now.
    pub fn into_spec(self, model: Container) -> (String, TransformJobSpec) {
        (
            self.name,
            TransformJobSpec {
                model_name: self.model_name,
                model,
                input: self.input,
                output: self.output,
                instance_type: self.instance_type,
                instance_count: self.instance_count,
                batch_strategy: self.batch_strategy,
                max_payload_mb: self.max_payload_mb,
                max_concurrent_transforms: self.max_concurrent_transforms,
                environment: self.environment,
                invocations_timeout_secs: self.invocations_timeout_secs,
                invocations_max_retries: self.invocations_max_retries,
                data_processing: self.data_processing,
                capture: self.capture,
            },
        )
    }
}

/// A transform job: a kind without columns of its own (its spec and state live in the jobs
/// table).
pub type TransformJob = super::job::Job<TransformJobSpec>;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TransformJobSpec {
        TransformJobSpec {
            model_name: "m".into(),
            model: Container {
                image: "img".into(),
                model_data_url: None,
                environment: [("A".to_string(), "model".to_string())].into(),
            },
            input: TransformInput {
                source: S3Location {
                    bucket: "b".into(),
                    prefix: "in".into(),
                },
                data_type: DataType::S3Prefix,
                content_type: Some("text/csv".into()),
                gzip: false,
                split: SplitType::Line,
            },
            output: TransformOutput {
                path: S3Location {
                    bucket: "b".into(),
                    prefix: "out".into(),
                },
                accept: None,
                assemble_lines: true,
            },
            instance_type: "ml.m5.large".into(),
            instance_count: 1,
            batch_strategy: Some(BatchStrategy::SingleRecord),
            max_payload_mb: Some(2),
            max_concurrent_transforms: Some(4),
            environment: vec![("A".into(), "job".into())],
            invocations_timeout_secs: 60,
            invocations_max_retries: 3,
            data_processing: DataProcessing::default(),
            capture: None,
        }
    }

    #[test]
    fn the_model_sees_the_batch_variables_and_the_jobs_environment() {
        let env = spec().model_environment();
        assert_eq!(env["A"], "job");
        assert_eq!(env["SAGEMAKER_BATCH"], "true");
        assert_eq!(env["SAGEMAKER_BATCH_STRATEGY"], "SINGLE_RECORD");
        assert_eq!(env["SAGEMAKER_MAX_PAYLOAD_IN_MB"], "2");
        assert_eq!(env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"], "4");
        assert_eq!(env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"], "60");
        let mut s = spec();
        s.batch_strategy = None;
        s.max_payload_mb = None;
        let env = s.model_environment();
        assert!(!env.contains_key("SAGEMAKER_BATCH_STRATEGY"));
        assert!(!env.contains_key("SAGEMAKER_MAX_PAYLOAD_IN_MB"));
    }
}
