//! `clary`: train and host MXNet models the SageMaker way, on machines you own.

mod client;
mod hosting_cli;
mod metrics_cli;
mod model_server;
mod runtimes_cli;
mod server;
mod settings;
mod store_backing;
mod train;
mod transform_cli;
mod tuning_cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use client::{Client, ClientArgs};
use runtimes_cli::RuntimesCommand;
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "clary",
    version,
    about = "Train and host MXNet models the SageMaker way, on machines you own"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: SageMaker, S3, CloudWatch Logs, STS and IAM APIs on one port.
    Server(server::ServerArgs),
    /// Print `export` lines that point the AWS CLI, boto3 and the SageMaker SDK at Clary.
    Env {
        #[arg(long, env = "CLARY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The server URL [default: the running server's, else http://127.0.0.1:7070].
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Print the web console's address and a one-time sign-in link for it.
    Console {
        #[arg(long, env = "CLARY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Print only the address (sign in with the key pair `clary env` prints).
        #[arg(long)]
        no_link: bool,
    },
    /// Upload code and data and start a training job (like `MXNet(...).fit(...)`).
    Train {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: train::TrainArgs,
    },
    /// Run a model over S3 objects with a batch transform job (like `Transformer.transform`),
    /// with a progress bar until it ends.
    Transform {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: transform_cli::TransformArgs,
    },
    /// List, describe or stop training jobs.
    Jobs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Print a training job's log (every host), optionally following it to the end.
    /// Hyperparameter tuning jobs.
    Tuning {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: tuning_cli::TuningCommand,
    },
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// The framework version table and the runtimes (Python environments) behind it; build one,
    /// or add a custom runtime for a custom image.
    Runtimes {
        #[command(subcommand)]
        command: Option<RuntimesCommand>,
        #[arg(long, env = "CLARY_RUNTIMES_DIR", global = true)]
        runtimes_dir: Option<PathBuf>,
        #[arg(long, env = "CLARY_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Deploy a training job's model (or a model.tar.gz) to an endpoint (like `estimator.deploy`).
    Deploy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: hosting_cli::DeployArgs,
    },
    /// Send one request to an endpoint and print the answer (like `predictor.predict`).
    Invoke {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: hosting_cli::InvokeArgs,
    },
    /// List, describe or delete endpoints.
    Endpoints {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: hosting_cli::EndpointsCommand,
    },
    /// List, describe or delete models.
    Models {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: hosting_cli::ModelsCommand,
    },
    /// The model server: /ping and /invocations over a pool of Python workers.
    ModelServer(model_server::ModelServerArgs),
    /// The Slurm cluster a server with `--executor slurm` uses: its nodes, its queue, and
    /// which of its jobs are Clary's training jobs and endpoint instances.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The host agent of a training or processing job (started by the server, one per host).
    Agent {
        /// The host spec file the local executor wrote.
        #[arg(long, required_unless_present = "from_control")]
        spec: Option<PathBuf>,
        /// Write the config files and print the SM_* environment and arguments, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// On a cluster node (under `srun`): fetch this node's host spec from the server at
        /// this URL; the key pair comes from CLARY_AGENT_ACCESS_KEY/CLARY_AGENT_SECRET_KEY.
        #[arg(long, requires = "job")]
        from_control: Option<String>,
        #[arg(long)]
        job: Option<String>,
        /// The kind of that job (`TrainingJob`, …).
        #[arg(long, default_value = "TrainingJob", value_parser = parse_job_kind)]
        kind: clary_exec::protocol::JobKind,
        #[arg(long, default_value = settings::DEFAULT_REGION)]
        region: String,
        /// Where this node keeps its jobs' directories.
        #[arg(long, default_value = "/tmp/clary-node")]
        node_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Nodes, queue, and Clary's jobs on them.
    Status,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name_contains: Option<String>,
        #[arg(long, default_value_t = 50)]
        max: u32,
    },
    Describe {
        name: String,
    },
    Stop {
        name: String,
    },
    /// A job's metrics (its MetricDefinitions): latest values and a chart of each.
    Metrics {
        name: String,
        /// Keep printing as new values arrive, until the job ends.
        #[arg(long)]
        follow: bool,
    },
}

