//! The model-server host (`clary model-server`): one endpoint instance, or a standalone server
//! for a model directory. For an instance it first lays out the model the way a SageMaker
//! serving container finds it: `model.tar.gz` extracted into `model/`, and for images before
//! MXNet 1.4 the code fetched from `SAGEMAKER_SUBMIT_DIRECTORY`. Then it serves until SIGTERM.

use crate::control::ControlPlane;
use crate::{ServeConfig, ServeError};
use clary_client::SignedClient;
use clary_exec::protocol::{AGENT_API, ModelServerSpec};
use clary_exec::runtimes::{Runtime, Runtimes, SERVING_RUNTIME, builtin};
use clary_sigv4::Signer;
use clary_store::archive::extract_tar_gz;
use clary_store::presigned::Tuning;
use clary_store::{ControlPresigner, LocalStore, ObjectStore, PresignedStore, S3HttpStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the model server was started.
pub enum Launch {
    /// On its own, for an extracted `model.tar.gz`.
    Standalone(Standalone),
    /// An endpoint instance, from the launch spec the server's executor wrote at this path.
    Spec(PathBuf),
    /// An endpoint instance on a cluster node, from the control plane.
    FromControl(FromControl),
}

/// A standalone model server.
pub struct Standalone {
    /// The extracted model (what SageMaker puts in /opt/ml/model).
    pub model_dir: PathBuf,
    /// The port on 127.0.0.1 [default: SAGEMAKER_BIND_TO_PORT, else 8080; 0 picks one].
    pub port: Option<u16>,
    /// The framework version the model was made for (1.2 and earlier use the legacy handler
    /// signatures).
    pub framework_version: String,
    /// The Python to run workers with [default: the serving runtime, built if missing].
    pub python: Option<PathBuf>,
    /// Where runtimes are built.
    pub runtimes_dir: PathBuf,
    /// Scratch directory for worker sockets and the requirements environment.
    pub run_dir: Option<PathBuf>,
}

/// A model server on a cluster node (under Slurm): it fetches its instance's spec from the
/// server at `url`, listens on a free port of this node and reports it. The key pair comes
/// from `CLARY_AGENT_ACCESS_KEY`/`CLARY_AGENT_SECRET_KEY`.
pub struct FromControl {
    pub url: String,
    pub endpoint: String,
    pub instance: String,
    pub region: String,
    /// Where this node keeps its endpoint instances' directories.
    pub node_dir: PathBuf,
}

fn failed(what: impl std::fmt::Display) -> ServeError {
    ServeError::Prepare(what.to_string())
}

/// Serves as `launch` says until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn run(launch: Launch) -> Result<(), ServeError> {
    let mut reported = None;
    let (config, announce) = match launch {
        Launch::FromControl(node) => {
            let (config, announce, r) = from_control(node).await?;
            reported = Some(r);
            (config, announce)
        }
        Launch::Spec(path) => from_spec(&path).await?,
        Launch::Standalone(s) => standalone(s)?,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            () = parent_gone() => eprintln!("clary model-server: the process that started it is gone"),
        }
        eprintln!("clary model-server: stopping (finishing requests in flight)");
    };
    crate::serve(config, shutdown, |addr| {
        println!("clary model-server listening on http://{addr}{announce}");
        if let Some(r) = reported.take() {
            tokio::spawn(async move {
                if let Err(e) = r
                    .control
                    .report_instance(&r.endpoint, &r.instance, &r.address, r.port)
                    .await
                {
                    eprintln!(
                        "clary model-server: could not report {}:{}: {e}",
                        r.address, r.port
                    );
                }
            });
        }
    })
    .await
}

