//! SageMaker Debugger's system monitor of one host: while the job's profiler is enabled it
//! reads the host's CPU, memory, disk, network (and GPU, where there is one) at the configured
//! interval, appends Debugger's events to the minute's file and keeps that file under
//! `<profiler-output>/system/incremental/` in step; it reports the samples to the control plane
//! (as the job's metrics, for charts), whose answer carries the profiler's current settings,
//! so an `UpdateTrainingJob` is followed within a second.

pub mod sample;

use crate::job_log::JobLog;
use crate::objects::Objects;
use crate::reporter::Reporter;
use clary_exec::protocol::{HostSpec, MonitorSettings, SystemSample};
use sample::{Reading, SystemEvent};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often samples are reported and the files uploaded (and the settings re-read).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// A running monitor; [`Monitor::finish`] takes a last sample and uploads what is left.
pub struct Monitor {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts the monitor of `spec`'s host; `None` when the control plane gave no settings.
    pub fn start(spec: &HostSpec, store: Objects, reporter: Reporter, log: JobLog) -> Option<Self> {
        let settings = spec.monitor.clone()?;
        let (stop, stopped) = oneshot::channel();
        let state = State {
            host: spec.current_host.clone(),
            dir: spec
                .base_dir
                .parent()
                .unwrap_or(&spec.base_dir)
                .join("profiler"),
            disks: whole_disks(),
            job_dir: spec.base_dir.clone(),
            gpus: has_gpus(),
            store,
            reporter,
            log,
            settings,
        };
        let task = tokio::spawn(state.run(stopped));
        Some(Monitor { stop, task })
    }

    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct State {
    host: String,
    /// Local copies of the files, `system/incremental/<hour>/<minute>.<host>.json`.
    dir: PathBuf,
    disks: Vec<String>,
    job_dir: PathBuf,
    gpus: bool,
    store: Objects,
    reporter: Reporter,
    log: JobLog,
    settings: MonitorSettings,
}

impl State {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut last: Option<Reading> = None;
        let mut pending: Vec<SystemSample> = Vec::new();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut next_report = tokio::time::Instant::now() + REPORT_EVERY;
        let mut next_sample = tokio::time::Instant::now();
        let mut said_upload_error = false;
        loop {
            let interval = self.settings.interval_ms;
            let wake = match interval {
                Some(_) => next_sample.min(next_report),
                None => next_report,
            };
            let stopping = tokio::select! {
                _ = tokio::time::sleep_until(wake) => false,
                _ = &mut stopped => true,
            };
            let now = tokio::time::Instant::now();
            if let Some(ms) = interval
                && (now >= next_sample || stopping)
            {
                let reading = self.read().await;
                if let Some(before) = &last {
                    let (events, metrics) = sample::events(before, &reading, &self.host);
                    match self.append(&events) {
                        Ok(key) => {
                            dirty.insert(key);
                        }
                        Err(e) => self.log.info(&format!("System monitor: {e}")),
                    }
                    pending.extend(metrics.into_iter().map(|(metric, value)| SystemSample {
                        metric,
                        timestamp: reading.at,
                        value,
                    }));
                }
                last = Some(reading);
                next_sample += Duration::from_millis(ms);
                if next_sample < now {
                    next_sample = now + Duration::from_millis(ms);
                }
            }
            if now >= next_report || stopping {
                if let Err(e) = self.upload(&mut dirty).await
                    && !std::mem::replace(&mut said_upload_error, true)
                {
                    self.log.info(&format!("System monitor: {e}"));
                }
                let batch = std::mem::take(&mut pending);
                if let Ok(current) = self.reporter.system_metrics(&self.host, batch).await {
                    if current.interval_ms != self.settings.interval_ms {
                        // A new interval starts from a fresh reading; off means no readings.
                        last = None;
                        next_sample = now;
                    }
                    self.settings = current;
                }
                next_report = now + REPORT_EVERY;
            }
            if stopping {
                return;
            }
        }
    }

    async fn read(&self) -> Reading {
        let disks = self.disks.clone();
        let job_dir = self.job_dir.clone();
        let gpus = self.gpus;
        tokio::task::spawn_blocking(move || read_host(&disks, &job_dir, gpus))
            .await
            .unwrap_or_default()
    }

    /// Appends `events` to their minute's file; returns the file's key.
    fn append(&self, events: &[SystemEvent]) -> Result<String, String> {
        let Some(first) = events.first() else {
            return Err("no events to write".into());
        };
        let key = sample::file_key(first.timestamp, &self.host);
        let path = self.dir.join(&key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(key)
    }

    /// Uploads the files changed since the last upload to the profiler's output path.
    async fn upload(&self, dirty: &mut BTreeSet<String>) -> Result<(), String> {
        let (Some(bucket), Some(prefix)) = (&self.settings.bucket, &self.settings.prefix) else {
            dirty.clear();
            return Ok(());
        };
        let keys: Vec<String> = std::mem::take(dirty).into_iter().collect();
        let (store, dir) = (self.store.clone(), self.dir.clone());
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || upload_files(&store, &dir, &bucket, &prefix, &keys))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn upload_files(
    store: &Objects,
    dir: &Path,
    bucket: &str,
    prefix: &str,
    keys: &[String],
) -> Result<(), String> {
    for key in keys {
        let object = format!("{prefix}system/incremental/{key}");
        store
            .put_file(bucket, &object, &dir.join(key), Some("application/json"))
            .map_err(|e| format!("uploading s3://{bucket}/{object}: {e}"))?;
    }
    Ok(())
}

/// The host's whole disks (`/sys/block` less loop and RAM devices).
fn whole_disks() -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default()
}

fn has_gpus() -> bool {
    nvidia_smi().is_some_and(|g| !g.is_empty())
}

fn nvidia_smi() -> Option<Vec<sample::GpuReading>> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=utilization.gpu,utilization.memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(sample::parse_nvidia_smi(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

fn read_host(disks: &[String], job_dir: &Path, gpus: bool) -> Reading {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (algorithm_net, platform_net) = sample::parse_net_dev(&read("/proc/net/dev"));
    let disk_used_percent = nix::sys::statvfs::statvfs(job_dir)
        .ok()
        .filter(|s| s.blocks() > 0)
        .map_or(0.0, |s| {
            let blocks = s.blocks() as f64;
            100.0 * (blocks - s.blocks_free() as f64) / blocks
        });
    Reading {
        at: chrono::Utc::now().timestamp_micros() as f64 / 1e6,
        cpus: sample::parse_stat(&read("/proc/stat")),
        memory_used_percent: sample::parse_meminfo(&read("/proc/meminfo")).unwrap_or(0.0),
        disk: sample::parse_diskstats(&read("/proc/diskstats"), disks),
        algorithm_net,
        platform_net,
        disk_used_percent,
        gpus: if gpus {
            nvidia_smi().unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}
