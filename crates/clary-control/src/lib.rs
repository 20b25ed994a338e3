//! The control plane: jobs of every kind on a shared job lifecycle, hosting, tags and
//! CloudWatch-shaped logs. Rooms: `domain` (typed entities, pure transitions), `store` (SQL),
//! `lifecycle` (the queue, launch, the watch and the agents' reports, for any job kind), one
//! module per job kind (`training`, …), `hosting` (models, configs, the endpoint reconciler).
//! Processes are reached only through `clary_exec::Executor`. See docs/design/control-plane.md.

pub mod config;
pub mod credentials;
pub mod domain;
pub mod endpoint_metrics;
pub mod error;
pub mod failpoint;
pub mod hosting;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod processing;
pub mod routes;
pub mod store;
pub mod tags;
pub mod training;
pub mod tuning;

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
    pub tuning: Arc<tuning::Tuning>,
    pub processing: Arc<processing::ProcessingJobs>,
    pub credentials: Arc<credentials::Credentials>,
    pub metrics: Arc<metrics::Metrics>,
    /// What running jobs of every kind hold of this machine.
    pub ledger: Arc<lifecycle::ledger::Ledger>,
    /// Counts across kinds, for the server's metrics.
    pub stats: store::stats::StatsStore,
    /// Endpoint invocations, for CloudWatch's `AWS/SageMaker` namespace.
    pub endpoint_metrics: Arc<endpoint_metrics::EndpointMetrics>,
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
        let credentials = Arc::new(credentials::Credentials::new(
            store::credentials::CredentialStore::new(db.clone()),
        ));
        let metrics = Arc::new(metrics::Metrics::new(store::metrics::MetricStore::new(
            db.clone(),
        )));
        let ledger = Arc::new(lifecycle::ledger::Ledger::new(config.capacity.clone()));
        let services = lifecycle::Services {
            executor: executor.clone(),
            config: config.clone(),
            logs: logs.clone(),
            credentials: credentials.clone(),
            ledger: ledger.clone(),
        };
        let training = Arc::new(training::TrainingJobs::new(
            store::TrainingJobStore::new(db.clone()),
            services.clone(),
            metrics.clone(),
        ));
        let processing = Arc::new(processing::ProcessingJobs::new(
            store::jobs::JobStore::new(db.clone(), domain::job::Kind::ProcessingJob),
            services,
        ));
        let tuning = Arc::new(tuning::Tuning::new(
            store::tuning::TuningStore::new(db.clone()),
            training.clone(),
            metrics.clone(),
            config.clone(),
        ));
        let hosting = Arc::new(hosting::Hosting::new(
            store::HostingStore::new(db.clone()),
            logs.clone(),
            executor,
            config.clone(),
            routes.clone(),
            credentials.clone(),
        ));
        Ok(Arc::new(ControlPlane {
            config,
            logs,
            training,
            hosting,
            tuning,
            processing,
            credentials,
            metrics,
            ledger,
            stats: store::stats::StatsStore::new(db.clone()),
            endpoint_metrics: Arc::new(endpoint_metrics::EndpointMetrics::new(
                store::endpoint_metrics::EndpointMetricStore::new(db.clone()),
            )),
            tags: tags::Tags::new(store::TagStore::new(db)),
            routes,
        }))
    }
}

impl ControlPlane {
    /// Who signs with `access_key`: a scoped key whose holder still lives (a training job
    /// running or just ended, an endpoint instance still part of its endpoint), else nobody.
    /// The server's own pair is the API's to recognise.
    pub fn scoped_key(&self, access_key: &str) -> Option<domain::credentials::ScopedKey> {
        let key = self.credentials.get(access_key).ok()??;
        let live = match &key.holder {
            domain::credentials::Holder::Job { kind, name } => {
                self.reports(*kind).accepts_reports(name)
            }
            domain::credentials::Holder::EndpointInstance { endpoint, instance } => {
                self.hosting.has_instance(endpoint, instance)
            }
        };
        live.then_some(key)
    }
}

impl ControlPlane {
    /// The agents' calls about jobs of `kind`.
    pub fn reports(&self, kind: domain::job::Kind) -> &dyn lifecycle::AgentReports {
        match kind {
            domain::job::Kind::TrainingJob => self.training.reports(),
            domain::job::Kind::ProcessingJob => self.processing.reports(),
        }
    }
}

pub fn now_secs() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
