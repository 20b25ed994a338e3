//! MXNet's parameter server for `dist_*` kvstores, laid out as the toolkit does (docs/contract.md
//! §7.1, §7.2): the scheduler on the scheduler host, one server per host, the user's script as
//! the worker. Unlike the toolkit, the processes are supervised (one dying early ends the job
//! with a reason instead of a hang) and killed when the job ends, and `DMLC_NODE_HOST` pins
//! every node to its host's own address so ps-lite never binds another interface.

use crate::input_overlay::InputView;
use crate::job_log::JobLog;
use crate::network::HostIdentity;
use crate::pyvalue::{Py, decode_hyperparameter};
use clary_exec::protocol::HostSpec;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// `DMLC_PS_ROOT_PORT` when the job sets no `_ps_port`.
const DEFAULT_PS_PORT: &str = "8000";

/// Where the scheduler is and how many nodes of each role there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsLayout {
    pub scheduler_host: String,
    pub root_uri: String,
    pub root_port: String,
    pub verbose: String,
    pub num_hosts: usize,
    /// This host's own address, for `DMLC_NODE_HOST`.
    pub node_host: String,
    pub is_scheduler_host: bool,
}

/// A truthy `sagemaker_parameter_server_enabled` (JSON-decoded, as the toolkit tests it).
fn enabled(hyperparameters: &BTreeMap<String, String>) -> bool {
    hyperparameters
        .get("sagemaker_parameter_server_enabled")
        .map(|raw| match decode_hyperparameter(raw) {
            Py::Bool(b) => b,
            Py::None => false,
            Py::Int(i) => i != "0",
            Py::Str(s) => !s.is_empty(),
            Py::Float(f) => f != 0.0,
            Py::List(l) => !l.is_empty(),
            Py::Dict(d) => !d.is_empty(),
        })
        .unwrap_or(false)
}

impl PsLayout {
    /// The layout for this host, or `None` when the job runs no parameter server. Legacy jobs
    /// always run one, with the scheduler on the first host in sorted order; script mode runs
    /// one on request, with the scheduler on `hosts[0]`.
    pub fn for_host(spec: &HostSpec) -> Option<PsLayout> {
        if !spec.legacy && !enabled(&spec.hyperparameters) {
            return None;
        }
        let scheduler_host = if spec.legacy {
            spec.hosts.iter().min().cloned()
        } else {
            spec.hosts.first().cloned()
        }
        .unwrap_or_else(|| spec.current_host.clone());
        // `_ps_port` must be a string for the toolkit; an int is accepted here too.
        let hp = |name: &str, default: &str| {
            spec.hyperparameters
                .get(name)
                .map(|raw| decode_hyperparameter(raw).py_str())
                .unwrap_or_else(|| default.to_string())
        };
        Some(PsLayout {
            root_uri: spec.address_of(&scheduler_host),
            is_scheduler_host: scheduler_host == spec.current_host,
            scheduler_host,
            root_port: hp("_ps_port", DEFAULT_PS_PORT),
            verbose: hp("_ps_verbose", "0"),
            num_hosts: spec.hosts.len(),
            node_host: spec.address_of(&spec.current_host),
        })
    }

