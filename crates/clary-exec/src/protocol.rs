//! The messages between the control plane and a host agent. The launch spec is a JSON file the
//! executor hands the agent; reports travel back as SigV4-signed JSON 1.1 calls with
//! `X-Amz-Target: ClaryAgent.<Op>` on the server's one port.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `X-Amz-Target` prefix of agent reports.
pub const AGENT_TARGET_PREFIX: &str = "ClaryAgent.";
/// SigV4 service name of agent reports.
pub const AGENT_SIGNING_SERVICE: &str = "clary";
/// The control plane's API for agents and model servers, as their client addresses it.
pub const AGENT_API: clary_client::JsonApi = clary_client::JsonApi {
    signing_service: AGENT_SIGNING_SERVICE,
    target_prefix: AGENT_TARGET_PREFIX,
};

/// Which kind of job a host belongs to, as the agents' calls name it (`Kind`); calls from
/// agents that predate job kinds are a training job's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    #[default]
    TrainingJob,
    ProcessingJob,
    TransformJob,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [
        JobKind::TrainingJob,
        JobKind::ProcessingJob,
        JobKind::TransformJob,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::TrainingJob => "TrainingJob",
            JobKind::ProcessingJob => "ProcessingJob",
            JobKind::TransformJob => "TransformJob",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn is_training(&self) -> bool {
        *self == JobKind::TrainingJob
    }
}

/// Where a channel's objects are and how the agent should present them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelSpec {
    pub name: String,
    pub bucket: String,
    pub prefix: String,
    /// The channel's entry for `inputdataconfig.json`, exactly as the toolkit expects it.
    pub config: serde_json::Value,
    /// `File` (objects appear as files) or `Pipe` (streamed through FIFOs `<channel>_<N>`).
    #[serde(default = "file_mode")]
    pub input_mode: String,
    /// `S3Prefix` (every object under the prefix) or `ManifestFile` (the object at the URI
    /// lists the keys).
    #[serde(default = "s3_prefix")]
    pub data_type: String,
    /// `ShardedByS3Key`: this host gets only its share of the objects.
    #[serde(default)]
    pub sharded: bool,
    /// `CompressionType: Gzip`: objects are decompressed on their way into the pipe.
    #[serde(default)]
    pub gzip: bool,
    /// `RecordWrapperType: RecordIO`: each object is one MXNet RecordIO record in the pipe.
    #[serde(default)]
    pub record_io: bool,
}

fn local_access() -> String {
    "local".into()
}

fn file_mode() -> String {
    "File".into()
}

fn s3_prefix() -> String {
    "S3Prefix".into()
}

/// `CheckpointConfig`: a local directory kept in step with an S3 prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointSpec {
    pub bucket: String,
    pub prefix: String,
    /// Where the script finds it (the job's stand-in for `LocalPath`).
    pub local_path: PathBuf,
}

/// A command the job names for itself (`ContainerEntrypoint` and `ContainerArguments` of a
/// training job, `AppSpecification`'s of a processing job): run under `/opt/ml` instead of the
/// framework toolkit's entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerCommand {
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub arguments: Vec<String>,
}

