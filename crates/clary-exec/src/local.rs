//! The local executor: host agents as child processes of this machine.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("could not open the log {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
}

/// A started agent, identified by PID and the kernel's start time of that PID, so a restarted
/// server never mistakes a recycled PID for its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostProcess {
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Clone, Default)]
pub struct LocalExecutor;

impl LocalExecutor {
    /// Starts `program agent --spec <spec>` in a new process group; its own stdout and stderr
    /// (not the job's, which it streams as log events) go to `agent_log`.
    pub fn launch(
        &self,
        program: &Path,
        spec: &Path,
        agent_log: &Path,
    ) -> Result<HostProcess, ExecError> {
        self.launch_command(
            program,
            &["agent".as_ref(), "--spec".as_ref(), spec.as_os_str()],
            agent_log,
        )
    }

    /// Starts `program args…` in a new process group with stdout and stderr appended to `log`.
    pub fn launch_command(
        &self,
        program: &Path,
        args: &[&std::ffi::OsStr],
        agent_log: &Path,
    ) -> Result<HostProcess, ExecError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(agent_log)
            .map_err(|source| ExecError::Log {
                path: agent_log.display().to_string(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| ExecError::Log {
            path: agent_log.display().to_string(),
            source,
        })?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let pid = child.id() as i32;
        // Read before the reaper can run: an unreaped child, even one that already exited,
        // still has its /proc entry. Without it a recycled PID could pass for this process.
        let start_ticks = process_start_ticks(pid).unwrap_or(0);
        // The child is reaped by a thread so it never lingers as a zombie; a restarted server
        // watches agents it did not start by polling their PID instead.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(HostProcess { pid, start_ticks })
    }

    /// Asks the agent to stop the job (it forwards SIGTERM to the user's process group and
    /// escalates to SIGKILL after the grace period itself).
    pub fn terminate(&self, host: HostProcess) {
        if self.is_alive(host) {
            let _ = nix::sys::signal::kill(Pid::from_raw(host.pid), Signal::SIGTERM);
        }
    }

    /// Kills the agent's whole process group at once.
    pub fn kill(&self, host: HostProcess) {
        if self.is_alive(host) {
            let _ = killpg(Pid::from_raw(host.pid), Signal::SIGKILL);
        }
    }

    /// True while the same process (PID and start time) is running and not a zombie. A
    /// process whose start time is unknown is never taken for alive: PIDs are recycled (fast,
    /// where `pid_max` is 32768), and signalling a stranger's process group is worse than
    /// losing track of one of ours.
    pub fn is_alive(&self, host: HostProcess) -> bool {
        if host.pid <= 0 || host.start_ticks == 0 {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", host.pid)) {
            Ok(stat) => {
                let fields = stat_fields(&stat);
                let state = fields.first().copied().unwrap_or("Z");
                let ticks = fields
                    .get(19)
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                state != "Z" && ticks == host.start_ticks
            }
            Err(_) => false,
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces), so index 0
/// is the state and index 19 the start time.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let ticks = process_start_ticks(me).unwrap();
        let exec = LocalExecutor;
        assert!(exec.is_alive(HostProcess {
            pid: me,
            start_ticks: ticks
        }));
        assert!(!exec.is_alive(HostProcess {
            pid: me,
            start_ticks: ticks + 1
        }));
        assert!(!exec.is_alive(HostProcess {
            pid: i32::MAX - 1,
            start_ticks: 0
        }));
        // An unknown start time never passes, even for a live PID.
        assert!(!exec.is_alive(HostProcess {
            pid: me,
            start_ticks: 0
        }));
    }
}
