//! An endpoint and the pure reconciler that moves it: desired instances (its deployment's
//! plan) against actual ones (what the hosting loop saw of each). `Creating → InService`,
//! `Updating → InService` (new instances up, traffic switched, old ones drained) or
//! `RollingBack → InService` on a bad config, `Failed`, and `Deleting` (SIGTERM, SIGKILL after
//! the grace period). [`Endpoint::reconcile`] does no I/O: it takes what was seen and the clock,
//! changes the endpoint and says what to do ([`Action`]).

use super::hosting::VariantPlan;
use clary_exec::ExecHandle;
use std::collections::HashMap;
use std::path::PathBuf;

pub const ENDPOINT_LOG_GROUP_PREFIX: &str = "/aws/sagemaker/Endpoints/";

/// SIGTERM → SIGKILL for instances being deleted or drained.
pub const STOP_GRACE_SECS: f64 = 30.0;

/// The log group of an endpoint's instances.
pub fn endpoint_log_group(endpoint: &str) -> String {
    format!("{ENDPOINT_LOG_GROUP_PREFIX}{endpoint}")
}

/// `EndpointStatus` (the states Clary's endpoints go through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    Creating,
    Updating,
    RollingBack,
    InService,
    Deleting,
    Failed,
}

impl EndpointStatus {
    pub const ALL: [EndpointStatus; 6] = [
        EndpointStatus::Creating,
        EndpointStatus::Updating,
        EndpointStatus::RollingBack,
        EndpointStatus::InService,
        EndpointStatus::Deleting,
        EndpointStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Creating => "Creating",
            EndpointStatus::Updating => "Updating",
            EndpointStatus::RollingBack => "RollingBack",
            EndpointStatus::InService => "InService",
            EndpointStatus::Deleting => "Deleting",
            EndpointStatus::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One endpoint instance (one model server).
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub variant: String,
    /// Where the executor runs it; `None` until launched.
    pub handle: Option<ExecHandle>,
    /// Where its model server listens: loopback for a local one, the node's address on a
    /// cluster (reported with the port).
    pub address: String,
    /// 0 until known.
    pub port: u16,
    /// What the router presents to its model server (see `ModelServerSpec::token`).
    pub token: String,
    pub work_dir: PathBuf,
    pub log_stream: String,
    /// How much of its output has been shipped to its log stream.
    pub log_offset: u64,
    pub healthy: bool,
    pub launched_at: f64,
    pub stopping_since: Option<f64>,
}

impl Instance {
    pub fn new(id: String, variant: &str, work_dir: PathBuf) -> Self {
        Instance {
            log_stream: format!("{variant}/{id}"),
            id,
            variant: variant.to_string(),
            handle: None,
            address: "127.0.0.1".into(),
            port: 0,
            token: String::new(),
            work_dir,
            log_offset: 0,
            healthy: false,
            launched_at: 0.0,
            stopping_since: None,
        }
    }

    pub fn launched(&self) -> bool {
        self.handle.is_some()
    }

    /// Back to "not started", so the reconciler launches it again.
    pub fn forget_launch(&mut self) {
        self.handle = None;
        self.port = 0;
        self.healthy = false;
    }

    /// Its model server's output, which the hosting loop ships to its log stream.
    pub fn log_file(&self) -> PathBuf {
        self.work_dir.join("model-server.log")
    }
}

/// A configuration deployed (or being deployed) on an endpoint, with its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub config_name: String,
    pub plan: Vec<VariantPlan>,
    pub instances: Vec<Instance>,
}

/// An endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub arn: String,
    pub status: EndpointStatus,
    pub failure_reason: Option<String>,
    pub creation_time: f64,
    pub last_modified_time: f64,
    /// What serves traffic (or will, once `Creating` ends).
    pub live: Deployment,
    /// An update on its way in.
    pub pending: Option<Deployment>,
    /// Instances on their way out (drained after an update, or being deleted).
    pub retiring: Vec<Instance>,
}

/// A started instance: where it runs, the port it listens on (0 on a cluster node, which
/// reports it) and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub handle: ExecHandle,
    pub port: u16,
    pub token: String,
}

/// What the hosting loop saw of one instance in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never started, or forgotten.
    NotLaunched,
    /// Running, not (yet) answering its health check.
    Starting,
    Healthy,
    /// Its process or cluster job is gone; its last output.
    Exited {
        last_output: String,
    },
    /// It answered its health check with a failure.
    FailedPing {
        reason: String,
    },
}

