//! Executors: where a training job's host agents run, and the contract between the control
//! plane and an agent (the launch spec it reads, the reports it sends back).
//!
//! The local executor starts each agent as a child process in its own process group. Agents are
//! deliberately *not* tied to the server's life: a restarted server finds them by PID and
//! re-attaches, because they keep reporting to the same address.

pub mod executor;
pub mod images;
pub mod local;
pub mod protocol;
pub mod runtimes;
pub mod server_secrets;
pub mod slurm;

pub use executor::{ExecHandle, Executor, Observed, StopSignal};
pub use local::{HostProcess, LocalExecutor};