    /// The variables of one role: the toolkit's six, plus `DMLC_NODE_HOST`.
    pub fn role_env(&self, role: &str) -> Vec<(String, String)> {
        [
            ("DMLC_NUM_WORKER", self.num_hosts.to_string()),
            ("DMLC_NUM_SERVER", self.num_hosts.to_string()),
            ("DMLC_ROLE", role.to_string()),
            ("DMLC_PS_ROOT_URI", self.root_uri.clone()),
            ("DMLC_PS_ROOT_PORT", self.root_port.clone()),
            ("PS_VERBOSE", self.verbose.clone()),
            ("DMLC_NODE_HOST", self.node_host.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The scheduler and server processes of this host.
pub struct PsProcesses {
    /// Each process's group, and whether its leader has exited (and been reaped: its PID may
    /// belong to someone else by now, so its group is not signalled).
    groups: Vec<(Pid, Arc<AtomicBool>)>,
    /// Says why, when a process ends badly while the job still runs.
    pub failures: mpsc::UnboundedReceiver<String>,
}

impl PsProcesses {
    /// Starts the scheduler (on the scheduler host) and this host's server: each is
    /// `python -c 'import mxnet'` with its role's variables, which runs ps-lite's loop.
    pub fn start(
        layout: &PsLayout,
        python: &Path,
        env: &BTreeMap<String, String>,
        cwd: &Path,
        identity: &HostIdentity,
        host: &str,
        log: &JobLog,
    ) -> Result<PsProcesses, String> {
        let (tx, failures) = mpsc::unbounded_channel();
        let mut roles = Vec::new();
        if layout.is_scheduler_host {
            roles.push("scheduler");
        }
        roles.push("server");
        let mut groups = Vec::new();
        for role in roles {
            let mut cmd = Command::new(python);
            cmd.args(["-c", "import mxnet"])
                .current_dir(cwd)
                .env_clear()
                .envs(env)
                .envs(layout.role_env(role))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            identity.apply(&mut cmd, InputView::ReadOnly);
            let mut child = cmd.spawn().map_err(|e| {
                format!(
                    "could not start the parameter server {role}: {} -c 'import mxnet': {e}",
                    python.display()
                )
            })?;
            let Some(raw) = child.id() else {
                return Err(format!("the parameter server {role} exited at once"));
            };
            let pid = Pid::from_raw(raw as i32);
            let exited = Arc::new(AtomicBool::new(false));
            groups.push((pid, exited.clone()));
            log.info(&format!(
                "Started the parameter server {role} on {host} (pid {pid}, scheduler {}:{})",
                layout.root_uri, layout.root_port
            ));
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let log = log.clone();
                let prefix = format!("[{role}] ");
                tokio::spawn(async move {
                    let mut lines = BufReader::new(pipe).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        log.line(&format!("{prefix}{line}"));
                    }
                });
            }
            let tx = tx.clone();
            let host = host.to_string();
            tokio::spawn(async move {
                use std::os::unix::process::ExitStatusExt;
                let status = child.wait().await;
                exited.store(true, Ordering::SeqCst);
                if let Ok(status) = status
                    && !status.success()
                {
                    let how = match (status.code(), status.signal()) {
                        (Some(c), _) => format!("exit code {c}"),
                        (_, Some(s)) => format!("signal {s}"),
                        _ => "an unknown status".into(),
                    };
                    let _ = tx.send(format!(
                        "the parameter server {role} on {host} ended with {how} while the worker was running"
                    ));
                }
            });
        }
        Ok(PsProcesses { groups, failures })
    }

    /// Ends every process this host started for the parameter server.
    pub fn stop(self) {
        for (pgid, exited) in self.groups {
            if !exited.load(Ordering::SeqCst) {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(legacy: bool, hps: &[(&str, &str)], current: &str) -> HostSpec {
        let hps: BTreeMap<&str, &str> = hps.iter().copied().collect();
        crate::test_spec(serde_json::json!({
            "legacy": legacy, "current_host": current, "hyperparameters": hps
        }))
    }

    #[test]
    fn script_mode_runs_the_server_only_on_request_with_the_scheduler_on_hosts0() {
        assert!(PsLayout::for_host(&spec(false, &[], "algo-1")).is_none());
        assert!(
            PsLayout::for_host(&spec(
                false,
                &[("sagemaker_parameter_server_enabled", "false")],
                "algo-1"
            ))
            .is_none()
        );
        let l = PsLayout::for_host(&spec(
            false,
            &[
                ("sagemaker_parameter_server_enabled", "true"),
                ("_ps_port", "9001"),
            ],
            "algo-1",
        ))
        .unwrap();
        assert_eq!(l.scheduler_host, "algo-2");
        assert!(!l.is_scheduler_host);
        let env: BTreeMap<_, _> = l.role_env("worker").into_iter().collect();
        assert_eq!(env["DMLC_PS_ROOT_URI"], "127.5.6.2");
        assert_eq!(env["DMLC_PS_ROOT_PORT"], "9001");
        assert_eq!(env["DMLC_NODE_HOST"], "127.5.6.1");
        assert_eq!(env["DMLC_NUM_WORKER"], "2");
        assert_eq!(env["PS_VERBOSE"], "0");
    }

    #[test]
    fn legacy_always_runs_it_with_the_scheduler_first_in_sorted_order_and_an_int_port() {
        let l = PsLayout::for_host(&spec(true, &[("_ps_port", "8123")], "algo-1")).unwrap();
        assert_eq!(l.scheduler_host, "algo-1");
        assert!(l.is_scheduler_host);
        assert_eq!(l.root_uri, "127.5.6.1");
        assert_eq!(l.root_port, "8123");
    }
}
