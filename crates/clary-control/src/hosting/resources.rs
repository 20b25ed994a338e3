//! Models and endpoint configurations: create, describe, list, delete.

use super::*;

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

    pub(super) fn load_resource(
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

    pub(super) fn require_model(&self, name: &str) -> Result<(String, Value, f64), ControlError> {
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

    pub(super) fn list_resources(
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

    pub(super) fn require_config(&self, name: &str) -> Result<(String, Value, f64), ControlError> {
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
    pub(super) fn plan(&self, config_name: &str) -> Result<Vec<VariantPlan>, ControlError> {
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
}