fn parse_job_kind(s: &str) -> Result<clary_exec::protocol::JobKind, String> {
    clary_exec::protocol::JobKind::parse(s).ok_or_else(|| format!("{s:?} is not a job kind"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // s3s logs every failed S3 call at ERROR with its parsed input (a malformed body whole);
    // the API logs one bounded line per call instead.
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLARY_LOG")
        .unwrap_or_else(|_| "info,s3s=off".into());
    // Colours only for a person at a terminal, never in a log file.
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Server(args) if args.log_format == server::LogFormat::Json => {
            log.json().flatten_event(true).init()
        }
        _ => log.init(),
    }
    if matches!(
        cli.command,
        Command::Server(_) | Command::Env { .. } | Command::Runtimes { .. }
    ) {
        // Everything these write under the data dir (the database and its WAL, objects, job
        // and endpoint directories, host specs holding the key pair, logs) and every process
        // they start (agents, model servers) is private to this user from its creation.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    }
    if let Command::Agent {
        from_control: Some(url),
        job: Some(job),
        kind,
        region,
        node_dir,
        ..
    } = &cli.command
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::process::exit(rt.block_on(clary_agent::from_control::run(
            url,
            *kind,
            job,
            region,
            node_dir.clone(),
            |dir| server::write_python_shims(dir).map_err(|e| e.to_string()),
        )));
    }
    if let Command::Agent {
        spec: Some(spec),
        dry_run,
        ..
    } = &cli.command
    {
        let text = std::fs::read(spec).with_context(|| format!("reading {}", spec.display()))?;
        let spec =
            clary_exec::protocol::AgentSpec::from_slice(&text).map_err(anyhow::Error::msg)?;
        if *dry_run {
            let clary_exec::protocol::AgentSpec::Training(spec) = &spec else {
                anyhow::bail!("--dry-run shows a training host's contract; this spec is not one");
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&clary_agent::dry_run(spec)?)?
            );
            return Ok(());
        }
        // The agent's own runtime: small, single-threaded is plenty.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::process::exit(rt.block_on(clary_agent::run_agent(spec)));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Server(args) => server::run(args).await,
        Command::Env {
            data_dir,
            endpoint_url,
        } => env(data_dir, endpoint_url),
        Command::Console { data_dir, no_link } => console(data_dir, no_link),
        Command::Train { client, args } => train::run(&Client::from_env(&client)?, args).await,
        Command::Transform { client, args } => {
            transform_cli::run(&Client::from_env(&client)?, args).await
        }
        Command::Jobs { client, command } => jobs(&Client::from_env(&client)?, command).await,
        Command::Tuning { client, command } => {
            tuning_cli::run(&Client::from_env(&client)?, command).await
        }
        Command::Logs {
            client,
            name,
            follow,
        } => {
            let client = Client::from_env(&client)?;
            if follow {
                train::follow(&client, &name).await?;
            } else {
                client
                    .sagemaker("DescribeTrainingJob", &json!({"TrainingJobName": name}))
                    .await?;
                train::print_new_logs(&client, &name, &mut Default::default()).await?;
            }
            Ok(())
        }
        Command::Runtimes {
            command,
            runtimes_dir,
            data_dir,
        } => {
            let dir = runtimes_dir.unwrap_or_else(|| {
                data_dir
                    .unwrap_or_else(settings::default_data_dir)
                    .join("runtimes")
            });
            runtimes_cli::run(dir, command.unwrap_or(RuntimesCommand::List))
        }
        Command::ModelServer(args) => model_server::run(args).await,
        Command::Deploy { client, args } => {
            hosting_cli::deploy(&Client::from_env(&client)?, args).await
        }
        Command::Invoke { client, args } => {
            hosting_cli::invoke(&Client::from_env(&client)?, args).await
        }
        Command::Endpoints { client, command } => {
            hosting_cli::endpoints(&Client::from_env(&client)?, command).await
        }
        Command::Models { client, command } => {
            hosting_cli::models(&Client::from_env(&client)?, command).await
        }
        Command::Cluster {
            command: ClusterCommand::Status,
        } => cluster_status(),
        Command::Agent { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn cluster_status() -> Result<()> {
    let (nodes, queue) =
        clary_exec::slurm::SlurmExecutor::overview().map_err(anyhow::Error::msg)?;
    println!("Nodes\n{}", nodes.trim_end());
    println!("\nQueue\n{}", queue.trim_end());
    println!("\nClary's jobs");
    let mut any = false;
    for line in queue.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(name), Some(state)) = (cols.first(), cols.get(1), cols.get(2)) else {
            continue;
        };
        let what = match clary_exec::executor::SlurmUnit::from_job_name(name) {
            Some(clary_exec::executor::SlurmUnit::EndpointInstance(ep)) => {
                format!("endpoint instance {ep}")
            }
            Some(clary_exec::executor::SlurmUnit::Job(kind, job)) => {
                format!("{} {job}", kind.as_str())
            }
            None => continue,
        };
        any = true;
        println!(
            "{id:>8}  {state:<10} {what}  on {}",
            cols.last().unwrap_or(&"")
        );
    }
    if !any {
        println!("(none)");
    }
    Ok(())
}

fn env(data_dir: Option<PathBuf>, endpoint_url: Option<String>) -> Result<()> {
    let data_dir = data_dir.unwrap_or_else(settings::default_data_dir);
    let id = settings::Identity::load_or_create(&data_dir)?;
    let info = settings::ServerInfo::load(&data_dir);
    let url = endpoint_url
        .or_else(|| info.as_ref().map(|i| i.url.clone()))
        .unwrap_or_else(|| format!("http://{}", settings::DEFAULT_LISTEN));
    let (access_key, secret_key) = settings::ServerInfo::keys_or(info.as_ref(), &id);
    let region = info
        .map(|i| i.region)
        .unwrap_or_else(|| settings::DEFAULT_REGION.into());
    let config = settings::write_sdk_config(&data_dir, &id.default_bucket(&region), &id.account)?;
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    println!("export AWS_ENDPOINT_URL={}", q(&url));
    println!("export AWS_ACCESS_KEY_ID={}", q(&access_key));
    println!("export AWS_SECRET_ACCESS_KEY={}", q(&secret_key));
    println!("export AWS_DEFAULT_REGION={}", q(&region));
    println!(
        "export SAGEMAKER_USER_CONFIG_OVERRIDE={}",
        q(&config.display().to_string())
    );
    println!(
        "export CLARY_DATA_DIR={}",
        q(&data_dir.display().to_string())
    );
    Ok(())
}

/// The console's address and, unless asked not to, a one-time sign-in link: an HMAC under
/// the running server's secret, good once and for ten minutes, for that server process only.
/// The secret itself never leaves this machine's data dir.
fn console(data_dir: Option<PathBuf>, no_link: bool) -> Result<()> {
    let data_dir = data_dir.unwrap_or_else(settings::default_data_dir);
    let info = settings::ServerInfo::load(&data_dir).with_context(|| {
        format!(
            "no clary server has run with data dir {}; start one with `clary server`",
            data_dir.display()
        )
    })?;
    // A link is made for one server process: one that has ended could not take it.
    let pid = nix::unistd::Pid::from_raw(info.pid as i32);
    if nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
        anyhow::bail!(
            "the clary server of data dir {} (pid {}) is not running; start it with `clary server`",
            data_dir.display(),
            info.pid
        );
    }
    let address = format!(
        "{}{}",
        info.url.trim_end_matches('/'),
        clary_api::console::BASE
    );
    println!("Clary console: {address}");
    let secret = match &info.secret_key {
        Some(s) => s.clone(),
        None => settings::Identity::load_or_create(&data_dir)?.secret_key,
    };
    if !no_link {
        let token = clary_api::console::auth::sign_in_link_token(
            &secret,
            info.pid,
            clary_control::now_secs(),
        );
        println!(
            "One-time sign-in link (valid for 10 minutes, once): {address}sign-in?link={token}"
        );
    }
    println!("Or sign in with the key pair `clary env` prints.");
    Ok(())
}

