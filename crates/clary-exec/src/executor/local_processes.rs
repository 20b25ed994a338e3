//! Units as child processes of this machine, each in its own process group.
//!
//! Agents are deliberately not tied to the server's life: a restarted server finds them by PID
//! (and start time) and re-attaches, because they keep reporting to the same address.

use super::{ExecHandle, Executor, InstanceLaunch, JobLaunch, Loss, Observed, StopSignal};
use crate::local::{HostProcess, LocalExecutor};
use std::path::PathBuf;

pub struct LocalProcesses {
    /// The `clary` binary, started as `clary agent` or `clary model-server`.
    pub program: PathBuf,
    processes: LocalExecutor,
}

impl LocalProcesses {
    pub fn new(program: PathBuf) -> Self {
        LocalProcesses {
            program,
            processes: LocalExecutor,
        }
    }
}

impl Executor for LocalProcesses {
    fn name(&self) -> &'static str {
        "local"
    }

    fn queues_itself(&self) -> bool {
        false
    }

    fn shares_disk(&self) -> bool {
        true
    }

    fn launch_job(&self, job: &JobLaunch<'_>) -> Result<Vec<ExecHandle>, String> {
        job.hosts
            .iter()
            .map(|h| {
                self.processes
                    .launch(&self.program, h.spec_path, h.agent_log)
                    .map(ExecHandle::Process)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    fn launch_instance(&self, instance: &InstanceLaunch<'_>) -> Result<ExecHandle, String> {
        // Its key pair in its environment (never on its command line, where `ps` shows it),
        // for the presigned URLs of an external store.
        let c = &instance.credentials;
        let envs: &[(&str, &str)] = if c.access_key.is_empty() {
            &[]
        } else {
            &[
                ("CLARY_AGENT_ACCESS_KEY", c.access_key),
                ("CLARY_AGENT_SECRET_KEY", c.secret_key),
            ]
        };
        self.processes
            .launch_command(
                &self.program,
                &[
                    "model-server".as_ref(),
                    "--spec".as_ref(),
                    instance.spec_path.as_os_str(),
                ],
                envs,
                instance.log_path,
            )
            .map(ExecHandle::Process)
            .map_err(|e| e.to_string())
    }

    fn adopt_job(&self, job: &JobLaunch<'_>) -> Option<Vec<ExecHandle>> {
        let found: Vec<Vec<HostProcess>> = job
            .hosts
            .iter()
            .map(|h| self.processes.find_by_spec("agent", h.spec_path))
            .collect();
        if found.iter().all(|f| f.len() == 1) {
            return Some(found.iter().map(|f| ExecHandle::Process(f[0])).collect());
        }
        for p in found.into_iter().flatten() {
            self.processes.kill(p);
        }
        None
    }

    fn adopt_instance(&self, instance: &InstanceLaunch<'_>) -> Option<ExecHandle> {
        let mut found = self
            .processes
            .find_by_spec("model-server", instance.spec_path);
        if found.len() == 1 {
            return found.pop().map(ExecHandle::Process);
        }
        for p in found {
            self.processes.kill(p);
        }
        None
    }

    fn observe(&self, handle: &ExecHandle) -> Observed {
        match handle {
            ExecHandle::Process(p) if self.processes.is_alive(*p) => Observed::Running,
            // An agent that exits without a result died of something outside the script:
            // worth a retry.
            _ => Observed::Gone(Loss {
                detail: None,
                output: None,
                transient: true,
            }),
        }
    }

    fn signal(&self, handle: &ExecHandle, signal: StopSignal) {
        if let ExecHandle::Process(p) = handle {
            match signal {
                StopSignal::Term => self.processes.terminate(*p),
                StopSignal::Kill => self.processes.kill(*p),
            }
        }
    }

    fn launched_note(&self, _handle: &ExecHandle) -> Option<String> {
        None
    }
}
