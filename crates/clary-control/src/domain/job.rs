//! The lifecycle every job kind shares: its status, the secondary status and its transitions,
//! its hosts, and the pure functions that move it. No I/O here: the caller passes the clock and
//! carries out what a transition asks for (signal hosts, launch again).

use clary_exec::ExecHandle;
use serde::{Deserialize, Serialize};

/// `TrainingJobStatus` (and the same set for processing and transform jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
    Stopping,
    Stopped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::InProgress,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Stopping,
        JobStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::InProgress => "InProgress",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
            JobStatus::Stopping => "Stopping",
            JobStatus::Stopped => "Stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Stopped
        )
    }
}

/// `SecondaryStatus`: the stage a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondaryStatus {
    Starting,
    Downloading,
    Training,
    Uploading,
    Restarting,
    Stopping,
    Stopped,
    MaxRuntimeExceeded,
    Completed,
    Failed,
}

impl SecondaryStatus {
    pub const ALL: [SecondaryStatus; 10] = [
        SecondaryStatus::Starting,
        SecondaryStatus::Downloading,
        SecondaryStatus::Training,
        SecondaryStatus::Uploading,
        SecondaryStatus::Restarting,
        SecondaryStatus::Stopping,
        SecondaryStatus::Stopped,
        SecondaryStatus::MaxRuntimeExceeded,
        SecondaryStatus::Completed,
        SecondaryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecondaryStatus::Starting => "Starting",
            SecondaryStatus::Downloading => "Downloading",
            SecondaryStatus::Training => "Training",
            SecondaryStatus::Uploading => "Uploading",
            SecondaryStatus::Restarting => "Restarting",
            SecondaryStatus::Stopping => "Stopping",
            SecondaryStatus::Stopped => "Stopped",
            SecondaryStatus::MaxRuntimeExceeded => "MaxRuntimeExceeded",
            SecondaryStatus::Completed => "Completed",
            SecondaryStatus::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The stages a running job goes through in order, which only move forward.
    fn stage(self) -> Option<usize> {
        [
            SecondaryStatus::Starting,
            SecondaryStatus::Downloading,
            SecondaryStatus::Training,
            SecondaryStatus::Uploading,
        ]
        .iter()
        .position(|s| *s == self)
    }
}

/// One entry of `SecondaryStatusTransitions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: SecondaryStatus,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub status_message: String,
}

/// How a host's part of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Stopped,
    MaxRuntimeExceeded,
}

/// What a host's agent reported when its part ended.
#[derive(Debug, Clone, PartialEq)]
pub struct HostResult {
    pub outcome: Outcome,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// `s3://` URI of what the host uploaded (`model.tar.gz`).
    pub artifacts: Option<String>,
    /// Failed in a way a retry may cure (a signal, the platform), not by the script's exit.
    pub transient: bool,
}

/// One host of the current attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// `algo-1`, …
    pub name: String,
    pub log_stream: String,
    /// The host's loopback address (`127.A.B.i`, one block per running job).
    pub address: String,
    /// Where the executor runs it; `None` while being launched.
    pub handle: Option<ExecHandle>,
    pub result: Option<HostResult>,
}

/// A job's lifecycle state, shared by every job kind.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    pub status: JobStatus,
    pub secondary: SecondaryStatus,
    pub status_message: String,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub artifacts: Option<String>,
    pub transitions: Vec<Transition>,
    /// Empty while the job waits in the queue.
    pub hosts: Vec<Host>,
    pub stop_requested: bool,
}

/// The words a job kind's messages use ("Training job", "training script").
#[derive(Debug, Clone, Copy)]
pub struct JobWords {
    pub noun: &'static str,
    pub script: &'static str,
    /// The status message while its hosts start ("Preparing the instances for training").
    pub preparing: &'static str,
}

