//! Batch transform jobs on the shared job lifecycle: create (with the model resolved then),
//! describe, list and stop, and what a transform host runs ([`TransformKind::host_spec`]): a
//! `clary agent` whose spec says `"kind": "transform"`, which serves the model with
//! `clary model-server` and pushes its share of the input objects through it.

use crate::config::ControlConfig;
use crate::domain::credentials::WriteGrant;
use crate::domain::job::{JobState, Kind, ListJobs, Page};
use crate::domain::transform::{TransformJob, TransformJobSpec, TransformRequest};
use crate::error::ControlError;
use crate::hosting::Hosting;
use crate::lifecycle::{AgentReports, HostPlan, JobKind, JobShape, Lifecycle, Services};
use crate::now_secs;
use crate::store::jobs::JobStore;
use clary_exec::protocol::{
    CaptureSpec, JobKind as WireKind, ModelServerSpec, TransformHostSpec, TransformInputSpec,
    TransformOutputSpec,
};
use std::sync::Arc;

/// A transform job has no runtime limit of its own; the executor's backstop is this.
const BACKSTOP_SECS: u64 = 10 * 86_400;

/// Transform's part of the lifecycle: its jobs (in the jobs table) and its hosts' specs.
pub struct TransformKind {
    store: JobStore<TransformJobSpec>,
    config: Arc<ControlConfig>,
}

