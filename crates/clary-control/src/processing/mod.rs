//! Processing jobs on the shared job lifecycle (`crate::lifecycle`): create, describe, list and
//! stop, and what the kind adds to the lifecycle ([`ProcessingKind`]): its jobs in the jobs
//! table, what each host runs (a `ProcessingHostSpec`) and where its credentials may write.

use crate::config::ControlConfig;
use crate::domain::credentials::WriteGrant;
use crate::domain::job::{JobState, Kind, ListJobs, Page};
use crate::domain::processing::{
    ProcessingInputMode, ProcessingJob, ProcessingJobSpec, UploadMode,
};
use crate::error::ControlError;
use crate::lifecycle::{AgentReports, HostPlan, JobKind, JobShape, Lifecycle, Services};
use crate::now_secs;
use crate::store::jobs::JobStore;
use clary_exec::protocol::{
    ChannelSpec, ContainerCommand, JobKind as WireKind, ProcessingHostSpec, ProcessingInputSpec,
    ProcessingOutputSpec,
};
use clary_exec::runtimes::Runtimes;
use std::sync::Arc;

/// What creating a job needs besides its spec.
pub struct NewProcessingJob {
    pub name: String,
    pub spec: ProcessingJobSpec,
    /// The request as received, for the edge to echo back.
    pub echo: String,
    pub tags: Vec<(String, String)>,
}

/// Processing's part of the lifecycle.
pub struct ProcessingKind {
    store: JobStore<ProcessingJobSpec>,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
}

impl JobKind for ProcessingKind {
    type Job = ProcessingJob;
    const KIND: Kind = Kind::ProcessingJob;

    fn get(&self, name: &str) -> Result<Option<ProcessingJob>, ControlError> {
        self.store.get(name)
    }

    fn active(&self) -> Result<Vec<ProcessingJob>, ControlError> {
        self.store.active()
    }

    fn save_state(&self, job: &ProcessingJob) -> Result<(), ControlError> {
        self.store.save_state(job)
    }

    fn shape(&self, job: &ProcessingJob) -> JobShape {
        JobShape {
            instance_type: job.spec.instance_type.clone(),
            instance_count: job.spec.instance_count,
            max_runtime_secs: job.spec.max_runtime_secs,
            max_retries: 0,
        }
    }

    fn write_grants(&self, job: &ProcessingJob) -> Vec<WriteGrant> {
        write_grants(job)
    }

    fn host_spec(&self, job: &ProcessingJob, host: &HostPlan<'_>) -> Result<Vec<u8>, String> {
        let device = self
            .runtimes
            .training_image(&job.spec.image)
            .map(|i| i.device)
            .unwrap_or_else(|_| "cpu".into());
        let spec = host_spec(job, host, &self.config, &device);
        serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())
    }
}

pub struct ProcessingJobs {
    lifecycle: Arc<Lifecycle<ProcessingKind>>,
    store: JobStore<ProcessingJobSpec>,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
}

impl ProcessingJobs {
    pub(crate) fn new(store: JobStore<ProcessingJobSpec>, services: Services) -> Self {
        let config = services.config.clone();
        let runtimes = Runtimes::new(config.runtimes_dir.clone());
        let kind = ProcessingKind {
            store: store.clone(),
            config: config.clone(),
            runtimes: runtimes.clone(),
        };
        ProcessingJobs {
            lifecycle: Arc::new(Lifecycle::new(kind, services)),
            store,
            config,
            runtimes,
        }
    }

    /// The agents' calls about processing jobs.
    pub fn reports(&self) -> &dyn AgentReports {
        self.lifecycle.as_ref()
    }

    /// The queue and the watch; runs for the server's lifetime.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.lifecycle.clone().run().await;
    }

    pub fn arn(&self, name: &str) -> String {
        self.lifecycle.arn(name)
    }

    /// Whether Clary can run `spec`: its image maps to a runtime (the MXNet framework
    /// processor's images are the training images; a registered custom runtime serves any
    /// other) and its instance type can be sized. Returns the runtime.
    pub fn check_spec(&self, spec: &ProcessingJobSpec) -> Result<String, ControlError> {
        let image = self
            .runtimes
            .training_image(&spec.image)
            // The mapping is training's; its messages name the training field.
            .map_err(|e| ControlError::Validation(e.replace("TrainingImage", "ImageUri")))?;
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
        let mut spec = new.spec;
        spec.runtime = self.check_spec(&spec)?;
        let arn = self.arn(&new.name);
        let job = ProcessingJob {
            name: new.name,
            arn: arn.clone(),
            spec,
            echo: new.echo,
            state: JobState::queued(now_secs()),
        };
        if !self.store.insert(&job, &new.tags)? {
            return Err(ControlError::ResourceInUse(format!(
                "Processing job names must be unique within an AWS account and region, and a processing job with this name already exists ({arn})"
            )));
        }
        self.lifecycle.queued();
        Ok(arn)
    }

    pub fn get(&self, name: &str) -> Result<ProcessingJob, ControlError> {
        self.lifecycle.require(name)
    }

    pub fn list(&self, q: &ListJobs) -> Result<Page<ProcessingJob>, ControlError> {
        self.store.list(q)
    }

    /// `StopProcessingJob`.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        self.lifecycle.stop(name)
    }
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
    at: &HostPlan<'_>,
    config: &ControlConfig,
    device: &str,
) -> ProcessingHostSpec {
    let spec = &job.spec;
    ProcessingHostSpec {
        kind: WireKind::ProcessingJob,
        job_name: job.name.clone(),
        job_arn: job.arn.clone(),
        region: config.region.clone(),
        current_host: at.name.to_string(),
        hosts: at.hosts.to_vec(),
        addresses: at.addresses.to_vec(),
        instance_type: spec.instance_type.clone(),
        base_dir: at.dir.join("opt_ml"),
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
        command: ContainerCommand {
            entrypoint: spec.entrypoint.clone(),
            arguments: spec.arguments.clone(),
        },
        environment: spec.environment.iter().cloned().collect(),
        max_runtime_secs: spec.max_runtime_secs,
        stop_grace_secs: config.stop_grace_secs,
        store_root: config.data_dir.join("objects"),
        object_access: config.agent_objects.clone(),
        control_url: config.control_url.clone(),
        access_key: at.key.access_key.clone(),
        secret_key: at.key.secret_key.clone(),
        log_stream: at.log_stream.to_string(),
        python_shims: config.python_shims.clone(),
        runtimes_dir: config.runtimes_dir.clone(),
        runtime: spec.runtime.clone(),
        device: device.to_string(),
        attempt: at.attempt,
    }
}
