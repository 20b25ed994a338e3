//! The lifecycle every job kind shares: the queue (capacity, first in first out), launching an
//! attempt's hosts through the executor, the watch over them, stop, retries, recovery after a
//! restart, and the agents' reports. A job kind (training, processing, transform) supplies
//! what differs through [`JobKind`]: where its jobs are stored, the shape of a job, what each
//! host runs (its spec) and where its credentials may write. The transitions themselves are
//! the pure functions of `domain::job`.

mod launch;
pub mod ledger;
mod queue;

use crate::config::ControlConfig;
use crate::credentials::Credentials;
use crate::domain::credentials::{ScopedKey, WriteGrant};
use crate::domain::job::{
    HostResult, Job, JobState, Kind, ResultEffect, SecondaryStatus, StopEffect, TransitionError,
};
use crate::error::ControlError;
use crate::logs::Logs;
use crate::now_secs;
use clary_exec::{ExecHandle, Executor, StopSignal};
use ledger::Ledger;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the lifecycle reads and moves of a job, whatever its kind.
pub trait KindJob: Send + Sync {
    fn name(&self) -> &str;
    fn state(&self) -> &JobState;
    fn state_mut(&mut self) -> &mut JobState;
}

impl<S: Send + Sync> KindJob for Job<S> {
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

/// What a job asks of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobShape {
    pub instance_type: String,
    pub instance_count: u32,
    pub max_runtime_secs: u64,
    /// `RetryStrategy.MaximumRetryAttempts` (0 for kinds without one).
    pub max_retries: u32,
}

/// One host of an attempt being launched, as a kind's [`JobKind::host_spec`] sees it.
pub struct HostPlan<'a> {
    pub name: &'a str,
    /// Every host of the attempt, in order, and their loopback addresses.
    pub hosts: &'a [String],
    pub addresses: &'a [String],
    /// The host's directory on the server (its `/opt/ml` stand-in goes inside).
    pub dir: &'a Path,
    pub log_stream: &'a str,
    /// The key pair the host's units sign with.
    pub key: &'a ScopedKey,
    pub attempt: u32,
}

/// What differs between job kinds. One module per kind implements it.
pub trait JobKind: Send + Sync + 'static {
    type Job: KindJob;
    const KIND: Kind;

    fn get(&self, name: &str) -> Result<Option<Self::Job>, ControlError>;
    /// Jobs not yet ended, oldest first.
    fn active(&self) -> Result<Vec<Self::Job>, ControlError>;
    fn save_state(&self, job: &Self::Job) -> Result<(), ControlError>;
    fn shape(&self, job: &Self::Job) -> JobShape;
    /// Where the job's credentials may write.
    fn write_grants(&self, job: &Self::Job) -> Vec<WriteGrant>;
    /// What `clary agent --spec` reads on one host: the kind's spec, serialized.
    fn host_spec(&self, job: &Self::Job, host: &HostPlan<'_>) -> Result<Vec<u8>, String>;

    /// The hosts of an attempt (`algo-1`, …).
    fn host_names(&self, job: &Self::Job) -> Vec<String> {
        (1..=self.shape(job).instance_count.max(1))
            .map(|i| format!("algo-{i}"))
            .collect()
    }

    /// A host's log stream.
    fn log_stream(&self, job: &Self::Job, host: &str, epoch: i64) -> String {
        format!("{}/{host}-{epoch}", job.name())
    }

    /// Log lines a host shipped (training reads metrics from them).
    fn on_log_lines(
        &self,
        _job: &Self::Job,
        _host: &str,
        _events: &[(i64, String)],
    ) -> Result<LogsRead, ControlError> {
        Ok(LogsRead::default())
    }

    /// The job has ended; returns lines to add to its first host's stream.
    fn on_ended(&self, _job: &Self::Job) -> Result<Vec<String>, ControlError> {
        Ok(Vec::new())
    }
}

/// What a kind made of a host's log lines.
#[derive(Debug, Default)]
pub struct LogsRead {
    /// Lines of Clary's own to add to the stream.
    pub notes: Vec<String>,
    /// They carried progress followers want to hear of (metric values).
    pub progressed: bool,
}