/// Everything one host agent needs to run its share of a training job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostSpec {
    pub job_name: String,
    pub job_arn: String,
    pub region: String,
    pub current_host: String,
    pub hosts: Vec<String>,
    /// The loopback address of each host, in the order of `hosts`; the job's hosts file maps
    /// the names onto them.
    #[serde(default)]
    pub addresses: Vec<String>,
    pub instance_type: String,
    /// The per-host directory standing in for `/opt/ml`.
    pub base_dir: PathBuf,
    /// Hyperparameters exactly as the client sent them (JSON-encoded strings).
    pub hyperparameters: BTreeMap<String, String>,
    pub channels: Vec<ChannelSpec>,
    pub training_input_mode: String,
    /// `S3OutputPath` split into bucket and key prefix.
    pub output_bucket: String,
    pub output_prefix: String,
    /// The runtime's Python interpreter.
    pub python: PathBuf,
    /// `SAGEMAKER_TRAINING_MODULE` of the image this job asked for.
    pub framework_module: String,
    /// Extra environment from `CreateTrainingJob.Environment`.
    pub environment: BTreeMap<String, String>,
    pub max_runtime_secs: u64,
    /// SIGTERM → SIGKILL grace period when stopping.
    pub stop_grace_secs: u64,
    /// Root of the local object store (the embedded default).
    pub store_root: PathBuf,
    /// How the agent reaches the objects: `local` (the store's directory, shared with the
    /// server; files are hard-linked) or `http` (the server's S3 API at `control_url`, for
    /// hosts that do not share its disk).
    #[serde(default = "local_access")]
    pub object_access: String,
    /// Where reports go, and the key pair to sign them with.
    pub control_url: String,
    pub access_key: String,
    pub secret_key: String,
    /// Log stream for this host: `<job>/<host>-<epoch seconds>`.
    pub log_stream: String,
    /// Directory of the Python helper modules put on `PYTHONPATH`.
    pub python_shims: PathBuf,
    /// Where runtimes live, and which one (with the version and device the image asked for).
    pub runtimes_dir: PathBuf,
    pub runtime: String,
    pub framework_version: String,
    pub device: String,
    /// MXNet 1.2 and earlier: the script's `train()` is called (docs/contract.md §7.2).
    #[serde(default)]
    pub legacy: bool,
    #[serde(default)]
    pub checkpoint: Option<CheckpointSpec>,
    /// 0 for the first run of the job, then one more for each restart (`RetryStrategy`).
    #[serde(default)]
    pub attempt: u32,
    /// Debugger's system monitor as the job starts; the agent follows later changes through
    /// `ReportSystemMetrics`' answers. `None` from a control plane without one.
    #[serde(default)]
    pub monitor: Option<MonitorSettings>,
    /// The job's own command instead of the toolkit's entry; `None` for script mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerCommand>,
}

/// What a host's system monitor does: sample every `interval_ms` (none while profiling is off)
/// and write under `s3://<bucket>/<prefix>` (the job's `profiler-output/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MonitorSettings {
    pub interval_ms: Option<u64>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
}

/// One measured value of a host (`Metric` as CloudWatch names it, e.g. `CPUUtilization`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SystemSample {
    pub metric: String,
    /// Epoch seconds.
    pub timestamp: f64,
    pub value: f64,
}

/// A batch of a host's system-monitor samples (`ClaryAgent.ReportSystemMetrics`), answered
/// with the [`MonitorSettings`] in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SystemMetricsReport {
    pub job_name: String,
    pub host: String,
    pub samples: Vec<SystemSample>,
}

impl HostSpec {
    /// The address of `host` in this job (loopback when the spec predates addresses).
    pub fn address_of(&self, host: &str) -> String {
        self.hosts
            .iter()
            .position(|h| h == host)
            .and_then(|i| self.addresses.get(i).cloned())
            .unwrap_or_else(|| "127.0.0.1".into())
    }
}

/// One `ProcessingInput` as a host presents it: the objects (the same pieces as a training
/// channel: `name` is the `InputName`, File or Pipe, prefix or manifest, sharded, gzip) and
/// the container path they appear at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessingInputSpec {
    pub source: ChannelSpec,
    /// `LocalPath` as the job gave it (`/opt/ml/processing/...`): a directory in File mode; in
    /// Pipe mode the FIFOs `<name>_0`, `<name>_1`, … are made in it.
    pub local_path: String,
}

/// One `ProcessingOutput`: a container directory uploaded under an S3 prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessingOutputSpec {
    pub name: String,
    pub bucket: String,
    pub prefix: String,
    /// `LocalPath` as the job gave it (`/opt/ml/processing/...`).
    pub local_path: String,
    /// `S3UploadMode: Continuous`: files are uploaded as they are closed, not only at the end.
    #[serde(default)]
    pub continuous: bool,
}

/// Everything one host agent needs to run its share of a processing job: the image's runtime
/// runs `entrypoint` + `arguments` with the inputs staged at their local paths, and the
/// outputs' directories are uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessingHostSpec {
    /// Always [`JobKind::ProcessingJob`]: a spec without `kind` is a training [`HostSpec`].
    pub kind: JobKind,
    pub job_name: String,
    pub job_arn: String,
    pub region: String,
    pub current_host: String,
    pub hosts: Vec<String>,
    /// The address of each host, in the order of `hosts`.
    #[serde(default)]
    pub addresses: Vec<String>,
    pub instance_type: String,
    /// The per-host directory standing in for `/opt/ml`.
    pub base_dir: PathBuf,
    pub inputs: Vec<ProcessingInputSpec>,
    pub outputs: Vec<ProcessingOutputSpec>,
    /// `AppSpecification.ContainerEntrypoint` and `ContainerArguments`.
    pub command: ContainerCommand,
    /// `Environment`.
    pub environment: BTreeMap<String, String>,
    pub max_runtime_secs: u64,
    pub stop_grace_secs: u64,
    pub store_root: PathBuf,
    #[serde(default = "local_access")]
    pub object_access: String,
    pub control_url: String,
    pub access_key: String,
    pub secret_key: String,
    /// `<job>/<host>-<epoch seconds>`.
    pub log_stream: String,
    pub python_shims: PathBuf,
    pub runtimes_dir: PathBuf,
    pub runtime: String,
    pub device: String,
    #[serde(default)]
    pub attempt: u32,
}

