//! `clary model-server`: the flags of one endpoint instance's model server, or of a standalone
//! server for a model directory; [`clary_serve::host`] does the rest.

use anyhow::{Context, Result};
use clary_serve::host::{FromControl, Launch, Standalone};
use std::path::PathBuf;

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

pub async fn run(args: ModelServerArgs) -> Result<()> {
    let launch = match (args.spec, args.from_control) {
        (_, Some(url)) => Launch::FromControl(FromControl {
            url,
            endpoint: args.endpoint.unwrap_or_default(),
            instance: args.instance.unwrap_or_default(),
            region: args.region,
            node_dir: args.node_dir,
        }),
        (Some(spec), None) => Launch::Spec(spec),
        (None, None) => Launch::Standalone(Standalone {
            model_dir: args
                .model_dir
                .context("give --model-dir DIR (an extracted model.tar.gz) or --spec")?,
            port: args.port,
            framework_version: args.framework_version,
            python: args.python,
            runtimes_dir: args
                .runtimes_dir
                .unwrap_or_else(|| crate::settings::default_data_dir().join("runtimes")),
            run_dir: args.run_dir,
        }),
    };
    Ok(clary_serve::host::run(launch).await?)
}
