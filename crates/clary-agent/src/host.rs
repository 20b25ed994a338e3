//! One host's run of a training job: stage, install, run the script, package, report.

use crate::blocking;
use crate::checkpoints::{self, CheckpointSync};
use crate::container_command;
use crate::contract::{Layout, TrainingContract, check_channel_name};
use crate::input_overlay::{self, InputOverlay};
use crate::job_log::JobLog;
use crate::network::HostIdentity;
use crate::objects::{self, Objects};
use crate::parameter_server::{PsLayout, PsProcesses};
use crate::pipe;
use crate::reporter::Reporter;
use crate::runner::{EntryPoint, RunContext, RunEnd, RunLimits, run_user_process};
use crate::staging;
use clary_exec::protocol::{ContainerCommand, HostSpec, Outcome, ResultReport};
use clary_exec::runtimes::Runtimes;
use clary_store::LocalStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The first this many characters of the failure file become `FailureReason` (as on AWS).
const FAILURE_REASON_CHARS: usize = 1024;

fn num_gpus() -> usize {
    std::process::Command::new("nvidia-smi")
        .arg("--list-gpus")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}

/// Runs the host; returns the agent's exit code (0 when the result reached the server).
pub async fn run_host(spec: HostSpec) -> i32 {
    let reporter = Reporter::new(
        &spec.control_url,
        &spec.access_key,
        &spec.secret_key,
        &spec.region,
        &spec.job_name,
    );
    let (tx, shipper) = reporter.start_log_shipper(&spec.log_stream);
    let log = JobLog::new(tx);
    let result = run_stages(&spec, &reporter, &log).await;
    drop(log);
    let _ = shipper.await;
    match reporter.result(&result).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "clary agent: could not report the result of {}: {e}",
                spec.job_name
            );
            1
        }
    }
}

fn failed(spec: &HostSpec, reason: String) -> ResultReport {
    // The platform's own failures (not the script's or the data's) may pass on a retry.
    let transient = reason.starts_with("InternalServerError");
    ResultReport {
        kind: Default::default(),
        job_name: spec.job_name.clone(),
        host: spec.current_host.clone(),
        outcome: Outcome::Failed,
        failure_reason: Some(reason),
        exit_code: None,
        model_artifacts: None,
        transient,
        attempt: spec.attempt,
    }
}