/// A spec file an agent reads: a training host's, or one of another job kind (its `kind`).
#[derive(Debug, Clone, PartialEq)]
pub enum AgentSpec {
    Training(Box<HostSpec>),
    Processing(Box<ProcessingHostSpec>),
    Transform(Box<TransformHostSpec>),
}

impl AgentSpec {
    /// Reads a spec by its `kind` (none: training, as every spec before job kinds).
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        let kind = value.get("kind").and_then(|k| k.as_str()).map(String::from);
        match kind.as_deref().map(|k| JobKind::parse(k).ok_or(k)) {
            None | Some(Ok(JobKind::TrainingJob)) => serde_json::from_value(value)
                .map(|s| AgentSpec::Training(Box::new(s)))
                .map_err(|e| format!("the training host spec is not valid: {e}")),
            Some(Ok(JobKind::ProcessingJob)) => serde_json::from_value(value)
                .map(|s| AgentSpec::Processing(Box::new(s)))
                .map_err(|e| format!("the processing host spec is not valid: {e}")),
            Some(Ok(JobKind::TransformJob)) => serde_json::from_value(value)
                .map(|s| AgentSpec::Transform(Box::new(s)))
                .map_err(|e| format!("the transform host spec is not valid: {e}")),
            Some(Err(other)) => Err(format!(
                "the host spec is of kind {other:?}, which this agent does not run (is it an older clary binary than the server?)"
            )),
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("the host spec is not JSON: {e}"))?;
        Self::from_json(value)
    }
}

/// A secondary-status change on one host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StatusReport {
    #[serde(default, skip_serializing_if = "JobKind::is_training")]
    pub kind: JobKind,
    pub job_name: String,
    pub host: String,
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct LogLine {
    /// Epoch milliseconds when the line was read.
    pub timestamp: i64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct LogBatch {
    #[serde(default, skip_serializing_if = "JobKind::is_training")]
    pub kind: JobKind,
    pub job_name: String,
    pub log_stream: String,
    pub events: Vec<LogLine>,
}

/// How a host's part of the job ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Stopped,
    MaxRuntimeExceeded,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ResultReport {
    #[serde(default, skip_serializing_if = "JobKind::is_training")]
    pub kind: JobKind,
    pub job_name: String,
    pub host: String,
    pub outcome: Outcome,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// `s3://` URI of `model.tar.gz` when one was uploaded.
    pub model_artifacts: Option<String>,
    /// The host failed in a way a retry may cure (the script died by a signal, the platform
    /// failed), rather than by the script's own exit code.
    #[serde(default)]
    pub transient: bool,
    /// The attempt this result belongs to, so a late report of a replaced attempt is ignored.
    #[serde(default)]
    pub attempt: u32,
}

/// Everything one endpoint instance (`clary model-server --spec`) needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelServerSpec {
    pub endpoint_name: String,
    pub variant_name: String,
    pub instance_id: String,
    /// `PrimaryContainer.Image`, mapped to a runtime by the model server.
    pub image: String,
    /// `ModelDataUrl` (`s3://…/model.tar.gz`), if the model has one.
    pub model_data_url: Option<String>,
    /// `PrimaryContainer.Environment`.
    pub environment: BTreeMap<String, String>,
    /// The loopback port to listen on.
    pub port: u16,
    /// The instance's own directory (model, code, sockets).
    pub work_dir: PathBuf,
    pub store_root: PathBuf,
    /// How the model server reaches objects: `local` (the store's directory at `store_root`)
    /// or `presigned` (an external store, with URLs the server at `control_url` presigns; the
    /// key pair comes from `CLARY_AGENT_ACCESS_KEY`/`CLARY_AGENT_SECRET_KEY`). A model server
    /// on a cluster node uses the server's S3 API unless this says `presigned`.
    #[serde(default = "local_access")]
    pub object_access: String,
    /// The server's URL and region, for `presigned`.
    #[serde(default)]
    pub control_url: String,
    #[serde(default)]
    pub region: String,
    pub runtimes_dir: PathBuf,
    /// Directory of the Python helper modules (`clary_serving` among them).
    pub python_shims: PathBuf,
    /// Elastic Inference was asked for; there is none here, so the instance says it runs on CPU.
    pub accelerator_type: Option<String>,
    /// The secret the router presents on every request ([`INSTANCE_TOKEN_HEADER`]): only the
    /// holders of this spec may reach the instance.
    #[serde(default)]
    pub token: String,
}

