//! `clary server`: the control plane, the object store and the API on one port.

use crate::settings::{self, Identity, ServerInfo};
use anyhow::{Context, Result};
use clary_control::capacity::Capacity;
use clary_control::{ControlConfig, ControlPlane};
use clary_exec::Executor;
use clary_exec::executor::{LocalProcesses, NodeContext, SlurmCluster};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::Arc;

/// Writes the Python helpers embedded in the binary (everything under python/: the training
/// shims and the serving package) into `dir`.
pub fn write_python_shims(dir: &std::path::Path) -> Result<()> {
    clary_shims::write_tree(dir)
        .with_context(|| format!("writing the Python shims into {}", dir.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free one; the URL is printed and saved).
    #[arg(long, env = "CLARY_LISTEN", default_value = settings::DEFAULT_LISTEN)]
    pub listen: String,
    /// The server's log, one line per API call among others: `text` for people, `json` (one
    /// object per line) for machines.
    #[arg(long, env = "CLARY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where state, objects and jobs live [default: $XDG_DATA_HOME/clary].
    #[arg(long, env = "CLARY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Access key clients sign with [default: generated on first start, kept in the data dir].
    #[arg(long, env = "CLARY_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    #[arg(
        long,
        env = "CLARY_SECRET_KEY",
        requires = "access_key",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    #[arg(long, env = "CLARY_REGION", default_value = settings::DEFAULT_REGION)]
    pub region: String,
    /// Where runtimes (Python environments) are built [default: <data-dir>/runtimes].
    #[arg(long, env = "CLARY_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,
    /// vCPUs the queue may hand out [default: this machine's].
    #[arg(long, env = "CLARY_CAPACITY_CPUS")]
    pub capacity_cpus: Option<u32>,
    /// Memory the queue may hand out, GiB [default: this machine's].
    #[arg(long, env = "CLARY_CAPACITY_MEMORY_GIB")]
    pub capacity_memory_gib: Option<f64>,
    /// Instance-type overrides for the queue, `ml.x.y=VCPUS:GIB`, repeatable.
    #[arg(long = "instance-shape", value_parser = parse_shape)]
    pub instance_shapes: Vec<(String, (u32, f64))>,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped (SageMaker: 120).
    #[arg(long, env = "CLARY_STOP_GRACE_SECS", default_value_t = 120)]
    pub stop_grace_secs: u64,
    /// How training hosts reach objects: `local` hard-links from the store's directory (no
    /// bytes copied; the host shares this machine's disk), `http` goes through the S3 API on
    /// this server's port (for hosts that do not share its disk).
    #[arg(long, env = "CLARY_AGENT_OBJECTS", default_value = "local", value_parser = ["local", "http"])]
    pub agent_objects: String,
    /// Where training hosts run: `local` processes, or a `slurm` cluster (one `sbatch` per
    /// job; the nodes need the same `clary` binary path and reach this server over HTTP).
    #[arg(long, env = "CLARY_EXECUTOR", default_value = "local", value_parser = ["local", "slurm"])]
    pub executor: String,
    #[arg(long, env = "CLARY_SLURM_PARTITION")]
    pub slurm_partition: Option<String>,
    #[arg(long, env = "CLARY_SLURM_ACCOUNT")]
    pub slurm_account: Option<String>,
    /// An extra `sbatch` flag, repeatable (`--slurm-flag=--qos=high`).
    #[arg(long = "slurm-flag", allow_hyphen_values = true)]
    pub slurm_flags: Vec<String>,
    /// What an instance type asks of Slurm, repeatable: `ml.p3.2xlarge=cpus=8,mem=61G,gres=gpu:1`.
    /// Types not listed take whole nodes (`--exclusive`).
    #[arg(long = "slurm-instance", value_parser = parse_slurm_instance)]
    pub slurm_instances: Vec<(String, clary_exec::slurm::SlurmShape)>,
    #[command(flatten)]
    pub object_store: crate::store_backing::ObjectStoreArgs,
    /// Where agents keep their jobs' directories on each node.
    #[arg(long, env = "CLARY_SLURM_NODE_DIR", default_value = "/tmp/clary-node")]
    pub slurm_node_dir: PathBuf,
}

fn parse_slurm_instance(s: &str) -> Result<(String, clary_exec::slurm::SlurmShape), String> {
    let (t, shape) = s
        .split_once('=')
        .ok_or("expected ml.x.y=cpus=N,mem=SIZE,gres=SPEC")?;
    Ok((t.to_string(), clary_exec::slurm::SlurmShape::parse(shape)?))
}

fn parse_shape(s: &str) -> Result<(String, (u32, f64)), String> {
    let (t, shape) = s.split_once('=').ok_or("expected ml.x.y=VCPUS:GIB")?;
    let (c, m) = shape.split_once(':').ok_or("expected ml.x.y=VCPUS:GIB")?;
    Ok((
        t.to_string(),
        (
            c.parse().map_err(|_| "VCPUS must be an integer")?,
            m.parse().map_err(|_| "GIB must be a number")?,
        ),
    ))
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(settings::default_data_dir);
    settings::prepare_data_dir(&data_dir)?;
    let mut identity = Identity::load_or_create(&data_dir)?;
    if let (Some(a), Some(s)) = (&args.access_key, &args.secret_key) {
        identity.access_key = a.clone();
        identity.secret_key = s.clone();
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another clary server running? pick another --listen)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", addr.port());

    let shims = data_dir.join("python");
    write_python_shims(&shims)?;
    let store = crate::store_backing::open(
        &args.object_store,
        &data_dir,
        &args.region,
        &identity.default_bucket(&args.region),
    )
    .await?;
    let mut capacity = Capacity::of_this_machine();
    if let Some(c) = args.capacity_cpus {
        capacity.cpus = c;
    }
    if let Some(m) = args.capacity_memory_gib {
        capacity.memory_gib = m;
    }
    capacity.overrides = args.instance_shapes.iter().cloned().collect();
    let config = ControlConfig {
        data_dir: data_dir.clone(),
        runtimes_dir: args
            .runtimes_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("runtimes")),
        region: args.region.clone(),
        account: identity.account.clone(),
        control_url: url.clone(),
        python_shims: shims,
        capacity,
        stop_grace_secs: args.stop_grace_secs,
        // An external store is reached directly, with URLs the server presigns; cluster
        // nodes do not share this machine's disk, so their agents use the S3 API.
        agent_objects: if matches!(store, clary_api::Backing::External(_)) {
            "presigned".into()
        } else if args.executor == "slurm" {
            "http".into()
        } else {
            args.agent_objects.clone()
        },
    };
    let program = std::env::current_exe().context("locating the clary binary")?;
    let executor: Arc<dyn Executor> = if args.executor == "slurm" {
        Arc::new(SlurmCluster {
            slurm: clary_exec::slurm::SlurmExecutor {
                config: clary_exec::slurm::SlurmConfig {
                    partition: args.slurm_partition.clone(),
                    account: args.slurm_account.clone(),
                    extra_flags: args.slurm_flags.clone(),
                    shapes: args.slurm_instances.iter().cloned().collect(),
                    node_dir: args.slurm_node_dir.clone(),
                    output_dir: data_dir.join("slurm"),
                },
            },
            node: NodeContext {
                program,
                control_url: url.clone(),
                region: args.region.clone(),
            },
        })
    } else {
        Arc::new(LocalProcesses::new(program))
    };
    let control = ControlPlane::open(config, executor).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (filled, undecodable) = control
        .training
        .fill_in_specs(clary_api::training_api::spec_from_request)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if filled > 0 {
        eprintln!("filled in the typed spec of {filled} training jobs of an earlier clary");
    }
    for job in undecodable {
        eprintln!("warning: training job {job}");
    }
    let undecodable = control
        .hosting
        .fill_in_specs(
            clary_api::hosting_api::container_from_request,
            clary_api::hosting_api::variants_from_request,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for resource in undecodable {
        eprintln!("warning: {resource}");
    }
    let state = clary_api::ApiState::new(
        control.clone(),
        store,
        &identity.access_key,
        &identity.secret_key,
        &args.region,
        &identity.account,
    );
    let info = ServerInfo {
        url: url.clone(),
        region: args.region.clone(),
        pid: std::process::id(),
        // `clary env` prints these: with --access-key/--secret-key they are not identity.json's.
        access_key: Some(identity.access_key.clone()),
        secret_key: Some(identity.secret_key.clone()),
    };
    settings::write_private(
        &ServerInfo::path(&data_dir),
        &serde_json::to_vec_pretty(&info)?,
    )?;
    tokio::spawn(control.training.clone().run_scheduler());
    tokio::spawn(control.processing.clone().run_scheduler());
    tokio::spawn(control.hosting.clone().run());
    tokio::spawn(control.endpoint_metrics.clone().run());
    tokio::spawn(control.transform.clone().run_scheduler());
    control
        .tuning
        .set_trial_echo(clary_api::tuning_api::trial_echo);
    tokio::spawn(control.tuning.clone().run());
    println!(
        "clary server listening on {url} (data dir {})",
        data_dir.display()
    );
    println!(
        "point clients at it with: eval \"$(clary env --data-dir {})\"",
        data_dir.display()
    );
    serve(listener, state).await
}

/// Connections served at once; more wait in the listen backlog. A flood of connections then
/// cannot use up the file descriptors (or the memory) the server needs.
const MAX_CONNECTIONS: usize = 512;

/// A client has this long to send a request's headers before its connection is closed.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn serve(listener: tokio::net::TcpListener, state: Arc<clary_api::ApiState>) -> Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (accepted, slot) = tokio::select! {
            r = async {
                let slot = slots.clone().acquire_owned().await;
                (listener.accept().await, slot)
            } => r,
            _ = tokio::signal::ctrl_c() => {
                // Running jobs keep going: their agents re-attach when a server starts again.
                println!("clary server stopping; running jobs continue and re-attach on the next start");
                return Ok(());
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: the server
                // goes on serving the others.
                eprintln!("accepting a connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| clary_api::handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
