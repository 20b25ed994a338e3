//! Training jobs on the shared job lifecycle: create, describe, list and stop; the agents'
//! reports; and (in [`launch`] and [`scheduler`]) the queue that launches hosts through the
//! executor and the watch over them.

mod launch;
pub mod profiler;
mod scheduler;

use crate::config::ControlConfig;
use crate::credentials::Credentials;
use crate::domain::job::{
    HostResult, JobState, ResultEffect, SecondaryStatus, StopEffect, TransitionError,
};
use crate::domain::training::{
    ListTrainingJobs, Page, TRAINING, TrainingJob, TrainingJobSpec, TrainingJobSummary,
};
use crate::error::ControlError;
use crate::logs::{Logs, TRAINING_LOG_GROUP};
use crate::metrics::Metrics;
use crate::now_secs;
use crate::store::TrainingJobStore;
use clary_exec::runtimes::Runtimes;
use clary_exec::{ExecHandle, Executor, StopSignal};
use std::sync::Arc;
use tokio::sync::Notify;

/// What creating a job needs besides its spec.
pub struct NewTrainingJob {
    pub name: String,
    pub spec: TrainingJobSpec,
    /// The request as received, for the edge to echo back.
    pub echo: String,
    pub tags: Vec<(String, String)>,
}

pub struct TrainingJobs {
    store: TrainingJobStore,
    logs: Logs,
    executor: Arc<dyn Executor>,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
    /// Wakes the scheduler: a job was queued, or a slot freed.
    wake: Notify,
    /// Wakes whoever follows jobs' progress (the tuning loop): a job ended, or reported
    /// metric values.
    progressed: Notify,
    credentials: Arc<Credentials>,
    metrics: Arc<Metrics>,
}

impl TrainingJobs {
    pub(crate) fn new(
        store: TrainingJobStore,
        logs: Logs,
        executor: Arc<dyn Executor>,
        config: Arc<ControlConfig>,
        credentials: Arc<Credentials>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let runtimes = Runtimes::new(config.runtimes_dir.clone());
        TrainingJobs {
            store,
            logs,
            executor,
            config,
            runtimes,
            wake: Notify::new(),
            progressed: Notify::new(),
            credentials,
            metrics,
        }
    }

    /// Whether the job's scoped credentials still sign (see `JobState::accepts_reports`).
    pub fn accepts_reports(&self, name: &str) -> bool {
        self.store
            .get(name)
            .ok()
            .flatten()
            .is_some_and(|job| job.state.accepts_reports(now_secs()))
    }

    pub fn arn(&self, name: &str) -> String {
        self.config.arn("training-job", name)
    }