/// The agents' calls, for whichever kind the caller's job is.
pub trait AgentReports: Send + Sync {
    /// Whether the job's scoped credentials still sign (see `JobState::accepts_reports`).
    fn accepts_reports(&self, name: &str) -> bool;
    /// `ClaryAgent.ReportStatus`.
    fn report_status(&self, job: &str, status: &str, message: &str) -> Result<(), ControlError>;
    /// `ClaryAgent.PutLogLines`.
    fn report_logs(
        &self,
        job: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ControlError>;
    /// `ClaryAgent.ReportResult`.
    fn report_result(
        &self,
        job: &str,
        host: &str,
        attempt: u32,
        result: HostResult,
    ) -> Result<(), ControlError>;
    /// `ClaryAgent.GetHostSpec`: the spec of one host of the current attempt, for an agent on
    /// a node that does not share this server's disk.
    fn host_spec(&self, job: &str, host: &str) -> Result<serde_json::Value, ControlError>;
}

/// The services every kind's lifecycle uses.
#[derive(Clone)]
pub struct Services {
    pub executor: Arc<dyn Executor>,
    pub config: Arc<ControlConfig>,
    pub logs: Logs,
    pub credentials: Arc<Credentials>,
    pub ledger: Arc<Ledger>,
}

pub struct Lifecycle<K: JobKind> {
    kind: K,
    executor: Arc<dyn Executor>,
    config: Arc<ControlConfig>,
    logs: Logs,
    credentials: Arc<Credentials>,
    ledger: Arc<Ledger>,
    /// Wakes the queue: a job was queued, or a slot freed.
    wake: Notify,
    /// Wakes whoever follows jobs' progress (the tuning loop): a job ended, or reported
    /// something worth a look.
    progressed: Notify,
}

impl<K: JobKind> Lifecycle<K> {
    pub fn new(kind: K, services: Services) -> Self {
        Lifecycle {
            kind,
            executor: services.executor,
            config: services.config,
            logs: services.logs,
            credentials: services.credentials,
            ledger: services.ledger,
            wake: Notify::new(),
            progressed: Notify::new(),
        }
    }

    /// The kind's own part.
    pub fn kind(&self) -> &K {
        &self.kind
    }

    pub fn arn(&self, name: &str) -> String {
        self.config.arn(K::KIND.arn_resource(), name)
    }

    fn words(&self) -> crate::domain::job::JobWords {
        K::KIND.words()
    }

    pub fn require(&self, name: &str) -> Result<K::Job, ControlError> {
        self.kind.get(name)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "Requested resource not found: {} {name:?} does not exist",
                self.words().noun.to_lowercase()
            ))
        })
    }

    /// A job was stored: the queue looks at it now.
    pub fn queued(&self) {
        self.wake.notify_one();
    }

    /// Resolves when a job has ended or reported progress since the last call.
    pub async fn progressed(&self) {
        self.progressed.notified().await;
    }

    /// Tells whoever follows progress that something moved.
    pub fn note_progress(&self) {
        self.progressed.notify_one();
    }

    /// `Stop<Kind>Job`.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        let mut job = self.require(name)?;
        let running = running_handles(job.state(), None);
        match job.state_mut().request_stop(self.words(), now_secs()) {
            Err(TransitionError::AlreadyEnded(status)) => Err(ControlError::Validation(format!(
                "The {} {name} has already ended with status {status}; only InProgress jobs can be stopped",
                self.words().noun.to_lowercase()
            ))),
            Err(e) => Err(ControlError::Validation(e.to_string())),
            Ok(StopEffect::AlreadyStopping) => Ok(()),
            Ok(effect) => {
                self.kind.save_state(&job)?;
                if effect == StopEffect::SignalHosts {
                    self.signal_all(&running, StopSignal::Term);
                } else {
                    self.ended(&job)?;
                }
                self.wake.notify_one();
                Ok(())
            }
        }
    }

    /// Signals each distinct unit once (a Slurm job's hosts share one).
    fn signal_all(&self, handles: &[ExecHandle], signal: StopSignal) {
        for h in handles {
            self.executor.signal(h, signal);
        }
    }

    /// Appends Clary's own lines to a job's log stream.
    fn note(&self, stream: &str, lines: Vec<String>) -> Result<(), ControlError> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = crate::now_millis();
        let events: Vec<(i64, String)> = lines.into_iter().map(|l| (now, l)).collect();
        self.logs.append(K::KIND.log_group(), stream, &events)
    }

    /// After a job reached its terminal status: its slot is free, followers hear of it, the
    /// kind adds its closing lines.
    fn ended(&self, job: &K::Job) -> Result<(), ControlError> {
        self.ledger.release(K::KIND, job.name());
        self.wake.notify_one();
        self.progressed.notify_one();
        let lines = self.kind.on_ended(job)?;
        if let Some(first) = job.state().hosts.first() {
            self.note(&first.log_stream.clone(), lines)?;
        }
        Ok(())
    }
}