/// Which kind of job: each kind is a module of its own on the shared lifecycle, with its own
/// names (AWS keeps training, processing and transform job names apart), ARNs, directory
/// and log group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    TrainingJob,
    ProcessingJob,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::TrainingJob, Kind::ProcessingJob];

    /// As the agents' API and stored credentials name it (`TrainingJob`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrainingJob => "TrainingJob",
            Kind::ProcessingJob => "ProcessingJob",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The resource type in its ARNs (`arn:aws:sagemaker:…:training-job/NAME`).
    pub fn arn_resource(self) -> &'static str {
        match self {
            Kind::TrainingJob => "training-job",
            Kind::ProcessingJob => "processing-job",
        }
    }

    /// The CloudWatch log group its hosts write to.
    pub fn log_group(self) -> &'static str {
        match self {
            Kind::TrainingJob => "/aws/sagemaker/TrainingJobs",
            Kind::ProcessingJob => "/aws/sagemaker/ProcessingJobs",
        }
    }

    /// The directory under the data directory holding its jobs' host directories.
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::TrainingJob => "jobs",
            Kind::ProcessingJob => "processing-jobs",
        }
    }

    pub const fn words(self) -> JobWords {
        match self {
            Kind::TrainingJob => JobWords {
                noun: "Training job",
                script: "training script",
                preparing: "Preparing the instances for training",
            },
            Kind::ProcessingJob => JobWords {
                noun: "Processing job",
                script: "processing container's command",
                preparing: "Preparing the instances for processing",
            },
        }
    }
}

pub const LAUNCHING: &str = "Launching requested ML instances";

/// What a stop request asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEffect {
    /// It was still queued and is now stopped: nothing runs.
    StoppedInQueue,
    /// Tell the hosts to stop; their results finish the job.
    SignalHosts,
    /// A stop was already under way.
    AlreadyStopping,
}

/// What a host's result asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultEffect {
    /// A late report of a replaced attempt, or of an ended job: nothing changes.
    Ignored,
    /// Recorded; other hosts are still running.
    Recorded,
    /// A host ended badly: stop the others; the job has ended or gone back to the queue.
    StopOthers { requeued: bool },
    /// Every host completed: the job has ended.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the job has already ended with status {0}; only InProgress jobs can be stopped")]
    AlreadyEnded(&'static str),
    #[error("{0} is not a host of the job")]
    UnknownHost(String),
}

/// Filters and order of a job listing (`ListTrainingJobs`, `ListProcessingJobs`, …).
#[derive(Debug, Default, Clone)]
pub struct ListJobs {
    pub name_contains: Option<String>,
    pub status_equals: Option<JobStatus>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    pub last_modified_time_after: Option<f64>,
    pub last_modified_time_before: Option<f64>,
    pub sort_by: SortBy,
    pub ascending: bool,
    pub max_results: u32,
    /// Rows to skip (the decoded `NextToken`).
    pub offset: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    #[default]
    CreationTime,
    Status,
}

/// One page of a listing and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The offset of the next page, when there is one.
    pub next_offset: Option<u64>,
}

/// A job of a kind without columns of its own in the store: what was asked (`spec`), the
/// request as received for the edge to echo, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Job<S> {
    pub name: String,
    pub arn: String,
    pub spec: S,
    pub echo: String,
    pub state: JobState,
}

/// How long after its job ended a job's scoped key still signs: the agents' last log lines
/// and results may arrive just after the job ended.
pub const REPORT_GRACE_SECS: f64 = 60.0;

impl JobState {
    /// Whether the job's own credentials are still good at `now`.
    pub fn accepts_reports(&self, now: f64) -> bool {
        !self.status.is_terminal() || self.end_time.is_none_or(|t| now - t < REPORT_GRACE_SECS)
    }

    /// A new job, queued.
    pub fn queued(now: f64) -> Self {
        JobState {
            status: JobStatus::InProgress,
            secondary: SecondaryStatus::Starting,
            status_message: LAUNCHING.into(),
            failure_reason: None,
            exit_code: None,
            creation_time: now,
            last_modified_time: now,
            start_time: None,
            end_time: None,
            artifacts: None,
            transitions: vec![Transition {
                status: SecondaryStatus::Starting,
                start_time: now,
                end_time: None,
                status_message: LAUNCHING.into(),
            }],
            hosts: Vec::new(),
            stop_requested: false,
        }
    }

    /// Waiting in the queue (no host launched for the current attempt).
    pub fn is_queued(&self) -> bool {
        !self.status.is_terminal() && self.hosts.is_empty()
    }

    /// Which run this is: one more for each restart.
    pub fn attempt(&self) -> u32 {
        self.transitions
            .iter()
            .filter(|t| t.status == SecondaryStatus::Restarting)
            .count() as u32
    }

