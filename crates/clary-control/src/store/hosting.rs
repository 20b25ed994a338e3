//! Models, endpoint configurations and endpoints in SQLite: rows and the domain's types both
//! ways. An endpoint's state is one JSON column in the format earlier versions wrote, so a
//! database carries over.

use super::Db;
use crate::domain::endpoint::{Deployment, Endpoint, EndpointStatus, Instance};
use crate::domain::hosting::{
    Container, EndpointConfig, ListHostingResources, Model, ProductionVariant, ResourceSummary,
    VariantPlan,
};
use crate::error::ControlError;
use clary_exec::{ExecHandle, HostProcess};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
struct StoredInstance {
    id: String,
    variant: String,
    /// 0 unless a local process.
    pid: i32,
    start_ticks: u64,
    port: u16,
    #[serde(default)]
    token: String,
    work_dir: PathBuf,
    log_stream: String,
    log_offset: u64,
    healthy: bool,
    launched_at: f64,
    stopping_since: Option<f64>,
    #[serde(default)]
    slurm_job: Option<u64>,
    #[serde(default = "loopback")]
    address: String,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

impl StoredInstance {
    fn from_domain(i: &Instance) -> Self {
        let (pid, start_ticks, slurm_job) = match i.handle {
            Some(ExecHandle::Process(p)) => (p.pid, p.start_ticks, None),
            Some(ExecHandle::SlurmJob(id)) => (0, 0, Some(id)),
            None => (0, 0, None),
        };
        StoredInstance {
            id: i.id.clone(),
            variant: i.variant.clone(),
            pid,
            start_ticks,
            port: i.port,
            token: i.token.clone(),
            work_dir: i.work_dir.clone(),
            log_stream: i.log_stream.clone(),
            log_offset: i.log_offset,
            healthy: i.healthy,
            launched_at: i.launched_at,
            stopping_since: i.stopping_since,
            slurm_job,
            address: i.address.clone(),
        }
    }

