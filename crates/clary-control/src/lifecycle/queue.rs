//! The queue and the watch: launches queued jobs when their capacity is free (first in, first
//! out), watches running hosts through the executor, and re-attaches after a server restart.

use super::ledger::Demand;
use super::{JobKind, KindJob, Lifecycle, running_handles};
use crate::domain::job::{JobStatus, Outcome};
use crate::error::ControlError;
use crate::now_secs;
use clary_exec::executor::Loss;
use clary_exec::{ExecHandle, Observed, StopSignal};
use std::sync::Arc;
use std::time::Duration;

/// How often running jobs are looked at when nothing wakes the loop.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What the watch saw of a job's hosts without a result.
struct Seen {
    /// Hosts whose unit is gone, and the first loss.
    lost: Vec<String>,
    loss: Option<Loss>,
    /// A unit still waits in the executor's own queue, for this reason.
    pending: Option<String>,
}

/// The address block (`127.A.B.0/24`) a running job's hosts are in.
fn block_of(state: &crate::domain::job::JobState) -> Option<(u8, u8)> {
    let address = &state.hosts.first()?.address;
    let mut octets = address.split('.').skip(1).map(str::parse::<u8>);
    match (octets.next(), octets.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
        _ => None,
    }
}

impl<K: JobKind> Lifecycle<K> {
    /// The queue and the watch over running agents; runs for the server's lifetime.
    pub async fn run(self: Arc<Self>) {
        self.recover_after_restart();
        loop {
            if let Err(e) = self.schedule_once() {
                tracing::error!("{} queue: {e}", K::KIND.as_str());
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    fn demand(&self, job: &K::Job) -> Demand {
        let shape = self.kind.shape(job);
        self.ledger
            .demand(&shape.instance_type, shape.instance_count)
    }

    /// Jobs that were running when the server went down: agents still alive are watched again
    /// (they kept reporting to this address); jobs whose agents are gone fail with a reason.
    fn recover_after_restart(&self) {
        let Ok(jobs) = self.kind.active() else {
            return;
        };
        for mut job in jobs.into_iter().filter(|j| !j.state().hosts.is_empty()) {
            let lost: Vec<String> = self
                .observe_hosts(&job)
                .lost
                .iter()
                .map(|h| {
                    let pid = job
                        .state()
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
                tracing::info!(
                    "re-attached to {} {} after restart",
                    K::KIND.as_str(),
                    job.name()
                );
                continue;
            }
            let reason = format!(
                "InternalServerError: the Clary server restarted while this job was running and the host agent of {} was gone; create the job again under a new name",
                lost.join(", ")
            );
            job.state_mut().finish(
                K::KIND.words(),
                Outcome::Failed,
                Some(reason),
                None,
                None,
                now_secs(),
            );
            let _ = self.kind.save_state(&job);
        }
    }

    fn schedule_once(&self) -> Result<(), ControlError> {
        let jobs = self.kind.active()?;
        self.ledger.sync(
            K::KIND,
            jobs.iter()
                .filter(|j| !j.state().hosts.is_empty())
                .map(|j| (j.name().to_string(), self.demand(j), block_of(j.state())))
                .collect(),
        );
        for mut job in jobs {
            if !job.state().hosts.is_empty() {
                self.watch(&mut job)?;
                continue;
            }
            let demand = self.demand(&job);
            // A cluster scheduler queues the job itself until its nodes are free.
            if let Err(full) =
                self.ledger
                    .try_claim(K::KIND, job.name(), demand, self.executor.queues_itself())
            {
                // First in, first out: a big job at the head is not overtaken by small ones.
                let msg = format!(
                    "Launching requested ML instances: waiting for capacity ({} vCPUs needed, {} of {} in use)",
                    demand.0, full.used_cpus, full.total_cpus
                );
                if job.state_mut().note_waiting(&msg, now_secs()) {
                    self.kind.save_state(&job)?;
                }
                break;
            }
            if let Err(e) = self.launch(&mut job) {
                job.state_mut().finish(
                    K::KIND.words(),
                    Outcome::Failed,
                    Some(format!("InternalServerError: could not start the job: {e}")),
                    None,
                    None,
                    now_secs(),
                );
            }
            self.kind.save_state(&job)?;
            if job.state().status.is_terminal() {
                self.ended(&job)?;
            }
        }
        Ok(())
    }

    /// Observes each unit of the hosts without a result once.
    fn observe_hosts(&self, job: &K::Job) -> Seen {
        let mut seen: Vec<(ExecHandle, Observed)> = Vec::new();
        let mut out = Seen {
            lost: Vec::new(),
            loss: None,
            pending: None,
        };
        for h in job.state().hosts.iter().filter(|h| h.result.is_none()) {
            let observed = match h.handle {
                None => Observed::Gone(Loss {
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
                Observed::Pending(reason) => out.pending = Some(reason),
                Observed::Gone(loss) => {
                    out.lost.push(h.name.clone());
                    out.loss.get_or_insert(loss);
                }
            }
        }
        out
    }

    fn watch(&self, job: &mut K::Job) -> Result<(), ControlError> {
        let Seen {
            lost,
            loss,
            pending,
        } = self.observe_hosts(job);
        if let Some(reason) = pending
            && job.state().status == JobStatus::InProgress
        {
            // The executor's reason (Resources, Priority, …) is what the user waits on.
            let msg = format!(
                "Launching requested ML instances: pending in {} ({reason})",
                self.executor.name()
            );
            if job.state_mut().note_waiting(&msg, now_secs()) {
                self.kind.save_state(job)?;
            }
            return Ok(());
        }
        if let Some(since) = job.state().stopping_since()
            && lost.is_empty()
            && now_secs() - since > (self.config.stop_grace_secs + 30) as f64
        {
            // The agents escalate to SIGKILL themselves; this is for an agent that cannot.
            for handle in running_handles(job.state(), None) {
                self.executor.signal(&handle, StopSignal::Kill);
            }
        }
        let Some(loss) = loss else { return Ok(()) };
        // A result may have landed between our read and the liveness check.
        let fresh = self.require(job.name())?;
        if fresh.state().status.is_terminal()
            || lost.iter().all(|d| {
                fresh
                    .state()
                    .hosts
                    .iter()
                    .any(|h| &h.name == d && h.result.is_some())
            })
        {
            return Ok(());
        }
        *job = fresh;
        for handle in running_handles(job.state(), None) {
            self.executor.signal(&handle, StopSignal::Term);
        }
        let reason = match &loss.detail {
            Some(detail) => format!(
                "InternalServerError: {detail} before {} reported a result; its output is {}",
                lost.join(", "),
                loss.output
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
            None => format!(
                "InternalServerError: the host agent of {} exited without reporting a result; its log is {}",
                lost.join(", "),
                self.host_dir(job, &lost[0]).join("agent.log").display()
            ),
        };
        let max_retries = self.kind.shape(job).max_retries;
        let requeued = job.state_mut().hosts_lost(
            K::KIND.words(),
            max_retries,
            &lost[0],
            reason,
            loss.transient,
            now_secs(),
        );
        self.kind.save_state(job)?;
        if requeued {
            self.ledger.release(K::KIND, job.name());
            self.wake.notify_one();
        } else if job.state().status.is_terminal() {
            self.ended(job)?;
        }
        Ok(())
    }
}