    /// Enters a stage; the same stage with the same message is not repeated.
    pub fn set_secondary(&mut self, status: SecondaryStatus, message: &str, now: f64) {
        if let Some(last) = self.transitions.last_mut() {
            if last.status == status && last.status_message == message {
                return;
            }
            last.end_time.get_or_insert(now);
        }
        self.transitions.push(Transition {
            status,
            start_time: now,
            end_time: None,
            status_message: message.into(),
        });
        self.secondary = status;
        self.status_message = message.into();
        self.last_modified_time = now;
    }

    /// Says why the job still waits, once per distinct reason.
    pub fn note_waiting(&mut self, message: &str, now: f64) -> bool {
        if self.status_message == message {
            return false;
        }
        self.set_secondary(SecondaryStatus::Starting, message, now);
        true
    }

    /// The current attempt's hosts are being launched.
    pub fn start_attempt(&mut self, words: JobWords, hosts: Vec<Host>, now: f64) {
        self.start_time = Some(now);
        self.hosts = hosts;
        self.set_secondary(SecondaryStatus::Starting, words.preparing, now);
    }

    /// Moves the job to its terminal status.
    pub fn finish(
        &mut self,
        words: JobWords,
        outcome: Outcome,
        reason: Option<String>,
        exit_code: Option<i32>,
        artifacts: Option<String>,
        now: f64,
    ) {
        let noun = words.noun;
        let (status, secondary, message) = match outcome {
            Outcome::Completed => (
                JobStatus::Completed,
                SecondaryStatus::Completed,
                format!("{noun} completed"),
            ),
            Outcome::Failed => (
                JobStatus::Failed,
                SecondaryStatus::Failed,
                format!("{noun} failed"),
            ),
            Outcome::Stopped => (
                JobStatus::Stopped,
                SecondaryStatus::Stopped,
                format!("{noun} stopped"),
            ),
            Outcome::MaxRuntimeExceeded => (
                JobStatus::Stopped,
                SecondaryStatus::MaxRuntimeExceeded,
                format!("{noun} stopped because it exceeded MaxRuntimeInSeconds"),
            ),
        };
        let message = match exit_code {
            Some(code) if outcome != Outcome::Completed => {
                format!("{message} (the {} exited with code {code})", words.script)
            }
            _ => message,
        };
        self.set_secondary(secondary, &message, now);
        if let Some(last) = self.transitions.last_mut() {
            last.end_time = Some(last.start_time);
        }
        self.status = status;
        self.end_time = Some(now);
        self.start_time.get_or_insert(self.creation_time);
        self.exit_code = exit_code.map(i64::from);
        if artifacts.is_some() {
            self.artifacts = artifacts;
        }
        let lower = noun.to_lowercase();
        self.failure_reason = match outcome {
            Outcome::Completed | Outcome::Stopped => None,
            Outcome::MaxRuntimeExceeded => Some(reason.unwrap_or_else(|| {
                format!("MaxRuntimeExceeded: {noun} exceeded MaxRuntimeInSeconds")
            })),
            Outcome::Failed => {
                Some(reason.unwrap_or_else(|| format!("AlgorithmError: the {lower} failed")))
            }
        };
    }