/// `prefix` as a write grant's prefix: everything under it as a directory.
fn under(prefix: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

impl JobKind for TransformKind {
    type Job = TransformJob;
    const KIND: Kind = Kind::TransformJob;

    fn get(&self, name: &str) -> Result<Option<TransformJob>, ControlError> {
        self.store.get(name)
    }

    fn active(&self) -> Result<Vec<TransformJob>, ControlError> {
        self.store.active()
    }

    fn save_state(&self, job: &TransformJob) -> Result<(), ControlError> {
        self.store.save_state(job)
    }

    fn shape(&self, job: &TransformJob) -> JobShape {
        JobShape {
            instance_type: job.spec.instance_type.clone(),
            instance_count: job.spec.instance_count,
            max_runtime_secs: BACKSTOP_SECS,
            max_retries: 0,
        }
    }

    /// The output path, and the data capture destination.
    fn write_grants(&self, job: &TransformJob) -> Vec<WriteGrant> {
        let spec = &job.spec;
        let mut writes = vec![WriteGrant {
            bucket: spec.output.path.bucket.clone(),
            prefix: under(&spec.output.path.prefix),
        }];
        if let Some(c) = &spec.capture {
            writes.push(WriteGrant {
                bucket: c.destination.bucket.clone(),
                prefix: under(&c.destination.prefix),
            });
        }
        writes
    }

    fn host_spec(&self, job: &TransformJob, host: &HostPlan<'_>) -> Result<Vec<u8>, String> {
        let spec = &job.spec;
        let config = &self.config;
        let work_dir = host.dir.to_path_buf();
        let model = ModelServerSpec {
            endpoint_name: job.name.clone(),
            variant_name: "transform".into(),
            instance_id: host.name.to_string(),
            image: spec.model.image.clone(),
            model_data_url: spec.model.model_data_url.clone(),
            environment: spec.model_environment(),
            // The host picks a free port and a token of its own.
            port: 0,
            work_dir: work_dir.join("model-server"),
            store_root: config.data_dir.join("objects"),
            runtimes_dir: config.runtimes_dir.clone(),
            python_shims: config.python_shims.clone(),
            accelerator_type: None,
            token: String::new(),
        };
        let host_spec = TransformHostSpec {
            kind: WireKind::TransformJob,
            job_name: job.name.clone(),
            job_arn: job.arn.clone(),
            region: config.region.clone(),
            current_host: host.name.to_string(),
            hosts: host.hosts.to_vec(),
            instance_type: spec.instance_type.clone(),
            work_dir,
            input: TransformInputSpec {
                bucket: spec.input.source.bucket.clone(),
                prefix: spec.input.source.prefix.clone(),
                data_type: spec.input.data_type.as_str().into(),
                content_type: spec.input.content_type.clone(),
                gzip: spec.input.gzip,
                split: spec.input.split.as_str().into(),
            },
            output: TransformOutputSpec {
                bucket: spec.output.path.bucket.clone(),
                prefix: spec.output.path.prefix.clone(),
                accept: spec.output.accept.clone(),
                assemble_with: if spec.output.assemble_lines {
                    "Line"
                } else {
                    "None"
                }
                .into(),
            },
            batch_strategy: spec.batch_strategy.map(|b| b.as_str().to_string()),
            max_payload_mb: spec.max_payload_mb.map(u64::from),
            max_concurrent_transforms: spec.max_concurrent_transforms,
            invocations_timeout_secs: spec.invocations_timeout_secs,
            invocations_max_retries: spec.invocations_max_retries,
            input_filter: spec.data_processing.input_filter.clone(),
            output_filter: spec.data_processing.output_filter.clone(),
            join_input: spec.data_processing.join_input,
            capture: spec.capture.as_ref().map(|c| CaptureSpec {
                bucket: c.destination.bucket.clone(),
                prefix: c.destination.prefix.clone(),
                generate_inference_id: c.generate_inference_id,
            }),
            model,
            stop_grace_secs: config.stop_grace_secs,
            store_root: config.data_dir.join("objects"),
            object_access: config.agent_objects.clone(),
            control_url: config.control_url.clone(),
            access_key: host.key.access_key.clone(),
            secret_key: host.key.secret_key.clone(),
            log_stream: host.log_stream.to_string(),
        };
        serde_json::to_vec_pretty(&host_spec).map_err(|e| e.to_string())
    }
}

/// Batch transform jobs.
pub struct TransformJobs {
    lifecycle: Arc<Lifecycle<TransformKind>>,
    store: JobStore<TransformJobSpec>,
    config: Arc<ControlConfig>,
    hosting: Arc<Hosting>,
    /// Whether hosts run where the server's disk is (the local executor).
    hosts_share_disk: bool,
}

impl TransformJobs {
    pub(crate) fn new(
        store: JobStore<TransformJobSpec>,
        services: Services,
        hosting: Arc<Hosting>,
    ) -> Self {
        let config = services.config.clone();
        let kind = TransformKind {
            store: store.clone(),
            config: config.clone(),
        };
        let hosts_share_disk = services.executor.shares_disk();
        TransformJobs {
            lifecycle: Arc::new(Lifecycle::new(kind, services)),
            store,
            config,
            hosting,
            hosts_share_disk,
        }
    }

    /// The agents' calls about transform jobs.
    pub fn reports(&self) -> &dyn AgentReports {
        self.lifecycle.as_ref()
    }

    /// The queue and the watch; runs for the server's lifetime.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.lifecycle.clone().run().await;
    }

    /// `CreateTransformJob`: the model must exist and its image be one Clary serves; the job
    /// keeps the model's container as it is now.
    pub fn create(
        &self,
        request: TransformRequest,
        echo: String,
        tags: Vec<(String, String)>,
    ) -> Result<String, ControlError> {
        if !self.hosts_share_disk || self.config.agent_objects == "http" {
            // A transform host's model server lays out the model on the server's disk.
            return Err(ControlError::Validation(
                "Batch transform runs on hosts that share the server's disk (the local executor); this server's executor runs hosts elsewhere. Run the transform on a server with the local executor".into(),
            ));
        }
        let model = self.hosting.model(&request.model_name)?;
        self.hosting.check_serving_image(&model.container.image)?;
        let instance_type = &request.instance_type;
        if self.config.capacity.demand(instance_type).is_none() {
            return Err(ControlError::Validation(format!(
                "Value {instance_type:?} at 'transformResources.instanceType' is not an ml.<family>.<size> instance type Clary can size; use e.g. ml.m5.large or add it to the capacity table"
            )));
        }
        let (name, spec) = request.into_spec(model.container);
        let arn = self.lifecycle.arn(&name);
        let job = TransformJob {
            name,
            arn: arn.clone(),
            spec,
            echo,
            state: JobState::queued(now_secs()),
        };
        if !self.store.insert(&job, &tags)? {
            return Err(ControlError::ResourceInUse(format!(
                "Transform job names must be unique within an AWS account and region, and a transform job with this name already exists ({arn})"
            )));
        }
        self.lifecycle.queued();
        Ok(arn)
    }

    pub fn get(&self, name: &str) -> Result<TransformJob, ControlError> {
        self.lifecycle.require(name)
    }

    pub fn list(&self, q: &ListJobs) -> Result<Page<TransformJob>, ControlError> {
        self.store.list(q)
    }

    /// `StopTransformJob`.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        self.lifecycle.stop(name)
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn grants_cover_the_prefix_as_a_directory() {
        assert_eq!(under("out"), "out/");
        assert_eq!(under("out/"), "out/");
        assert_eq!(under(""), "");
    }
}
