//! One host's run of a processing job: stage each input at its `LocalPath`, write
//! `/opt/ml/config/resourceconfig.json`, run the container's entrypoint and arguments with the
//! image's runtime first on `PATH`, upload each output (as files settle for `Continuous`, all
//! at the end for `EndOfJob`), report. The container paths (`/opt/ml/processing/...`) live
//! in the host's own directory standing in for `/opt/ml`.

use crate::blocking;
use crate::checkpoints::{self, CheckpointSync};
use crate::container_command;
use crate::input_overlay::{self, InputOverlay};
use crate::job_log::JobLog;
use crate::network::HostIdentity;
use crate::objects::{self, Objects};
use crate::pipe;
use crate::reporter::Reporter;
use crate::runner::{RunContext, RunEnd, RunLimits};
use crate::staging;
use clary_exec::protocol::{
    CheckpointSpec, JobKind, Outcome, ProcessingHostSpec, ProcessingOutputSpec, ResultReport,
};
use clary_exec::runtimes::Runtimes;
use clary_sigv4::Signer;
use clary_store::LocalStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where SageMaker puts a processing job's container paths; `LocalPath`s must be below it.
pub const PROCESSING_ROOT: &str = "/opt/ml/processing/";
/// The container's `/opt/ml`, which the host's `base_dir` stands in for.
const OPT_ML: &str = "/opt/ml";

/// The first this many characters of the job's last output become `ExitMessage`'s tail.
const FAILURE_REASON_CHARS: usize = 1024;

/// The host directory of a container path under `/opt/ml` (`None` if it is not one, or
/// climbs out with `..`).
pub fn host_path(base_dir: &Path, container_path: &str) -> Option<PathBuf> {
    let rest = container_path.strip_prefix(OPT_ML)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut out = base_dir.to_path_buf();
    for seg in rest.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => out.push(s),
        }
    }
    Some(out)
}

/// `resourceconfig.json` as SageMaker writes it for a processing container.
pub fn resource_config(spec: &ProcessingHostSpec) -> serde_json::Value {
    serde_json::json!({
        "current_host": spec.current_host,
        "hosts": spec.hosts,
    })
}

/// Runs the host; returns the agent's exit code (0 when the result reached the server).
pub async fn run_processing_host(spec: ProcessingHostSpec) -> i32 {
    let reporter = Reporter::new(
        &spec.control_url,
        &spec.access_key,
        &spec.secret_key,
        &spec.region,
        &spec.job_name,
    )
    .for_kind(JobKind::ProcessingJob);
    let (tx, shipper) = reporter.start_log_shipper(&spec.log_stream);
    let log = JobLog::new(tx);
    let result = run_stages(&spec, &reporter, &log).await;
    drop(log);
    let _ = shipper.await;
    match reporter.result(&result).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "clary agent: could not report the result of processing job {}: {e}",
                spec.job_name
            );
            1
        }
    }
}

fn report(
    spec: &ProcessingHostSpec,
    outcome: Outcome,
    reason: Option<String>,
    exit_code: Option<i32>,
) -> ResultReport {
    ResultReport {
        kind: JobKind::ProcessingJob,
        job_name: spec.job_name.clone(),
        host: spec.current_host.clone(),
        outcome,
        failure_reason: reason,
        exit_code,
        model_artifacts: None,
        transient: false,
        attempt: spec.attempt,
    }
}

fn failed(spec: &ProcessingHostSpec, reason: String) -> ResultReport {
    report(spec, Outcome::Failed, Some(reason), None)
}

/// Each input's host directory (File) or FIFO directory and name (Pipe), each output's
/// directory: checked before anything is made.
struct Paths {
    inputs: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
}

