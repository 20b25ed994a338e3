//! Training jobs on the shared job lifecycle: create, describe, list and stop, and (in
//! [`launch`]) what a training host runs. The queue, the watch and the agents' reports are
//! `crate::lifecycle`'s; [`TrainingKind`] is what training adds to it.

mod launch;
pub mod profiler;

use crate::config::ControlConfig;
use crate::domain::job::{JobState, Kind};
use crate::domain::training::{
    ListTrainingJobs, Page, TrainingJob, TrainingJobSpec, TrainingJobSummary,
};
use crate::error::ControlError;
use crate::lifecycle::{AgentReports, JobKind, JobShape, KindJob, Lifecycle, LogsRead, Services};
use crate::metrics::Metrics;
use crate::now_secs;
use crate::store::TrainingJobStore;
use clary_exec::runtimes::Runtimes;
use std::sync::Arc;

/// What creating a job needs besides its spec.
pub struct NewTrainingJob {
    pub name: String,
    pub spec: TrainingJobSpec,
    /// The request as received, for the edge to echo back.
    pub echo: String,
    pub tags: Vec<(String, String)>,
}

impl KindJob for TrainingJob {
    fn name(&self) -> &str {
        &self.name
    }
    fn state(&self) -> &JobState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut JobState {
        &mut self.state
    }
}

/// Training's part of the lifecycle: its table, its hosts' specs, its metrics.
pub struct TrainingKind {
    store: TrainingJobStore,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
    metrics: Arc<Metrics>,
}

impl JobKind for TrainingKind {
    type Job = TrainingJob;
    const KIND: Kind = Kind::TrainingJob;

    fn get(&self, name: &str) -> Result<Option<TrainingJob>, ControlError> {
        self.store.get(name)
    }

    fn active(&self) -> Result<Vec<TrainingJob>, ControlError> {
        self.store.active()
    }

    fn save_state(&self, job: &TrainingJob) -> Result<(), ControlError> {
        self.store.save_state(job)
    }

    fn shape(&self, job: &TrainingJob) -> JobShape {
        JobShape {
            instance_type: job.spec.instance_type.clone(),
            instance_count: job.spec.instance_count,
            max_runtime_secs: job.spec.max_runtime_secs,
            max_retries: job.spec.max_retries,
        }
    }

    fn write_grants(&self, job: &TrainingJob) -> Vec<crate::domain::credentials::WriteGrant> {
        self.job_writes(job)
    }

    fn host_spec(
        &self,
        job: &TrainingJob,
        host: &crate::lifecycle::HostPlan<'_>,
    ) -> Result<Vec<u8>, String> {
        self.training_host_spec(job, host)
    }

    fn on_log_lines(
        &self,
        job: &TrainingJob,
        host: &str,
        events: &[(i64, String)],
    ) -> Result<LogsRead, ControlError> {
        let definitions = &job.spec.metric_definitions;
        if definitions.is_empty() {
            return Ok(LogsRead::default());
        }
        Ok(LogsRead {
            notes: self.metrics.ingest(&job.name, definitions, host, events)?,
            progressed: true,
        })
    }

    fn on_ended(&self, job: &TrainingJob) -> Result<Vec<String>, ControlError> {
        self.metrics
            .never_matched(&job.name, &job.spec.metric_definitions)
    }
}

impl TrainingKind {
    /// `s3://sagemaker-<region>-<account>/`: where the SDK puts Debugger's output by default.
    pub fn default_profiler_output(&self) -> String {
        profiler::default_profiler_output(&self.config)
    }
}

pub struct TrainingJobs {
    lifecycle: Arc<Lifecycle<TrainingKind>>,
    store: TrainingJobStore,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
    metrics: Arc<Metrics>,
}

