//! Units as Slurm jobs: one `sbatch` per training job (`srun` starts one agent per node) and one
//! per endpoint instance. Each node runs `clary <agent|model-server> --from-control <server>`,
//! which fetches its spec from the control plane, since nodes need not share this disk.

use super::{
    ExecHandle, Executor, InstanceLaunch, JobLaunch, Loss, Observed, StopSignal, UnitCredentials,
};
use crate::protocol::JobKind;
use crate::slurm::{SlurmExecutor, Submission};
use std::path::PathBuf;

/// What every node command carries: how to reach this server, and as whom.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The `clary` binary, at the same path on every node.
    pub program: PathBuf,
    pub control_url: String,
    pub region: String,
}

pub struct SlurmCluster {
    pub slurm: SlurmExecutor,
    pub node: NodeContext,
}

/// What a Slurm job of Clary's runs, read back from its name (`clary cluster status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlurmUnit {
    Job(JobKind, String),
    /// `endpoint-instance`, as one string (both parts may contain dashes).
    EndpointInstance(String),
}

const JOB_PREFIX: &str = "clary-";

/// What follows `clary-` in the Slurm job name of a job of `kind` (training jobs keep the
/// bare name they always had).
fn kind_prefix(kind: JobKind) -> &'static str {
    match kind {
        JobKind::TrainingJob => "",
        JobKind::ProcessingJob => "processing-",
    }
}
const INSTANCE_PREFIX: &str = "clary-ep-";

impl SlurmUnit {
    pub fn job_name(&self) -> String {
        match self {
            SlurmUnit::Job(kind, job) => format!("{JOB_PREFIX}{}{job}", kind_prefix(*kind)),
            SlurmUnit::EndpointInstance(what) => format!("{INSTANCE_PREFIX}{what}"),
        }
    }

    /// The unit a Slurm job name stands for, if it is one of Clary's.
    pub fn from_job_name(name: &str) -> Option<Self> {
        if let Some(what) = name.strip_prefix(INSTANCE_PREFIX) {
            Some(SlurmUnit::EndpointInstance(what.to_string()))
        } else {
            let rest = name.strip_prefix(JOB_PREFIX)?;
            let kind = JobKind::ALL
                .into_iter()
                .filter(|k| !kind_prefix(*k).is_empty())
                .find(|k| rest.starts_with(kind_prefix(*k)))
                .unwrap_or_default();
            Some(SlurmUnit::Job(
                kind,
                rest[kind_prefix(kind).len()..].to_string(),
            ))
        }
    }
}

impl SlurmCluster {
    /// `clary <subcommand> --from-control <this server> …`: the node fetches the rest.
    fn node_command(&self, subcommand: &str, args: &[(&str, &str)]) -> Vec<String> {
        let mut cmd = vec![
            self.node.program.display().to_string(),
            subcommand.to_string(),
            "--from-control".into(),
            self.node.control_url.clone(),
            "--region".into(),
            self.node.region.clone(),
            "--node-dir".into(),
            self.slurm.config.node_dir.display().to_string(),
        ];
        for (k, v) in args {
            cmd.push(k.to_string());
            cmd.push(v.to_string());
        }
        cmd
    }

    /// The unit's scoped key pair, exported to the Slurm job's environment (never on a command
    /// line, where `ps` and `squeue` would show it).
    fn node_credentials(credentials: UnitCredentials<'_>) -> Vec<(String, String)> {
        vec![
            (
                "CLARY_AGENT_ACCESS_KEY".into(),
                credentials.access_key.to_string(),
            ),
            (
                "CLARY_AGENT_SECRET_KEY".into(),
                credentials.secret_key.to_string(),
            ),
        ]
    }
}

fn instance_unit(instance: &InstanceLaunch<'_>) -> SlurmUnit {
    SlurmUnit::EndpointInstance(format!("{}-{}", instance.endpoint, instance.instance_id))
}

impl SlurmCluster {
    /// The one active Slurm job of that name; several (which no launch of Clary's makes) are
    /// all cancelled.
    fn adopt_named(&self, name: &str) -> Option<u64> {
        let mut ids = self.slurm.active_jobs_named(name);
        if ids.len() == 1 {
            return ids.pop();
        }
        for id in ids {
            self.slurm.cancel(id, None);
        }
        None
    }
}

