//! Running the user's entry point: classification (TT `_entry_point_type`), the process group,
//! output streaming, SIGTERM forwarding with a SIGKILL grace period, and `MaxRuntimeInSeconds`.

use crate::input_overlay::InputView;
use crate::job_log::JobLog;
use crate::network::HostIdentity;
use clary_exec::protocol::LogLine;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// CloudWatch's limit on one event; longer lines are cut.
const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPoint {
    /// A `.sh` file, or any file that is neither `.py` nor part of a package: run directly.
    Command(String),
    /// `setup.py` in the code directory: installed, then run with `python -m`.
    Package(String),
    Program(String),
    /// MXNet 1.2 and earlier: the script is imported and its `train()` called.
    Legacy(String),
}

impl EntryPoint {
    pub fn classify(name: &str, code_dir: &Path) -> Self {
        if name.ends_with(".sh") {
            EntryPoint::Command(name.into())
        } else if code_dir.join("setup.py").is_file() {
            EntryPoint::Package(name.into())
        } else if name.ends_with(".py") {
            EntryPoint::Program(name.into())
        } else {
            EntryPoint::Command(name.into())
        }
    }
}

#[derive(Debug)]
pub enum RunEnd {
    Exited {
        code: i32,
        command: String,
    },
    Signalled {
        signal: i32,
        command: String,
        stopped: bool,
        timed_out: bool,
    },
    SpawnFailed(String),
    /// Something the script depends on (the parameter server) failed; the script was ended.
    Aborted(String),
}

pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// The program and arguments the toolkit would run for this entry point.
pub fn command_line(entry: &EntryPoint, python: &Path, args: &[String]) -> (String, Vec<String>) {
    match entry {
        EntryPoint::Program(script) => {
            let mut v = vec!["--".to_string(), script.clone()];
            v.extend(args.iter().cloned());
            (python.display().to_string(), v)
        }
        EntryPoint::Package(script) => {
            let module = script.strip_suffix(".py").unwrap_or(script).to_string();
            let mut v = vec!["-m".to_string(), module];
            v.extend(args.iter().cloned());
            (python.display().to_string(), v)
        }
        EntryPoint::Legacy(script) => (
            python.display().to_string(),
            vec!["-m".into(), "clary_training.legacy".into(), script.clone()],
        ),
        EntryPoint::Command(script) => {
            let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
            (
                "/bin/sh".into(),
                vec!["-c".into(), format!("./{script} {}", quoted.join(" "))],
            )
        }
    }
}

fn forward_lines<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tx: tokio::sync::mpsc::UnboundedSender<LogLine>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).split(b'\n');
        while let Ok(Some(mut line)) = lines.next_segment().await {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            line.truncate(MAX_EVENT_BYTES);
            let message = String::from_utf8_lossy(&line).into_owned();
            let _ = tx.send(LogLine {
                timestamp: chrono::Utc::now().timestamp_millis(),
                message,
            });
        }
    })
}

/// Runs a helper command (pip, which runs the job's `setup.py`) with its output in the job
/// log, in the host's namespaces with the channels read-only; returns its exit code.
pub async fn stream_command(
    program: &Path,
    args: &[String],
    cwd: &Path,
    identity: &HostIdentity,
    log: &JobLog,
) -> Result<i32, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    identity.apply(&mut cmd, InputView::ReadOnly);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", program.display()))?;
    let out = forward_lines(child.stdout.take().expect("piped"), log.sender());
    let err = forward_lines(child.stderr.take().expect("piped"), log.sender());
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let _ = tokio::join!(out, err);
    Ok(status.code().unwrap_or(1))
}

/// When a job's process is ended: `MaxRuntimeInSeconds`, and how long SIGTERM has before
/// SIGKILL follows.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub max_runtime_secs: u64,
    pub stop_grace_secs: u64,
}

/// How the user's process is started and what can end it early.
pub struct RunContext<'a> {
    /// The working directory of the process.
    pub cwd: &'a Path,
    pub limits: RunLimits,
    pub log: &'a JobLog,
    pub identity: &'a HostIdentity,
    /// A reason arriving here ends the script (SIGTERM, then SIGKILL after the grace period).
    pub abort: Option<&'a mut mpsc::UnboundedReceiver<String>>,
}