fn map_paths(spec: &ProcessingHostSpec) -> Result<Paths, String> {
    let map = |what: &str, name: &str, local: &str| {
        if !local.starts_with(PROCESSING_ROOT) {
            return Err(format!(
                "{what} {name}: LocalPath {local:?} must begin with {PROCESSING_ROOT}"
            ));
        }
        host_path(&spec.base_dir, local)
            .ok_or_else(|| format!("{what} {name}: LocalPath {local:?} is not a plain path"))
    };
    let inputs = spec
        .inputs
        .iter()
        .map(|i| map("ProcessingInput", &i.source.name, &i.local_path))
        .collect::<Result<_, _>>()?;
    let outputs = spec
        .outputs
        .iter()
        .map(|o| map("ProcessingOutput", &o.name, &o.local_path))
        .collect::<Result<_, _>>()?;
    Ok(Paths { inputs, outputs })
}

async fn run_stages(spec: &ProcessingHostSpec, reporter: &Reporter, log: &JobLog) -> ResultReport {
    let paths = match map_paths(spec) {
        Ok(p) => p,
        Err(e) => return failed(spec, format!("ClientError: {e}")),
    };
    let _ = reporter
        .status(&spec.current_host, "Downloading", "Downloading input data")
        .await;
    let signer = Signer {
        access_key: spec.access_key.clone(),
        secret_key: spec.secret_key.clone(),
        region: spec.region.clone(),
    };
    let (store, local) = match objects::for_access(
        &spec.object_access,
        &spec.store_root,
        &spec.control_url,
        signer,
        tokio::runtime::Handle::current(),
    )
    .await
    {
        Ok(s) => {
            log.info(&s.how);
            (s.objects, s.local)
        }
        Err(e) => return failed(spec, format!("InternalServerError: {e}")),
    };
    if let Err(e) = prepare_dirs(spec, &paths) {
        return failed(
            spec,
            format!(
                "InternalServerError: preparing {}: {e}",
                spec.base_dir.display()
            ),
        );
    }
    let hosts: Vec<(String, String)> = spec
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let address = spec
                .addresses
                .get(i)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into());
            (h.clone(), address)
        })
        .collect();
    let mut identity =
        match HostIdentity::prepare_for(&spec.job_name, &hosts, &spec.current_host, &spec.base_dir)
        {
            Ok(i) => i,
            Err(e) => {
                return failed(
                    spec,
                    format!("InternalServerError: writing the job's hosts file: {e}"),
                );
            }
        };
    // The runtime (built once) and the inputs, in parallel.
    let runtimes = Runtimes::new(spec.runtimes_dir.clone());
    let ensure = {
        let def = runtimes.find(&spec.runtime);
        let log2 = log.clone();
        let name = spec.runtime.clone();
        tokio::task::spawn_blocking(move || {
            let def = def.ok_or_else(|| {
                format!("runtime {name:?} is not known to this agent: it was removed after the job was created, or the server and the agent are different clary binaries (restart the server after upgrading)")
            })?;
            runtimes.ensure(&def, &mut |line| log2.line(line))
        })
    };
    let inputs = {
        let (spec, store, log, dirs) = (
            spec.clone(),
            store.clone(),
            log.clone(),
            paths.inputs.clone(),
        );
        blocking(move || {
            let all_pipe = spec.inputs.iter().all(|i| i.source.input_mode == "Pipe");
            let link = input_overlay::store_to_link(local, all_pipe, &spec.base_dir, &log);
            present_inputs(&spec, &store, link.as_deref(), &dirs, &log)
        })
        .await
    };
    match inputs {
        Ok(linked) if !linked.is_empty() => {
            match InputOverlay::prepare(&input_overlay::state_dir(&spec.base_dir), &linked) {
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
    let runtime_python = match ensure.await {
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
    };
    // The container's command uses `/opt/ml` as written: it runs only where this host's
    // directory can be bound there.
    if let Err(why) = identity.bind_opt_ml(&spec.base_dir) {
        return failed(
            spec,
            format!("ClientError: the processing container's command cannot run here: {why}"),
        );
    }
    // A job-private environment over the runtime: its `pip install` (FrameworkProcessor's
    // runproc.sh installs requirements.txt) lands there, never in the shared runtime.
    let python = {
        let (rp, venv) = (runtime_python.clone(), job_venv(&spec.base_dir));
        match blocking(move || {
            let _ = std::fs::remove_dir_all(&venv);
            container_command::prepare_python(&rp, &venv)
        })
        .await
        {
            Ok(p) => p,
            Err(e) => {
                return failed(
                    spec,
                    format!("InternalServerError: preparing the job's Python environment: {e}"),
                );
            }
        }
    };
    let env = build_env(spec, python.parent().unwrap_or(&python));
    let syncs: Vec<CheckpointSync> = spec
        .outputs
        .iter()
        .zip(&paths.outputs)
        .filter(|(o, _)| o.continuous)
        .map(|(o, dir)| CheckpointSync::start(store.clone(), output_dir(o, dir), log.clone()))
        .collect();
    let _ = reporter
        .status(
            &spec.current_host,
            "Training",
            "Processing image download completed. Processing in progress.",
        )
        .await;
    let ctx = RunContext {
        cwd: &spec.base_dir,
        limits: RunLimits {
            max_runtime_secs: spec.max_runtime_secs,
            stop_grace_secs: spec.stop_grace_secs,
        },
        log,
        identity: &identity,
        abort: None,
    };
    let end = container_command::run(&spec.command, &env, ctx).await;
    let _ = reporter
        .status(
            &spec.current_host,
            "Uploading",
            "Uploading processing outputs",
        )
        .await;
    let mut upload_error = None;
    for sync in syncs {
        if let Err(e) = sync.finish().await {
            upload_error.get_or_insert(e);
        }
    }
    let uploads = {
        let (store, outputs, dirs, log) = (
            store.clone(),
            spec.outputs.clone(),
            paths.outputs.clone(),
            log.clone(),
        );
        blocking(move || upload_end_of_job(&store, &outputs, &dirs, &log)).await
    };
    if let Err(e) = uploads {
        upload_error.get_or_insert(e);
    }
    let (outcome, exit_code, reason) = outcome_of(&end, spec);
    match upload_error {
        Some(e) if outcome == Outcome::Completed => failed(
            spec,
            format!("ClientError: uploading the processing outputs failed: {e}"),
        ),
        _ => report(spec, outcome, reason, exit_code),
    }
}

fn output_dir(o: &ProcessingOutputSpec, dir: &Path) -> CheckpointSpec {
    CheckpointSpec {
        bucket: o.bucket.clone(),
        prefix: o.prefix.clone(),
        local_path: dir.to_path_buf(),
    }
}

fn upload_end_of_job(
    store: &Objects,
    outputs: &[ProcessingOutputSpec],
    dirs: &[PathBuf],
    log: &JobLog,
) -> Result<(), String> {
    for (o, dir) in outputs.iter().zip(dirs) {
        // A Continuous output's last files went up when its sync finished.
        if o.continuous {
            continue;
        }
        let n = checkpoints::upload_dir(store, &output_dir(o, dir))
            .map_err(|e| format!("output {}: {e}", o.name))?;
        log.info(&format!(
            "Output {}: {n} files uploaded to s3://{}/{}",
            o.name, o.bucket, o.prefix
        ));
    }
    Ok(())
}

fn job_venv(base_dir: &Path) -> PathBuf {
    // Next to (not under) the `/opt/ml` stand-in: it is no container path.
    base_dir.parent().unwrap_or(base_dir).join("python-env")
}

fn prepare_dirs(spec: &ProcessingHostSpec, paths: &Paths) -> std::io::Result<()> {
    let config = spec.base_dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(spec.base_dir.join("processing"))?;
    for (input, dir) in spec.inputs.iter().zip(&paths.inputs) {
        // A Pipe input's FIFOs are made beside its path, by its feeder.
        let d = if input.source.input_mode == "Pipe" {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        std::fs::create_dir_all(d)?;
    }
    for dir in &paths.outputs {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        config.join("resourceconfig.json"),
        serde_json::to_vec(&resource_config(spec)).map_err(std::io::Error::other)?,
    )
}

/// Makes every input appear; returns the linked ones (a name and the directory to put an
/// overlay over). `Err` is the job's failure reason.
fn present_inputs(
    spec: &ProcessingHostSpec,
    store: &Objects,
    link: Option<&LocalStore>,
    dirs: &[PathBuf],
    log: &JobLog,
) -> Result<Vec<(String, PathBuf)>, String> {
    let host_index = spec
        .hosts
        .iter()
        .position(|h| h == &spec.current_host)
        .unwrap_or(0);
    let mut linked = Vec::new();
    for (input, dir) in spec.inputs.iter().zip(dirs) {
        let ch = &input.source;
        let objects = staging::channel_objects(store, ch, host_index, spec.hosts.len())
            .map_err(|e| format!("ClientError: {e}"))?;
        let n = objects.len();
        let share = if ch.sharded && spec.hosts.len() > 1 {
            " (this host's ShardedByS3Key share)"
        } else {
            ""
        };
        if ch.input_mode == "Pipe" {
            // The FIFOs are `<LocalPath>_0`, `<LocalPath>_1`, …: a training channel's
            // `<channel dir>_<N>`, with the local path as the channel's directory.
            let (Some(parent), Some(base)) = (dir.parent(), dir.file_name()) else {
                return Err(format!(
                    "ClientError: ProcessingInput {}: LocalPath {:?} has no directory to make its pipe in",
                    ch.name, input.local_path
                ));
            };
            let mut fifo = ch.clone();
            fifo.name = base.to_string_lossy().into_owned();
            pipe::start_channel(
                store.clone(),
                fifo,
                objects,
                parent.to_path_buf(),
                log.downgrade(),
            )
            .map_err(|e| {
                format!(
                    "InternalServerError: making the FIFO of input {}: {e}",
                    ch.name
                )
            })?;
            log.info(&format!(
                "Input {}: {n} objects from s3://{}/{}{share} stream through {}_0, {}_1, …",
                ch.name, ch.bucket, ch.prefix, input.local_path, input.local_path
            ));
            continue;
        }
        let staged = staging::stage_channel(store, link, ch, &objects, dir)
            .map_err(|e| format!("ClientError: {e}"))?;
        if staged.linked > 0 {
            linked.push((format!("input-{}", linked.len()), dir.clone()));
        }
        log.info(&format!(
            "Input {}: {} objects from s3://{}/{}{share} in {}: {}",
            ch.name,
            staged.files(),
            ch.bucket,
            ch.prefix,
            input.local_path,
            staged.method()
        ));
    }
    Ok(linked)
}

/// The container's environment: the agent's own (PATH, HOME, …) with the job's Python first
/// on `PATH`, credentials that point boto3 back at Clary, and the job's `Environment`.
fn build_env(spec: &ProcessingHostSpec, bin: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            !k.starts_with("SM_")
                && !k.starts_with("CLARY_")
                && k != "VIRTUAL_ENV"
                && k != "PYTHONHOME"
        })
        .collect();
    let path = format!(
        "{}:{}",
        bin.display(),
        env.get("PATH")
            .cloned()
            .unwrap_or_else(|| "/usr/bin:/bin".into())
    );
    let mut pythonpath = vec![spec.python_shims.display().to_string()];
    if let Ok(existing) = std::env::var("PYTHONPATH")
        && !existing.is_empty()
    {
        pythonpath.push(existing);
    }
    let region = spec.region.clone();
    let fixed: [(&str, String); 9] = [
        ("PATH", path),
        ("PYTHONPATH", pythonpath.join(":")),
        ("PYTHONUNBUFFERED", "1".into()),
        ("AWS_REGION", region.clone()),
        ("AWS_DEFAULT_REGION", region),
        (
            "AWS_ENDPOINT_URL",
            spec.control_url.trim_end_matches('/').to_string(),
        ),
        ("AWS_ACCESS_KEY_ID", spec.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", spec.secret_key.clone()),
        (
            "CLARY_HOSTS_FILE",
            spec.base_dir
                .parent()
                .unwrap_or(&spec.base_dir)
                .join("hosts")
                .display()
                .to_string(),
        ),
    ];
    for (k, v) in fixed {
        env.insert(k.to_string(), v);
    }
    for (k, v) in &spec.environment {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// How the command's end reads as the job's outcome: `ExitMessage`-style text for a
/// failure (the exit code and the command), a max-runtime stop, or a stop.
fn outcome_of(end: &RunEnd, spec: &ProcessingHostSpec) -> (Outcome, Option<i32>, Option<String>) {
    let brief = |s: String| -> String { s.chars().take(FAILURE_REASON_CHARS).collect() };
    match end {
        RunEnd::Exited { code: 0, .. } => (Outcome::Completed, Some(0), None),
        RunEnd::Exited { code, command } => (
            Outcome::Failed,
            Some(*code),
            Some(brief(format!(
                "AlgorithmError: the processing container's command exited with code {code}: {command}"
            ))),
        ),
        RunEnd::Signalled {
            signal,
            command,
            stopped: false,
            timed_out: false,
        } => (
            Outcome::Failed,
            Some(128 + signal),
            Some(brief(format!(
                "AlgorithmError: the processing container's command was killed by signal {signal}: {command}"
            ))),
        ),
        RunEnd::Signalled {
            timed_out: true, ..
        } => (
            Outcome::MaxRuntimeExceeded,
            None,
            Some(format!(
                "MaxRuntimeExceeded: Processing job exceeded MaxRuntimeInSeconds ({} s)",
                spec.max_runtime_secs
            )),
        ),
        RunEnd::Signalled { .. } => (Outcome::Stopped, None, None),
        RunEnd::SpawnFailed(e) | RunEnd::Aborted(e) => (
            Outcome::Failed,
            None,
            Some(brief(format!("ClientError: {e}"))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(overrides: serde_json::Value) -> ProcessingHostSpec {
        let mut v = serde_json::json!({
            "kind": "ProcessingJob", "job_name": "p", "job_arn": "a", "region": "r",
            "current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
            "addresses": ["127.1.1.1", "127.1.1.2"], "instance_type": "ml.c5.xlarge",
            "base_dir": "/j/algo-2/opt_ml", "inputs": [], "outputs": [],
            "command": {"entrypoint": ["python3", "/opt/ml/processing/input/code/p.py"], "arguments": ["--n", "1"]},
            "environment": {}, "max_runtime_secs": 10, "stop_grace_secs": 1,
            "store_root": "/s", "control_url": "u", "access_key": "k", "secret_key": "s",
            "log_stream": "p/algo-2-1", "python_shims": "/py", "runtimes_dir": "/r",
            "runtime": "mxnet-1.9", "device": "cpu"
        });
        for (k, val) in overrides.as_object().cloned().unwrap_or_default() {
            v[k] = val;
        }
        serde_json::from_value(v).expect("a valid test spec")
    }

    #[test]
    fn container_paths_map_into_the_hosts_directory() {
        let base = Path::new("/j/algo-1/opt_ml");
        assert_eq!(
            host_path(base, "/opt/ml/processing/input/data/"),
            Some(PathBuf::from("/j/algo-1/opt_ml/processing/input/data"))
        );
        assert_eq!(host_path(base, "/opt/ml"), Some(base.to_path_buf()));
        assert_eq!(host_path(base, "/opt/mlx/a"), None);
        assert_eq!(host_path(base, "/opt/ml/processing/../../etc"), None);
        assert_eq!(host_path(base, "/tmp/x"), None);
    }

    #[test]
    fn local_paths_must_be_under_the_processing_root() {
        let bad = spec(serde_json::json!({"outputs": [
            {"name": "o", "bucket": "b", "prefix": "p", "local_path": "/opt/ml/model"}
        ]}));
        let err = map_paths(&bad).err().unwrap();
        assert!(err.contains("must begin with /opt/ml/processing/"), "{err}");
        let good = spec(serde_json::json!({"outputs": [
            {"name": "o", "bucket": "b", "prefix": "p", "local_path": "/opt/ml/processing/out"}
        ]}));
        assert_eq!(
            map_paths(&good).unwrap().outputs,
            [PathBuf::from("/j/algo-2/opt_ml/processing/out")]
        );
    }

    #[test]
    fn the_resource_config_names_this_host_and_all_hosts() {
        let s = spec(serde_json::json!({}));
        assert_eq!(
            resource_config(&s),
            serde_json::json!({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
        );
    }
}
