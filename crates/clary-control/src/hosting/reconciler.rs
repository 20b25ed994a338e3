//! The hosting loop: brings each endpoint's instances to what its configuration asks for
//! (desired vs actual), switches traffic, replaces lost instances and ships their logs.

use super::instances::{log_tail, ping};
use super::*;

impl ControlPlane {
    // ---- the loop -----------------------------------------------------------------------

    /// Runs endpoints for the server's lifetime. After a restart, instances still running are
    /// taken back (their model servers never depended on this process); lost ones relaunch.
    pub async fn run_hosting(self: Arc<Self>) {
        {
            let _guard = self.hosting_lock.lock().await;
            if let Ok(eps) = self.all_endpoints() {
                for mut ep in eps {
                    for i in ep
                        .instances
                        .iter_mut()
                        .chain(ep.pending.iter_mut().flat_map(|p| p.instances.iter_mut()))
                    {
                        i.healthy = false;
                        if i.launched() && !self.instance_alive(i) {
                            i.forget_launch();
                        }
                    }
                    let _ = self.save_endpoint(&ep);
                }
            }
        }
        loop {
            {
                let _guard = self.hosting_lock.lock().await;
                match self.all_endpoints() {
                    Ok(eps) => {
                        for ep in eps {
                            if let Err(e) = self.step(ep).await {
                                tracing::error!("hosting: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::error!("hosting: {e}"),
                }
            }
            tokio::select! {
                _ = self.endpoint_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    pub(super) async fn step(&self, mut ep: Endpoint) -> Result<(), ControlError> {
        let before = serde_json::to_string(&ep).unwrap_or_default();
        let group = Self::endpoint_log_group(&ep.name);
        for i in ep
            .instances
            .iter_mut()
            .chain(ep.retiring.iter_mut())
            .chain(ep.pending.iter_mut().flat_map(|p| p.instances.iter_mut()))
        {
            self.ship_log(&group, i);
        }
        self.retire(&mut ep);
        if ep.status == "Deleting" {
            if ep.retiring.is_empty() {
                self.db
                    .lock()
                    .execute("DELETE FROM endpoints WHERE name = ?1", params![ep.name])?;
                self.routes.remove(&ep.name);
                let _ =
                    std::fs::remove_dir_all(self.config.data_dir.join("endpoints").join(&ep.name));
                return Ok(());
            }
        } else if ep.status != "Failed" {
            self.advance(&mut ep).await;
        }
        if serde_json::to_string(&ep).unwrap_or_default() != before {
            self.save_endpoint(&ep)?;
        }
        Ok(())
    }

    /// Launches, checks and replaces instances, and moves the endpoint along.
    pub(super) async fn advance(&self, ep: &mut Endpoint) {
        let plan = ep.plan.clone();
        let failure = self
            .tend(&ep.name, &plan, &mut ep.instances, ep.status == "InService")
            .await;
        match ep.status.as_str() {
            "Creating" => {
                if let Some(reason) = failure {
                    ep.status = "Failed".into();
                    ep.failure_reason = Some(reason);
                    ep.retiring.append(&mut ep.instances);
                    ep.last_modified_time = now_secs();
                } else if ep.instances.iter().all(|i| i.healthy) {
                    ep.status = "InService".into();
                    ep.last_modified_time = now_secs();
                }
            }
            "Updating" => {
                let Some(mut pending) = ep.pending.take() else {
                    ep.status = "InService".into();
                    return;
                };
                let failed = self
                    .tend(&ep.name, &pending.plan, &mut pending.instances, false)
                    .await;
                if let Some(reason) = failed {
                    ep.status = "RollingBack".into();
                    ep.failure_reason = Some(format!(
                        "Updating to endpoint configuration {} failed, so the endpoint kept its previous configuration: {reason}",
                        pending.config_name
                    ));
                    ep.retiring.append(&mut pending.instances);
                    ep.last_modified_time = now_secs();
                } else if pending.instances.iter().all(|i| i.healthy) {
                    // Traffic moves to the new instances; the old ones drain and stop.
                    ep.retiring.append(&mut ep.instances);
                    ep.instances = pending.instances;
                    ep.plan = pending.plan;
                    ep.config_name = pending.config_name;
                    ep.status = "InService".into();
                    ep.last_modified_time = now_secs();
                } else {
                    ep.pending = Some(pending);
                }
            }
            "RollingBack" => {
                ep.status = "InService".into();
                ep.last_modified_time = now_secs();
            }
            _ => {}
        }
        if matches!(ep.status.as_str(), "InService" | "Updating") {
            self.publish(ep);
        }
    }

    pub(super) fn publish(&self, ep: &Endpoint) {
        let variants = ep
            .plan
            .iter()
            .map(|v| VariantRoute {
                name: v.name.clone(),
                weight: v.weight,
                instances: ep
                    .instances
                    .iter()
                    .filter(|i| i.variant == v.name && i.healthy)
                    .map(|i| {
                        self.routes
                            .instance(&i.id, &format!("{}:{}", i.address, i.port))
                    })
                    .collect(),
            })
            .collect();
        self.routes.publish(EndpointRoute {
            name: ep.name.clone(),
            variants,
        });
    }

    /// Launches unlaunched instances and pings those not yet healthy. Returns why the set
    /// failed, when an instance cannot come up; with `replace_lost`, a dead instance is
    /// relaunched instead.
    pub(super) async fn tend(
        &self,
        endpoint: &str,
        plan: &[VariantPlan],
        instances: &mut [Instance],
        replace_lost: bool,
    ) -> Option<String> {
        for i in instances.iter_mut() {
            if !i.launched() {
                let Some(v) = plan.iter().find(|v| v.name == i.variant) else {
                    continue;
                };
                if let Err(e) = self.launch_instance(endpoint, v, i) {
                    return Some(format!(
                        "could not start an instance of variant {}: {e}",
                        i.variant
                    ));
                }
                continue;
            }
            if !self.instance_alive(i) {
                let tail = log_tail(&i.log_file(), 12);
                if replace_lost {
                    tracing::warn!(
                        "endpoint {endpoint}: instance {} exited; replacing it",
                        i.id
                    );
                    self.routes.forget_instance(&i.id);
                    i.forget_launch();
                    continue;
                }
                return Some(format!(
                    "The model server of production variant {} (instance {}) exited before it was healthy. Its last output:\n{tail}",
                    i.variant, i.id
                ));
            }
            if i.port == 0
                && let Some((address, port)) = self
                    .instance_reports
                    .lock()
                    .expect("instance reports")
                    .remove(&i.id)
            {
                i.address = address;
                i.port = port;
            }
            // On Slurm the port is known once the model server has reported it.
            if i.healthy || i.port == 0 {
                continue;
            }
            match ping(&i.address, i.port).await {
                Some((200, _)) => i.healthy = true,
                Some((500, body)) => {
                    let reason = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["reason"].as_str().map(str::to_string))
                        .unwrap_or(body);
                    self.kill_instance(i);
                    return Some(format!(
                        "The primary container for production variant {} did not pass the ping health check: {reason}. See log group {}, stream {}",
                        i.variant,
                        Self::endpoint_log_group(endpoint),
                        i.log_stream
                    ));
                }
                _ => {}
            }
        }
        None
    }
}