/// The variable that names the process a `clary model-server` must not outlive (a transform
/// host's agent starts one as its child).
pub const MODEL_SERVER_PARENT_ENV: &str = "CLARY_MODEL_SERVER_PARENT";

/// The header that carries an endpoint instance's token from the router to its model server.
pub const INSTANCE_TOKEN_HEADER: &str = "x-clary-instance-token";

/// `TransformInput`, resolved: where the objects are and how to read them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransformInputSpec {
    pub bucket: String,
    /// The S3 prefix, or the key of the manifest.
    pub prefix: String,
    /// `S3Prefix` or `ManifestFile`.
    pub data_type: String,
    /// Sent as the request's Content-Type.
    pub content_type: Option<String>,
    /// `CompressionType: Gzip`.
    pub gzip: bool,
    /// `None`, `Line` or `RecordIO`.
    pub split: String,
}

/// `TransformOutput`, resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransformOutputSpec {
    pub bucket: String,
    pub prefix: String,
    /// Sent as the request's Accept, and the output objects' content type.
    pub accept: Option<String>,
    /// `None` or `Line`.
    pub assemble_with: String,
}

/// `DataCaptureConfig`: captured requests and answers go under `s3://bucket/prefix`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureSpec {
    pub bucket: String,
    pub prefix: String,
    pub generate_inference_id: bool,
}

/// Everything one host (instance) of a batch transform job needs: its share of the input
/// objects, the model to serve them with, and where the answers go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransformHostSpec {
    /// Always [`JobKind::TransformJob`]: a spec without `kind` is a training [`HostSpec`].
    pub kind: JobKind,
    pub job_name: String,
    pub job_arn: String,
    pub region: String,
    pub current_host: String,
    /// Every host of the job, in order: host `i` of `N` takes objects `i, i+N, …`.
    pub hosts: Vec<String>,
    pub instance_type: String,
    /// The host's own directory (the model server's, scratch output files).
    pub work_dir: PathBuf,
    pub input: TransformInputSpec,
    pub output: TransformOutputSpec,
    /// `BatchStrategy`, `MaxPayloadInMB`, `MaxConcurrentTransforms` as asked; what is left out
    /// comes from the model server's `GET /execution-parameters`.
    pub batch_strategy: Option<String>,
    pub max_payload_mb: Option<u64>,
    pub max_concurrent_transforms: Option<u32>,
    /// `ModelClientConfig` with SageMaker's defaults filled in.
    pub invocations_timeout_secs: u64,
    pub invocations_max_retries: u32,
    /// `DataProcessing`.
    pub input_filter: Option<String>,
    pub output_filter: Option<String>,
    pub join_input: bool,
    pub capture: Option<CaptureSpec>,
    /// The model server this host starts for the model (`port` and `token` are the host's
    /// to choose).
    pub model: ModelServerSpec,
    pub stop_grace_secs: u64,
    pub store_root: PathBuf,
    /// `local` or `http`, as for training hosts.
    pub object_access: String,
    pub control_url: String,
    pub access_key: String,
    pub secret_key: String,
    /// `<job>/<host>`.
    pub log_stream: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_spec_is_read_by_its_kind() {
        // A training spec (no kind) that is incomplete says what is missing, as before.
        let e = AgentSpec::from_json(serde_json::json!({"job_name": "j"})).unwrap_err();
        assert!(
            e.starts_with("the training host spec is not valid: missing field"),
            "{e}"
        );
        let e = AgentSpec::from_json(serde_json::json!({"kind": "TransformJob"})).unwrap_err();
        assert!(e.starts_with("the transform host spec is not valid"), "{e}");
        let e = AgentSpec::from_json(serde_json::json!({"kind": "painting"})).unwrap_err();
        assert!(e.contains("of kind \"painting\""), "{e}");
    }
}