impl TrainingJobs {
    pub(crate) fn new(store: TrainingJobStore, services: Services, metrics: Arc<Metrics>) -> Self {
        let config = services.config.clone();
        let runtimes = Runtimes::new(config.runtimes_dir.clone());
        let kind = TrainingKind {
            store: store.clone(),
            config: config.clone(),
            runtimes: runtimes.clone(),
            metrics: metrics.clone(),
        };
        TrainingJobs {
            lifecycle: Arc::new(Lifecycle::new(kind, services)),
            store,
            config,
            runtimes,
            metrics,
        }
    }

    /// The agents' calls about training jobs.
    pub fn reports(&self) -> &dyn AgentReports {
        self.lifecycle.as_ref()
    }

    /// The queue and the watch; runs for the server's lifetime.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.lifecycle.clone().run().await;
    }

    /// Whether the job's scoped credentials still sign (see `JobState::accepts_reports`).
    pub fn accepts_reports(&self, name: &str) -> bool {
        self.lifecycle.accepts_reports(name)
    }

    pub fn arn(&self, name: &str) -> String {
        self.lifecycle.arn(name)
    }

    fn require(&self, name: &str) -> Result<TrainingJob, ControlError> {
        self.lifecycle.require(name)
    }

    /// Whether Clary can run `spec` (its image and instance type); the runtime it maps to.
    pub fn check_spec(&self, spec: &TrainingJobSpec) -> Result<String, ControlError> {
        if spec.image.is_empty() {
            return Err(ControlError::Validation(
                "AlgorithmSpecification.TrainingImage is required: Clary runs MXNet training images (AlgorithmName is not supported)".into(),
            ));
        }
        let image = self
            .runtimes
            .training_image(&spec.image)
            .map_err(ControlError::Validation)?;
        let instance_type = &spec.instance_type;
        if self.config.capacity.demand(instance_type).is_none() {
            return Err(ControlError::Validation(format!(
                "Value {instance_type:?} at 'resourceConfig.instanceType' is not an ml.<family>.<size> instance type Clary can size; use e.g. ml.c5.xlarge or add it to the capacity table"
            )));
        }
        Ok(image.runtime.name)
    }

    /// `CreateTrainingJob`, for a spec the API built from a validated request.
    pub fn create(&self, new: NewTrainingJob) -> Result<String, ControlError> {
        let runtime = self.check_spec(&new.spec)?;
        let arn = self.arn(&new.name);
        let job = TrainingJob {
            name: new.name,
            arn: arn.clone(),
            spec: new.spec,
            runtime,
            echo: new.echo,
            state: JobState::queued(now_secs()),
        };
        if !self.store.insert(&job, &new.tags)? {
            return Err(ControlError::ResourceInUse(format!(
                "Training job names must be unique within an AWS account and region, and a training job with this name already exists ({arn})"
            )));
        }
        self.lifecycle.queued();
        Ok(arn)
    }

    pub fn get(&self, name: &str) -> Result<TrainingJob, ControlError> {
        self.require(name)
    }

    pub fn list(&self, q: &ListTrainingJobs) -> Result<Page<TrainingJobSummary>, ControlError> {
        self.store.list(q)
    }

    /// `StopTrainingJob`.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        self.lifecycle.stop(name)
    }

    /// Resolves when a job has ended or reported metric values since the last call.
    pub async fn progressed(&self) {
        self.lifecycle.progressed().await;
    }

    /// Fills in the typed spec of jobs an earlier Clary stored with only their request,
    /// decoding each request with `decode` (the API's). Returns how many were filled in and the
    /// jobs whose request could not be decoded (they keep running on what they had; a queued one
    /// fails at launch with the reason).
    pub fn fill_in_specs(
        &self,
        decode: impl Fn(&str) -> Result<TrainingJobSpec, String>,
    ) -> Result<(usize, Vec<String>), ControlError> {
        let rows = self.store.without_spec()?;
        let mut filled = 0;
        let mut undecodable = Vec::new();
        for (name, request) in &rows {
            match decode(request) {
                Ok(spec) => {
                    self.store.set_spec(name, &spec)?;
                    filled += 1;
                }
                Err(e) => undecodable.push(format!("{name}: {e}")),
            }
        }
        Ok((filled, undecodable))
    }
}
