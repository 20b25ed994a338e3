//! The domain: typed entities, their status enums and the pure transitions that move them. No
//! SQL, no wire shapes, no processes.

pub mod capacity;
pub mod credentials;
pub mod endpoint;
pub mod endpoint_metrics;
pub mod hosting;
pub mod job;
pub mod logs;
pub mod metrics;
pub mod processing;
pub mod profiler;
pub mod training;
pub mod tuning;
pub mod tuning_job;
