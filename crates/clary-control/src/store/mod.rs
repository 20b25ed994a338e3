//! The store layer: the only place with SQL. Rows become domain values and back.

pub mod credentials;
mod db;
pub mod endpoint_metrics;
pub mod hosting;
mod job_state;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod stats;
pub mod tags;
pub mod training_jobs;
pub mod tuning;

pub use db::Db;
pub use hosting::HostingStore;
pub use tags::TagStore;
pub use training_jobs::TrainingJobStore;
