//! Launching one attempt of a training job: a directory and a spec per host (the agent wire
//! contract, `HostSpec`), then all hosts at once through the executor.

use super::TrainingJobs;
use super::profiler::PROFILER_OUTPUT_DIR;
use crate::domain::credentials::{Holder, ScopedKey, WriteGrant};
use crate::domain::job::Host;
use crate::domain::training::{Channel, InputMode, S3Location, TrainingJob};
use crate::logs::TRAINING_LOG_GROUP;
use crate::now_secs;
use clary_exec::executor::{HostLaunch, JobLaunch, UnitCredentials};
use clary_exec::protocol::{
    ChannelSpec, CheckpointSpec, ContainerCommand, HostSpec, MonitorSettings,
};
use clary_exec::runtimes::{MXNET_TRAINING_MODULE, Mode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// `CheckpointConfig.LocalPath` when the request leaves it out (the SDK's default too).
const DEFAULT_CHECKPOINT_PATH: &str = "/opt/ml/checkpoints";

/// Where a host's checkpoints live: paths under `/opt/ml` move into the host's own stand-in
/// for it (so hosts never share one); any other absolute path is used as given.
fn local_checkpoint_dir(opt_ml: &Path, local: &str) -> PathBuf {
    match local.strip_prefix("/opt/ml") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            opt_ml.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(local),
    }
}

/// The channel as the agent gets it: its `inputdataconfig.json` entry exactly as the toolkit
/// expects it, and how to present it.
fn channel_spec(ch: &Channel, job_mode: InputMode) -> ChannelSpec {
    let mut config = serde_json::Map::new();
    if let Some(ct) = &ch.content_type {
        config.insert("ContentType".into(), json!(ct));
    }
    let mode = ch.input_mode.unwrap_or(job_mode);
    config.insert("TrainingInputMode".into(), json!(mode.as_str()));
    config.insert("S3DistributionType".into(), json!(ch.distribution));
    config.insert(
        "RecordWrapperType".into(),
        json!(ch.record_wrapper.as_deref().unwrap_or("None")),
    );
    if let Some(c) = &ch.compression {
        config.insert("CompressionType".into(), json!(c));
    }
    ChannelSpec {
        name: ch.name.clone(),
        bucket: ch.source.bucket.clone(),
        prefix: ch.source.prefix.clone(),
        config: Value::Object(config),
        // FastFile streams on demand on AWS; here the objects are local files anyway.
        input_mode: if mode == InputMode::Pipe {
            "Pipe"
        } else {
            "File"
        }
        .into(),
        data_type: ch.data_type.clone(),
        sharded: ch.distribution == "ShardedByS3Key",
        gzip: ch.compression.as_deref() == Some("Gzip"),
        record_io: ch.record_wrapper.as_deref() == Some("RecordIO"),
    }
}

/// The monitor settings as the agent wire carries them.
pub(super) fn agent_monitor(m: &super::profiler::MonitorSettings) -> MonitorSettings {
    MonitorSettings {
        interval_ms: m.interval_ms,
        bucket: m.output.as_ref().map(|o| o.bucket.clone()),
        prefix: m.output.as_ref().map(|o| o.prefix.clone()),
    }
}

fn string_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

impl TrainingJobs {
    /// A host's directory on the server for the job's current attempt.
    pub(super) fn host_dir(&self, job: &TrainingJob, host: &str) -> PathBuf {
        let job_dir = self.config.data_dir.join("jobs").join(&job.name);
        match job.state.attempt() {
            0 => job_dir.join(host),
            n => job_dir.join(format!("attempt-{n}")).join(host),
        }
    }

