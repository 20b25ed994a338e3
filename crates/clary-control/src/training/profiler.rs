//! Debugger's profiler on the job lifecycle: `UpdateTrainingJob` of a running job, and the
//! agents' system monitors, which report their samples (kept as the job's metrics, per host)
//! and learn the current profiler settings in the answer.

use super::TrainingJobs;
use crate::domain::job::JobStatus;
use crate::domain::metrics::MetricSample;
use crate::domain::profiler::{ProfilerRequest, RuleConfig};
use crate::domain::training::{S3Location, TrainingJob};
use crate::error::ControlError;
use crate::now_secs;

/// The folder under a job's profiler output path that Debugger writes into.
pub const PROFILER_OUTPUT_DIR: &str = "profiler-output";

/// What a host's system monitor should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// The sampling interval; `None` while profiling is off.
    pub interval_ms: Option<u64>,
    /// Where the job's profiler output goes: `<S3OutputPath>/<job>/profiler-output/`.
    pub output: Option<S3Location>,
}

/// `<S3OutputPath>/<job>/profiler-output/` of `job`, when its path is an S3 URI.
pub fn profiler_output(job: &TrainingJob) -> Option<S3Location> {
    let base = S3Location::parse(&job.spec.profiler.output_path)?;
    let prefix = base.prefix.trim_end_matches('/');
    Some(S3Location {
        bucket: base.bucket,
        prefix: if prefix.is_empty() {
            format!("{}/{PROFILER_OUTPUT_DIR}/", job.name)
        } else {
            format!("{prefix}/{}/{PROFILER_OUTPUT_DIR}/", job.name)
        },
    })
}

/// The monitor settings of `job` as it stands.
pub fn monitor_settings(job: &TrainingJob) -> MonitorSettings {
    MonitorSettings {
        interval_ms: job.spec.profiler.monitoring(),
        output: profiler_output(job),
    }
}

/// The SDK's default profiler output path: the account's default bucket.
pub fn default_profiler_output(config: &crate::config::ControlConfig) -> String {
    format!("s3://sagemaker-{}-{}/", config.region, config.account)
}

impl TrainingJobs {
    /// The SDK's default profiler output path: the account's default bucket.
    pub fn default_profiler_output(&self) -> String {
        default_profiler_output(&self.config)
    }

    /// `UpdateTrainingJob`: changes the profiler and adds profiler rules of a job in progress;
    /// returns the job's ARN.
    pub fn update_profiler(
        &self,
        name: &str,
        config: Option<ProfilerRequest>,
        rules: Vec<RuleConfig>,
    ) -> Result<String, ControlError> {
        let mut job = self.require(name)?;
        let refuse = |status: JobStatus| {
            ControlError::Validation(format!(
                "The training job {name} is {}: only a training job that is InProgress can be updated",
                status.as_str()
            ))
        };
        if job.state.status != JobStatus::InProgress {
            return Err(refuse(job.state.status));
        }
        let now = now_secs();
        job.spec
            .profiler
            .update(config, rules, &self.default_profiler_output(), now)
            .map_err(|e| ControlError::Validation(e.to_string()))?;
        if !self.store.update_running_spec(name, &job.spec, now)? {
            let status = self.require(name)?.state.status;
            return Err(refuse(status));
        }
        Ok(job.arn)
    }

    /// A host's system-monitor samples (`ClaryAgent.ReportSystemMetrics`): kept as the job's
    /// metrics of that host; answers with the monitor's current settings.
    pub fn report_system_metrics(
        &self,
        job_name: &str,
        host: &str,
        samples: Vec<(String, f64, f64)>,
    ) -> Result<MonitorSettings, ControlError> {
        let job = self.require(job_name)?;
        if !job.state.hosts.iter().any(|h| h.name == host) {
            return Err(ControlError::Validation(format!(
                "{host} is not a host of training job {job_name}"
            )));
        }
        let samples: Vec<MetricSample> = samples
            .into_iter()
            .filter(|(_, _, v)| v.is_finite())
            .map(|(metric, timestamp, value)| MetricSample {
                metric,
                host: host.to_string(),
                timestamp,
                value,
            })
            .collect();
        self.metrics.record(job_name, &samples)?;
        Ok(monitor_settings(&job))
    }
}