async fn run_stages(spec: &HostSpec, reporter: &Reporter, log: &JobLog) -> ResultReport {
    let num_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if let Some(e) = spec
        .channels
        .iter()
        .find_map(|c| check_channel_name(&c.name).err())
    {
        return failed(spec, format!("ClientError: {e}"));
    }
    let contract = TrainingContract::new(spec, num_cpus, num_gpus());
    let layout = contract.layout.clone();
    let _ = reporter
        .status(&spec.current_host, "Downloading", "Downloading input data")
        .await;
    let (store, local) = match objects::for_host(spec, tokio::runtime::Handle::current()).await {
        Ok(s) => {
            log.info(&s.how);
            (s.objects, s.local)
        }
        Err(e) => return failed(spec, format!("InternalServerError: {e}")),
    };
    // Pipe channels get FIFOs instead of directories.
    let channel_names: Vec<String> = spec
        .channels
        .iter()
        .filter(|c| c.input_mode != "Pipe")
        .map(|c| c.name.clone())
        .collect();
    if let Err(e) = layout
        .create(&channel_names)
        .and_then(|_| contract.write_config_files(spec))
    {
        return failed(
            spec,
            format!(
                "InternalServerError: preparing {}: {e}",
                layout.base.display()
            ),
        );
    }
    let mut identity = match HostIdentity::prepare(spec) {
        Ok(i) => i,
        Err(e) => {
            return failed(
                spec,
                format!("InternalServerError: writing the job's hosts file: {e}"),
            );
        }
    };
    // A job's own command uses /opt/ml as written, so it runs only where the host's directory
    // can be bound there; script mode gets it where possible (for scripts with hard-coded
    // /opt/ml paths) and otherwise finds its files through SM_* and SAGEMAKER_BASE_DIR.
    match identity.bind_opt_ml(&layout.base) {
        Ok(()) => log.info(&format!(
            "The job's processes see this host's directory at /opt/ml (a private mount namespace): {}",
            layout.base.display()
        )),
        Err(why) if spec.container.is_some() => {
            return failed(
                spec,
                format!(
                    "ClientError: this job runs its own ContainerEntrypoint, which finds its files under /opt/ml as on SageMaker, and this host cannot put them there: {why}"
                ),
            );
        }
        Err(why) => log.info(&format!(
            "The job finds its files through the SM_* variables and SAGEMAKER_BASE_DIR ({}); /opt/ml itself is not this host's: {why}",
            layout.base.display()
        )),
    }
    // The runtime (built once, with its progress in this job's log) and the data, in parallel.
    let python = {
        let runtimes = Runtimes::new(spec.runtimes_dir.clone());
        let def = runtimes.find(&spec.runtime);
        let log2 = log.clone();
        let spec_runtime = spec.runtime.clone();
        let ensure = tokio::task::spawn_blocking(move || {
            let def = def.ok_or_else(|| {
                format!("runtime {spec_runtime:?} is not known to this agent: it was removed after the job was created, or the server and the agent are different clary binaries (restart the server after upgrading)")
            })?;
            runtimes.ensure(&def, &mut |line| log2.line(line))
        });
        let inputs = {
            let (spec, store, layout, log) =
                (spec.clone(), store.clone(), layout.clone(), log.clone());
            blocking(move || {
                let all_pipe = spec.channels.iter().all(|c| c.input_mode == "Pipe");
                let link = input_overlay::store_to_link(local, all_pipe, &spec.base_dir, &log);
                present_inputs(&spec, &store, link.as_deref(), &layout, &log)
            })
            .await
        };
        match inputs {
            Ok(linked) if !linked.is_empty() => {
                let dirs: Vec<(String, PathBuf)> = linked
                    .into_iter()
                    .map(|name| {
                        let dir = layout.channel(&name);
                        (name, dir)
                    })
                    .collect();
                match InputOverlay::prepare(&input_overlay::state_dir(&spec.base_dir), &dirs) {
                    Ok(overlay) => identity.protect_inputs(overlay),
                    Err(e) => {
                        return failed(
                            spec,
                            format!("InternalServerError: preparing the input overlays: {e}"),
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(reason) => return failed(spec, reason),
        }
        match ensure.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return failed(
                    spec,
                    format!(
                        "InternalServerError: the {} runtime could not be built: {e}",
                        spec.runtime
                    ),
                );
            }
            Err(e) => return failed(spec, format!("InternalServerError: {e}")),
        }
    };
    if spec.device == "gpu" && contract.num_gpus == 0 {
        log.info("The job asked for a GPU image, but this host has no GPU: it runs on CPU MXNet (SM_NUM_GPUS=0)");
    }
    if let Some(command) = &spec.container {
        // The toolkit does not run: no code from sagemaker_submit_directory, no
        // requirements.txt, no parameter server; the command does what it needs itself.
        let venv = layout.base.join(".clary-venv");
        let python = {
            let (python, venv) = (python.clone(), venv.clone());
            match blocking(move || container_command::prepare_python(&python, &venv)).await {
                Ok(p) => p,
                Err(e) => {
                    return failed(
                        spec,
                        format!("InternalServerError: preparing the job's Python environment: {e}"),
                    );
                }
            }
        };
        let mut env = build_env(spec, &contract, &python);
        env.insert(
            "CLARY_HOSTS_FILE".into(),
            identity.hosts_file.display().to_string(),
        );
        let run = UserProcess::Container { command };
        return run_and_report(
            spec, store, reporter, log, &identity, &layout, None, &env, run,
        )
        .await;
    }
    let code = {
        let (store, module_dir, code, log) = (
            store.clone(),
            contract.module_dir.clone(),
            layout.code(),
            log.clone(),
        );
        blocking(move || staging::fetch_code(&store, &module_dir, &code, &log)).await
    };
    if let Err(e) = code {
        return failed(spec, format!("ClientError: {e}"));
    }
    let entry = if spec.legacy {
        EntryPoint::Legacy(contract.entry_point.clone())
    } else {
        EntryPoint::classify(&contract.entry_point, &layout.code())
    };
    // The legacy container installed nothing; script mode installs requirements.txt.
    let python = if spec.legacy {
        python
    } else {
        match staging::install_requirements(&entry, &python, &layout, &identity, log).await {
            Ok(p) => p,
            Err(e) => return failed_with_file(spec, &layout.output(), e),
        }
    };
    let mut env = build_env(spec, &contract, &python);
    env.insert(
        "CLARY_HOSTS_FILE".into(),
        identity.hosts_file.display().to_string(),
    );
    let args = contract.cmd_args();
    let mut ps = None;
    if let Some(ps_layout) = PsLayout::for_host(spec) {
        match PsProcesses::start(
            &ps_layout,
            &python,
            &env,
            &layout.code(),
            &identity,
            &spec.current_host,
            log,
        ) {
            Ok(p) => ps = Some(p),
            Err(e) => return failed(spec, format!("InternalServerError: {e}")),
        }
        env.extend(ps_layout.role_env("worker"));
    }
    let run = UserProcess::Toolkit {
        entry: &entry,
        python: &python,
        args: &args,
    };
    run_and_report(
        spec, store, reporter, log, &identity, &layout, ps, &env, run,
    )
    .await
}

/// What runs as the job's user process.
enum UserProcess<'a> {
    /// The toolkit's way: the entry point with the hyperparameter arguments.
    Toolkit {
        entry: &'a EntryPoint,
        python: &'a Path,
        args: &'a [String],
    },
    /// The job's own `ContainerEntrypoint` and `ContainerArguments`.
    Container { command: &'a ContainerCommand },
}

/// Runs the user's process with what goes along with it (checkpoint sync, the system monitor,
/// the parameter server's supervision), then uploads what it left and shapes the result.
#[allow(clippy::too_many_arguments)]
async fn run_and_report(
    spec: &HostSpec,
    store: Objects,
    reporter: &Reporter,
    log: &JobLog,
    identity: &HostIdentity,
    layout: &Layout,
    mut ps: Option<PsProcesses>,
    env: &BTreeMap<String, String>,
    run: UserProcess<'_>,
) -> ResultReport {
    let sync = spec
        .checkpoint
        .clone()
        .map(|cp| CheckpointSync::start(store.clone(), cp, log.clone()));
    let _ = reporter
        .status(
            &spec.current_host,
            "Training",
            "Training image download completed. Training in progress.",
        )
        .await;
    let code_dir = match run {
        UserProcess::Toolkit { .. } => layout.code(),
        // A container starts in its image's working directory; /opt/ml stands in for it.
        UserProcess::Container { .. } => layout.base.clone(),
    };
    let monitor =
        crate::monitor::Monitor::start(spec, store.clone(), reporter.clone(), log.clone());
    let ctx = RunContext {
        cwd: &code_dir,
        limits: RunLimits {
            max_runtime_secs: spec.max_runtime_secs,
            stop_grace_secs: spec.stop_grace_secs,
        },
        log,
        identity,
        abort: ps.as_mut().map(|p| &mut p.failures),
    };
    let end = match run {
        UserProcess::Toolkit {
            entry,
            python,
            args,
        } => run_user_process(entry, python, args, env, ctx).await,
        UserProcess::Container { command } => container_command::run(command, env, ctx).await,
    };
    if let Some(m) = monitor {
        m.finish().await;
    }
    if let Some(p) = ps {
        p.stop();
    }
    let checkpoint_error = match sync {
        Some(sync) => match sync.finish().await {
            Ok(n) => {
                log.info(&format!("Checkpoints: {n} files uploaded"));
                None
            }
            Err(e) => Some(format!("ClientError: uploading checkpoints failed: {e}")),
        },
        None => None,
    };
    let transient = matches!(
        end,
        RunEnd::Signalled {
            stopped: false,
            timed_out: false,
            ..
        }
    );
    let (outcome, exit_code, reason) = outcome_of(&end, spec, &layout.output());
    let (outcome, reason) = match checkpoint_error {
        Some(e) if outcome == Outcome::Completed => (Outcome::Failed, Some(e)),
        _ => (outcome, reason),
    };
    let _ = reporter
        .status(
            &spec.current_host,
            "Uploading",
            "Uploading generated training model",
        )
        .await;
    let uploaded = {
        let (spec, layout, log) = (spec.clone(), layout.clone(), log.clone());
        blocking(move || staging::upload_artifacts(&store, &spec, &layout, &log)).await
    };
    let model_artifacts = match uploaded {
        Ok(uri) => uri,
        Err(e) => {
            return failed(
                spec,
                format!("ClientError: uploading model artifacts failed: {e}"),
            );
        }
    };
    ResultReport {
        kind: Default::default(),
        job_name: spec.job_name.clone(),
        host: spec.current_host.clone(),
        outcome,
        failure_reason: reason,
        exit_code,
        model_artifacts,
        transient: transient && outcome == Outcome::Failed,
        attempt: spec.attempt,
    }
}

/// The job's outcome, exit code and failure reason from how the script ended (the toolkit's
/// texts, written to `output/failure` unless the script left its own).
fn outcome_of(
    end: &RunEnd,
    spec: &HostSpec,
    output_dir: &Path,
) -> (Outcome, Option<i32>, Option<String>) {
    match end {
        RunEnd::Exited { code: 0, .. } => {
            let _ = std::fs::write(output_dir.join("success"), "");
            (Outcome::Completed, Some(0), None)
        }
        RunEnd::Exited { code, command } => {
            let text = format!(
                "ExecuteUserScriptError:\nExitCode {code}\nErrorMessage \"\"\nCommand \"{command}\""
            );
            (
                Outcome::Failed,
                Some(*code),
                Some(failure_reason(output_dir, &text)),
            )
        }
        RunEnd::Signalled {
            signal,
            command,
            stopped: false,
            timed_out: false,
        } => {
            let extra = if *signal == 9 {
                "\nExtraInfo \"OutOfMemory: Process killed by SIGKILL (signal 9)\""
            } else {
                ""
            };
            let text = format!(
                "ExecuteUserScriptError:\nExitCode {}\nErrorMessage \"\"\nCommand \"{command}\"{extra}",
                128 + signal
            );
            (
                Outcome::Failed,
                Some(128 + signal),
                Some(failure_reason(output_dir, &text)),
            )
        }
        RunEnd::Signalled {
            timed_out: true, ..
        } => (
            Outcome::MaxRuntimeExceeded,
            None,
            Some(format!(
                "MaxRuntimeExceeded: Training job exceeded MaxRuntimeInSeconds ({} s)",
                spec.max_runtime_secs
            )),
        ),
        RunEnd::Signalled { .. } => (Outcome::Stopped, None, None),
        RunEnd::SpawnFailed(e) => (
            Outcome::Failed,
            None,
            Some(failure_reason(
                output_dir,
                &format!("ExecuteUserScriptError:\n{e}"),
            )),
        ),
        RunEnd::Aborted(why) => (
            Outcome::Failed,
            None,
            Some(failure_reason(
                output_dir,
                &format!("ParameterServerError:\n{why}"),
            )),
        ),
    }
}

/// Makes every channel appear (files, or the first FIFO with its feeder running) and seeds
/// the checkpoint directory; returns the channels with files linked from `link`, which the
/// job may see only through an overlay. `Err` is the job's failure reason.
fn present_inputs(
    spec: &HostSpec,
    store: &Objects,
    link: Option<&LocalStore>,
    layout: &Layout,
    log: &JobLog,
) -> Result<Vec<String>, String> {
    let mut linked = Vec::new();
    let host_index = spec
        .hosts
        .iter()
        .position(|h| h == &spec.current_host)
        .unwrap_or(0);
    for ch in &spec.channels {
        let objects = match staging::channel_objects(store, ch, host_index, spec.hosts.len()) {
            Ok(o) => o,
            Err(e) => return Err(format!("ClientError: {e}")),
        };
        let n = objects.len();
        let share = if ch.sharded && spec.hosts.len() > 1 {
            " (this host's ShardedByS3Key share)".to_string()
        } else {
            String::new()
        };
        if ch.input_mode == "Pipe" {
            if let Err(e) = pipe::start_channel(
                store.clone(),
                ch.clone(),
                objects,
                layout.data(),
                log.downgrade(),
            ) {
                return Err(format!(
                    "InternalServerError: making the FIFO of channel {}: {e}",
                    ch.name
                ));
            }
            log.info(&format!(
                "Channel {}: {n} objects from s3://{}/{}{share} stream through {}_0, {}_1, … in {}",
                ch.name,
                ch.bucket,
                ch.prefix,
                ch.name,
                ch.name,
                layout.data().display()
            ));
            continue;
        }
        match staging::stage_channel(store, link, ch, &objects, &layout.channel(&ch.name)) {
            Ok(staged) => {
                if staged.linked > 0 {
                    linked.push(ch.name.clone());
                }
                log.info(&format!(
                    "Channel {}: {} objects from s3://{}/{}{share} ready: {}",
                    ch.name,
                    staged.files(),
                    ch.bucket,
                    ch.prefix,
                    staged.method()
                ))
            }
            Err(e) => return Err(format!("ClientError: {e}")),
        }
    }
    if let Some(cp) = &spec.checkpoint {
        match checkpoints::seed(store, cp) {
            Ok(n) => log.info(&format!(
                "Checkpoints: {n} files from s3://{}/{} in {}",
                cp.bucket,
                cp.prefix,
                cp.local_path.display()
            )),
            Err(e) => return Err(format!("ClientError: checkpoints: {e}")),
        }
    }
    Ok(linked)
}

/// Writes the toolkit's failure text unless the script left its own (TT 5.1.4 keeps an
/// existing `output/failure`, docs/contract.md §6.1), and returns the `FailureReason` from
/// the file.
fn failure_reason(output_dir: &Path, text: &str) -> String {
    let path = output_dir.join("failure");
    if !path.exists() {
        let _ = std::fs::write(&path, text);
    }
    let body = std::fs::read_to_string(&path).unwrap_or_else(|_| text.to_string());
    let body: String = body.chars().take(FAILURE_REASON_CHARS).collect();
    format!("AlgorithmError: {body}")
}

fn failed_with_file(spec: &HostSpec, output_dir: &Path, text: String) -> ResultReport {
    failed(spec, failure_reason(output_dir, &text))
}

/// The script's environment: the agent's own (PATH, HOME, ...), the platform variables, the
/// toolkit's `SM_*` set, and credentials that point boto3 in the script back at Clary.
fn build_env(
    spec: &HostSpec,
    contract: &TrainingContract,
    python: &Path,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("SM_") && !k.starts_with("CLARY_"))
        .collect();
    let code = contract.layout.code();
    let mut pythonpath = vec![
        code.display().to_string(),
        spec.python_shims.display().to_string(),
    ];
    if let Ok(existing) = std::env::var("PYTHONPATH")
        && !existing.is_empty()
    {
        pythonpath.push(existing);
    }
    let bin_dir = python.parent().map(PathBuf::from).unwrap_or_default();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        env.get("PATH")
            .cloned()
            .unwrap_or_else(|| "/usr/bin:/bin".into())
    );
    let region = spec.region.clone();
    let fixed: [(&str, String); 16] = [
        ("PATH", path),
        ("PYTHONPATH", pythonpath.join(":")),
        ("PYTHONUNBUFFERED", "1".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("TRAINING_JOB_NAME", spec.job_name.clone()),
        ("TRAINING_JOB_ARN", spec.job_arn.clone()),
        (
            "SAGEMAKER_BASE_DIR",
            contract.layout.base.display().to_string(),
        ),
        ("SAGEMAKER_TRAINING_MODULE", spec.framework_module.clone()),
        ("SAGEMAKER_JOB_NAME", spec.job_name.clone()),
        ("SAGEMAKER_REGION", region.clone()),
        ("CURRENT_HOST", spec.current_host.clone()),
        ("AWS_REGION", region.clone()),
        ("AWS_DEFAULT_REGION", region),
        (
            "AWS_ENDPOINT_URL",
            spec.control_url.trim_end_matches('/').to_string(),
        ),
        ("AWS_ACCESS_KEY_ID", spec.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", spec.secret_key.clone()),
    ];
    for (k, v) in fixed {
        env.insert(k.to_string(), v);
    }
    for (k, v) in &spec.environment {
        env.insert(k.clone(), v.clone());
    }
    env.extend(contract.sm_env(spec, &spec.framework_module));
    env
}

/// For `clary agent --dry-run`: the config files are written and the environment and
/// arguments the script would get are returned, without running anything.
pub fn dry_run(spec: &HostSpec) -> std::io::Result<serde_json::Value> {
    let num_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let contract = TrainingContract::new(spec, num_cpus, num_gpus());
    let channels: Vec<String> = spec.channels.iter().map(|c| c.name.clone()).collect();
    contract.layout.create(&channels)?;
    contract.write_config_files(spec)?;
    Ok(serde_json::json!({
        "sm_env": contract.sm_env(spec, &spec.framework_module),
        "args": contract.cmd_args(),
        "entry_point": contract.entry_point,
    }))
}
