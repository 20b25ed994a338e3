//! What a training host runs: its spec (the agent wire contract, `HostSpec`) and where its
//! credentials may write.

use super::TrainingKind;
use super::profiler::PROFILER_OUTPUT_DIR;
use crate::domain::credentials::WriteGrant;
use crate::domain::training::{Channel, InputMode, S3Location, TrainingJob};
use crate::lifecycle::HostPlan;
use clary_exec::protocol::{
    ChannelSpec, CheckpointSpec, ContainerCommand, HostSpec, MonitorSettings,
};
use clary_exec::runtimes::{MXNET_TRAINING_MODULE, Mode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
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

impl TrainingKind {
    /// The spec of one host of the job's current attempt.
    pub(super) fn training_host_spec(
        &self,
        job: &TrainingJob,
        plan: &HostPlan<'_>,
    ) -> Result<Vec<u8>, String> {
        let spec = &job.spec;
        let image = self.runtimes.training_image(&spec.image)?;
        let python = self.runtimes.python(&image.runtime);
        let channels: Vec<ChannelSpec> = spec
            .channels
            .iter()
            .map(|c| channel_spec(c, spec.input_mode))
            .collect();
        let monitor = agent_monitor(&super::profiler::monitor_settings(job));
        let opt_ml = plan.dir.join("opt_ml");
        let host_spec = HostSpec {
            job_name: job.name.clone(),
            job_arn: job.arn.clone(),
            region: self.config.region.clone(),
            current_host: plan.name.to_string(),
            hosts: plan.hosts.to_vec(),
            instance_type: spec.instance_type.clone(),
            addresses: plan.addresses.to_vec(),
            base_dir: opt_ml.clone(),
            hyperparameters: string_map(&spec.hyperparameters),
            channels,
            training_input_mode: spec.input_mode.as_str().into(),
            output_bucket: spec.output.bucket.clone(),
            output_prefix: spec.output.prefix.clone(),
            python,
            framework_module: MXNET_TRAINING_MODULE.into(),
            environment: string_map(&spec.environment),
            max_runtime_secs: spec.max_runtime_secs,
            stop_grace_secs: self.config.stop_grace_secs,
            store_root: self.config.data_dir.join("objects"),
            object_access: self.config.agent_objects.clone(),
            control_url: self.config.control_url.clone(),
            access_key: plan.key.access_key.clone(),
            secret_key: plan.key.secret_key.clone(),
            log_stream: plan.log_stream.to_string(),
            python_shims: self.config.python_shims.clone(),
            runtimes_dir: self.config.runtimes_dir.clone(),
            runtime: image.runtime.name.clone(),
            framework_version: image.framework_version.clone(),
            device: image.device.clone(),
            legacy: image.mode == Mode::Legacy,
            attempt: plan.attempt,
            monitor: Some(monitor),
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
        serde_json::to_vec_pretty(&host_spec).map_err(|e| e.to_string())
    }

    /// Where a launch's key pair may write: the job's output, Debugger's and checkpoint
    /// prefixes (it reports as the job and reads objects).
    pub(super) fn job_writes(&self, job: &TrainingJob) -> Vec<WriteGrant> {
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
        writes
    }
}
