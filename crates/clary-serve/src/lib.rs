//! The model server (`clary model-server`): a Rust HTTP front end over a pool of long-lived
//! Python workers that run the SageMaker MXNet serving handler chain. docs/contract.md §8–§10
//! is what user code sees; the README lists where Clary is deliberately more honest than the
//! toolkit.

pub mod config;
mod control;
pub mod csv;
pub mod frame;
pub mod front;
pub mod host;
pub mod pool;

pub use config::ServeConfig;

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "could not listen on {addr}: {source}; pick another port with --port or SAGEMAKER_BIND_TO_PORT"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Prepare(String),
}

/// Installs `requirements.txt` from the first code directory that has one into an environment
/// layered over the runtime (once per model: an existing environment is reused). Returns the
/// interpreter the workers should run.
pub fn install_requirements(config: &ServeConfig) -> Result<PathBuf, ServeError> {
    let Some(req) = config
        .code_dirs
        .iter()
        .map(|d| d.join("requirements.txt"))
        .find(|p| p.is_file())
    else {
        return Ok(config.python.clone());
    };
    let venv = config.run_dir.join("requirements-env");
    let python = venv.join("bin").join("python");
    if venv.join(".clary-installed").is_file() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let python = clary_exec::runtimes::create_layered_venv(&config.python, &venv)
        .map_err(|e| ServeError::Prepare(format!("installing {}: {e}", req.display())))?;
    eprintln!("Installing the model's dependencies from {}", req.display());
    let status = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-r",
        ])
        .arg(&req)
        .status()
        .map_err(|e| ServeError::Prepare(format!("running pip: {e}")))?;
    if !status.success() {
        return Err(ServeError::Prepare(format!(
            "pip install -r {} failed ({status}); fix the requirements file and deploy again",
            req.display()
        )));
    }
    let _ = std::fs::write(venv.join(".clary-installed"), "");
    Ok(python)
}

/// Serves until `shutdown` resolves, then stops taking connections, lets in-flight requests
/// finish (up to the request timeout) and stops the workers. `on_listening` gets the bound
/// address (useful with port 0).
pub async fn serve(
    mut config: ServeConfig,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.run_dir)
        .map_err(|e| ServeError::Prepare(format!("creating {}: {e}", config.run_dir.display())))?;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.bind,
        source,
    })?;
    config.bind = addr;
    on_listening(addr);
    let health = Arc::new(pool::Health::default());
    // Dependencies install while /ping already answers (503, loading), as a container would.
    let prepared = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || install_requirements(&config))
    };
    let python = match prepared.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            health.fail(e.to_string());
            eprintln!("{e}");
            config.python.clone()
        }
        Err(e) => {
            health.fail(format!("preparing the model failed: {e}"));
            config.python.clone()
        }
    };
    config.python = python;
    let config = Arc::new(config);
    let failed_early = matches!(health.state(), pool::HealthState::Failed(_));
    let mut config_for_pool = (*config).clone();
    if failed_early {
        config_for_pool.workers = 0;
    }
    let front = Arc::new(front::Front {
        pool: pool::Pool::start(Arc::new(config_for_pool), health),
        config: config.clone(),
        in_flight: AtomicUsize::new(0),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| front.clone().handle(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + config.timeout;
    while front.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(front) {
        Ok(front) => front.pool.shutdown().await,
        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
    }
    Ok(())
}

/// Writes the `clary_serving` package (python/clary_serving, embedded by `clary-shims`) under
/// `dir`, atomically file by file.
pub fn write_python_package(dir: &Path) -> std::io::Result<()> {
    clary_shims::write_subtree(dir, "clary_serving")
}
