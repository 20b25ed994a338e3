//! `clary model-server`: one endpoint instance, or a standalone server for a model directory.
//! With `--spec` (how the executor starts it) it first lays out the model the way a SageMaker
//! serving container finds it: `model.tar.gz` extracted into `model/`, and for images before
//! MXNet 1.4 the code fetched from `SAGEMAKER_SUBMIT_DIRECTORY`.

use anyhow::{Context, Result, bail};
use clary_exec::protocol::ModelServerSpec;
use clary_exec::runtimes::{Runtime, Runtimes, SERVING_RUNTIME, builtin};
use clary_serve::ServeConfig;
use clary_store::archive::extract_tar_gz;
use clary_store::{LocalStore, ObjectStore, S3HttpStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ModelServerArgs {
    /// The extracted model (what SageMaker puts in /opt/ml/model).
    #[arg(long, conflicts_with = "spec")]
    pub model_dir: Option<PathBuf>,
    /// Port on 127.0.0.1 [default: SAGEMAKER_BIND_TO_PORT, else 8080; 0 picks a free one].
    #[arg(long)]
    pub port: Option<u16>,
    /// The framework version the model was made for (1.2 and earlier use the legacy handler
    /// signatures).
    #[arg(long, default_value = "1.9.0")]
    pub framework_version: String,
    /// The Python to run workers with [default: the mxnet-1.9 runtime, built if missing].
    #[arg(long)]
    pub python: Option<PathBuf>,
    #[arg(long, env = "CLARY_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,
    /// Scratch directory for worker sockets and the requirements environment.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// An endpoint instance's launch spec (used by the server's executor).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// On a cluster node (under Slurm): fetch the instance's spec from the server at this URL,
    /// listen on a free port of this node and report it; the key pair comes from
    /// CLARY_AGENT_ACCESS_KEY/CLARY_AGENT_SECRET_KEY.
    #[arg(long, conflicts_with = "spec", requires_all = ["endpoint", "instance"])]
    pub from_control: Option<String>,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub instance: Option<String>,
    #[arg(long, default_value = crate::settings::DEFAULT_REGION)]
    pub region: String,
    /// Where this node keeps its endpoint instances' directories.
    #[arg(long, default_value = "/tmp/clary-node")]
    pub node_dir: PathBuf,
}

/// A model server on a cluster node: its spec from the control plane, its objects over HTTP,
/// a free port on the node's own address, reported back once it listens.
async fn from_control(
    args: &ModelServerArgs,
    url: &str,
) -> Result<(ServeConfig, String, Reported)> {
    let (endpoint, instance) = (
        args.endpoint.clone().unwrap_or_default(),
        args.instance.clone().unwrap_or_default(),
    );
    let (access, secret) = (
        std::env::var("CLARY_AGENT_ACCESS_KEY").context("CLARY_AGENT_ACCESS_KEY is not set")?,
        std::env::var("CLARY_AGENT_SECRET_KEY").context("CLARY_AGENT_SECRET_KEY is not set")?,
    );
    let reporter = clary_agent::reporter::Reporter::new(url, &access, &secret, &args.region, "");
    let mut spec = reporter
        .model_server_spec(&endpoint, &instance)
        .await
        .map_err(anyhow::Error::msg)?;
    let address = match std::env::var("SLURMD_NODENAME") {
        Ok(node) => {
            clary_exec::slurm::SlurmExecutor::node_address(&node).map_err(anyhow::Error::msg)?
        }
        Err(_) => "127.0.0.1".to_string(),
    };
    spec.work_dir = args
        .node_dir
        .join("endpoints")
        .join(&endpoint)
        .join(&instance);
    spec.python_shims = spec.work_dir.join("python");
    crate::server::write_python_shims(&spec.python_shims)?;
    spec.port = std::net::TcpListener::bind((address.as_str(), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .with_context(|| format!("finding a free port on {address}"))?;
    let objects = S3HttpStore::new(
        clary_client::SignedClient::new(
            url,
            clary_sigv4::Signer {
                access_key: access,
                secret_key: secret,
                region: args.region.clone(),
            },
        ),
        tokio::runtime::Handle::current(),
    );
    let bind_ip: std::net::IpAddr = address
        .parse()
        .with_context(|| format!("node address {address}"))?;
    let port = spec.port;
    let (mut config, announce) =
        tokio::task::spawn_blocking(move || prepare(spec, &objects)).await??;
    config.bind.set_ip(bind_ip);
    Ok((
        config,
        announce,
        Reported {
            reporter,
            endpoint,
            instance,
            address,
            port,
        },
    ))
}

/// Where a node's model server tells the control plane it listens.
struct Reported {
    reporter: clary_agent::reporter::Reporter,
    endpoint: String,
    instance: String,
    address: String,
    port: u16,
}

pub async fn run(args: ModelServerArgs) -> Result<()> {
    let mut reported = None;
    let (config, announce) = match (&args.spec, &args.from_control) {
        (_, Some(url)) => {
            let (config, announce, r) = from_control(&args, url).await?;
            reported = Some(r);
            (config, announce)
        }
        (Some(spec), None) => from_spec(spec)?,
        (None, None) => standalone(&args)?,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("clary model-server: stopping (finishing requests in flight)");
    };
    clary_serve::serve(config, shutdown, |addr| {
        println!("clary model-server listening on http://{addr}{announce}");
        if let Some(r) = reported.take() {
            tokio::spawn(async move {
                if let Err(e) = r
                    .reporter
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
    .await?;
    Ok(())
}

fn runtime_python(runtimes_dir: PathBuf, runtime: &Runtime) -> Result<PathBuf> {
    Runtimes::new(runtimes_dir)
        .ensure(runtime, &mut |line| eprintln!("{line}"))
        .map_err(|e| anyhow::anyhow!("preparing the runtime {}: {e}", runtime.name))
}

fn standalone(args: &ModelServerArgs) -> Result<(ServeConfig, String)> {
    let model_dir = args
        .model_dir
        .clone()
        .context("give --model-dir DIR (an extracted model.tar.gz) or --spec")?;
    let model_dir = std::fs::canonicalize(&model_dir)
        .with_context(|| format!("the model directory {} does not exist", model_dir.display()))?;
    let python = match &args.python {
        Some(p) => p.clone(),
        None => runtime_python(
            args.runtimes_dir
                .clone()
                .unwrap_or_else(|| crate::settings::default_data_dir().join("runtimes")),
            &builtin(SERVING_RUNTIME).expect("the serving runtime is built in"),
        )?,
    };
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("clary-model-server-{}", std::process::id()))
    });
    let shims = run_dir.join("python");
    clary_serve::write_python_package(&shims)?;
    let mut config = ServeConfig::from_env(model_dir, python, shims, run_dir);
    if let Some(p) = args.port {
        config.bind.set_port(p);
    }
    config.legacy_handlers = is_legacy(&args.framework_version);
    Ok((config, String::new()))
}

fn is_legacy(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (1, 3)
}

fn from_spec(path: &Path) -> Result<(ServeConfig, String)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: ModelServerSpec =
        serde_json::from_slice(&text).context("the model server spec is not valid")?;
    let objects = LocalStore::open(&spec.store_root)
        .with_context(|| format!("opening the object store at {}", spec.store_root.display()))?;
    prepare(spec, &objects)
}

/// Lays out the model (and, before MXNet 1.4, the code) in the instance's directory and
/// builds the server's configuration. Blocks on object I/O.
fn prepare(spec: ModelServerSpec, objects: &dyn ObjectStore) -> Result<(ServeConfig, String)> {
    let image = Runtimes::new(spec.runtimes_dir.clone())
        .serving_image(&spec.image)
        .map_err(anyhow::Error::msg)?;
    let model_dir = spec.work_dir.join("model");
    let code_dir = spec.work_dir.join("code");
    // A fresh copy of the model each start, so a restarted instance never serves half of an
    // earlier extraction.
    let _ = std::fs::remove_dir_all(&model_dir);
    std::fs::create_dir_all(&model_dir)?;
    if let Some(url) = &spec.model_data_url {
        extract_s3_tar(objects, url, &model_dir)
            .with_context(|| format!("the model data {url} could not be unpacked"))?;
    }
    let env = &spec.environment;
    let mut code_dirs = vec![model_dir.join("code")];
    if !image.code_in_model
        && let Some(submit) = env.get("SAGEMAKER_SUBMIT_DIRECTORY")
    {
        let _ = std::fs::remove_dir_all(&code_dir);
        std::fs::create_dir_all(&code_dir)?;
        if submit.starts_with("s3://") {
            extract_s3_tar(objects, submit, &code_dir)
                .with_context(|| format!("the inference code {submit} could not be unpacked"))?;
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

fn extract_s3_tar(objects: &dyn ObjectStore, url: &str, dest: &Path) -> Result<()> {
    let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
        bail!("{url} is not an s3://bucket/key URI");
    };
    let file = objects.reader(bucket, key)?;
    let skipped = extract_tar_gz(std::io::BufReader::new(file), dest)
        .map_err(|e| anyhow::anyhow!("not a readable tar.gz: {e}"))?;
    for s in skipped.0 {
        eprintln!("Not extracted from {url}: {s}");
    }
    Ok(())
}