/// Runs the entry point to its end, streaming its output into the job log.
pub async fn run_user_process(
    entry: &EntryPoint,
    python: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    ctx: RunContext<'_>,
) -> RunEnd {
    if let EntryPoint::Command(script) = entry {
        // The toolkit makes the script 0777; executable by its owner is all a run needs, and
        // nothing under the data dir is for other users.
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(ctx.cwd.join(script), std::fs::Permissions::from_mode(0o700));
    }
    let (program, argv) = command_line(entry, python, args);
    let shown = format!("{program} {}", argv.join(" "));
    ctx.log.info(&format!(
        "Invoking user script\n\nTraining Env:\n\n{}\n\nEnvironment variables:\n\n{}\n\nInvoking script with the following command:\n\n{shown}\n",
        env.get("SM_TRAINING_ENV").cloned().unwrap_or_default(),
        env.iter()
            .filter(|(k, _)| k.starts_with("SM_") && *k != "SM_TRAINING_ENV")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    run_process(&program, &argv, env, ctx).await
}

/// Runs `program` with `argv` in its own process group to its end, streaming its output into
/// the job log, with the job's environment `env` (nothing else), its namespaces, stop and
/// `MaxRuntimeInSeconds` handling.
pub async fn run_process(
    program: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    ctx: RunContext<'_>,
) -> RunEnd {
    let RunContext {
        cwd,
        limits,
        log,
        identity,
        mut abort,
    } = ctx;
    let shown = format!("{program} {}", argv.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    identity.apply(&mut cmd, InputView::Writable);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return RunEnd::SpawnFailed(format!("could not start {shown}: {e}")),
    };
    let pgid = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or(0));
    let out = forward_lines(child.stdout.take().expect("piped"), log.sender());
    let err = forward_lines(child.stderr.take().expect("piped"), log.sender());
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let deadline = tokio::time::sleep(Duration::from_secs(limits.max_runtime_secs));
    tokio::pin!(deadline);
    let mut stopped = false;
    let mut timed_out = false;
    let mut kill_at: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut aborted: Option<String> = None;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            reason = async { abort.as_mut().expect("guarded").recv().await }, if abort.is_some() && aborted.is_none() && !stopped && !timed_out => {
                let Some(reason) = reason else { abort = None; continue };
                log.info(&format!("Ending the training process: {reason}; SIGKILL follows in {} s", limits.stop_grace_secs));
                let _ = killpg(pgid, Signal::SIGTERM);
                aborted = Some(reason);
                kill_at = Some(Box::pin(tokio::time::sleep(Duration::from_secs(limits.stop_grace_secs))));
            }
            _ = async { sigterm.as_mut().expect("guarded").recv().await }, if sigterm.is_some() && !stopped && !timed_out => {
                stopped = true;
                log.info(&format!("Stop requested: sending SIGTERM to the training process group; SIGKILL follows in {} s", limits.stop_grace_secs));
                let _ = killpg(pgid, Signal::SIGTERM);
                kill_at = Some(Box::pin(tokio::time::sleep(Duration::from_secs(limits.stop_grace_secs))));
            }
            _ = &mut deadline, if !stopped && !timed_out => {
                timed_out = true;
                log.info(&format!("MaxRuntimeInSeconds ({} s) exceeded: sending SIGTERM; SIGKILL follows in {} s", limits.max_runtime_secs, limits.stop_grace_secs));
                let _ = killpg(pgid, Signal::SIGTERM);
                kill_at = Some(Box::pin(tokio::time::sleep(Duration::from_secs(limits.stop_grace_secs))));
            }
            _ = async { kill_at.as_mut().expect("guarded").await }, if kill_at.is_some() => {
                log.info("Grace period over: sending SIGKILL");
                let _ = killpg(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    // A cluster's stop (Slurm's `scancel --signal=TERM`) signals every process of the step at
    // once, the script as well as this agent: a script that died of SIGTERM before the agent
    // saw its own is still a stop, if the agent's arrives right behind it.
    {
        use std::os::unix::process::ExitStatusExt;
        let by_sigterm = status.as_ref().is_ok_and(|s| s.signal() == Some(15));
        if by_sigterm
            && !stopped
            && !timed_out
            && let Some(sig) = sigterm.as_mut()
            && tokio::time::timeout(Duration::from_millis(500), sig.recv())
                .await
                .is_ok()
        {
            stopped = true;
            log.info(
                "Stop requested: the training process group got SIGTERM together with this agent",
            );
        }
    }
    // Children the script left behind go with it.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = tokio::join!(out, err);
    if let Some(reason) = aborted {
        return RunEnd::Aborted(reason);
    }
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(code), _) if !stopped && !timed_out => RunEnd::Exited {
                    code,
                    command: shown,
                },
                (_, Some(sig)) => RunEnd::Signalled {
                    signal: sig,
                    command: shown,
                    stopped,
                    timed_out,
                },
                _ => {
                    // Exited on its own after SIGTERM: still a stop (or a timeout).
                    RunEnd::Signalled {
                        signal: 15,
                        command: shown,
                        stopped,
                        timed_out,
                    }
                }
            }
        }
        Err(e) => RunEnd::SpawnFailed(format!("waiting for {shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_classified_like_the_toolkit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            EntryPoint::classify("train.py", dir.path()),
            EntryPoint::Program("train.py".into())
        );
        assert_eq!(
            EntryPoint::classify("run.sh", dir.path()),
            EntryPoint::Command("run.sh".into())
        );
        assert_eq!(
            EntryPoint::classify("bin", dir.path()),
            EntryPoint::Command("bin".into())
        );
        std::fs::write(dir.path().join("setup.py"), "").unwrap();
        assert_eq!(
            EntryPoint::classify("train.py", dir.path()),
            EntryPoint::Package("train.py".into())
        );
        let (p, a) = command_line(
            &EntryPoint::Command("run.sh".into()),
            Path::new("py"),
            &["a b".into(), "--x".into()],
        );
        assert_eq!(
            (p.as_str(), a[1].as_str()),
            ("/bin/sh", "./run.sh 'a b' --x")
        );
    }
}
