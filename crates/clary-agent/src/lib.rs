//! The training host agent: one per host of a training job. It implements the SageMaker MXNet
//! container contract (CONTRACT.md §2–§7.1) around the user's script and reports to the
//! control plane over HTTP; it knows nothing of the control plane's tables.

pub mod checkpoints;
pub mod contract;
pub mod host;
pub mod network;
pub mod parameter_server;
pub mod pipe;
pub mod pyvalue;
pub mod reporter;
pub mod runner;
pub mod staging;

pub use host::{dry_run, run_host};
