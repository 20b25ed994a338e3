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
        let child = crate::server_secrets::withhold(&mut Command::new(program))
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

impl LocalExecutor {
    /// Processes of this user started as `<program> <subcommand> --spec <spec>`: what a launch
    /// of that spec started, found again by its command line (a server killed between starting
    /// a unit and recording its PID).
    pub fn find_by_spec(&self, subcommand: &str, spec: &Path) -> Vec<HostProcess> {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return Vec::new();
        };
        let spec = spec.as_os_str().as_encoded_bytes();
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if entry.metadata().map(|m| m.uid()).ok() != Some(me) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let matches = argv
                .windows(3)
                .any(|w| w[0] == subcommand.as_bytes() && w[1] == b"--spec" && w[2] == spec);
            if matches
                && let Some(start_ticks) = process_start_ticks(pid)
                && self.is_alive(HostProcess { pid, start_ticks })
            {
                found.push((HostProcess { pid, start_ticks }, parent_pid(pid)));
            }
        }
        // A unit's own child between fork and exec still shows its command line: only the
        // topmost process of each is the unit.
        let pids: Vec<i32> = found.iter().map(|(p, _)| p.pid).collect();
        found
            .into_iter()
            .filter(|(_, parent)| parent.is_none_or(|pp| !pids.contains(&pp)))
            .map(|(p, _)| p)
            .collect()
    }
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces), so index 0
/// is the state and index 19 the start time.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The parent of `pid` (field 1 after the command name in `/proc/<pid>/stat`).
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(1)?.parse().ok()
}

pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_between_fork_and_exec_is_not_a_second_unit() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        // The shell forks a child for `sleep` (`; true` keeps it from exec-ing instead); until
        // that child execs it shows the shell's command line, spec included.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 0.3; sleep 0.3; true", "agent", "--spec"])
            .arg(&spec)
            .spawn()
            .unwrap();
        let exec = LocalExecutor;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(500) {
            let found = exec.find_by_spec("agent", &spec);
            assert!(found.len() <= 1, "{found:?}");
        }
        child.wait().unwrap();
    }

    #[test]
    fn a_unit_is_found_again_by_the_spec_on_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        // A process whose command line names the spec as an agent's would, and that starts no
        // children of its own to outlive the test.
        let mut child = Command::new("perl")
            .args(["-e", "sleep 30", "agent", "--spec"])
            .arg(&spec)
            .spawn()
            .unwrap();
        let exec = LocalExecutor;
        // Between fork and exec the child's command line is still this test's: wait for exec.
        let mut found = Vec::new();
        for _ in 0..200 {
            found = exec.find_by_spec("agent", &spec);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id() as i32);
        assert!(exec.find_by_spec("model-server", &spec).is_empty());
        assert!(
            exec.find_by_spec("agent", &dir.path().join("other.json"))
                .is_empty()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let left = exec.find_by_spec("agent", &spec);
        let cmdlines: Vec<String> = left
            .iter()
            .map(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            left.is_empty(),
            "{left:?} {cmdlines:?} (child was {})",
            child.id()
        );
    }

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