    /// `Stop*Job`.
    pub fn request_stop(
        &mut self,
        words: JobWords,
        now: f64,
    ) -> Result<StopEffect, TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::AlreadyEnded(self.status.as_str()));
        }
        if self.status == JobStatus::Stopping {
            return Ok(StopEffect::AlreadyStopping);
        }
        self.stop_requested = true;
        if self.hosts.is_empty() {
            self.finish(words, Outcome::Stopped, None, None, None, now);
            return Ok(StopEffect::StoppedInQueue);
        }
        let message = format!("Stopping the {}", words.noun.to_lowercase());
        self.set_secondary(SecondaryStatus::Stopping, &message, now);
        self.status = JobStatus::Stopping;
        Ok(StopEffect::SignalHosts)
    }

    /// A host's agent reports its stage. With several hosts the job follows the first host to
    /// reach each stage; a stop in progress owns the secondary status until the results arrive.
    pub fn apply_status_report(&mut self, stage: SecondaryStatus, message: &str, now: f64) -> bool {
        let forward = match (self.secondary.stage(), stage.stage()) {
            (Some(current), Some(next)) => next > current,
            _ => true,
        };
        if self.status != JobStatus::InProgress || !forward {
            return false;
        }
        self.set_secondary(stage, message, now);
        true
    }

    /// `RetryStrategy`: when attempts are left, the job goes back to the queue for a fresh
    /// launch of all its hosts, saying why. The hosts of the failed attempt have been told to
    /// stop; their late reports are ignored.
    pub fn restart(
        &mut self,
        words: JobWords,
        max_retries: u32,
        host: &str,
        why: &str,
        now: f64,
    ) -> bool {
        let used = self.attempt();
        if self.stop_requested || used >= max_retries {
            return false;
        }
        // The failure on one line, short enough for a status message.
        let mut brief: String = why.split_whitespace().collect::<Vec<_>>().join(" ");
        if brief.chars().count() > 400 {
            brief = brief.chars().take(400).collect::<String>() + "…";
        }
        let message = format!(
            "Restarting the {} (attempt {} of {}) after a transient failure on {host}: {brief}",
            words.noun.to_lowercase(),
            used + 2,
            max_retries + 1
        );
        self.set_secondary(SecondaryStatus::Restarting, &message, now);
        self.hosts.clear();
        true
    }

    /// A host's agent reports how its part ended. One host ending badly ends the job (or
    /// restarts it); the job completes when every host has.
    pub fn apply_result(
        &mut self,
        words: JobWords,
        max_retries: u32,
        host: &str,
        attempt: u32,
        result: HostResult,
        now: f64,
    ) -> Result<ResultEffect, TransitionError> {
        if self.status.is_terminal() || attempt != self.attempt() {
            return Ok(ResultEffect::Ignored);
        }
        let Some(slot) = self.hosts.iter_mut().find(|h| h.name == host) else {
            return Err(TransitionError::UnknownHost(host.to_string()));
        };
        slot.result = Some(result);
        let artifacts = self
            .hosts
            .iter()
            .find_map(|h| h.result.as_ref().and_then(|r| r.artifacts.clone()));
        let failed = self.hosts.iter().find_map(|h| {
            h.result
                .as_ref()
                .filter(|r| r.outcome != Outcome::Completed)
                .map(|r| (h.name.clone(), r.clone()))
        });
        if let Some((bad_host, bad)) = failed {
            if bad.outcome == Outcome::Failed
                && bad.transient
                && self.restart(
                    words,
                    max_retries,
                    &bad_host,
                    bad.failure_reason.as_deref().unwrap_or_default(),
                    now,
                )
            {
                return Ok(ResultEffect::StopOthers { requeued: true });
            }
            let reason = bad.failure_reason.clone().map(|f| {
                if self.hosts.len() > 1 {
                    format!("{f} (host {bad_host})")
                } else {
                    f
                }
            });
            let outcome = if self.stop_requested && bad.outcome == Outcome::Failed {
                Outcome::Stopped
            } else {
                bad.outcome
            };
            self.finish(words, outcome, reason, bad.exit_code, artifacts, now);
            return Ok(ResultEffect::StopOthers { requeued: false });
        }
        if self.hosts.iter().all(|h| h.result.is_some()) {
            self.finish(words, Outcome::Completed, None, Some(0), artifacts, now);
            return Ok(ResultEffect::Finished);
        }
        Ok(ResultEffect::Recorded)
    }

    /// Hosts lost without a result (their executor unit is gone): the job restarts when the
    /// loss is transient and retries are left, else it fails (or stops, when a stop was asked).
    /// Returns true when it went back to the queue.
    pub fn hosts_lost(
        &mut self,
        words: JobWords,
        max_retries: u32,
        first_lost: &str,
        reason: String,
        transient: bool,
        now: f64,
    ) -> bool {
        if transient && self.restart(words, max_retries, first_lost, &reason, now) {
            return true;
        }
        let outcome = if self.stop_requested {
            Outcome::Stopped
        } else {
            Outcome::Failed
        };
        self.finish(words, outcome, Some(reason), None, None, now);
        false
    }

    /// When the current stop began, if one is under way.
    pub fn stopping_since(&self) -> Option<f64> {
        if self.status != JobStatus::Stopping {
            return None;
        }
        self.transitions
            .iter()
            .rev()
            .find(|t| t.status == SecondaryStatus::Stopping)
            .map(|t| t.start_time)
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