/// What the reconciler asks the hosting loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this instance's model server through the executor.
    Launch(String),
    /// SIGTERM: the model server finishes the requests it holds.
    Terminate(String),
    Kill(String),
    /// Take this instance out of the router.
    ForgetRoute(String),
    /// Route traffic to the live deployment's healthy instances.
    Publish,
    /// The endpoint is gone: remove it, its route and its files.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "Cannot update in-progress endpoint \"{arn}\": it is {status}; wait until it is InService"
    )]
    NotInService { arn: String, status: &'static str },
}

impl Endpoint {
    pub fn new(name: &str, arn: String, live: Deployment, now: f64) -> Self {
        Endpoint {
            name: name.to_string(),
            arn,
            status: EndpointStatus::Creating,
            failure_reason: None,
            creation_time: now,
            last_modified_time: now,
            live,
            pending: None,
            retiring: Vec::new(),
        }
    }

    /// Every instance: live, pending and retiring.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.live
            .instances
            .iter()
            .chain(self.pending.iter().flat_map(|p| p.instances.iter()))
            .chain(self.retiring.iter())
    }

    pub fn instances_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.live
            .instances
            .iter_mut()
            .chain(self.pending.iter_mut().flat_map(|p| p.instances.iter_mut()))
            .chain(self.retiring.iter_mut())
    }

    pub fn instance_mut(&mut self, id: &str) -> Option<&mut Instance> {
        self.instances_mut().find(|i| i.id == id)
    }

    /// `UpdateEndpoint`: the new deployment comes up beside the live one.
    pub fn begin_update(&mut self, next: Deployment, now: f64) -> Result<(), EndpointError> {
        if self.status != EndpointStatus::InService {
            return Err(EndpointError::NotInService {
                arn: self.arn.clone(),
                status: self.status.as_str(),
            });
        }
        self.pending = Some(next);
        self.status = EndpointStatus::Updating;
        self.failure_reason = None;
        self.last_modified_time = now;
        Ok(())
    }

    /// `DeleteEndpoint`: every instance retires. False when it was already being deleted.
    pub fn begin_delete(&mut self, now: f64) -> bool {
        if self.status == EndpointStatus::Deleting {
            return false;
        }
        self.status = EndpointStatus::Deleting;
        self.last_modified_time = now;
        let mut all = std::mem::take(&mut self.live.instances);
        if let Some(p) = self.pending.take() {
            all.extend(p.instances);
        }
        self.retiring.extend(all);
        true
    }

    /// After a server restart nothing is known healthy until it answers again.
    pub fn forget_health(&mut self) {
        for i in self.instances_mut() {
            i.healthy = false;
        }
    }

    /// An instance was started.
    pub fn record_launch(&mut self, id: &str, launched: Launched, now: f64) {
        if let Some(i) = self.instance_mut(id) {
            i.handle = Some(launched.handle);
            i.port = launched.port;
            i.token = launched.token;
            i.address = "127.0.0.1".into();
            i.healthy = false;
            i.launched_at = now;
            i.stopping_since = None;
        }
    }

    /// A model server on a cluster node said where it listens.
    pub fn record_address(&mut self, id: &str, address: &str, port: u16) {
        if let Some(i) = self.instance_mut(id).filter(|i| i.port == 0) {
            i.address = address.to_string();
            i.port = port;
        }
    }

    /// An instance could not be started: the deployment it belongs to fails, unless it replaces
    /// a lost instance of a serving endpoint (then the next pass tries again).
    pub fn launch_failed(&mut self, id: &str, error: &str, now: f64) {
        let Some(i) = self.instances().find(|i| i.id == id) else {
            return;
        };
        let reason = format!(
            "could not start an instance of variant {}: {error}",
            i.variant
        );
        let in_pending = self
            .pending
            .as_ref()
            .is_some_and(|p| p.instances.iter().any(|i| i.id == id));
        if in_pending {
            self.roll_back(&reason, now);
        } else if self.status == EndpointStatus::Creating {
            self.fail(reason, now);
        }
    }

    fn fail(&mut self, reason: String, now: f64) {
        self.status = EndpointStatus::Failed;
        self.failure_reason = Some(reason);
        self.retiring.append(&mut self.live.instances);
        self.last_modified_time = now;
    }

    fn roll_back(&mut self, reason: &str, now: f64) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        self.status = EndpointStatus::RollingBack;
        self.failure_reason = Some(format!(
            "Updating to endpoint configuration {} failed, so the endpoint kept its previous configuration: {reason}",
            pending.config_name
        ));
        self.retiring.append(&mut pending.instances);
        self.last_modified_time = now;
    }

    /// One pass of the reconciler: retires what is leaving, launches what is missing, takes in
    /// what became healthy and moves the endpoint's status along. `seen` holds what the hosting
    /// loop observed of each instance (an instance it has no word on is taken as starting).
    pub fn reconcile(&mut self, seen: &HashMap<String, Seen>, now: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.retire(seen, now, &mut actions);
        match self.status {
            EndpointStatus::Deleting => {
                if self.retiring.is_empty() {
                    actions.push(Action::Remove);
                }
                return actions;
            }
            EndpointStatus::Failed => return actions,
            _ => {}
        }
        let serving = self.status != EndpointStatus::Creating;
        let group = endpoint_log_group(&self.name);
        let failure = tend(&mut self.live, seen, serving, &group, &mut actions);
        match self.status {
            EndpointStatus::Creating => {
                if let Some(reason) = failure {
                    self.fail(reason, now);
                } else if self.live.instances.iter().all(|i| i.healthy) {
                    self.status = EndpointStatus::InService;
                    self.last_modified_time = now;
                }
            }
            EndpointStatus::Updating => self.advance_update(seen, &group, now, &mut actions),
            EndpointStatus::RollingBack => {
                self.status = EndpointStatus::InService;
                self.last_modified_time = now;
            }
            _ => {}
        }
        if matches!(
            self.status,
            EndpointStatus::InService | EndpointStatus::Updating
        ) {
            actions.push(Action::Publish);
        }
        actions
    }

    fn advance_update(
        &mut self,
        seen: &HashMap<String, Seen>,
        group: &str,
        now: f64,
        actions: &mut Vec<Action>,
    ) {
        let Some(mut next) = self.pending.take() else {
            self.status = EndpointStatus::InService;
            return;
        };
        let failure = tend(&mut next, seen, false, group, actions);
        let ready = next.instances.iter().all(|i| i.healthy);
        self.pending = Some(next);
        if let Some(reason) = failure {
            self.roll_back(&reason, now);
        } else if ready {
            // Traffic moves to the new instances; the old ones drain and stop.
            let next = self.pending.take().expect("pending deployment");
            let old = std::mem::replace(&mut self.live, next);
            self.retiring.extend(old.instances);
            self.status = EndpointStatus::InService;
            self.last_modified_time = now;
        }
    }

    /// Retiring instances leave the router, get SIGTERM, SIGKILL after the grace period, and
    /// are forgotten once gone.
    fn retire(&mut self, seen: &HashMap<String, Seen>, now: f64, actions: &mut Vec<Action>) {
        self.retiring.retain_mut(|i| {
            actions.push(Action::ForgetRoute(i.id.clone()));
            if !i.launched()
                || matches!(
                    seen.get(&i.id),
                    Some(Seen::NotLaunched | Seen::Exited { .. })
                )
            {
                return false;
            }
            match i.stopping_since {
                None => {
                    actions.push(Action::Terminate(i.id.clone()));
                    i.stopping_since = Some(now);
                }
                Some(t) if now - t > STOP_GRACE_SECS => actions.push(Action::Kill(i.id.clone())),
                Some(_) => {}
            }
            true
        });
    }

    /// The live deployment's healthy instances by variant, with each variant's weight: what
    /// the router may send traffic to.
    pub fn routable(&self) -> Vec<(&VariantPlan, Vec<&Instance>)> {
        self.live
            .plan
            .iter()
            .map(|v| {
                let healthy = self
                    .live
                    .instances
                    .iter()
                    .filter(|i| i.variant == v.name && i.healthy && i.port != 0)
                    .collect();
                (v, healthy)
            })
            .collect()
    }
}