    /// A distinct loopback address per host, in a block no other running job uses.
    fn host_addresses(&self, job_name: &str, count: usize) -> Result<Vec<String>, String> {
        let taken: HashSet<(u8, u8)> = self
            .store
            .active()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|j| j.name != job_name)
            .flat_map(|j| j.state.hosts.iter())
            .filter_map(|h| {
                let mut o = h.address.split('.').skip(1).map(str::parse::<u8>);
                match (o.next(), o.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
                    _ => None,
                }
            })
            .collect();
        let (a, b) = crate::domain::training::address_block(job_name, &taken);
        Ok((1..=count).map(|i| format!("127.{a}.{b}.{i}")).collect())
    }

    /// Launches the job's current attempt: writes each host's spec and starts the hosts.
    pub(super) fn launch(&self, job: &mut TrainingJob) -> Result<(), String> {
        let spec = &job.spec;
        let count = spec.instance_count.max(1) as usize;
        let names: Vec<String> = (1..=count).map(|i| format!("algo-{i}")).collect();
        let time_limit_secs = spec.max_runtime_secs + self.config.stop_grace_secs + 60;
        if let Some(hosts) = self.adopt_earlier_launch(job, &names, time_limit_secs) {
            tracing::info!(
                "training job {}: adopted the hosts a launch before a restart started",
                job.name
            );
            job.state.start_attempt(hosts, now_secs());
            return Ok(());
        }
        let image = self.runtimes.training_image(&spec.image)?;
        let key = self.issue_key(job)?;
        let python = self.runtimes.python(&image.runtime);
        let addresses = self.host_addresses(&job.name, count)?;
        let channels: Vec<ChannelSpec> = spec
            .channels
            .iter()
            .map(|c| channel_spec(c, spec.input_mode))
            .collect();
        let epoch = chrono::Utc::now().timestamp();
        let monitor = agent_monitor(&super::profiler::monitor_settings(job));
        let mut hosts = Vec::with_capacity(count);
        let mut paths = Vec::with_capacity(count);
        for (host, address) in names.iter().zip(&addresses) {
            // A restarted attempt gets fresh directories, as a replaced instance would, while
            // the agents of the failed one wind down in theirs.
            let base_dir = self.host_dir(job, host);
            std::fs::create_dir_all(&base_dir)
                .map_err(|e| format!("creating {}: {e}", base_dir.display()))?;
            let opt_ml = base_dir.join("opt_ml");
            let log_stream = format!("{}/{host}-{epoch}", job.name);
            self.logs
                .create_stream(TRAINING_LOG_GROUP, &log_stream)
                .map_err(|e| e.to_string())?;
            let host_spec = HostSpec {
                job_name: job.name.clone(),
                job_arn: job.arn.clone(),
                region: self.config.region.clone(),
                current_host: host.clone(),
                hosts: names.clone(),
                instance_type: spec.instance_type.clone(),
                addresses: addresses.clone(),
                base_dir: opt_ml.clone(),
                hyperparameters: string_map(&spec.hyperparameters),
                channels: channels.clone(),
                training_input_mode: spec.input_mode.as_str().into(),
                output_bucket: spec.output.bucket.clone(),
                output_prefix: spec.output.prefix.clone(),
                python: python.clone(),
                framework_module: MXNET_TRAINING_MODULE.into(),
                environment: string_map(&spec.environment),
                max_runtime_secs: spec.max_runtime_secs,
                stop_grace_secs: self.config.stop_grace_secs,
                store_root: self.config.data_dir.join("objects"),
                object_access: self.config.agent_objects.clone(),
                control_url: self.config.control_url.clone(),
                access_key: key.access_key.clone(),
                secret_key: key.secret_key.clone(),
                log_stream: log_stream.clone(),
                python_shims: self.config.python_shims.clone(),
                runtimes_dir: self.config.runtimes_dir.clone(),
                runtime: image.runtime.name.clone(),
                framework_version: image.framework_version.clone(),
                device: image.device.clone(),
                legacy: image.mode == Mode::Legacy,
                attempt: job.state.attempt(),
                monitor: Some(monitor.clone()),
                container: spec.container.as_ref().map(|c| ContainerCommand {
                    entrypoint: c.entrypoint.clone(),
                    arguments: c.arguments.clone(),
                }),
                checkpoint: spec.checkpoints.as_ref().map(|c| CheckpointSpec {
                    bucket: c.destination.bucket.clone(),
                    prefix: c.destination.prefix.clone(),
                    local_path: local_checkpoint_dir(
                        &opt_ml,
                        c.local_path.as_deref().unwrap_or(DEFAULT_CHECKPOINT_PATH),
                    ),
                }),
            };
            let spec_path = base_dir.join("spec.json");
            let bytes = serde_json::to_vec_pretty(&host_spec).map_err(|e| e.to_string())?;
            std::fs::write(&spec_path, bytes)
                .map_err(|e| format!("writing {}: {e}", spec_path.display()))?;
            paths.push((spec_path, base_dir.join("agent.log")));
            hosts.push(Host {
                name: host.clone(),
                log_stream,
                address: address.clone(),
                handle: None,
                result: None,
            });
        }
        let launch = JobLaunch {
            job_name: &job.name,
            instance_type: &spec.instance_type,
            hosts: names
                .iter()
                .zip(&paths)
                .map(|(host, (spec_path, agent_log))| HostLaunch {
                    host,
                    spec_path,
                    agent_log,
                })
                .collect(),
            // The agent enforces MaxRuntimeInSeconds itself; this is the backstop.
            time_limit_secs,
            credentials: UnitCredentials {
                access_key: &key.access_key,
                secret_key: &key.secret_key,
            },
        };
        let handles = self.executor.launch_job(&launch)?;
        crate::failpoint::hit(crate::failpoint::AFTER_JOB_LAUNCH);
        for (h, handle) in hosts.iter_mut().zip(&handles) {
            h.handle = Some(*handle);
        }
        let now = now_secs();
        job.state.start_attempt(hosts, now);
        if let Some(note) = handles.first().and_then(|h| self.executor.launched_note(h)) {
            job.state.set_secondary(
                crate::domain::job::SecondaryStatus::Starting,
                &format!("Preparing the instances for training: {note}"),
                now,
            );
        }
        Ok(())
    }

    /// The hosts of this attempt that an earlier launch started, when the server was killed
    /// before it saved them. Each host's spec is written before the launch, so it records the
    /// intent: with every spec there, the executor finds the units they started (and ends an
    /// incomplete set); `None` means a fresh launch.
    fn adopt_earlier_launch(
        &self,
        job: &TrainingJob,
        names: &[String],
        time_limit_secs: u64,
    ) -> Option<Vec<Host>> {
        let dirs: Vec<PathBuf> = names.iter().map(|h| self.host_dir(job, h)).collect();
        let specs: Vec<HostSpec> = dirs
            .iter()
            .map(|d| {
                let text = std::fs::read(d.join("spec.json")).ok()?;
                serde_json::from_slice(&text).ok()
            })
            .collect::<Option<_>>()?;
        let paths: Vec<(PathBuf, PathBuf)> = dirs
            .iter()
            .map(|d| (d.join("spec.json"), d.join("agent.log")))
            .collect();
        let launch = JobLaunch {
            job_name: &job.name,
            instance_type: &job.spec.instance_type,
            hosts: names
                .iter()
                .zip(&paths)
                .map(|(host, (spec_path, agent_log))| HostLaunch {
                    host,
                    spec_path,
                    agent_log,
                })
                .collect(),
            time_limit_secs,
            credentials: UnitCredentials {
                access_key: &specs[0].access_key,
                secret_key: &specs[0].secret_key,
            },
        };
        let handles = self.executor.adopt_job(&launch)?;
        Some(
            specs
                .into_iter()
                .zip(handles)
                .enumerate()
                .map(|(i, (s, handle))| Host {
                    address: s.addresses.get(i).cloned().unwrap_or_default(),
                    name: s.current_host,
                    log_stream: s.log_stream,
                    handle: Some(handle),
                    result: None,
                })
                .collect(),
        )
    }

    /// A key pair for this launch of the job: it reports as the job, reads objects, and writes
    /// only under the job's output and checkpoint prefixes.
    fn issue_key(&self, job: &TrainingJob) -> Result<ScopedKey, String> {
        let spec = &job.spec;
        let output = spec.output.prefix.trim_end_matches('/');
        let mut writes = vec![WriteGrant {
            bucket: spec.output.bucket.clone(),
            prefix: if output.is_empty() {
                format!("{}/", job.name)
            } else {
                format!("{output}/{}/", job.name)
            },
        }];
        // Debugger's output: where the profiler writes now, and where enabling it later with
        // the SDK's default path would.
        let default_output =
            S3Location::parse(&self.default_profiler_output()).map(|d| S3Location {
                bucket: d.bucket,
                prefix: format!("{}/{PROFILER_OUTPUT_DIR}/", job.name),
            });
        for out in [super::profiler::profiler_output(job), default_output]
            .into_iter()
            .flatten()
        {
            writes.push(WriteGrant {
                bucket: out.bucket,
                prefix: out.prefix,
            });
        }
        if let Some(c) = &spec.checkpoints {
            writes.push(WriteGrant {
                bucket: c.destination.bucket.clone(),
                prefix: c.destination.prefix.clone(),
            });
        }
        self.credentials
            .issue(Holder::TrainingJob(job.name.clone()), writes)
            .map_err(|e| format!("issuing the job's credentials: {e}"))
    }

    /// The spec of one host of the job's current attempt, for an agent that starts on a node
    /// which does not share this server's disk (`ClaryAgent.GetHostSpec`).
    pub fn host_spec(&self, job_name: &str, host: &str) -> Result<Value, crate::ControlError> {
        let job = self.require(job_name)?;
        if !job.state.hosts.iter().any(|h| h.name == host) {
            return Err(crate::ControlError::Validation(format!(
                "{host} is not a host of the current attempt of training job {job_name}"
            )));
        }
        let path = self.host_dir(&job, host).join("spec.json");
        let text = std::fs::read(&path).map_err(|e| {
            crate::ControlError::Internal(format!("reading {}: {e}", path.display()))
        })?;
        serde_json::from_slice(&text).map_err(|e| crate::ControlError::Internal(e.to_string()))
    }
}
