//! Launching one attempt of a job: a directory, a launch record and a spec per host, then all
//! hosts at once through the executor. The spec on disk is the record of intent: a launch that
//! finds every host's spec already written (the server was killed in between) adopts what the
//! earlier launch started instead of starting it twice.

use super::{HostPlan, JobKind, KindJob, Lifecycle};
use crate::domain::credentials::{Holder, ScopedKey};
use crate::domain::job::{Host, SecondaryStatus};
use crate::now_secs;
use clary_exec::executor::{HostLaunch, JobLaunch, UnitCredentials};
use clary_exec::protocol::JobKind as WireKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the lifecycle needs of a host to adopt it after a restart, written before its spec.
#[derive(Serialize, Deserialize)]
struct LaunchRecord {
    host: String,
    log_stream: String,
    address: String,
    access_key: String,
    secret_key: String,
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

impl<K: JobKind> Lifecycle<K> {
    /// A host's directory on the server for the job's current attempt.
    pub fn host_dir(&self, job: &K::Job, host: &str) -> PathBuf {
        let job_dir = self
            .config
            .data_dir
            .join(K::KIND.dir_name())
            .join(job.name());
        match job.state().attempt() {
            0 => job_dir.join(host),
            n => job_dir.join(format!("attempt-{n}")).join(host),
        }
    }

    /// Launches the job's current attempt: writes each host's spec and starts the hosts.
    pub(super) fn launch(&self, job: &mut K::Job) -> Result<(), String> {
        let shape = self.kind.shape(job);
        let names = self.kind.host_names(job);
        let time_limit_secs = shape.max_runtime_secs + self.config.stop_grace_secs + 60;
        let words = K::KIND.words();
        if let Some(hosts) = self.adopt_earlier_launch(job, &names, &shape, time_limit_secs) {
            tracing::info!(
                "{} {}: adopted the hosts a launch before a restart started",
                K::KIND.as_str(),
                job.name()
            );
            job.state_mut().start_attempt(words, hosts, now_secs());
            return Ok(());
        }
        let key = self
            .credentials
            .issue(
                Holder::Job {
                    kind: K::KIND,
                    name: job.name().to_string(),
                },
                self.kind.write_grants(job),
            )
            .map_err(|e| format!("issuing the job's credentials: {e}"))?;
        let (a, b) = self.ledger.claim_block(K::KIND, job.name());
        let addresses: Vec<String> = (1..=names.len())
            .map(|i| format!("127.{a}.{b}.{i}"))
            .collect();
        let epoch = chrono::Utc::now().timestamp();
        let attempt = job.state().attempt();
        let mut hosts = Vec::with_capacity(names.len());
        let mut paths = Vec::with_capacity(names.len());
        for (host, address) in names.iter().zip(&addresses) {
            // A restarted attempt gets fresh directories, as a replaced instance would, while
            // the agents of the failed one wind down in theirs.
            let dir = self.host_dir(job, host);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let log_stream = self.kind.log_stream(job, host, epoch);
            self.logs
                .create_stream(K::KIND.log_group(), &log_stream)
                .map_err(|e| e.to_string())?;
            let plan = HostPlan {
                name: host,
                hosts: &names,
                addresses: &addresses,
                dir: &dir,
                log_stream: &log_stream,
                key: &key,
                attempt,
            };
            let spec = self.kind.host_spec(job, &plan)?;
            let record = LaunchRecord {
                host: host.clone(),
                log_stream: log_stream.clone(),
                address: address.clone(),
                access_key: key.access_key.clone(),
                secret_key: key.secret_key.clone(),
            };
            write_private(
                &dir.join("launch.json"),
                &serde_json::to_vec(&record).map_err(|e| e.to_string())?,
            )?;
            let spec_path = dir.join("spec.json");
            write_private(&spec_path, &spec)?;
            paths.push((spec_path, dir.join("agent.log")));
            hosts.push(Host {
                name: host.clone(),
                log_stream,
                address: address.clone(),
                handle: None,
                result: None,
            });
        }
        let handles = self.executor.launch_job(&job_launch(
            K::KIND,
            job.name(),
            &shape.instance_type,
            &names,
            &paths,
            time_limit_secs,
            &key,
        ))?;
        crate::failpoint::hit(crate::failpoint::AFTER_JOB_LAUNCH);
        for (h, handle) in hosts.iter_mut().zip(&handles) {
            h.handle = Some(*handle);
        }
        let now = now_secs();
        job.state_mut().start_attempt(words, hosts, now);
        if let Some(note) = handles.first().and_then(|h| self.executor.launched_note(h)) {
            job.state_mut().set_secondary(
                SecondaryStatus::Starting,
                &format!("{}: {note}", words.preparing),
                now,
            );
        }
        Ok(())
    }

    /// The hosts of this attempt that an earlier launch started, when the server was killed
    /// before it saved them: with every host's record and spec there, the executor finds the
    /// units they started (and ends an incomplete set); `None` means a fresh launch.
    fn adopt_earlier_launch(
        &self,
        job: &K::Job,
        names: &[String],
        shape: &super::JobShape,
        time_limit_secs: u64,
    ) -> Option<Vec<Host>> {
        let dirs: Vec<PathBuf> = names.iter().map(|h| self.host_dir(job, h)).collect();
        let records: Vec<LaunchRecord> = dirs
            .iter()
            .map(|d| {
                let text = std::fs::read(d.join("launch.json")).ok()?;
                d.join("spec.json")
                    .is_file()
                    .then(|| serde_json::from_slice(&text).ok())?
            })
            .collect::<Option<_>>()?;
        let paths: Vec<(PathBuf, PathBuf)> = dirs
            .iter()
            .map(|d| (d.join("spec.json"), d.join("agent.log")))
            .collect();
        let key = ScopedKey {
            access_key: records[0].access_key.clone(),
            secret_key: records[0].secret_key.clone(),
            holder: Holder::Job {
                kind: K::KIND,
                name: job.name().to_string(),
            },
            writes: Vec::new(),
            issued_at: 0.0,
        };
        let handles = self.executor.adopt_job(&job_launch(
            K::KIND,
            job.name(),
            &shape.instance_type,
            names,
            &paths,
            time_limit_secs,
            &key,
        ))?;
        Some(
            records
                .into_iter()
                .zip(handles)
                .map(|(r, handle)| Host {
                    name: r.host,
                    log_stream: r.log_stream,
                    address: r.address,
                    handle: Some(handle),
                    result: None,
                })
                .collect(),
        )
    }
}

/// The agents' wire name of a job kind.
fn wire_kind(kind: crate::domain::job::Kind) -> WireKind {
    match kind {
        crate::domain::job::Kind::TrainingJob => WireKind::TrainingJob,
        crate::domain::job::Kind::ProcessingJob => WireKind::ProcessingJob,
    }
}

fn job_launch<'a>(
    kind: crate::domain::job::Kind,
    job_name: &'a str,
    instance_type: &'a str,
    names: &'a [String],
    paths: &'a [(PathBuf, PathBuf)],
    time_limit_secs: u64,
    key: &'a ScopedKey,
) -> JobLaunch<'a> {
    JobLaunch {
        kind: wire_kind(kind),
        job_name,
        instance_type,
        hosts: names
            .iter()
            .zip(paths)
            .map(|(host, (spec_path, agent_log))| HostLaunch {
                host,
                spec_path,
                agent_log,
            })
            .collect(),
        // The agent enforces the job's own limit; this is the backstop.
        time_limit_secs,
        credentials: UnitCredentials {
            access_key: &key.access_key,
            secret_key: &key.secret_key,
        },
    }
}