/// Launches a deployment's missing instances and takes in those that became healthy. Returns
/// why the deployment failed, when an instance cannot come up; with `replace_lost`, a dead
/// instance is launched again instead.
fn tend(
    deployment: &mut Deployment,
    seen: &HashMap<String, Seen>,
    replace_lost: bool,
    log_group: &str,
    actions: &mut Vec<Action>,
) -> Option<String> {
    for i in deployment.instances.iter_mut() {
        let observed = match seen.get(&i.id) {
            Some(s) => s.clone(),
            None if !i.launched() => Seen::NotLaunched,
            None => Seen::Starting,
        };
        match observed {
            Seen::NotLaunched => actions.push(Action::Launch(i.id.clone())),
            Seen::Starting => {}
            Seen::Healthy => i.healthy = true,
            Seen::Exited { last_output } => {
                if !replace_lost {
                    return Some(format!(
                        "The model server of production variant {} (instance {}) exited before it was healthy. Its last output:\n{last_output}",
                        i.variant, i.id
                    ));
                }
                actions.push(Action::ForgetRoute(i.id.clone()));
                i.forget_launch();
                actions.push(Action::Launch(i.id.clone()));
            }
            Seen::FailedPing { reason } => {
                actions.push(Action::Kill(i.id.clone()));
                return Some(format!(
                    "The primary container for production variant {} did not pass the ping health check: {reason}. See log group {log_group}, stream {}",
                    i.variant, i.log_stream
                ));
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
