//! The hosting loop: for each endpoint, observe its instances (alive? healthy?), let the
//! domain's reconciler decide, and carry out its decisions (launch, signal, route, remove).

use super::Hosting;
use super::instances::{log_tail, ping};
use crate::domain::endpoint::{Action, Endpoint, Instance, Seen, endpoint_log_group};
use crate::error::ControlError;
use crate::now_secs;
use crate::routes::{EndpointRoute, VariantRoute};
use clary_exec::{Observed, StopSignal};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

impl Hosting {
    /// Runs endpoints for the server's lifetime. After a restart, instances still running are
    /// taken back (their model servers never depended on this process); lost ones relaunch.
    pub async fn run(self: Arc<Self>) {
        {
            let _guard = self.lock.lock().await;
            match self.store.endpoints() {
                Ok(endpoints) => {
                    for mut ep in endpoints {
                        ep.forget_health();
                        for i in ep.instances_mut() {
                            if i.launched() && !self.alive(i) {
                                i.forget_launch();
                            }
                        }
                        if let Err(e) = self.store.save_endpoint(&ep) {
                            tracing::error!("hosting: {e}");
                        }
                    }
                }
                Err(e) => tracing::error!("hosting: {e}"),
            }
        }
        loop {
            {
                let _guard = self.lock.lock().await;
                match self.store.endpoints() {
                    Ok(endpoints) => {
                        for ep in endpoints {
                            if let Err(e) = self.pass(ep).await {
                                tracing::error!("hosting: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::error!("hosting: {e}"),
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// One reconciler pass over one endpoint.
    async fn pass(&self, mut ep: Endpoint) -> Result<(), ControlError> {
        let before = ep.clone();
        let group = endpoint_log_group(&ep.name);
        for i in ep.instances_mut() {
            self.ship_log(&group, i);
        }
        self.take_reports(&mut ep);
        let seen = self.observe(&ep).await;
        let now = now_secs();
        for action in ep.reconcile(&seen, now) {
            match action {
                Action::Launch(id) => self.launch(&mut ep, &id, now),
                Action::Terminate(id) => self.signal(&ep, &id, StopSignal::Term),
                Action::Kill(id) => self.signal(&ep, &id, StopSignal::Kill),
                Action::ForgetRoute(id) => self.routes.forget_instance(&id),
                Action::Publish => self.publish(&ep),
                Action::Remove => {
                    self.store.delete_endpoint(&ep.name)?;
                    self.routes.remove(&ep.name);
                    let dir = self.config.data_dir.join("endpoints").join(&ep.name);
                    if let Err(e) = std::fs::remove_dir_all(&dir)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!("endpoint {}: removing its files: {e}", ep.name);
                    }
                    return Ok(());
                }
            }
        }
        if ep != before {
            self.store.save_endpoint(&ep)?;
        }
        Ok(())
    }

    /// Addresses that model servers on cluster nodes reported since the last pass.
    fn take_reports(&self, ep: &mut Endpoint) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        for i in ep.instances_mut() {
            if let Some((address, port)) = reports.remove(&i.id)
                && i.port == 0
            {
                i.address = address;
                i.port = port;
            }
        }
    }

    pub(super) fn alive(&self, i: &Instance) -> bool {
        i.handle
            .is_some_and(|h| !matches!(self.executor.observe(&h), Observed::Gone(_)))
    }

    /// What each instance is doing: launched? alive? answering its health check?
    async fn observe(&self, ep: &Endpoint) -> HashMap<String, Seen> {
        let mut seen = HashMap::new();
        let retiring: Vec<&str> = ep.retiring.iter().map(|i| i.id.as_str()).collect();
        for i in ep.instances() {
            let state = if !i.launched() {
                Seen::NotLaunched
            } else if !self.alive(i) {
                Seen::Exited {
                    last_output: if retiring.contains(&i.id.as_str()) {
                        String::new()
                    } else {
                        self.as_the_container_sees_it(i, &log_tail(&i.log_file(), 12))
                    },
                }
            } else if retiring.contains(&i.id.as_str()) || i.port == 0 {
                // On a cluster the port is known once the model server has reported it.
                Seen::Starting
            } else if i.healthy {
                Seen::Healthy
            } else {
                match ping(&i.address, i.port, &i.token).await {
                    Some((200, _)) => Seen::Healthy,
                    Some((500, body)) => Seen::FailedPing {
                        reason: self.as_the_container_sees_it(
                            i,
                            &serde_json::from_str::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["reason"].as_str().map(str::to_string))
                                .unwrap_or(body),
                        ),
                    },
                    _ => Seen::Starting,
                }
            };
            seen.insert(i.id.clone(), state);
        }
        seen
    }

    /// A model server's words with this server's paths put as the container would show them
    /// (`/opt/ml/model`, `/opt/ml`) or hidden: answers never carry a server path.
    fn as_the_container_sees_it(&self, i: &Instance, text: &str) -> String {
        let shown = |p: &std::path::Path| p.display().to_string();
        let mut out = text
            .replace(&shown(&i.work_dir.join("model")), "/opt/ml/model")
            .replace(&shown(&i.work_dir), "/opt/ml");
        for (dir, placeholder) in [
            (&self.config.python_shims, "<clary>"),
            (&self.config.runtimes_dir, "<runtime>"),
            (&self.config.data_dir, "<data dir>"),
        ] {
            out = out.replace(&shown(dir), placeholder);
        }
        out
    }

    fn launch(&self, ep: &mut Endpoint, id: &str, now: f64) {
        // Only an instance still meant to run: an earlier launch of this pass may have failed
        // its deployment.
        let found = ep
            .live
            .instances
            .iter()
            .map(|i| (i, &ep.live.plan))
            .chain(
                ep.pending
                    .iter()
                    .flat_map(|p| p.instances.iter().map(move |i| (i, &p.plan))),
            )
            .find(|(i, _)| i.id == id)
            .and_then(|(i, plan)| {
                let v = plan.iter().find(|v| v.name == i.variant)?;
                Some((i.clone(), v.clone()))
            });
        let Some((instance, variant)) = found else {
            return;
        };
        match self.launch_instance(&ep.name, &variant, &instance) {
            Ok(launched) => ep.record_launch(id, launched, now),
            Err(e) => {
                tracing::warn!("endpoint {}: instance {id}: {e}", ep.name);
                ep.launch_failed(id, &e, now);
            }
        }
    }

    fn signal(&self, ep: &Endpoint, id: &str, signal: StopSignal) {
        if let Some(h) = ep.instances().find(|i| i.id == id).and_then(|i| i.handle) {
            self.executor.signal(&h, signal);
        }
    }

    fn publish(&self, ep: &Endpoint) {
        let variants = ep
            .routable()
            .into_iter()
            .map(|(v, instances)| VariantRoute {
                name: v.name.clone(),
                weight: v.weight,
                instances: instances
                    .into_iter()
                    .map(|i| {
                        self.routes
                            .instance(&i.id, &format!("{}:{}", i.address, i.port), &i.token)
                    })
                    .collect(),
            })
            .collect();
        self.routes.publish(EndpointRoute {
            name: ep.name.clone(),
            variants,
        });
    }
}