/// Resolves when the process named by `CLARY_MODEL_SERVER_PARENT` (a transform host's agent)
/// is no longer this process's parent: an agent killed outright leaves no model server behind.
/// Never resolves without the variable.
async fn parent_gone() {
    let Some(parent) = std::env::var(clary_exec::protocol::MODEL_SERVER_PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return std::future::pending().await;
    };
    while nix::unistd::getppid().as_raw() == parent {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Where a node's model server tells the control plane it listens.
struct Reported {
    control: ControlPlane,
    endpoint: String,
    instance: String,
    address: String,
    port: u16,
}

/// A model server on a cluster node: its spec from the control plane, its objects over HTTP,
/// a free port on the node's own address, reported back once it listens.
async fn from_control(node: FromControl) -> Result<(ServeConfig, String, Reported), ServeError> {
    let FromControl {
        url,
        endpoint,
        instance,
        region,
        node_dir,
    } = node;
    let key = |name: &str| std::env::var(name).map_err(|_| failed(format!("{name} is not set")));
    let signer = Signer {
        access_key: key("CLARY_AGENT_ACCESS_KEY")?,
        secret_key: key("CLARY_AGENT_SECRET_KEY")?,
        region,
    };
    let client = SignedClient::new(&url, signer);
    let control = ControlPlane::new(client.clone());
    let mut spec = control
        .model_server_spec(&endpoint, &instance)
        .await
        .map_err(failed)?;
    let address = match std::env::var("SLURMD_NODENAME") {
        Ok(node) => clary_exec::slurm::SlurmExecutor::node_address(&node).map_err(failed)?,
        Err(_) => "127.0.0.1".to_string(),
    };
    spec.work_dir = node_dir.join("endpoints").join(&endpoint).join(&instance);
    spec.python_shims = spec.work_dir.join("python");
    clary_shims::write_tree(&spec.python_shims).map_err(|e| {
        failed(format!(
            "writing the Python shims into {}: {e}",
            spec.python_shims.display()
        ))
    })?;
    spec.port = std::net::TcpListener::bind((address.as_str(), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed(format!("finding a free port on {address}: {e}")))?;
    let objects: Box<dyn ObjectStore> = if spec.object_access == "presigned" {
        Box::new(presigned_objects(client, &endpoint).await?)
    } else {
        Box::new(S3HttpStore::new(client, tokio::runtime::Handle::current()))
    };
    let bind_ip: std::net::IpAddr = address
        .parse()
        .map_err(|e| failed(format!("node address {address}: {e}")))?;
    let port = spec.port;
    let (mut config, announce) =
        tokio::task::spawn_blocking(move || prepare(spec, objects.as_ref()))
            .await
            .map_err(|e| failed(format!("preparing the model failed: {e}")))??;
    config.bind.set_ip(bind_ip);
    let reported = Reported {
        control,
        endpoint,
        instance,
        address,
        port,
    };
    Ok((config, announce, reported))
}

fn runtime_python(runtimes_dir: PathBuf, runtime: &Runtime) -> Result<PathBuf, ServeError> {
    Runtimes::new(runtimes_dir)
        .ensure(runtime, &mut |line| eprintln!("{line}"))
        .map_err(|e| failed(format!("preparing the runtime {}: {e}", runtime.name)))
}

fn standalone(s: Standalone) -> Result<(ServeConfig, String), ServeError> {
    let model_dir = std::fs::canonicalize(&s.model_dir).map_err(|e| {
        failed(format!(
            "the model directory {} does not exist: {e}",
            s.model_dir.display()
        ))
    })?;
    let python = match s.python {
        Some(p) => p,
        None => runtime_python(
            s.runtimes_dir,
            &builtin(SERVING_RUNTIME).expect("the serving runtime is built in"),
        )?,
    };
    let run_dir = s.run_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("clary-model-server-{}", std::process::id()))
    });
    let shims = run_dir.join("python");
    crate::write_python_package(&shims)
        .map_err(|e| failed(format!("writing {}: {e}", shims.display())))?;
    let mut config = ServeConfig::from_env(model_dir, python, shims, run_dir);
    if let Some(p) = s.port {
        config.bind.set_port(p);
    }
    config.legacy_handlers = is_legacy(&s.framework_version);
    Ok((config, String::new()))
}

fn is_legacy(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (1, 3)
}

async fn from_spec(path: &Path) -> Result<(ServeConfig, String), ServeError> {
    let text =
        std::fs::read(path).map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
    let spec: ModelServerSpec = serde_json::from_slice(&text)
        .map_err(|e| failed(format!("the model server spec is not valid: {e}")))?;
    let objects: Box<dyn ObjectStore> = if spec.object_access == "presigned" {
        let key = |name: &str| {
            std::env::var(name).map_err(|_| {
                failed(format!(
                    "{name} is not set: a model server reading an external store needs its instance's key pair"
                ))
            })
        };
        let signer = Signer {
            access_key: key("CLARY_AGENT_ACCESS_KEY")?,
            secret_key: key("CLARY_AGENT_SECRET_KEY")?,
            region: spec.region.clone(),
        };
        let client = SignedClient::new(&spec.control_url, signer);
        Box::new(presigned_objects(client, &spec.endpoint_name).await?)
    } else {
        Box::new(LocalStore::open(&spec.store_root).map_err(|e| {
            failed(format!(
                "opening the object store at {}: {e}",
                spec.store_root.display()
            ))
        })?)
    };
    tokio::task::spawn_blocking(move || prepare(spec, objects.as_ref()))
        .await
        .map_err(|e| failed(format!("preparing the model failed: {e}")))?
}

/// An external store, reached directly with URLs the server behind `client` presigns (the
/// data does not pass through the server); the instance's log says where it is.
async fn presigned_objects(
    client: SignedClient,
    endpoint: &str,
) -> Result<PresignedStore, ServeError> {
    let server = client.base_url().to_string();
    let presigner = ControlPresigner::new(client, AGENT_API);
    let store =
        PresignedStore::new(std::sync::Arc::new(presigner), Tuning::from_env()).map_err(failed)?;
    let at = store.endpoint().await.map_err(failed)?;
    eprintln!(
        "Model server of {endpoint}: objects come directly from the object store at {at}, with URLs the server at {server} presigns (the data does not pass through the server)"
    );
    Ok(store)
}

