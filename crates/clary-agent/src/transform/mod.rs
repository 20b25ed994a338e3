//! The batch transform host: one per instance of a transform job. It serves the model with
//! `clary model-server` and pushes its share of the input objects through it. The record
//! logic (splitting, batching, filters, join, assembly) is pure and lives in its own modules.

pub mod filter;
pub mod host;
mod input;
pub mod model_server;
mod output;
pub mod records;
pub mod shaping;

pub use host::run_transform_host;
