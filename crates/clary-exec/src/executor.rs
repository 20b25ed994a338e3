//! The executor seam: where a job's hosts and an endpoint's instances run.
//!
//! The control plane writes each unit's spec to a file, asks an [`Executor`] to launch it and
//! keeps the [`ExecHandle`] it gets back. From then on it only observes and signals the handle;
//! which machine, process or scheduler job stands behind it is the executor's business. The local
//! executor ([`LocalProcesses`]) and the Slurm executor ([`SlurmCluster`]) are the two
//! implementations; a third (containers, Kubernetes) is one more module implementing the trait.

mod local_processes;
mod slurm_cluster;

pub use local_processes::LocalProcesses;
pub use slurm_cluster::{NodeContext, SlurmCluster, SlurmUnit};

use crate::local::HostProcess;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the control plane finds a launched unit again, kept with the unit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecHandle {
    /// A process of this machine (PID and kernel start time, so a recycled PID never passes).
    Process(HostProcess),
    /// A Slurm job (all hosts of a training job share one).
    SlurmJob(u64),
}

/// What an executor sees of a launched unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Running (or starting).
    Running,
    /// Waiting for resources in the executor's own queue; the reason says on what.
    Pending(String),
    /// No longer running.
    Gone(Loss),
}

/// Why a unit is gone, for a failure reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// What happened to it (`Slurm job 7 ended NODE_FAIL (…)`), when the executor knows.
    pub detail: Option<String>,
    /// Where its own output is, when the executor kept it apart from the unit's log.
    pub output: Option<PathBuf>,
    /// The machine ended it rather than the unit itself: worth a retry.
    pub transient: bool,
}

/// A signal to a launched unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Finish up: the agent forwards SIGTERM and escalates after its grace period.
    Term,
    /// Now.
    Kill,
}

/// One host of a training job (or, next, of a processing or transform job).
pub struct HostLaunch<'a> {
    pub host: &'a str,
    /// The host's spec, read by `clary agent --spec` (or fetched from the control plane on
    /// a node that does not share this disk).
    pub spec_path: &'a Path,
    /// The agent's own output (not the job's log, which it streams as log events).
    pub agent_log: &'a Path,
}

/// The key pair a unit signs its calls with: scoped to that unit's job or instance. A unit
/// that reads its spec from this disk finds it there; the executor hands it to units that
/// fetch their spec from the control plane.
#[derive(Clone, Copy)]
pub struct UnitCredentials<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
}

/// All hosts of one job, launched together.
pub struct JobLaunch<'a> {
    /// Job names are unique only within a kind.
    pub kind: crate::protocol::JobKind,
    pub job_name: &'a str,
    pub instance_type: &'a str,
    pub hosts: Vec<HostLaunch<'a>>,
    /// A backstop after which the executor may end the job itself; the agent enforces the
    /// job's own limit.
    pub time_limit_secs: u64,
    pub credentials: UnitCredentials<'a>,
}

/// One endpoint instance (a `clary model-server`).
pub struct InstanceLaunch<'a> {
    pub endpoint: &'a str,
    pub instance_id: &'a str,
    pub instance_type: &'a str,
    pub spec_path: &'a Path,
    pub log_path: &'a Path,
    pub credentials: UnitCredentials<'a>,
}

/// Where the units run. Implementations own their naming, their node commands and how the
/// units' credentials reach them.
pub trait Executor: Send + Sync {
    /// A word for logs and status messages (`local`, `Slurm`).
    fn name(&self) -> &'static str;

    /// The executor queues work itself (a cluster scheduler), so the server's own capacity
    /// check does not hold jobs back.
    fn queues_itself(&self) -> bool;

    /// The units share this server's disk: agents read their spec and the object store
    /// directly rather than over HTTP.
    fn shares_disk(&self) -> bool;

    /// Starts every host of a job; one handle per host, in the order given.
    fn launch_job(&self, job: &JobLaunch<'_>) -> Result<Vec<ExecHandle>, String>;

    /// Starts one endpoint instance. A local model server listens where its spec says; a
    /// cluster instance picks a port on its node and reports it.
    fn launch_instance(&self, instance: &InstanceLaunch<'_>) -> Result<ExecHandle, String>;

    /// The units an earlier launch of this very job (same specs) started and nobody recorded,
    /// because the server was killed between starting them and saving their handles: one
    /// handle per host when every host is still running. Whatever runs of an incomplete set is
    /// ended, so a relaunch never runs beside an untracked copy.
    fn adopt_job(&self, job: &JobLaunch<'_>) -> Option<Vec<ExecHandle>>;

    /// As [`Executor::adopt_job`], for one endpoint instance.
    fn adopt_instance(&self, instance: &InstanceLaunch<'_>) -> Option<ExecHandle>;

    /// The unit's state now.
    fn observe(&self, handle: &ExecHandle) -> Observed;

    /// Signals the unit; a unit already gone is left alone.
    fn signal(&self, handle: &ExecHandle, signal: StopSignal);

    /// A status line for something launched, when the executor has one worth showing
    /// (`Slurm job 12`).
    fn launched_note(&self, handle: &ExecHandle) -> Option<String>;
}