async fn jobs(client: &Client, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List {
            status,
            name_contains,
            max,
        } => {
            let mut req = json!({"MaxResults": max.clamp(1, 100), "SortBy": "CreationTime", "SortOrder": "Descending"});
            if let Some(s) = status {
                req["StatusEquals"] = json!(s);
            }
            if let Some(n) = name_contains {
                req["NameContains"] = json!(n);
            }
            let out = client.sagemaker("ListTrainingJobs", &req).await?;
            println!(
                "{:<48} {:<11} {:<20} CREATED",
                "NAME", "STATUS", "SECONDARY"
            );
            for j in out["TrainingJobSummaries"].as_array().into_iter().flatten() {
                let created = j["CreationTime"]
                    .as_f64()
                    .map(|t| {
                        chrono::DateTime::from_timestamp(t as i64, 0)
                            .map(|d| {
                                d.with_timezone(&chrono::Local)
                                    .format("%Y-%m-%d %H:%M:%S")
                                    .to_string()
                            })
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<48} {:<11} {:<20} {created}",
                    j["TrainingJobName"].as_str().unwrap_or_default(),
                    j["TrainingJobStatus"].as_str().unwrap_or_default(),
                    j["SecondaryStatus"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        JobsCommand::Describe { name } => {
            let out = client
                .sagemaker("DescribeTrainingJob", &json!({"TrainingJobName": name}))
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        JobsCommand::Metrics { name, follow } => metrics_cli::show(client, &name, follow).await,
        JobsCommand::Stop { name } => {
            client
                .sagemaker("StopTrainingJob", &json!({"TrainingJobName": name}))
                .await?;
            println!("Stopping training job {name}");
            Ok(())
        }
    }
}
