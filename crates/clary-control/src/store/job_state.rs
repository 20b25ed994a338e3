//! A job's lifecycle state in SQLite, shared by every job kind's table: the transitions and
//! hosts as JSON in the format earlier versions wrote (so a database carries over), and the
//! whole state as one JSON document for kinds that keep no columns of their own.

use crate::domain::job::{
    Host, HostResult, JobState, JobStatus, Outcome, SecondaryStatus, Transition,
};
use clary_exec::{ExecHandle, HostProcess};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct StoredTransition {
    status: String,
    start_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<f64>,
    status_message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredResult {
    #[serde(default)]
    job_name: String,
    #[serde(default)]
    host: String,
    outcome: String,
    failure_reason: Option<String>,
    exit_code: Option<i32>,
    model_artifacts: Option<String>,
    #[serde(default)]
    transient: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredHost {
    host: String,
    pid: i32,
    start_ticks: u64,
    log_stream: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    slurm_job: Option<u64>,
    #[serde(default)]
    result: Option<StoredResult>,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "Completed",
        Outcome::Failed => "Failed",
        Outcome::Stopped => "Stopped",
        Outcome::MaxRuntimeExceeded => "MaxRuntimeExceeded",
    }
}

fn outcome_of(s: &str) -> Outcome {
    match s {
        "Completed" => Outcome::Completed,
        "Stopped" => Outcome::Stopped,
        "MaxRuntimeExceeded" => Outcome::MaxRuntimeExceeded,
        _ => Outcome::Failed,
    }
}

impl StoredTransition {
    fn from_domain(t: &Transition) -> Self {
        StoredTransition {
            status: t.status.as_str().into(),
            start_time: t.start_time,
            end_time: t.end_time,
            status_message: t.status_message.clone(),
        }
    }
}

impl StoredHost {
    pub(super) fn from_domain(h: &Host) -> Self {
        let (pid, start_ticks, slurm_job) = match h.handle {
            Some(ExecHandle::Process(p)) => (p.pid, p.start_ticks, None),
            Some(ExecHandle::SlurmJob(id)) => (0, 0, Some(id)),
            None => (0, 0, None),
        };
        StoredHost {
            host: h.name.clone(),
            pid,
            start_ticks,
            log_stream: h.log_stream.clone(),
            address: h.address.clone(),
            slurm_job,
            result: h.result.as_ref().map(|r| StoredResult {
                job_name: String::new(),
                host: h.name.clone(),
                outcome: outcome_name(r.outcome).into(),
                failure_reason: r.failure_reason.clone(),
                exit_code: r.exit_code,
                model_artifacts: r.artifacts.clone(),
                transient: r.transient,
            }),
        }
    }

    pub(super) fn into_domain(self) -> Host {
        let handle = match (self.slurm_job, self.pid) {
            (Some(id), _) => Some(ExecHandle::SlurmJob(id)),
            (None, 0) => None,
            (None, pid) => Some(ExecHandle::Process(HostProcess {
                pid,
                start_ticks: self.start_ticks,
            })),
        };
        Host {
            name: self.host,
            log_stream: self.log_stream,
            address: self.address,
            handle,
            result: self.result.map(|r| HostResult {
                outcome: outcome_of(&r.outcome),
                failure_reason: r.failure_reason,
                exit_code: r.exit_code,
                artifacts: r.model_artifacts,
                transient: r.transient,
            }),
        }
    }
}

pub(super) fn transitions_json(state: &JobState) -> String {
    let stored: Vec<StoredTransition> = state
        .transitions
        .iter()
        .map(StoredTransition::from_domain)
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into())
}

pub(super) fn hosts_json(state: &JobState) -> String {
    let stored: Vec<StoredHost> = state.hosts.iter().map(StoredHost::from_domain).collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into())
}

/// Stored transitions back into the domain's; `None` names an unknown status.
pub(super) fn parse_transitions(stored: Vec<StoredTransition>) -> Option<Vec<Transition>> {
    stored
        .into_iter()
        .map(|t| {
            Some(Transition {
                status: SecondaryStatus::parse(&t.status)?,
                start_time: t.start_time,
                end_time: t.end_time,
                status_message: t.status_message,
            })
        })
        .collect()
}

/// The whole state as one document.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredState {
    status: String,
    secondary: String,
    status_message: String,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
    creation_time: f64,
    last_modified_time: f64,
    start_time: Option<f64>,
    end_time: Option<f64>,
    artifacts: Option<String>,
    transitions: Vec<StoredTransition>,
    hosts: Vec<StoredHost>,
    stop_requested: bool,
}

pub(super) fn state_json(state: &JobState) -> String {
    let stored = StoredState {
        status: state.status.as_str().into(),
        secondary: state.secondary.as_str().into(),
        status_message: state.status_message.clone(),
        failure_reason: state.failure_reason.clone(),
        exit_code: state.exit_code,
        creation_time: state.creation_time,
        last_modified_time: state.last_modified_time,
        start_time: state.start_time,
        end_time: state.end_time,
        artifacts: state.artifacts.clone(),
        transitions: state
            .transitions
            .iter()
            .map(StoredTransition::from_domain)
            .collect(),
        hosts: state.hosts.iter().map(StoredHost::from_domain).collect(),
        stop_requested: state.stop_requested,
    };
    serde_json::to_string(&stored).expect("plain data serializes")
}

pub(super) fn parse_state(text: &str) -> Result<JobState, String> {
    let s: StoredState = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(JobState {
        status: JobStatus::parse(&s.status).ok_or("unknown job status")?,
        secondary: SecondaryStatus::parse(&s.secondary).ok_or("unknown secondary status")?,
        status_message: s.status_message,
        failure_reason: s.failure_reason,
        exit_code: s.exit_code,
        creation_time: s.creation_time,
        last_modified_time: s.last_modified_time,
        start_time: s.start_time,
        end_time: s.end_time,
        artifacts: s.artifacts,
        transitions: parse_transitions(s.transitions).ok_or("unknown secondary status")?,
        hosts: s.hosts.into_iter().map(StoredHost::into_domain).collect(),
        stop_requested: s.stop_requested,
    })
}
