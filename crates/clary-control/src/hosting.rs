//! Hosting: models, endpoint configurations and endpoints, and the loop that runs endpoints'
//! instances (one `clary model-server` each) through their state machine:
//! `Creating → InService`, `Updating → InService` (new instances up, traffic switched, old ones
//! drained) or `RollingBack → InService` on a bad config, `Failed`, and `Deleting` (SIGTERM,
//! SIGKILL after 30 s). The loop also replaces lost instances and copies each instance's output
//! into the log group `/aws/sagemaker/Endpoints/<name>`.

use crate::routes::{EndpointRoute, VariantRoute};
use crate::{ControlError, ControlPlane, now_millis, now_secs};
use clary_exec::HostProcess;
use clary_exec::protocol::ModelServerSpec;
use clary_exec::slurm::Submission;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const ENDPOINT_LOG_GROUP_PREFIX: &str = "/aws/sagemaker/Endpoints/";
/// SIGTERM → SIGKILL for instances being deleted or drained.
const STOP_GRACE_SECS: f64 = 30.0;

/// One variant of a deployment, with its model resolved when the deployment was made (so a
/// model or config deleted later does not disturb a running endpoint, as on SageMaker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantPlan {
    pub name: String,
    pub weight: f64,
    pub count: u32,
    pub instance_type: String,
    pub accelerator_type: Option<String>,
    pub model_name: String,
    pub image: String,
    pub model_data_url: Option<String>,
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    id: String,
    variant: String,
    /// 0 until launched.
    pid: i32,
    start_ticks: u64,
    port: u16,
    work_dir: PathBuf,
    log_stream: String,
    log_offset: u64,
    healthy: bool,
    launched_at: f64,
    stopping_since: Option<f64>,
    /// The Slurm job running this instance, when on Slurm.
    #[serde(default)]
    slurm_job: Option<u64>,
    /// Where its model server listens (the node's address on Slurm, reported with the port).
    #[serde(default = "loopback")]
    address: String,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

impl Instance {
    /// Started (a local process, or a Slurm job), whatever its state now.
    fn launched(&self) -> bool {
        self.pid != 0 || self.slurm_job.is_some()
    }

    /// Back to "not started", so the hosting loop launches a replacement.
    fn forget_launch(&mut self) {
        self.pid = 0;
        self.slurm_job = None;
        self.port = 0;
        self.healthy = false;
    }