impl<K: JobKind> AgentReports for Lifecycle<K> {
    fn accepts_reports(&self, name: &str) -> bool {
        self.kind
            .get(name)
            .ok()
            .flatten()
            .is_some_and(|job| job.state().accepts_reports(now_secs()))
    }

    fn report_status(&self, job: &str, status: &str, message: &str) -> Result<(), ControlError> {
        let stage = SecondaryStatus::parse(status).ok_or_else(|| {
            ControlError::Validation(format!("{status:?} is not a secondary status"))
        })?;
        let mut job = self.require(job)?;
        if job
            .state_mut()
            .apply_status_report(stage, message, now_secs())
        {
            self.kind.save_state(&job)?;
        }
        Ok(())
    }

    fn report_logs(
        &self,
        job: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ControlError> {
        let found = self.require(job)?;
        self.logs.append(K::KIND.log_group(), stream, events)?;
        let host = found
            .state()
            .hosts
            .iter()
            .find(|h| h.log_stream == stream)
            .map_or_else(|| host_of_stream(stream), |h| h.name.clone());
        let read = self.kind.on_log_lines(&found, &host, events)?;
        if read.progressed {
            self.progressed.notify_one();
        }
        self.note(stream, read.notes)
    }

    fn report_result(
        &self,
        job_name: &str,
        host: &str,
        attempt: u32,
        result: HostResult,
    ) -> Result<(), ControlError> {
        let mut job = self.require(job_name)?;
        let others = running_handles(job.state(), Some(host));
        let max_retries = self.kind.shape(&job).max_retries;
        let effect = job
            .state_mut()
            .apply_result(self.words(), max_retries, host, attempt, result, now_secs())
            .map_err(|_| {
                ControlError::Validation(format!(
                    "{host} is not a host of {} {job_name}",
                    self.words().noun.to_lowercase()
                ))
            })?;
        match effect {
            ResultEffect::Ignored => return Ok(()),
            ResultEffect::Recorded | ResultEffect::Finished => {}
            ResultEffect::StopOthers { .. } => self.signal_all(&others, StopSignal::Term),
        }
        self.kind.save_state(&job)?;
        if job.state().status.is_terminal() {
            self.ended(&job)?;
        } else if job.state().is_queued() {
            // A requeued job: its slot is free and the queue moves at once.
            self.ledger.release(K::KIND, job.name());
            self.wake.notify_one();
            self.progressed.notify_one();
        }
        Ok(())
    }

    fn host_spec(&self, job_name: &str, host: &str) -> Result<serde_json::Value, ControlError> {
        let job = self.require(job_name)?;
        if !job.state().hosts.iter().any(|h| h.name == host) {
            return Err(ControlError::Validation(format!(
                "{host} is not a host of the current attempt of {} {job_name}",
                self.words().noun.to_lowercase()
            )));
        }
        let path = self.host_dir(&job, host).join("spec.json");
        let text = std::fs::read(&path)
            .map_err(|e| ControlError::Internal(format!("reading {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| ControlError::Internal(e.to_string()))
    }
}

/// The host of a log stream named `<job>/<host>-<epoch>`.
fn host_of_stream(stream: &str) -> String {
    let tail = stream.rsplit_once('/').map_or(stream, |(_, t)| t);
    tail.rsplit_once('-').map_or(tail, |(h, _)| h).to_string()
}

/// The units of hosts still running (without a result), each once; `except` leaves one host out.
pub(crate) fn running_handles(state: &JobState, except: Option<&str>) -> Vec<ExecHandle> {
    let mut out: Vec<ExecHandle> = Vec::new();
    for h in &state.hosts {
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
