//! The control plane: training jobs on a shared job lifecycle, hosting, tags and CloudWatch-shaped
//! logs. Rooms: `domain` (typed entities, pure transitions), `store` (SQL), `training` (the
//! lifecycle, the queue and the watch), `hosting` (models, configs, the endpoint reconciler).
//! Processes are reached only through `clary_exec::Executor`. See docs/design/control-plane.md.

pub mod config;
pub mod domain;
pub mod error;
pub mod failpoint;
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

pub struct ControlPlane {
    pub config: Arc<ControlConfig>,
    pub logs: logs::Logs,
    pub training: Arc<training::TrainingJobs>,
    pub hosting: Arc<hosting::Hosting>,
    pub tags: tags::Tags,
    /// Where `InvokeEndpoint` goes: the healthy instances of each in-service endpoint.
    pub routes: Arc<routes::Routes>,
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
        let logs = logs::Logs::new(store::logs::LogStore::new(db.clone()));
        let config = Arc::new(config);
        let routes = Arc::new(routes::Routes::default());
        let training = Arc::new(training::TrainingJobs::new(
            store::TrainingJobStore::new(db.clone()),
            logs.clone(),
            executor.clone(),
            config.clone(),
        ));
        let hosting = Arc::new(hosting::Hosting::new(
            store::HostingStore::new(db.clone()),
            logs.clone(),
            executor,
            config.clone(),
            routes.clone(),
        ));
        Ok(Arc::new(ControlPlane {
            config,
            logs,
            training,
            hosting,
            tags: tags::Tags::new(store::TagStore::new(db)),
            routes,
        }))
    }
}

pub fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