    fn process(&self) -> HostProcess {
        HostProcess {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
    fn log_file(&self) -> PathBuf {
        self.work_dir.join("model-server.log")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    config_name: String,
    plan: Vec<VariantPlan>,
    instances: Vec<Instance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Endpoint {
    name: String,
    arn: String,
    config_name: String,
    status: String,
    failure_reason: Option<String>,
    creation_time: f64,
    last_modified_time: f64,
    plan: Vec<VariantPlan>,
    instances: Vec<Instance>,
    pending: Option<Pending>,
    /// Instances on their way out (drained after an update, or being deleted).
    retiring: Vec<Instance>,
}

/// Filters of the `List*` hosting calls.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub name_contains: Option<String>,
    pub status_equals: Option<String>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

fn arn(cp: &ControlPlane, kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:{kind}/{}",
        cp.config.region,
        cp.config.account,
        name.to_ascii_lowercase()
    )
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl ControlPlane {
    // ---- models -------------------------------------------------------------------------

    /// `CreateModel`, for a request the API layer validated (name, image, model data).
    pub fn create_model(&self, req: Value) -> Result<String, ControlError> {
        let name = req["ModelName"].as_str().unwrap_or_default().to_string();
        let arn = arn(self, "model", &name);
        let conn = self.db.lock();
        let exists: bool = conn
            .query_row(
                "SELECT 1 FROM models WHERE name = ?1",
                params![name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing model \"{arn}\"."
            )));
        }
        conn.execute(
            "INSERT INTO models (name, arn, request, creation_time) VALUES (?1, ?2, ?3, ?4)",
            params![name, arn, req.to_string(), now_secs()],
        )?;
        Ok(arn)
    }

    fn load_resource(
        &self,
        table: &str,
        name: &str,
    ) -> Result<Option<(String, Value, f64)>, ControlError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                &format!("SELECT arn, request, creation_time FROM {table} WHERE name = ?1"),
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, f64>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(a, req, t)| (a, serde_json::from_str(&req).unwrap_or(Value::Null), t)))
    }

    fn require_model(&self, name: &str) -> Result<(String, Value, f64), ControlError> {
        self.load_resource("models", name)?.ok_or_else(|| {
            ControlError::Validation(format!(
                "Could not find model \"{}\".",
                arn(self, "model", name)
            ))
        })
    }

    pub fn describe_model(&self, name: &str) -> Result<Value, ControlError> {
        let (arn, req, created) = self.require_model(name)?;
        let mut out = json!({
            "ModelName": req["ModelName"], "ModelArn": arn, "CreationTime": created,
            "ExecutionRoleArn": req["ExecutionRoleArn"],
            "EnableNetworkIsolation": req.get("EnableNetworkIsolation").cloned().unwrap_or(json!(false)),
        });
        for k in [
            "PrimaryContainer",
            "Containers",
            "InferenceExecutionConfig",
            "VpcConfig",
        ] {
            if let Some(v) = req.get(k) {
                out[k] = v.clone();
            }
        }
        Ok(out)
    }

    pub fn delete_model(&self, name: &str) -> Result<(), ControlError> {
        self.require_model(name)?;
        self.db
            .lock()
            .execute("DELETE FROM models WHERE name = ?1", params![name])?;
        Ok(())
    }

    fn list_resources(
        &self,
        table: &str,
        q: &ListQuery,
        summary: impl Fn(&str, &str, f64) -> Value,
    ) -> Result<(Vec<Value>, Option<String>), ControlError> {
        let max = q.max_results.unwrap_or(10).clamp(1, 100);
        let offset: i64 = match &q.next_token {
            Some(t) => t.parse().map_err(|_| {
                ControlError::Validation(format!(
                    "Invalid pagination token {t:?}; pass the NextToken of the previous response"
                ))
            })?,
            None => 0,
        };
        let order = if q.sort_by.as_deref() == Some("Name") {
            "name"
        } else {
            "creation_time"
        };
        let dir = if q.sort_order.as_deref() == Some("Ascending") {
            "ASC"
        } else {
            "DESC"
        };
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, arn, creation_time FROM {table}
             WHERE (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
               AND (?2 IS NULL OR creation_time > ?2) AND (?3 IS NULL OR creation_time < ?3)
             ORDER BY {order} {dir}, name {dir}"
        ))?;
        let rows: Vec<(String, String, f64)> = stmt
            .query_map(
                params![
                    q.name_contains,
                    q.creation_time_after,
                    q.creation_time_before
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        drop(conn);
        let items: Vec<Value> = rows
            .iter()
            .map(|(n, a, t)| summary(n, a, *t))
            .filter(|v| {
                q.status_equals
                    .as_deref()
                    .is_none_or(|s| v["EndpointStatus"].as_str() == Some(s))
            })
            .collect();
        let page: Vec<Value> = items
            .iter()
            .skip(offset as usize)
            .take(max as usize)
            .cloned()
            .collect();
        let next = (items.len() as i64 > offset + max).then(|| (offset + max).to_string());
        Ok((page, next))
    }

    pub fn list_models(&self, q: &ListQuery) -> Result<Value, ControlError> {
        let (items, next) = self.list_resources(
            "models",
            q,
            |n, a, t| json!({"ModelName": n, "ModelArn": a, "CreationTime": t}),
        )?;
        let mut out = json!({"Models": items});
        if let Some(n) = next {
            out["NextToken"] = json!(n);
        }
        Ok(out)
    }

    // ---- endpoint configurations --------------------------------------------------------

    pub fn create_endpoint_config(&self, req: Value) -> Result<String, ControlError> {
        let name = req["EndpointConfigName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let arn = arn(self, "endpoint-config", &name);
        if self.load_resource("endpoint_configs", &name)?.is_some() {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing endpoint configuration \"{arn}\"."
            )));
        }
        for v in req["ProductionVariants"].as_array().into_iter().flatten() {
            self.require_model(v["ModelName"].as_str().unwrap_or_default())?;
        }
        self.db.lock().execute(
            "INSERT INTO endpoint_configs (name, arn, request, creation_time) VALUES (?1, ?2, ?3, ?4)",
            params![name, arn, req.to_string(), now_secs()],
        )?;
        Ok(arn)
    }

    fn require_config(&self, name: &str) -> Result<(String, Value, f64), ControlError> {
        self.load_resource("endpoint_configs", name)?
            .ok_or_else(|| {
                ControlError::Validation(format!(
                    "Could not find endpoint configuration \"{}\".",
                    arn(self, "endpoint-config", name)
                ))
            })
    }

    pub fn describe_endpoint_config(&self, name: &str) -> Result<Value, ControlError> {
        let (arn, req, created) = self.require_config(name)?;
        let variants: Vec<Value> = req["ProductionVariants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut v| {
                let w = v
                    .get("InitialVariantWeight")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0);
                v["InitialVariantWeight"] = json!(w);
                v
            })
            .collect();
        let mut out = json!({
            "EndpointConfigName": req["EndpointConfigName"], "EndpointConfigArn": arn,
            "ProductionVariants": variants, "CreationTime": created,
        });
        for k in ["DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig"] {
            if let Some(v) = req.get(k) {
                out[k] = v.clone();
            }
        }
        Ok(out)
    }

    pub fn delete_endpoint_config(&self, name: &str) -> Result<(), ControlError> {
        self.require_config(name)?;
        self.db.lock().execute(
            "DELETE FROM endpoint_configs WHERE name = ?1",
            params![name],
        )?;
        Ok(())
    }

    pub fn list_endpoint_configs(&self, q: &ListQuery) -> Result<Value, ControlError> {
        let (items, next) = self.list_resources(
            "endpoint_configs",
            q,
            |n, a, t| json!({"EndpointConfigName": n, "EndpointConfigArn": a, "CreationTime": t}),
        )?;
        let mut out = json!({"EndpointConfigs": items});
        if let Some(n) = next {
            out["NextToken"] = json!(n);
        }
        Ok(out)
    }

    /// The variants of a config with each one's model resolved.
    fn plan(&self, config_name: &str) -> Result<Vec<VariantPlan>, ControlError> {
        let (_, cfg, _) = self.require_config(config_name)?;
        let mut plan = Vec::new();
        for v in cfg["ProductionVariants"].as_array().into_iter().flatten() {
            let model_name = v["ModelName"].as_str().unwrap_or_default().to_string();
            let (_, model, _) = self.require_model(&model_name)?;
            let container = model
                .get("PrimaryContainer")
                .or_else(|| model["Containers"].get(0))
                .cloned()
                .unwrap_or(Value::Null);
            plan.push(VariantPlan {
                name: v["VariantName"].as_str().unwrap_or_default().to_string(),
                weight: v
                    .get("InitialVariantWeight")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0),
                count: v["InitialInstanceCount"].as_u64().unwrap_or(1).max(1) as u32,
                instance_type: v["InstanceType"].as_str().unwrap_or_default().to_string(),
                accelerator_type: v["AcceleratorType"].as_str().map(str::to_string),
                model_name,
                image: container["Image"].as_str().unwrap_or_default().to_string(),
                model_data_url: container["ModelDataUrl"].as_str().map(str::to_string),
                environment: string_map(&container["Environment"]),
            });
        }
        Ok(plan)
    }

    // ---- endpoints ----------------------------------------------------------------------

    fn load_endpoint(&self, name: &str) -> Result<Option<Endpoint>, ControlError> {
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

    fn require_endpoint(&self, name: &str) -> Result<Endpoint, ControlError> {
        self.load_endpoint(name)?.ok_or_else(|| {
            ControlError::Validation(format!(
                "Could not find endpoint \"{}\".",
                arn(self, "endpoint", name)
            ))
        })
    }

    fn save_endpoint(&self, ep: &Endpoint) -> Result<(), ControlError> {
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

    fn all_endpoints(&self) -> Result<Vec<Endpoint>, ControlError> {
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

    fn new_instances(&self, endpoint: &str, plan: &[VariantPlan]) -> Vec<Instance> {
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

    fn endpoint_json(&self, ep: &Endpoint) -> Value {
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

    async fn step(&self, mut ep: Endpoint) -> Result<(), ControlError> {
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
    async fn advance(&self, ep: &mut Endpoint) {
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

    fn publish(&self, ep: &Endpoint) {
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
    async fn tend(
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

    /// The spec of an endpoint instance, for a model server started on a cluster node
    /// (`ClaryAgent.GetModelServerSpec`).
    pub fn model_server_spec(&self, endpoint: &str, instance: &str) -> Result<Value, ControlError> {
        let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        if !plain(endpoint) || !plain(instance) {
            return Err(ControlError::Validation(format!(
                "{endpoint:?}/{instance:?} is not an endpoint instance"
            )));
        }
        let path = self
            .config
            .data_dir
            .join("endpoints")
            .join(endpoint)
            .join(instance)
            .join("spec.json");
        let text = std::fs::read(&path).map_err(|_| {
            ControlError::ResourceNotFound(format!(
                "endpoint {endpoint} has no instance {instance}"
            ))
        })?;
        serde_json::from_slice(&text).map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// A model server on a cluster node says where it listens (`ClaryAgent.ReportInstance`).
    pub fn report_instance(&self, instance: &str, address: &str, port: u16) {
        self.instance_reports
            .lock()
            .expect("instance reports")
            .insert(instance.to_string(), (address.to_string(), port));
        self.endpoint_wake.notify_one();
    }

    fn instance_alive(&self, i: &Instance) -> bool {
        match (i.slurm_job, &self.config.slurm) {
            (Some(id), Some(slurm)) => slurm.state(id).is_some_and(|s| s.is_active()),
            (Some(_), None) => false,
            (None, _) => i.pid != 0 && self.exec.is_alive(i.process()),
        }
    }

    /// SIGTERM: the model server finishes the requests it holds.
    fn terminate_instance(&self, i: &Instance) {
        match (i.slurm_job, &self.config.slurm) {
            (Some(id), Some(slurm)) => slurm.cancel(id, Some("TERM")),
            _ => self.exec.terminate(i.process()),
        }
    }

    fn kill_instance(&self, i: &Instance) {
        match (i.slurm_job, &self.config.slurm) {
            (Some(id), Some(slurm)) => slurm.cancel(id, None),
            _ => self.exec.kill(i.process()),
        }
    }

    fn launch_instance(
        &self,
        endpoint: &str,
        v: &VariantPlan,
        i: &mut Instance,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&i.work_dir)
            .map_err(|e| format!("creating {}: {e}", i.work_dir.display()))?;
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let spec = ModelServerSpec {
            endpoint_name: endpoint.to_string(),
            variant_name: v.name.clone(),
            instance_id: i.id.clone(),
            image: v.image.clone(),
            model_data_url: v.model_data_url.clone(),
            environment: v.environment.clone(),
            port,
            work_dir: i.work_dir.clone(),
            store_root: self.config.data_dir.join("objects"),
            runtimes_dir: self.config.runtimes_dir.clone(),
            python_shims: self.config.python_shims.clone(),
            accelerator_type: v.accelerator_type.clone(),
        };
        let spec_path = i.work_dir.join("spec.json");
        std::fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("writing {}: {e}", spec_path.display()))?;
        self.logs
            .create_stream(&Self::endpoint_log_group(endpoint), &i.log_stream)
            .map_err(|e| e.to_string())?;
        i.healthy = false;
        if let Some(slurm) = &self.config.slurm {
            // The model server fetches this spec, picks a port on its node and reports both.
            let id = slurm.submit(&Submission {
                name: format!("clary-ep-{endpoint}-{}", i.id),
                nodes: 1,
                instance_type: &v.instance_type,
                time_limit_secs: None,
                command: self.node_command(
                    slurm,
                    "model-server",
                    &[("--endpoint", endpoint), ("--instance", &i.id)],
                ),
                env: self.node_credentials(),
                output: Some(i.log_file()),
            })?;
            i.slurm_job = Some(id);
            i.pid = 0;
            i.port = 0;
        } else {
            let proc = self
                .exec
                .launch_command(
                    &self.config.agent_program,
                    &[
                        "model-server".as_ref(),
                        "--spec".as_ref(),
                        spec_path.as_os_str(),
                    ],
                    &i.log_file(),
                )
                .map_err(|e| e.to_string())?;
            i.pid = proc.pid;
            i.start_ticks = proc.start_ticks;
            i.port = port;
            i.address = loopback();
        }
        i.launched_at = now_secs();
        i.stopping_since = None;
        Ok(())
    }

    /// SIGTERM to retiring instances (the model server drains what it holds), SIGKILL after the
    /// grace period; forgotten once gone.
    fn retire(&self, ep: &mut Endpoint) {
        let now = now_secs();
        let mut keep = Vec::new();
        for mut i in std::mem::take(&mut ep.retiring) {
            self.routes.forget_instance(&i.id);
            if !i.launched() || !self.instance_alive(&i) {
                continue;
            }
            match i.stopping_since {
                None => {
                    self.terminate_instance(&i);
                    i.stopping_since = Some(now);
                }
                Some(t) if now - t > STOP_GRACE_SECS => self.kill_instance(&i),
                Some(_) => {}
            }
            keep.push(i);
        }
        ep.retiring = keep;
    }

    /// Copies new complete lines of an instance's output into its log stream.
    fn ship_log(&self, group: &str, i: &mut Instance) {
        let Ok(mut f) = std::fs::File::open(i.log_file()) else {
            return;
        };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return;
        };
        if len <= i.log_offset || f.seek(SeekFrom::Start(i.log_offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let _ = f
            .take((len - i.log_offset).min(1 << 20))
            .read_to_end(&mut buf);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let now = now_millis();
        let events: Vec<(i64, String)> = buf[..end]
            .split(|&b| b == b'\n')
            .map(|l| {
                (
                    now,
                    String::from_utf8_lossy(l)
                        .trim_end_matches('\r')
                        .to_string(),
                )
            })
            .collect();
        if self.logs.append(group, &i.log_stream, &events).is_ok() {
            i.log_offset += end as u64 + 1;
        }
    }
}

fn uuid_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET /ping` on a local model server: its status and body, or None if it does not answer.
async fn ping(address: &str, port: u16) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((address, port)).await.ok()?;
        s.write_all(format!("GET /ping HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
