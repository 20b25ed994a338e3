//! The control plane: training jobs on a shared job lifecycle, hosting, tags and CloudWatch-shaped
//! logs. Rooms: `domain` (typed entities, pure transitions), `store` (SQL), `training` (the
//! lifecycle, the queue and the watch), `hosting` (models, configs, the endpoint reconciler).
//! Processes are reached only through `clary_exec::Executor`. See docs/design/control-plane.md.

pub mod config;
pub mod domain;
pub mod error;
pub mod hosting;
pub mod logs;
pub mod routes;
pub mod store;
pub mod tags;
pub mod training;

pub use config::ControlConfig;
pub use domain::capacity;
pub use error::ControlError;

use clary_exec::Executor;
use std::sync::Arc;
use store::Db;
use tokio::sync::Notify;

pub struct ControlPlane {
    pub config: Arc<ControlConfig>,
    pub logs: logs::Logs,
    pub training: Arc<training::TrainingJobs>,
    pub tags: tags::Tags,
    pub(crate) db: Db,
    pub(crate) executor: Arc<dyn Executor>,
    /// Where `InvokeEndpoint` goes: the healthy instances of each in-service endpoint.
    pub routes: routes::Routes,
    /// Addresses and ports model servers on cluster nodes reported, by instance id, until
    /// the hosting loop takes them.
    pub(crate) instance_reports: std::sync::Mutex<std::collections::HashMap<String, (String, u16)>>,
    pub(crate) endpoint_wake: Notify,
    /// Held by the hosting loop during a pass and by calls that change an endpoint, so neither
    /// overwrites the other's change.
    pub(crate) hosting_lock: tokio::sync::Mutex<()>,
}

impl ControlPlane {
    pub fn open(
        config: ControlConfig,
        executor: Arc<dyn Executor>,
    ) -> Result<Arc<Self>, ControlError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ControlError::Internal(format!("creating {}: {e}", config.data_dir.display()))
        })?;
        let db = Db::open(&config.data_dir.join("clary.db"))?;
        let logs = logs::Logs::new(db.clone(), &config.region, &config.account);
        let config = Arc::new(config);
        let training = Arc::new(training::TrainingJobs::new(
            store::TrainingJobStore::new(db.clone()),
            logs.clone(),
            executor.clone(),
            config.clone(),
        ));
        Ok(Arc::new(ControlPlane {
            config,
            logs,
            training,
            tags: tags::Tags::new(store::TagStore::new(db.clone())),
            db,
            executor,
            routes: Default::default(),
            instance_reports: Default::default(),
            endpoint_wake: Notify::new(),
            hosting_lock: tokio::sync::Mutex::new(()),
        }))
    }
}

pub fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