    fn require(&self, name: &str) -> Result<TrainingJob, ControlError> {
        self.store.get(name)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "Requested resource not found: training job {name:?} does not exist"
            ))
        })
    }

    /// `CreateTrainingJob`, for a spec the API built from a validated request.
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
        self.wake.notify_one();
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
        let mut job = self.require(name)?;
        let running = running_handles(&job, None);
        match job.state.request_stop(TRAINING, now_secs()) {
            Err(TransitionError::AlreadyEnded(status)) => Err(ControlError::Validation(format!(
                "The training job {name} has already ended with status {status}; only InProgress jobs can be stopped"
            ))),
            Err(e) => Err(ControlError::Validation(e.to_string())),
            Ok(StopEffect::AlreadyStopping) => Ok(()),
            Ok(effect) => {
                self.store.save_state(&job)?;
                if effect == StopEffect::SignalHosts {
                    self.signal_all(&running, StopSignal::Term);
                }
                self.wake.notify_one();
                Ok(())
            }
        }
    }

    /// An agent's stage (`ClaryAgent.ReportStatus`).
    pub fn report_status(
        &self,
        job: &str,
        status: &str,
        message: &str,
    ) -> Result<(), ControlError> {
        let stage = SecondaryStatus::parse(status).ok_or_else(|| {
            ControlError::Validation(format!("{status:?} is not a secondary status"))
        })?;
        let mut job = self.require(job)?;
        if job.state.apply_status_report(stage, message, now_secs()) {
            self.store.save_state(&job)?;
        }
        Ok(())
    }

    /// A batch of an agent's log lines (`ClaryAgent.ReportLogs`).
    pub fn report_logs(
        &self,
        job: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ControlError> {
        let found = self.require(job)?;
        self.logs.append(TRAINING_LOG_GROUP, stream, events)?;
        let definitions = &found.spec.metric_definitions;
        if definitions.is_empty() {
            return Ok(());
        }
        let host = found
            .state
            .hosts
            .iter()
            .find(|h| h.log_stream == stream)
            .map_or_else(|| host_of_stream(stream), |h| h.name.clone());
        let notes = self.metrics.ingest(job, definitions, &host, events)?;
        self.progressed.notify_one();
        self.note(stream, notes)
    }

    /// Resolves when a job has ended or reported metric values since the last call.
    pub async fn progressed(&self) {
        self.progressed.notified().await;
    }

    /// Appends Clary's own lines to a job's log stream.
    fn note(&self, stream: &str, lines: Vec<String>) -> Result<(), ControlError> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = crate::now_millis();
        let events: Vec<(i64, String)> = lines.into_iter().map(|l| (now, l)).collect();
        self.logs.append(TRAINING_LOG_GROUP, stream, &events)
    }

    /// How a host's part ended (`ClaryAgent.ReportResult`).
    pub fn report_result(
        &self,
        job_name: &str,
        host: &str,
        attempt: u32,
        result: HostResult,
    ) -> Result<(), ControlError> {
        let mut job = self.require(job_name)?;
        let others = running_handles(&job, Some(host));
        let effect = job
            .state
            .apply_result(
                TRAINING,
                job.spec.max_retries,
                host,
                attempt,
                result,
                now_secs(),
            )
            .map_err(|_| {
                ControlError::Validation(format!("{host} is not a host of training job {job_name}"))
            })?;
        match effect {
            ResultEffect::Ignored => return Ok(()),
            ResultEffect::Recorded => {}
            ResultEffect::StopOthers { .. } => self.signal_all(&others, StopSignal::Term),
            ResultEffect::Finished => {}
        }
        self.store.save_state(&job)?;
        if job.state.status.is_terminal() || job.state.is_queued() {
            // A freed slot or a requeued job: the queue moves at once.
            self.wake.notify_one();
            self.progressed.notify_one();
        }
        if job.state.status.is_terminal()
            && let Some(first) = job.state.hosts.first()
        {
            let silent = self
                .metrics
                .never_matched(job_name, &job.spec.metric_definitions)?;
            self.note(&first.log_stream, silent)?;
        }
        Ok(())
    }

    /// Signals each distinct unit once (a Slurm job's hosts share one).
    fn signal_all(&self, handles: &[ExecHandle], signal: StopSignal) {
        for h in handles {
            self.executor.signal(h, signal);
        }
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

/// The host of a log stream named `<job>/<host>-<epoch>`.
fn host_of_stream(stream: &str) -> String {
    let tail = stream.rsplit_once('/').map_or(stream, |(_, t)| t);
    tail.rsplit_once('-').map_or(tail, |(h, _)| h).to_string()
}

/// The units of hosts still running (without a result), each once; `except` leaves one host out.
fn running_handles(job: &TrainingJob, except: Option<&str>) -> Vec<ExecHandle> {
    let mut out: Vec<ExecHandle> = Vec::new();
    for h in &job.state.hosts {
        if h.result.is_some() || Some(h.name.as_str()) == except {
            continue;
        }
        if let Some(handle) = h.handle
            && !out.contains(&handle)
        {
            out.push(handle);
        }
    }
    out
}
