//! Processing jobs on the shared job lifecycle: create, describe, list and stop, and what this
//! kind gives the lifecycle to launch a host (its spec, see [`host_spec`]), its words and its
//! log group.

use crate::config::ControlConfig;
use crate::domain::credentials::WriteGrant;
use crate::domain::job::{JobState, StopEffect, TransitionError};
use crate::domain::processing::{
    ListProcessingJobs, PROCESSING, ProcessingInputMode, ProcessingJob, ProcessingJobSpec,
    ProcessingJobSummary, UploadMode,
};
use crate::domain::training::Page;
use crate::error::ControlError;
use crate::now_secs;
use crate::store::ProcessingJobStore;
use clary_exec::protocol::{
    ChannelSpec, PROCESSING_KIND, ProcessingHostSpec, ProcessingInputSpec, ProcessingOutputSpec,
};
use clary_exec::runtimes::Runtimes;
use clary_exec::{ExecHandle, Executor, StopSignal};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;

/// `/aws/sagemaker/ProcessingJobs`, stream `<job>/algo-<n>-<epoch seconds>`.
pub const PROCESSING_LOG_GROUP: &str = "/aws/sagemaker/ProcessingJobs";

/// What creating a job needs besides its spec.
pub struct NewProcessingJob {
    pub name: String,
    pub spec: ProcessingJobSpec,
    /// The request as received, for the edge to echo back.
    pub echo: String,
    pub tags: Vec<(String, String)>,
}

pub struct ProcessingJobs {
    store: ProcessingJobStore,
    executor: Arc<dyn Executor>,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
    /// Wakes the lifecycle: a job was queued, or stopped.
    wake: Notify,
}

impl ProcessingJobs {
    pub(crate) fn new(
        store: ProcessingJobStore,
        executor: Arc<dyn Executor>,
        config: Arc<ControlConfig>,
    ) -> Self {
        let runtimes = Runtimes::new(config.runtimes_dir.clone());
        ProcessingJobs {
            store,
            executor,
            config,
            runtimes,
            wake: Notify::new(),
        }
    }

    pub fn arn(&self, name: &str) -> String {
        self.config.arn("processing-job", name)
    }

    fn require(&self, name: &str) -> Result<ProcessingJob, ControlError> {
        self.store.get(name)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "Requested resource not found: processing job {name:?} does not exist"
            ))
        })
    }

    /// Whether the job's scoped credentials still sign.
    pub fn accepts_reports(&self, name: &str) -> bool {
        self.store
            .get(name)
            .ok()
            .flatten()
            .is_some_and(|job| job.state.accepts_reports(now_secs()))
    }

    /// Whether Clary can run `spec`: its image maps to a runtime (the MXNet framework
    /// processor's images are the training images; a custom runtime serves any other) and
    /// its instance type can be sized. Returns the runtime.
    pub fn check_spec(&self, spec: &ProcessingJobSpec) -> Result<String, ControlError> {
        let image = self
            .runtimes
            .training_image(&spec.image)
            .map_err(|e| ControlError::Validation(format!("AppSpecification.ImageUri: {e}")))?;
        let instance_type = &spec.instance_type;
        if self.config.capacity.demand(instance_type).is_none() {
            return Err(ControlError::Validation(format!(
                "Value {instance_type:?} at 'processingResources.clusterConfig.instanceType' is not an ml.<family>.<size> instance type Clary can size; use e.g. ml.c5.xlarge or add it to the capacity table"
            )));
        }
        Ok(image.runtime.name)
    }

    /// `CreateProcessingJob`, for a spec the API built from a validated request.
    pub fn create(&self, new: NewProcessingJob) -> Result<String, ControlError> {
        let runtime = self.check_spec(&new.spec)?;
        let arn = self.arn(&new.name);
        let job = ProcessingJob {
            name: new.name,
            arn: arn.clone(),
            spec: new.spec,
            runtime,
            echo: new.echo,
            state: JobState::queued(now_secs()),
        };
        if !self.store.insert(&job, &new.tags)? {
            return Err(ControlError::ResourceInUse(format!(
                "Processing job names must be unique within an AWS account and region, and a processing job with this name already exists ({arn})"
            )));
        }
        self.wake.notify_one();
        Ok(arn)
    }

    pub fn get(&self, name: &str) -> Result<ProcessingJob, ControlError> {
        self.require(name)
    }

    pub fn list(&self, q: &ListProcessingJobs) -> Result<Page<ProcessingJobSummary>, ControlError> {
        self.store.list(q)
    }

    /// `StopProcessingJob`: a queued job stops at once; a running one's hosts get SIGTERM
    /// (their agents end the container, SIGKILL after the grace period) and their results
    /// end the job.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        let mut job = self.require(name)?;
        let running: Vec<ExecHandle> = job
            .state
            .hosts
            .iter()
            .filter(|h| h.result.is_none())
            .filter_map(|h| h.handle)
            .collect();
        match job.state.request_stop(PROCESSING, now_secs()) {
            Err(TransitionError::AlreadyEnded(status)) => Err(ControlError::Validation(format!(
                "The processing job {name} has already ended with status {status}; only InProgress jobs can be stopped"
            ))),
            Err(e) => Err(ControlError::Validation(e.to_string())),
            Ok(StopEffect::AlreadyStopping) => Ok(()),
            Ok(effect) => {
                self.store.save_state(&job)?;
                if effect == StopEffect::SignalHosts {
                    let mut seen = Vec::new();
                    for h in running {
                        if !seen.contains(&h) {
                            self.executor.signal(&h, StopSignal::Term);
                            seen.push(h);
                        }
                    }
                }
                self.wake.notify_one();
                Ok(())
            }
        }
    }
}