    fn into_domain(self) -> Instance {
        let handle = match (self.slurm_job, self.pid) {
            (Some(id), _) => Some(ExecHandle::SlurmJob(id)),
            (None, 0) => None,
            (None, pid) => Some(ExecHandle::Process(HostProcess {
                pid,
                start_ticks: self.start_ticks,
            })),
        };
        Instance {
            id: self.id,
            variant: self.variant,
            handle,
            address: self.address,
            port: self.port,
            token: self.token,
            work_dir: self.work_dir,
            log_stream: self.log_stream,
            log_offset: self.log_offset,
            healthy: self.healthy,
            launched_at: self.launched_at,
            stopping_since: self.stopping_since,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredDeployment {
    config_name: String,
    plan: Vec<VariantPlan>,
    instances: Vec<StoredInstance>,
}

#[derive(Serialize, Deserialize)]
struct StoredEndpoint {
    name: String,
    arn: String,
    config_name: String,
    status: String,
    failure_reason: Option<String>,
    creation_time: f64,
    last_modified_time: f64,
    plan: Vec<VariantPlan>,
    instances: Vec<StoredInstance>,
    pending: Option<StoredDeployment>,
    retiring: Vec<StoredInstance>,
}

fn instances(list: &[Instance]) -> Vec<StoredInstance> {
    list.iter().map(StoredInstance::from_domain).collect()
}

fn into_instances(list: Vec<StoredInstance>) -> Vec<Instance> {
    list.into_iter().map(StoredInstance::into_domain).collect()
}

impl StoredEndpoint {
    fn from_domain(e: &Endpoint) -> Self {
        StoredEndpoint {
            name: e.name.clone(),
            arn: e.arn.clone(),
            config_name: e.live.config_name.clone(),
            status: e.status.as_str().to_string(),
            failure_reason: e.failure_reason.clone(),
            creation_time: e.creation_time,
            last_modified_time: e.last_modified_time,
            plan: e.live.plan.clone(),
            instances: instances(&e.live.instances),
            pending: e.pending.as_ref().map(|p| StoredDeployment {
                config_name: p.config_name.clone(),
                plan: p.plan.clone(),
                instances: instances(&p.instances),
            }),
            retiring: instances(&e.retiring),
        }
    }

    fn into_domain(self) -> Result<Endpoint, ControlError> {
        let status = EndpointStatus::parse(&self.status).ok_or_else(|| {
            ControlError::Internal(format!(
                "endpoint {} has an unknown status {:?} in the database",
                self.name, self.status
            ))
        })?;
        Ok(Endpoint {
            name: self.name,
            arn: self.arn,
            status,
            failure_reason: self.failure_reason,
            creation_time: self.creation_time,
            last_modified_time: self.last_modified_time,
            live: Deployment {
                config_name: self.config_name,
                plan: self.plan,
                instances: into_instances(self.instances),
            },
            pending: self.pending.map(|p| Deployment {
                config_name: p.config_name,
                plan: p.plan,
                instances: into_instances(p.instances),
            }),
            retiring: into_instances(self.retiring),
        })
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, ControlError> {
    serde_json::from_str(text)
        .map_err(|e| ControlError::Internal(format!("{what} in the database is unreadable: {e}")))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

/// The hosting tables.
#[derive(Clone)]
pub struct HostingStore {
    db: Db,
}

/// The two resource tables listings read.
#[derive(Debug, Clone, Copy)]
pub enum ResourceTable {
    Models,
    EndpointConfigs,
}

impl ResourceTable {
    fn name(self) -> &'static str {
        match self {
            ResourceTable::Models => "models",
            ResourceTable::EndpointConfigs => "endpoint_configs",
        }
    }
}

impl HostingStore {
    pub fn new(db: Db) -> Self {
        HostingStore { db }
    }

    /// Inserts `model`; false when one of that name exists.
    pub fn insert_model(&self, model: &Model) -> Result<bool, ControlError> {
        let n = self.db.lock().execute(
            "INSERT INTO models (name, arn, request, creation_time, spec) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO NOTHING",
            params![
                model.name,
                model.arn,
                model.echo,
                model.creation_time,
                encode(&model.container)
            ],
        )?;
        Ok(n == 1)
    }

    pub fn model(&self, name: &str) -> Result<Option<Model>, ControlError> {
        let row = self
            .db
            .lock()
            .query_row(
                "SELECT arn, request, creation_time, spec FROM models WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, f64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((arn, echo, creation_time, spec)) = row else {
            return Ok(None);
        };
        let container = decode(&format!("model {name}"), spec.as_deref().unwrap_or("null"))?;
        Ok(Some(Model {
            name: name.to_string(),
            arn,
            creation_time,
            container,
            echo,
        }))
    }

    /// Inserts `config`; false when one of that name exists.
    pub fn insert_config(&self, config: &EndpointConfig) -> Result<bool, ControlError> {
        let n = self.db.lock().execute(
            "INSERT INTO endpoint_configs (name, arn, request, creation_time, spec)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING",
            params![
                config.name,
                config.arn,
                config.echo,
                config.creation_time,
                encode(&config.variants)
            ],
        )?;
        Ok(n == 1)
    }

    pub fn config(&self, name: &str) -> Result<Option<EndpointConfig>, ControlError> {
        let row = self
            .db
            .lock()
            .query_row(
                "SELECT arn, request, creation_time, spec FROM endpoint_configs WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, f64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((arn, echo, creation_time, spec)) = row else {
            return Ok(None);
        };
        let variants: Vec<ProductionVariant> = decode(
            &format!("endpoint configuration {name}"),
            spec.as_deref().unwrap_or("null"),
        )?;
        Ok(Some(EndpointConfig {
            name: name.to_string(),
            arn,
            creation_time,
            variants,
            echo,
        }))
    }

    /// Deletes a model or config; false when there was none of that name.
    pub fn delete(&self, table: ResourceTable, name: &str) -> Result<bool, ControlError> {
        let sql = format!("DELETE FROM {} WHERE name = ?1", table.name());
        Ok(self.db.lock().execute(&sql, params![name])? == 1)
    }

    /// Every model or config that passes `q`'s filters, in its order (paging is the caller's).
    pub fn list(
        &self,
        table: ResourceTable,
        q: &ListHostingResources,
    ) -> Result<Vec<ResourceSummary>, ControlError> {
        let order = if q.sort_by_name {
            "name"
        } else {
            "creation_time"
        };
        let dir = if q.ascending { "ASC" } else { "DESC" };
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, arn, creation_time FROM {}
             WHERE (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
               AND (?2 IS NULL OR creation_time > ?2) AND (?3 IS NULL OR creation_time < ?3)
             ORDER BY {order} {dir}, name {dir}",
            table.name()
        ))?;
        let rows = stmt
            .query_map(
                params![
                    q.name_contains,
                    q.creation_time_after,
                    q.creation_time_before
                ],
                |r| {
                    Ok(ResourceSummary {
                        name: r.get(0)?,
                        arn: r.get(1)?,
                        creation_time: r.get(2)?,
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Models (`Models`) or configs whose typed spec an earlier Clary did not write, with their
    /// requests.
    pub fn without_spec(
        &self,
        table: ResourceTable,
    ) -> Result<Vec<(String, String)>, ControlError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, request FROM {} WHERE spec IS NULL",
            table.name()
        ))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn set_model_spec(&self, name: &str, container: &Container) -> Result<(), ControlError> {
        self.db.lock().execute(
            "UPDATE models SET spec = ?2 WHERE name = ?1",
            params![name, encode(container)],
        )?;
        Ok(())
    }

    pub fn set_config_spec(
        &self,
        name: &str,
        variants: &[ProductionVariant],
    ) -> Result<(), ControlError> {
        self.db.lock().execute(
            "UPDATE endpoint_configs SET spec = ?2 WHERE name = ?1",
            params![name, encode(&variants)],
        )?;
        Ok(())
    }

    pub fn endpoint(&self, name: &str) -> Result<Option<Endpoint>, ControlError> {
        let state: Option<String> = self
            .db
            .lock()
            .query_row(
                "SELECT state FROM endpoints WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        state
            .map(|s| decode::<StoredEndpoint>(&format!("endpoint {name}"), &s)?.into_domain())
            .transpose()
    }

    /// Every endpoint, oldest first.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ControlError> {
        let rows: Vec<String> = {
            let conn = self.db.lock();
            let mut stmt = conn.prepare("SELECT state FROM endpoints ORDER BY creation_time")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        rows.iter()
            .map(|s| decode::<StoredEndpoint>("an endpoint", s)?.into_domain())
            .collect()
    }

    /// Inserts `endpoint` when no endpoint has its name; false otherwise.
    pub fn insert_endpoint(&self, endpoint: &Endpoint) -> Result<bool, ControlError> {
        let n = self.db.lock().execute(
            "INSERT INTO endpoints (name, arn, state, creation_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO NOTHING",
            params![
                endpoint.name,
                endpoint.arn,
                encode(&StoredEndpoint::from_domain(endpoint)),
                endpoint.creation_time
            ],
        )?;
        Ok(n == 1)
    }

    pub fn save_endpoint(&self, endpoint: &Endpoint) -> Result<(), ControlError> {
        self.db.lock().execute(
            "UPDATE endpoints SET state = ?2 WHERE name = ?1",
            params![
                endpoint.name,
                encode(&StoredEndpoint::from_domain(endpoint))
            ],
        )?;
        Ok(())
    }

    pub fn delete_endpoint(&self, name: &str) -> Result<(), ControlError> {
        self.db
            .lock()
            .execute("DELETE FROM endpoints WHERE name = ?1", params![name])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, HostingStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("clary.db")).unwrap();
        (dir, HostingStore::new(db))
    }

    #[test]
    fn an_endpoint_round_trips_with_its_instances_handles() {
        let (_dir, store) = store();
        let mut live = Deployment {
            config_name: "c".into(),
            plan: Vec::new(),
            instances: vec![
                Instance::new("i-1".into(), "v", "/w/i-1".into()),
                Instance::new("i-2".into(), "v", "/w/i-2".into()),
            ],
        };
        live.instances[0].handle = Some(ExecHandle::Process(HostProcess {
            pid: 42,
            start_ticks: 7,
        }));
        live.instances[1].handle = Some(ExecHandle::SlurmJob(9));
        let ep = Endpoint::new("ep", "arn:ep".into(), live, 1.5);
        assert!(store.insert_endpoint(&ep).unwrap());
        assert!(!store.insert_endpoint(&ep).unwrap(), "names are unique");
        assert_eq!(store.endpoint("ep").unwrap().unwrap(), ep);
        store.delete_endpoint("ep").unwrap();
        assert!(store.endpoint("ep").unwrap().is_none());
    }

    #[test]
    fn models_list_by_name_filter_and_order() {
        let (_dir, store) = store();
        for (n, t) in [("alpha", 1.0), ("beta", 2.0), ("alphabet", 3.0)] {
            let m = Model {
                name: n.into(),
                arn: format!("arn:{n}"),
                creation_time: t,
                container: Container {
                    image: "img".into(),
                    model_data_url: None,
                    environment: Default::default(),
                },
                echo: "{}".into(),
            };
            assert!(store.insert_model(&m).unwrap());
        }
        let q = ListHostingResources {
            name_contains: Some("ALPHA".into()),
            ..Default::default()
        };
        let names: Vec<String> = store
            .list(ResourceTable::Models, &q)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["alphabet", "alpha"]);
        assert_eq!(store.model("beta").unwrap().unwrap().container.image, "img");
        assert!(store.delete(ResourceTable::Models, "beta").unwrap());
        assert!(!store.delete(ResourceTable::Models, "beta").unwrap());
    }
}