impl Executor for SlurmCluster {
    fn name(&self) -> &'static str {
        "Slurm"
    }

    fn queues_itself(&self) -> bool {
        true
    }

    fn shares_disk(&self) -> bool {
        false
    }

    fn launch_job(&self, job: &JobLaunch<'_>) -> Result<Vec<ExecHandle>, String> {
        let id = self.slurm.submit(&Submission {
            name: SlurmUnit::Job(job.kind, job.job_name.to_string()).job_name(),
            nodes: job.hosts.len() as u32,
            instance_type: job.instance_type,
            time_limit_secs: Some(job.time_limit_secs),
            command: self.node_command(
                "agent",
                &[("--job", job.job_name), ("--kind", job.kind.as_str())],
            ),
            env: Self::node_credentials(job.credentials),
            output: None,
        })?;
        Ok(job.hosts.iter().map(|_| ExecHandle::SlurmJob(id)).collect())
    }

    fn launch_instance(&self, instance: &InstanceLaunch<'_>) -> Result<ExecHandle, String> {
        let id = self.slurm.submit(&Submission {
            name: instance_unit(instance).job_name(),
            nodes: 1,
            instance_type: instance.instance_type,
            // An endpoint runs until it is deleted.
            time_limit_secs: None,
            command: self.node_command(
                "model-server",
                &[
                    ("--endpoint", instance.endpoint),
                    ("--instance", instance.instance_id),
                ],
            ),
            env: Self::node_credentials(instance.credentials),
            output: Some(instance.log_path.to_path_buf()),
        })?;
        Ok(ExecHandle::SlurmJob(id))
    }

    fn adopt_job(&self, job: &JobLaunch<'_>) -> Option<Vec<ExecHandle>> {
        let name = SlurmUnit::Job(job.kind, job.job_name.to_string()).job_name();
        let id = self.adopt_named(&name)?;
        Some(job.hosts.iter().map(|_| ExecHandle::SlurmJob(id)).collect())
    }

    fn adopt_instance(&self, instance: &InstanceLaunch<'_>) -> Option<ExecHandle> {
        self.adopt_named(&instance_unit(instance).job_name())
            .map(ExecHandle::SlurmJob)
    }

    fn observe(&self, handle: &ExecHandle) -> Observed {
        let ExecHandle::SlurmJob(id) = handle else {
            return Observed::Gone(Loss {
                detail: Some("a local process is not a Slurm job".into()),
                output: None,
                transient: false,
            });
        };
        let state = self.slurm.state(*id);
        match &state {
            Some(s) if s.state == "PENDING" => Observed::Pending(match s.reason.as_str() {
                "None" => "not yet scheduled".into(),
                r => r.into(),
            }),
            Some(s) if s.is_active() => Observed::Running,
            _ => Observed::Gone(Loss {
                detail: Some(match &state {
                    None => format!("Slurm job {id} is no longer known to Slurm"),
                    Some(s) => format!(
                        "Slurm job {id} ended {} (reason {}, exit code {})",
                        s.state, s.reason, s.exit_code
                    ),
                }),
                output: Some(self.slurm.config.output_dir.join(format!("slurm-{id}.out"))),
                transient: state.as_ref().is_some_and(|s| s.is_transient()),
            }),
        }
    }

    fn signal(&self, handle: &ExecHandle, signal: StopSignal) {
        if let ExecHandle::SlurmJob(id) = handle {
            // The job's steps (the agents) get it; they forward SIGTERM to the script.
            let name = match signal {
                StopSignal::Term => "TERM",
                StopSignal::Kill => "KILL",
            };
            self.slurm.cancel(*id, Some(name));
        }
    }

    fn launched_note(&self, handle: &ExecHandle) -> Option<String> {
        match handle {
            ExecHandle::SlurmJob(id) => Some(format!("Slurm job {id}")),
            ExecHandle::Process(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_round_trip() {
        for unit in [
            SlurmUnit::Job(JobKind::TrainingJob, "my-job".into()),
            SlurmUnit::EndpointInstance("ep-1-abc".into()),
        ] {
            assert_eq!(SlurmUnit::from_job_name(&unit.job_name()), Some(unit));
        }
        assert_eq!(SlurmUnit::from_job_name("someone-elses"), None);
    }
}
