//! A training job: what was asked for (a typed spec) and where it stands (the shared job
//! lifecycle state).

use super::job::{JobState, JobStatus, JobWords, Kind};
use serde::{Deserialize, Serialize};

pub const TRAINING: JobWords = Kind::TrainingJob.words();

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// Splits `s3://bucket/prefix`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// `TrainingInputMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputMode {
    File,
    Pipe,
    FastFile,
}

impl InputMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InputMode::File => "File",
            InputMode::Pipe => "Pipe",
            InputMode::FastFile => "FastFile",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [InputMode::File, InputMode::Pipe, InputMode::FastFile]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// One input channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub source: S3Location,
    /// `S3Prefix` or `ManifestFile`.
    pub data_type: String,
    /// `FullyReplicated` or `ShardedByS3Key`.
    pub distribution: String,
    pub content_type: Option<String>,
    /// `None` or `Gzip`, when given.
    pub compression: Option<String>,
    /// `None` or `RecordIO`, when given.
    pub record_wrapper: Option<String>,
    /// The channel's own mode, overriding the job's.
    pub input_mode: Option<InputMode>,
}

/// `CheckpointConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    pub destination: S3Location,
    /// `LocalPath`, when given (`/opt/ml/checkpoints` otherwise).
    pub local_path: Option<String>,
}

/// `AlgorithmSpecification.ContainerEntrypoint` and `ContainerArguments`: the command a job runs
/// instead of the framework toolkit's entry, as a container's entrypoint and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCommand {
    pub entrypoint: Vec<String>,
    pub arguments: Vec<String>,
}

/// What a training job runs, on what, from what, to where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingJobSpec {
    pub image: String,
    pub input_mode: InputMode,
    pub instance_type: String,
    pub instance_count: u32,
    pub channels: Vec<Channel>,
    pub output: S3Location,
    /// In the order given.
    pub hyperparameters: Vec<(String, String)>,
    pub environment: Vec<(String, String)>,
    pub max_runtime_secs: u64,
    pub checkpoints: Option<Checkpoints>,
    /// `RetryStrategy.MaximumRetryAttempts` (0 without one).
    pub max_retries: u32,
    /// `AlgorithmSpecification.MetricDefinitions`.
    #[serde(default)]
    pub metric_definitions: Vec<super::metrics::MetricDefinition>,
    /// `ProfilerConfig` with its defaults and `ProfilerRuleConfigurations`.
    #[serde(default)]
    pub profiler: super::profiler::ProfilerSettings,
    /// `DebugRuleConfigurations`.
    #[serde(default)]
    pub debug_rules: Vec<super::profiler::ConfiguredRule>,
    /// The job's own command, when it names one (`None`: the toolkit runs the script).
    #[serde(default)]
    pub container: Option<ContainerCommand>,
}

/// A training job.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingJob {
    pub name: String,
    pub arn: String,
    pub spec: TrainingJobSpec,
    /// The runtime its image maps to.
    pub runtime: String,
    /// The request as the edge received it, kept for the edge to echo back; the domain never
    /// reads it.
    pub echo: String,
    pub state: JobState,
}

/// A training job as listings show it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingJobSummary {
    pub name: String,
    pub arn: String,
    pub status: JobStatus,
    pub secondary: super::job::SecondaryStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub end_time: Option<f64>,
}

/// Filters and order of `ListTrainingJobs` (the same as every job kind's listing).
pub type ListTrainingJobs = super::job::ListJobs;
pub use super::job::{Page, SortBy};

/// The loopback block (`127.A.B.0/24`) a job's hosts live in: derived from the job name so a
/// job keeps its block across restarts, moved on to the next free block when a running job
/// holds it.
pub fn address_block(name: &str, taken: &std::collections::HashSet<(u8, u8)>) -> (u8, u8) {
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_prefix() {
        assert_eq!(
            S3Location::parse("s3://b/p/q"),
            Some(S3Location {
                bucket: "b".into(),
                prefix: "p/q".into()
            })
        );
        assert_eq!(S3Location::parse("s3://b").unwrap().prefix, "");
        assert_eq!(S3Location::parse("s3:///x"), None);
        assert_eq!(S3Location::parse("https://b/x"), None);
    }

    #[test]
    fn address_blocks_are_stable_and_skip_taken_ones() {
        let none = Default::default();
        let a = address_block("job-1", &none);
        assert_eq!(a, address_block("job-1", &none));
        assert_ne!(a.0, 0);
        let taken = [a].into_iter().collect();
        assert_ne!(address_block("job-1", &taken), a);
    }
}
