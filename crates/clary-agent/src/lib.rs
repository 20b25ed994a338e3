//! The host agent: one per host of a training or processing job. It implements the SageMaker MXNet
//! container contract (docs/contract.md §2–§7.1) around the user's script and reports to the
//! control plane over HTTP; it knows nothing of the control plane's tables.

pub mod checkpoints;
pub mod container_command;
pub mod contract;
pub mod from_control;
pub mod host;
pub mod input_overlay;
pub mod job_log;
pub mod monitor;
pub mod network;
pub mod objects;
pub mod parameter_server;
pub mod pipe;
pub mod processing;
pub mod pyvalue;
pub mod reporter;
pub mod runner;
pub mod staging;
pub mod transform;

pub use host::{dry_run, run_host};
pub use processing::run_processing_host;
pub use transform::run_transform_host;

/// Runs the host a spec describes, of whichever job kind; returns the agent's exit code.
pub async fn run_agent(spec: clary_exec::protocol::AgentSpec) -> i32 {
    match spec {
        clary_exec::protocol::AgentSpec::Training(s) => run_host(*s).await,
        clary_exec::protocol::AgentSpec::Processing(s) => run_processing_host(*s).await,
        clary_exec::protocol::AgentSpec::Transform(s) => run_transform_host(*s).await,
    }
}

/// A host spec for unit tests: two hosts, `algo-2` first in `hosts` (so order matters), with
/// the fields a test cares about given as JSON overrides.
#[cfg(test)]
pub(crate) fn test_spec(overrides: serde_json::Value) -> clary_exec::protocol::HostSpec {
    let mut v = serde_json::json!({
        "job_name": "j", "job_arn": "a", "region": "r", "current_host": "algo-1",
        "hosts": ["algo-2", "algo-1"], "addresses": ["127.5.6.2", "127.5.6.1"],
        "instance_type": "ml.c5.xlarge", "base_dir": "/x/opt_ml", "hyperparameters": {},
        "channels": [], "training_input_mode": "File", "output_bucket": "b",
        "output_prefix": "", "python": "p", "framework_module": "m", "environment": {},
        "max_runtime_secs": 1, "stop_grace_secs": 1, "store_root": "/s",
        "control_url": "u", "access_key": "k", "secret_key": "s", "log_stream": "l",
        "python_shims": "/p", "runtimes_dir": "/r", "runtime": "mxnet-1.9",
        "framework_version": "1.9.0", "device": "cpu"
    });
    for (k, val) in overrides.as_object().cloned().unwrap_or_default() {
        v[k] = val;
    }
    serde_json::from_value(v).expect("a valid test spec")
}

/// Runs blocking work (file and object I/O, which may wait on HTTP) off the async threads; a
/// panic in it is the caller's.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
