//! Endpoints: create, update, delete, describe, list.

use super::instances::uuid_hex;
use super::*;

impl ControlPlane {
    // ---- endpoints ----------------------------------------------------------------------

    pub(super) fn load_endpoint(&self, name: &str) -> Result<Option<Endpoint>, ControlError> {
        let conn = self.db.lock();
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM endpoints WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(state.and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub(super) fn require_endpoint(&self, name: &str) -> Result<Endpoint, ControlError> {
        self.load_endpoint(name)?.ok_or_else(|| {
            ControlError::Validation(format!(
                "Could not find endpoint \"{}\".",
                arn(self, "endpoint", name)
            ))
        })
    }

    pub(super) fn save_endpoint(&self, ep: &Endpoint) -> Result<(), ControlError> {
        self.db.lock().execute(
            "INSERT INTO endpoints (name, arn, state, creation_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET state = excluded.state",
            params![
                ep.name,
                ep.arn,
                serde_json::to_string(ep).unwrap_or_default(),
                ep.creation_time
            ],
        )?;
        Ok(())
    }

    pub(super) fn all_endpoints(&self) -> Result<Vec<Endpoint>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare("SELECT state FROM endpoints ORDER BY creation_time")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    pub(super) fn new_instances(&self, endpoint: &str, plan: &[VariantPlan]) -> Vec<Instance> {
        let mut out = Vec::new();
        for v in plan {
            for _ in 0..v.count {
                let id = format!("i-{}", &uuid_hex()[..17]);
                out.push(Instance {
                    work_dir: self
                        .config
                        .data_dir
                        .join("endpoints")
                        .join(endpoint)
                        .join(&id),
                    log_stream: format!("{}/{id}", v.name),
                    id,
                    variant: v.name.clone(),
                    pid: 0,
                    start_ticks: 0,
                    port: 0,
                    log_offset: 0,
                    healthy: false,
                    launched_at: 0.0,
                    stopping_since: None,
                    slurm_job: None,
                    address: loopback(),
                });
            }
        }
        out
    }

    pub fn create_endpoint(&self, name: &str, config_name: &str) -> Result<String, ControlError> {
        let _guard = self.hosting_lock.blocking_lock();
        let arn = arn(self, "endpoint", name);
        if self.load_endpoint(name)?.is_some() {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing endpoint \"{arn}\"."
            )));
        }
        let plan = self.plan(config_name)?;
        let now = now_secs();
        let ep = Endpoint {
            name: name.to_string(),
            arn: arn.clone(),
            config_name: config_name.to_string(),
            status: "Creating".into(),
            failure_reason: None,
            creation_time: now,
            last_modified_time: now,
            instances: self.new_instances(name, &plan),
            plan,
            pending: None,
            retiring: Vec::new(),
        };
        self.save_endpoint(&ep)?;
        self.endpoint_wake.notify_one();
        Ok(arn)
    }

    pub fn update_endpoint(&self, name: &str, config_name: &str) -> Result<String, ControlError> {
        let _guard = self.hosting_lock.blocking_lock();
        let mut ep = self.require_endpoint(name)?;
        if ep.status != "InService" {
            return Err(ControlError::Validation(format!(
                "Cannot update in-progress endpoint \"{}\": it is {}; wait until it is InService",
                ep.arn, ep.status
            )));
        }
        let plan = self.plan(config_name)?;
        ep.pending = Some(Pending {
            config_name: config_name.to_string(),
            instances: self.new_instances(name, &plan),
            plan,
        });
        ep.status = "Updating".into();
        ep.failure_reason = None;
        ep.last_modified_time = now_secs();
        self.save_endpoint(&ep)?;
        self.endpoint_wake.notify_one();
        Ok(ep.arn)
    }

    pub fn delete_endpoint(&self, name: &str) -> Result<(), ControlError> {
        let _guard = self.hosting_lock.blocking_lock();
        let mut ep = self.require_endpoint(name)?;
        if ep.status == "Deleting" {
            return Ok(());
        }
        ep.status = "Deleting".into();
        ep.last_modified_time = now_secs();
        let mut all = std::mem::take(&mut ep.instances);
        if let Some(p) = ep.pending.take() {
            all.extend(p.instances);
        }
        ep.retiring.extend(all);
        self.routes.remove(name);
        self.save_endpoint(&ep)?;
        self.endpoint_wake.notify_one();
        Ok(())
    }

    pub fn describe_endpoint(&self, name: &str) -> Result<Value, ControlError> {
        let ep = self.require_endpoint(name)?;
        Ok(self.endpoint_json(&ep))
    }

    pub(super) fn endpoint_json(&self, ep: &Endpoint) -> Value {
        let variants: Vec<Value> = ep
            .plan
            .iter()
            .map(|v| {
                let current = ep
                    .instances
                    .iter()
                    .filter(|i| i.variant == v.name && i.healthy)
                    .count();
                json!({
                    "VariantName": v.name, "CurrentWeight": v.weight, "DesiredWeight": v.weight,
                    "CurrentInstanceCount": current, "DesiredInstanceCount": v.count,
                    "DeployedImages": [{"SpecifiedImage": v.image, "ResolvedImage": v.image, "ResolutionTime": ep.creation_time}],
                })
            })
            .collect();
        let mut out = json!({
            "EndpointName": ep.name, "EndpointArn": ep.arn, "EndpointConfigName": ep.config_name,
            "ProductionVariants": variants, "EndpointStatus": ep.status,
            "CreationTime": ep.creation_time, "LastModifiedTime": ep.last_modified_time,
        });
        if let Some(r) = &ep.failure_reason {
            out["FailureReason"] = json!(r);
        }
        out
    }

    pub fn list_endpoints(&self, q: &ListQuery) -> Result<Value, ControlError> {
        let states: BTreeMap<String, (String, f64)> = self
            .all_endpoints()?
            .into_iter()
            .map(|e| (e.name.clone(), (e.status, e.last_modified_time)))
            .collect();
        let (items, next) = self.list_resources("endpoints", q, |n, a, t| {
            let (status, modified) = states.get(n).cloned().unwrap_or(("Deleting".into(), t));
            json!({"EndpointName": n, "EndpointArn": a, "CreationTime": t,
                   "LastModifiedTime": modified, "EndpointStatus": status})
        })?;
        let mut out = json!({"Endpoints": items});
        if let Some(n) = next {
            out["NextToken"] = json!(n);
        }
        Ok(out)
    }

    /// The log group of an endpoint's instances.
    pub fn endpoint_log_group(name: &str) -> String {
        format!("{ENDPOINT_LOG_GROUP_PREFIX}{name}")
    }
}
