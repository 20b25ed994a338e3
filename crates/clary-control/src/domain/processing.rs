//! A processing job: what was asked for (a typed spec) and where it stands (the shared job
//! lifecycle state): a [`Job`] of [`ProcessingJobSpec`].

use super::job::{Job, JobStatus};
use super::training::S3Location;
use serde::{Deserialize, Serialize};

/// Where every `LocalPath` of a processing job must be (as SageMaker requires).
pub const PROCESSING_ROOT: &str = "/opt/ml/processing/";

/// `S3InputMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessingInputMode {
    File,
    Pipe,
}

impl ProcessingInputMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingInputMode::File => "File",
            ProcessingInputMode::Pipe => "Pipe",
        }
    }
}

/// `S3UploadMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadMode {
    EndOfJob,
    Continuous,
}

/// One `ProcessingInput` with its `S3Input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingInput {
    pub name: String,
    pub source: S3Location,
    /// Under [`PROCESSING_ROOT`].
    pub local_path: String,
    /// `S3Prefix` or `ManifestFile`.
    pub data_type: String,
    pub input_mode: ProcessingInputMode,
    /// `FullyReplicated` or `ShardedByS3Key`.
    pub distribution: String,
    /// `S3CompressionType: Gzip` (Pipe mode only).
    pub gzip: bool,
}

/// One `ProcessingOutput` with its `S3Output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingOutput {
    pub name: String,
    pub destination: S3Location,
    /// Under [`PROCESSING_ROOT`].
    pub local_path: String,
    pub upload_mode: UploadMode,
}

/// What a processing job runs, on what, from what, to where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingJobSpec {
    /// `AppSpecification.ImageUri`.
    pub image: String,
    /// The runtime the image maps to (decided when the job is created).
    #[serde(default)]
    pub runtime: String,
    pub entrypoint: Vec<String>,
    pub arguments: Vec<String>,
    pub instance_type: String,
    pub instance_count: u32,
    pub inputs: Vec<ProcessingInput>,
    pub outputs: Vec<ProcessingOutput>,
    pub environment: Vec<(String, String)>,
    pub max_runtime_secs: u64,
}

/// `MaxRuntimeInSeconds` when `StoppingCondition` leaves it out (SageMaker's default: a day).
pub const DEFAULT_MAX_RUNTIME_SECS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessingSpecError {
    #[error("{what} {name}: LocalPath {path:?} must begin with {PROCESSING_ROOT}")]
    LocalPathOutsideRoot {
        what: &'static str,
        name: String,
        path: String,
    },
    #[error("{what} {name}: LocalPath {path:?} must be a plain absolute path (no '..')")]
    LocalPathNotPlain {
        what: &'static str,
        name: String,
        path: String,
    },
    #[error("{what} names must be unique within a processing job; {name:?} is given twice")]
    DuplicateName { what: &'static str, name: String },
    #[error(
        "ProcessingInput {0}: S3CompressionType Gzip is only valid with S3InputMode Pipe; use Pipe or decompress the data"
    )]
    GzipWithoutPipe(String),
    #[error(
        "AppSpecification.ContainerEntrypoint is required: Clary runs no image's own entrypoint; give the command the container runs (e.g. [\"python3\", \"/opt/ml/processing/input/code/preprocess.py\"])"
    )]
    NoCommand,
}

fn check_local_path(what: &'static str, name: &str, path: &str) -> Result<(), ProcessingSpecError> {
    if !path.starts_with(PROCESSING_ROOT) {
        return Err(ProcessingSpecError::LocalPathOutsideRoot {
            what,
            name: name.into(),
            path: path.into(),
        });
    }
    if path.split('/').any(|s| s == "..") {
        return Err(ProcessingSpecError::LocalPathNotPlain {
            what,
            name: name.into(),
            path: path.into(),
        });
    }
    Ok(())
}

impl ProcessingJobSpec {
    /// What SageMaker refuses of a spec that is well-formed on the wire.
    pub fn check(&self) -> Result<(), ProcessingSpecError> {
        if self.entrypoint.is_empty() {
            return Err(ProcessingSpecError::NoCommand);
        }
        let mut names = std::collections::HashSet::new();
        for i in &self.inputs {
            check_local_path("ProcessingInput", &i.name, &i.local_path)?;
            if i.gzip && i.input_mode != ProcessingInputMode::Pipe {
                return Err(ProcessingSpecError::GzipWithoutPipe(i.name.clone()));
            }
            if !names.insert(i.name.as_str()) {
                return Err(ProcessingSpecError::DuplicateName {
                    what: "ProcessingInput",
                    name: i.name.clone(),
                });
            }
        }
        let mut names = std::collections::HashSet::new();
        for o in &self.outputs {
            check_local_path("ProcessingOutput", &o.name, &o.local_path)?;
            if !names.insert(o.name.as_str()) {
                return Err(ProcessingSpecError::DuplicateName {
                    what: "ProcessingOutput",
                    name: o.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A processing job.
pub type ProcessingJob = Job<ProcessingJobSpec>;

/// `ExitMessage`: what the container's end says, for a job that did not complete.
pub fn exit_message(job: &ProcessingJob) -> Option<&str> {
    match job.state.status {
        JobStatus::Failed | JobStatus::Stopped => job.state.failure_reason.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessingJobSpec {
        ProcessingJobSpec {
            image: "i".into(),
            runtime: "mxnet-1.9".into(),
            entrypoint: vec!["python3".into()],
            arguments: vec![],
            instance_type: "ml.c5.xlarge".into(),
            instance_count: 1,
            inputs: vec![ProcessingInput {
                name: "data".into(),
                source: S3Location {
                    bucket: "b".into(),
                    prefix: "p".into(),
                },
                local_path: "/opt/ml/processing/input".into(),
                data_type: "S3Prefix".into(),
                input_mode: ProcessingInputMode::File,
                distribution: "FullyReplicated".into(),
                gzip: false,
            }],
            outputs: vec![ProcessingOutput {
                name: "out".into(),
                destination: S3Location {
                    bucket: "b".into(),
                    prefix: "o".into(),
                },
                local_path: "/opt/ml/processing/output".into(),
                upload_mode: UploadMode::EndOfJob,
            }],
            environment: vec![],
            max_runtime_secs: 60,
        }
    }

    #[test]
    fn specs_are_checked_as_sagemaker_checks_them() {
        assert_eq!(spec().check(), Ok(()));
        let mut s = spec();
        s.inputs[0].local_path = "/tmp/x".into();
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("must begin with /opt/ml/processing/")
        );
        let mut s = spec();
        s.outputs[0].local_path = "/opt/ml/processing/../model".into();
        assert!(matches!(
            s.check(),
            Err(ProcessingSpecError::LocalPathNotPlain { .. })
        ));
        let mut s = spec();
        s.inputs[0].gzip = true;
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("only valid with S3InputMode Pipe")
        );
        s.inputs[0].input_mode = ProcessingInputMode::Pipe;
        assert_eq!(s.check(), Ok(()));
        let mut s = spec();
        s.inputs.push(s.inputs[0].clone());
        assert!(matches!(
            s.check(),
            Err(ProcessingSpecError::DuplicateName { .. })
        ));
        let mut s = spec();
        s.entrypoint.clear();
        assert_eq!(s.check(), Err(ProcessingSpecError::NoCommand));
    }
}
