//! The queue and the watch: launches queued jobs when their capacity is free (first in, first
//! out), watches running hosts through the executor, and re-attaches after a server restart.

use super::TrainingJobs;
use crate::domain::job::Outcome;
use crate::domain::training::{TRAINING, TrainingJob};
use crate::error::ControlError;
use crate::now_secs;
use clary_exec::{ExecHandle, Observed, StopSignal};
use std::sync::Arc;
use std::time::Duration;

/// How often running jobs are looked at when nothing wakes the loop.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

impl TrainingJobs {
    /// The queue and the watch over running agents; runs for the server's lifetime.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.recover_after_restart();
        loop {
            if let Err(e) = self.schedule_once() {
                tracing::error!("scheduler: {e}");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    /// (vCPUs, GiB) a job takes on this machine.
    fn demand(&self, job: &TrainingJob) -> (u32, f64) {
        let cap = &self.config.capacity;
        let n = job.spec.instance_count.max(1);
        let (c, m) = cap.demand(&job.spec.instance_type).unwrap_or((1, 1.0));
        (
            (c * n).min(cap.cpus),
            (m * f64::from(n)).min(cap.memory_gib),
        )
    }

    /// Jobs that were running when the server went down: agents still alive are watched again
    /// (they kept reporting to this address); jobs whose agents are gone fail with a reason.
    fn recover_after_restart(&self) {
        let Ok(jobs) = self.store.active() else {
            return;
        };
        for mut job in jobs.into_iter().filter(|j| !j.state.hosts.is_empty()) {
            let lost: Vec<String> = self
                .lost_hosts(&job)
                .0
                .iter()
                .map(|h| {
                    let pid = job
                        .state
                        .hosts
                        .iter()
                        .find(|x| &x.name == h)
                        .and_then(|x| match x.handle {
                            Some(ExecHandle::Process(p)) => Some(p.pid),
                            _ => None,
                        })
                        .unwrap_or(0);
                    format!("{h} (pid {pid})")
                })
                .collect();
            if lost.is_empty() {
                tracing::info!("re-attached to training job {} after restart", job.name);
                continue;
            }
            let reason = format!(
                "InternalServerError: the Clary server restarted while this job was running and the host agent of {} was gone; create the job again under a new name",
                lost.join(", ")
            );
            job.state.finish(
                TRAINING,
                Outcome::Failed,
                Some(reason),
                None,
                None,
                now_secs(),
            );
            let _ = self.store.save_state(&job);
        }
    }

    fn schedule_once(&self) -> Result<(), ControlError> {
        let jobs = self.store.active()?;
        let cap = &self.config.capacity;
        let (mut used_cpus, mut used_mem) = (0u32, 0f64);
        for job in jobs.iter().filter(|j| !j.state.hosts.is_empty()) {
            let (c, m) = self.demand(job);
            used_cpus += c;
            used_mem += m;
        }
        for mut job in jobs {
            if !job.state.hosts.is_empty() {
                self.watch(&mut job)?;
                continue;
            }
            let (c, m) = self.demand(&job);
            // A cluster scheduler queues the job itself until its nodes are free.
            if !self.executor.queues_itself()
                && (used_cpus + c > cap.cpus || used_mem + m > cap.memory_gib + 1e-9)
            {
                // First in, first out: a big job at the head is not overtaken by small ones.
                let msg = format!(
                    "Launching requested ML instances: waiting for capacity ({c} vCPUs needed, {used_cpus} of {} in use)",
                    cap.cpus
                );
                if job.state.note_waiting(&msg, now_secs()) {
                    self.store.save_state(&job)?;
                }
                break;
            }
            used_cpus += c;
            used_mem += m;
            if let Err(e) = self.launch(&mut job) {
                job.state.finish(
                    TRAINING,
                    Outcome::Failed,
                    Some(format!("InternalServerError: could not start the job: {e}")),
                    None,
                    None,
                    now_secs(),
                );
            }
            self.store.save_state(&job)?;
        }
        Ok(())
    }

    /// Hosts without a result whose unit is gone, with the first loss seen; and whether a
    /// unit still waits in the executor's queue (with its reason). Each unit is observed once.
    fn lost_hosts(
        &self,
        job: &TrainingJob,
    ) -> (
        Vec<String>,
        Option<clary_exec::executor::Loss>,
        Option<String>,
    ) {
        let mut seen: Vec<(ExecHandle, Observed)> = Vec::new();
        let mut lost = Vec::new();
        let mut first_loss = None;
        let mut pending = None;
        for h in job.state.hosts.iter().filter(|h| h.result.is_none()) {
            let observed = match h.handle {
                None => Observed::Gone(clary_exec::executor::Loss {
                    detail: None,
                    output: None,
                    transient: true,
                }),
                Some(handle) => match seen.iter().find(|(x, _)| *x == handle) {
                    Some((_, o)) => o.clone(),
                    None => {
                        let o = self.executor.observe(&handle);
                        seen.push((handle, o.clone()));
                        o
                    }
                },
            };
            match observed {
                Observed::Running => {}
                Observed::Pending(reason) => pending = Some(reason),
                Observed::Gone(loss) => {
                    lost.push(h.name.clone());
                    first_loss.get_or_insert(loss);
                }
            }
        }
        (lost, first_loss, pending)
    }

    fn watch(&self, job: &mut TrainingJob) -> Result<(), ControlError> {
        let (dead, loss, pending) = self.lost_hosts(job);
        if let Some(reason) = pending
            && job.state.status == crate::domain::job::JobStatus::InProgress
        {
            // The executor's reason (Resources, Priority, …) is what the user waits on.
            let msg = format!(
                "Launching requested ML instances: pending in {} ({reason})",
                self.executor.name()
            );
            if job.state.note_waiting(&msg, now_secs()) {
                self.store.save_state(job)?;
            }
            return Ok(());
        }
        if let Some(since) = job.state.stopping_since()
            && dead.is_empty()
            && now_secs() - since > (self.config.stop_grace_secs + 30) as f64
        {
            // The agents escalate to SIGKILL themselves; this is for an agent that cannot.
            for handle in super::running_handles(job, None) {
                self.executor.signal(&handle, StopSignal::Kill);
            }
        }
        let Some(loss) = loss else { return Ok(()) };
        // A result may have landed between our read and the liveness check.
        let fresh = self.require(&job.name)?;
        if fresh.state.status.is_terminal()
            || dead.iter().all(|d| {
                fresh
                    .state
                    .hosts
                    .iter()
                    .any(|h| &h.name == d && h.result.is_some())
            })
        {
            return Ok(());
        }
        *job = fresh;
        for handle in super::running_handles(job, None) {
            self.executor.signal(&handle, StopSignal::Term);
        }
        let reason = match &loss.detail {
            Some(detail) => format!(
                "InternalServerError: {detail} before {} reported a result; its output is {}",
                dead.join(", "),
                loss.output
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
            None => format!(
                "InternalServerError: the host agent of {} exited without reporting a result; its log is {}",
                dead.join(", "),
                self.host_dir(job, &dead[0]).join("agent.log").display()
            ),
        };
        let now = now_secs();
        job.state.hosts_lost(
            TRAINING,
            job.spec.max_retries,
            &dead[0],
            reason,
            loss.transient,
            now,
        );
        if job.state.is_queued() {
            self.wake.notify_one();
        }
        self.store.save_state(job)?;
        Ok(())
    }
}