/// Lays out the model (and, before MXNet 1.4, the code) in the instance's directory and
/// builds the server's configuration. Blocks on object I/O.
fn prepare(
    spec: ModelServerSpec,
    objects: &dyn ObjectStore,
) -> Result<(ServeConfig, String), ServeError> {
    let image = Runtimes::new(spec.runtimes_dir.clone())
        .serving_image(&spec.image)
        .map_err(failed)?;
    let model_dir = spec.work_dir.join("model");
    let code_dir = spec.work_dir.join("code");
    let create = |dir: &Path| {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("creating {}: {e}", dir.display())))
    };
    // A fresh copy of the model each start, so a restarted instance never serves half of an
    // earlier extraction.
    let _ = std::fs::remove_dir_all(&model_dir);
    create(&model_dir)?;
    if let Some(url) = &spec.model_data_url {
        extract_s3_tar(objects, url, &model_dir)
            .map_err(|e| failed(format!("the model data {url} could not be unpacked: {e}")))?;
    }
    let env = &spec.environment;
    let mut code_dirs = vec![model_dir.join("code")];
    if !image.code_in_model
        && let Some(submit) = env.get("SAGEMAKER_SUBMIT_DIRECTORY")
    {
        let _ = std::fs::remove_dir_all(&code_dir);
        create(&code_dir)?;
        if submit.starts_with("s3://") {
            extract_s3_tar(objects, submit, &code_dir).map_err(|e| {
                failed(format!(
                    "the inference code {submit} could not be unpacked: {e}"
                ))
            })?;
        } else if let Some(dir) = submit.strip_prefix("file://") {
            code_dirs.insert(0, PathBuf::from(dir));
        }
        code_dirs.insert(0, code_dir.clone());
    }
    let python = runtime_python(spec.runtimes_dir.clone(), &image.runtime)?;
    let lookup = |k: &str| {
        env.get(k)
            .cloned()
            .or_else(|| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
    };
    let mut config = ServeConfig::from_lookup(
        model_dir,
        python,
        spec.python_shims.clone(),
        spec.work_dir.join("run"),
        lookup,
    );
    config.bind.set_port(spec.port);
    config.code_dirs = code_dirs;
    config.legacy_handlers = image.legacy_handlers;
    config.token = (!spec.token.is_empty()).then(|| spec.token.clone());
    let mut extra: BTreeMap<String, String> = env.clone();
    extra.retain(|_, v| !v.is_empty());
    if spec.accelerator_type.is_some() {
        eprintln!(
            "Accelerator {} was requested, but this machine has no Elastic Inference accelerator: the model runs on CPU (SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT is not set)",
            spec.accelerator_type.as_deref().unwrap_or_default()
        );
        extra.remove("SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT");
    }
    config.extra_env = extra.into_iter().collect();
    eprintln!(
        "Endpoint {} variant {} instance {}: MXNet {} image {} on runtime {}, {} workers",
        spec.endpoint_name,
        spec.variant_name,
        spec.instance_id,
        image.framework_version,
        spec.image,
        image.runtime.name,
        config.workers
    );
    Ok((config, format!(" (endpoint {})", spec.endpoint_name)))
}

/// Unpacks the tar.gz at an `s3://bucket/key` URI into `dest`.
fn extract_s3_tar(objects: &dyn ObjectStore, url: &str, dest: &Path) -> Result<(), String> {
    let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
        return Err(format!("{url} is not an s3://bucket/key URI"));
    };
    let file = objects.reader(bucket, key).map_err(|e| e.to_string())?;
    let skipped = extract_tar_gz(std::io::BufReader::new(file), dest)
        .map_err(|e| format!("not a readable tar.gz: {e}"))?;
    for s in skipped.0 {
        eprintln!("Not extracted from {url}: {s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_1_3_use_the_legacy_handlers() {
        assert!(is_legacy("1.2.1"));
        assert!(is_legacy("0.12"));
        assert!(!is_legacy("1.3.0"));
        assert!(!is_legacy("1.9.0"));
    }

    #[test]
    fn a_spec_lays_out_the_model_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("store")).unwrap();
        store.create_bucket("bkt").unwrap();
        let model = dir.path().join("m");
        std::fs::create_dir_all(model.join("code")).unwrap();
        std::fs::write(model.join("model.json"), b"{}").unwrap();
        std::fs::write(model.join("code/inference.py"), b"").unwrap();
        let mut packed = Vec::new();
        clary_store::archive::pack_dir(&model, &mut packed, 1).unwrap();
        store
            .put_bytes(
                "bkt",
                "out/model.tar.gz",
                &packed,
                clary_store::PutOptions::default(),
            )
            .unwrap();
        let work = dir.path().join("instance");
        extract_s3_tar(&store, "s3://bkt/out/model.tar.gz", &work).unwrap();
        assert!(work.join("model.json").is_file());
        assert!(work.join("code/inference.py").is_file());
        let bad = extract_s3_tar(&store, "s3://bkt", &work).unwrap_err();
        assert_eq!(bad, "s3://bkt is not an s3://bucket/key URI");
        let missing = extract_s3_tar(&store, "s3://bkt/none", &work).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
