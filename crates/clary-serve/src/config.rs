//! The model server's settings, from the `SAGEMAKER_*` serving variables
//! (docs/contract.md §8–§9.1) and a few of Clary's own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    /// The extracted `model.tar.gz` (`/opt/ml/model`).
    pub model_dir: PathBuf,
    /// Where the user's inference module is looked for, in order.
    pub code_dirs: Vec<PathBuf>,
    /// The runtime's interpreter (a layered environment replaces it when the code has a
    /// `requirements.txt`).
    pub python: PathBuf,
    /// Directory holding the `clary_serving` package.
    pub shims_dir: PathBuf,
    /// Scratch directory: worker sockets, the requirements environment.
    pub run_dir: PathBuf,
    pub workers: usize,
    /// How long one request may take in a worker before the worker is replaced.
    pub timeout: Duration,
    /// How long a worker may take to load the model.
    pub startup_timeout: Duration,
    pub max_payload: usize,
    /// Requests waiting for a worker beyond this are answered 503 at once.
    pub queue_size: usize,
    /// At most this many queued requests go to a worker together (fused into one forward pass
    /// when the default handlers serve them).
    pub max_batch: usize,
    /// MXNet 1.2 and earlier: legacy handler signatures.
    pub legacy_handlers: bool,
    /// Environment for the workers beyond the server's own (the model's `Environment`).
    pub extra_env: Vec<(String, String)>,
    /// When set, every request must carry it in `x-clary-instance-token`: an endpoint
    /// instance answers only its router.
    pub token: Option<String>,
    /// What `GET /execution-parameters` recommends to a batch transform job: SageMaker's
    /// batch variables when set (`SAGEMAKER_BATCH`), else this server's own capacity.
    pub execution: ExecutionParameters,
}

/// The answer of `GET /execution-parameters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionParameters {
    pub max_concurrent_transforms: usize,
    /// `MULTI_RECORD` or `SINGLE_RECORD`.
    pub batch_strategy: String,
    pub max_payload_in_mb: usize,
}

impl ServeConfig {
    /// Settings from the environment, as the SageMaker MXNet serving containers read it.
    pub fn from_env(
        model_dir: PathBuf,
        python: PathBuf,
        shims_dir: PathBuf,
        run_dir: PathBuf,
    ) -> Self {
        Self::from_lookup(model_dir, python, shims_dir, run_dir, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    pub fn from_lookup(
        model_dir: PathBuf,
        python: PathBuf,
        shims_dir: PathBuf,
        run_dir: PathBuf,
        get: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers = num("SAGEMAKER_MODEL_SERVER_WORKERS")
            .map(|n| n.max(1) as usize)
            .unwrap_or(cores);
        // Seconds, as SageMaker documents it (MMS reads the same variable as minutes).
        let timeout = num("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS")
            .or_else(|| num("SAGEMAKER_MODEL_SERVER_TIMEOUT"))
            .unwrap_or(60)
            .max(1);
        let port = num("SAGEMAKER_BIND_TO_PORT").unwrap_or(8080) as u16;
        let code_dirs = vec![model_dir.join("code")];
        ServeConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            model_dir,
            code_dirs,
            python,
            shims_dir,
            run_dir,
            workers,
            timeout: Duration::from_secs(timeout),
            startup_timeout: Duration::from_secs(num("SAGEMAKER_STARTUP_TIMEOUT").unwrap_or(600)),
            // 0 is a batch transform job's "no limit" (MaxPayloadInMB 0).
            max_payload: match num("SAGEMAKER_MAX_PAYLOAD_IN_MB").unwrap_or(6) {
                0 => usize::MAX,
                mb => mb as usize * 1024 * 1024,
            },
            queue_size: num("CLARY_MODEL_SERVER_QUEUE")
                .map(|n| n.max(1) as usize)
                .unwrap_or(100 * workers),
            max_batch: num("CLARY_MODEL_SERVER_MAX_BATCH")
                .map(|n| n.max(1) as usize)
                .unwrap_or(32),
            legacy_handlers: false,
            extra_env: Vec::new(),
            token: None,
            execution: ExecutionParameters {
                max_concurrent_transforms: num("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS")
                    .map(|n| n.max(1) as usize)
                    .unwrap_or(workers),
                batch_strategy: get("SAGEMAKER_BATCH_STRATEGY")
                    .filter(|s| s == "SINGLE_RECORD" || s == "MULTI_RECORD")
                    .unwrap_or_else(|| "MULTI_RECORD".into()),
                max_payload_in_mb: num("SAGEMAKER_MAX_PAYLOAD_IN_MB").unwrap_or(6) as usize,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serving_variables() {
        let env = |k: &str| {
            match k {
                "SAGEMAKER_MODEL_SERVER_WORKERS" => Some("3"),
                "SAGEMAKER_MODEL_SERVER_TIMEOUT" => Some("20"),
                "SAGEMAKER_BIND_TO_PORT" => Some("9091"),
                "SAGEMAKER_MAX_PAYLOAD_IN_MB" => Some("1"),
                _ => None,
            }
            .map(str::to_string)
        };
        let c = ServeConfig::from_lookup("/m".into(), "py".into(), "s".into(), "r".into(), env);
        assert_eq!(c.workers, 3);
        assert_eq!(c.timeout, Duration::from_secs(20));
        assert_eq!(c.bind.port(), 9091);
        assert_eq!(c.max_payload, 1 << 20);
        assert_eq!(c.queue_size, 300);
        assert_eq!(c.code_dirs, vec![PathBuf::from("/m/code")]);
        let d =
            ServeConfig::from_lookup("/m".into(), "py".into(), "s".into(), "r".into(), |_| None);
        assert_eq!(d.bind.port(), 8080);
        assert_eq!(d.max_payload, 6 << 20);
        assert_eq!(d.timeout, Duration::from_secs(60));
        assert_eq!(
            d.execution,
            ExecutionParameters {
                max_concurrent_transforms: d.workers,
                batch_strategy: "MULTI_RECORD".into(),
                max_payload_in_mb: 6
            }
        );
    }

    #[test]
    fn the_batch_variables_set_the_execution_parameters() {
        let env = |k: &str| {
            match k {
                "SAGEMAKER_BATCH" => Some("true"),
                "SAGEMAKER_BATCH_STRATEGY" => Some("SINGLE_RECORD"),
                "SAGEMAKER_MAX_PAYLOAD_IN_MB" => Some("2"),
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS" => Some("4"),
                _ => None,
            }
            .map(str::to_string)
        };
        let c = ServeConfig::from_lookup("/m".into(), "py".into(), "s".into(), "r".into(), env);
        assert_eq!(
            c.execution,
            ExecutionParameters {
                max_concurrent_transforms: 4,
                batch_strategy: "SINGLE_RECORD".into(),
                max_payload_in_mb: 2
            }
        );
        assert_eq!(c.max_payload, 2 << 20);
    }
}