/// Where one host of a launch runs, as the lifecycle decided it.
pub struct HostPlacement<'a> {
    pub host: &'a str,
    pub hosts: &'a [String],
    pub addresses: &'a [String],
    /// The host's stand-in for `/opt/ml`.
    pub opt_ml: PathBuf,
    pub log_stream: String,
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub attempt: u32,
}

/// Where a processing job's key may write: each output's prefix.
pub fn write_grants(job: &ProcessingJob) -> Vec<WriteGrant> {
    job.spec
        .outputs
        .iter()
        .map(|o| WriteGrant {
            bucket: o.destination.bucket.clone(),
            prefix: o.destination.prefix.clone(),
        })
        .collect()
}

/// The spec one host's agent runs (`clary agent --spec`).
pub fn host_spec(
    job: &ProcessingJob,
    at: &HostPlacement<'_>,
    config: &ControlConfig,
    device: &str,
) -> ProcessingHostSpec {
    let spec = &job.spec;
    ProcessingHostSpec {
        kind: PROCESSING_KIND.into(),
        job_name: job.name.clone(),
        job_arn: job.arn.clone(),
        region: config.region.clone(),
        current_host: at.host.to_string(),
        hosts: at.hosts.to_vec(),
        addresses: at.addresses.to_vec(),
        instance_type: spec.instance_type.clone(),
        base_dir: at.opt_ml.clone(),
        inputs: spec
            .inputs
            .iter()
            .map(|i| ProcessingInputSpec {
                source: ChannelSpec {
                    name: i.name.clone(),
                    bucket: i.source.bucket.clone(),
                    prefix: i.source.prefix.clone(),
                    config: serde_json::Value::Null,
                    input_mode: i.input_mode.as_str().into(),
                    data_type: i.data_type.clone(),
                    sharded: i.distribution == "ShardedByS3Key",
                    gzip: i.gzip && i.input_mode == ProcessingInputMode::Pipe,
                    record_io: false,
                },
                local_path: i.local_path.clone(),
            })
            .collect(),
        outputs: spec
            .outputs
            .iter()
            .map(|o| ProcessingOutputSpec {
                name: o.name.clone(),
                bucket: o.destination.bucket.clone(),
                prefix: o.destination.prefix.clone(),
                local_path: o.local_path.clone(),
                continuous: o.upload_mode == UploadMode::Continuous,
            })
            .collect(),
        entrypoint: spec.entrypoint.clone(),
        arguments: spec.arguments.clone(),
        environment: spec.environment.iter().cloned().collect(),
        max_runtime_secs: spec.max_runtime_secs,
        stop_grace_secs: config.stop_grace_secs,
        store_root: config.data_dir.join("objects"),
        object_access: config.agent_objects.clone(),
        control_url: config.control_url.clone(),
        access_key: at.access_key.to_string(),
        secret_key: at.secret_key.to_string(),
        log_stream: at.log_stream.clone(),
        python_shims: config.python_shims.clone(),
        runtimes_dir: config.runtimes_dir.clone(),
        runtime: job.runtime.clone(),
        device: device.to_string(),
        attempt: at.attempt,
    }
}
