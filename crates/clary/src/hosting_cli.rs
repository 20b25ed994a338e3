//! `clary deploy`, `clary invoke`, `clary endpoints …` and `clary models …`: the hosting half of
//! the SDK workflow from the command line, over the same API calls the SDK makes.

use crate::client::Client;
use anyhow::{Context, Result, bail};
use clary_store::archive::{DEFAULT_GZIP_LEVEL, extract_tar_gz, pack_dir};
use indicatif::ProgressBar;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// A completed training job whose model to deploy.
    #[arg(required_unless_present = "model_data", conflicts_with = "model_data")]
    pub job: Option<String>,
    /// An s3:// URI of a model.tar.gz, instead of a training job.
    #[arg(long)]
    pub model_data: Option<String>,
    /// The inference script (model_fn, input_fn, predict_fn, output_fn or transform_fn); packed
    /// into model.tar.gz under code/ as the SDK does. Without it the default handlers serve.
    #[arg(long)]
    pub entry_point: Option<PathBuf>,
    /// Directory packed under code/ with the entry point (its requirements.txt is installed).
    #[arg(long, requires = "entry_point")]
    pub source_dir: Option<PathBuf>,
    /// Name of the model, endpoint config and endpoint [default: mxnet-inference-<time>].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub instance_count: u32,
    #[arg(long, default_value = "ml.m5.large")]
    pub instance_type: String,
    #[arg(long, default_value = "1.9.0")]
    pub framework_version: String,
    /// Environment for the model server: KEY=VALUE (e.g. SAGEMAKER_MODEL_SERVER_WORKERS=2).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Return once the endpoint is created instead of waiting for InService.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    pub endpoint: String,
    /// A JSON body (application/json).
    #[arg(long, conflicts_with_all = ["csv", "file"])]
    pub json: Option<String>,
    /// A CSV body (text/csv).
    #[arg(long, conflicts_with = "file")]
    pub csv: Option<String>,
    /// A body read from a file (Content-Type from --content-type, or guessed from the extension).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub content_type: Option<String>,
    #[arg(long)]
    pub accept: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum EndpointsCommand {
    List,
    Describe {
        name: String,
    },
    /// Delete an endpoint (and, as the SDK's delete_endpoint does, its endpoint config).
    Delete {
        name: String,
        /// Keep the endpoint config.
        #[arg(long)]
        keep_config: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    List,
    Describe { name: String },
    Delete { name: String },
}

fn inference_image(region: &str, version: &str) -> String {
    format!("763104351884.dkr.ecr.{region}.amazonaws.com/mxnet-inference:{version}-cpu-py38")
}

fn split_s3(uri: &str) -> Result<(String, String)> {
    uri.strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .map(|(b, k)| (b.to_string(), k.to_string()))
        .with_context(|| format!("{uri} is not an s3://bucket/key URI"))
}

pub async fn deploy(client: &Client, args: DeployArgs) -> Result<()> {
    let mut model_data = args.model_data.clone().unwrap_or_default();
    let mut version = args.framework_version.clone();
    if let Some(job) = &args.job {
        let d = client
            .sagemaker("DescribeTrainingJob", &json!({"TrainingJobName": job}))
            .await?;
        if d["TrainingJobStatus"] != "Completed" {
            bail!(
                "training job {job} is {}; only a Completed job has a model to deploy",
                d["TrainingJobStatus"].as_str().unwrap_or("unknown")
            );
        }
        model_data = d["ModelArtifacts"]["S3ModelArtifacts"]
            .as_str()
            .context("the job has no model artifacts")?
            .to_string();
        // The training image's version (the tag keeps what the user typed).
        if let Some(tag) = d["AlgorithmSpecification"]["TrainingImage"]
            .as_str()
            .and_then(|i| i.rsplit(':').next())
        {
            version = tag.split('-').next().unwrap_or(&version).to_string();
        }
    }
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "mxnet-inference-{}",
            chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S-%3f")
        )
    });
    let mut env = serde_json::Map::new();
    env.insert("SAGEMAKER_REGION".into(), json!(client.region));
    env.insert("SAGEMAKER_CONTAINER_LOG_LEVEL".into(), json!("20"));
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        env.insert(k.into(), json!(v));
    }
    if let Some(entry) = &args.entry_point {
        model_data = repack(client, &model_data, entry, args.source_dir.as_ref(), &name).await?;
        let program = entry
            .file_name()
            .context("--entry-point names no file")?
            .to_string_lossy()
            .to_string();
        env.insert("SAGEMAKER_PROGRAM".into(), json!(program));
        env.insert(
            "SAGEMAKER_SUBMIT_DIRECTORY".into(),
            json!("/opt/ml/model/code"),
        );
    }
    let account = client.account().await?;
    client
        .sagemaker(
            "CreateModel",
            &json!({
                "ModelName": name,
                "ExecutionRoleArn": format!("arn:aws:iam::{account}:role/SageMakerRole"),
                "PrimaryContainer": {"Image": inference_image(&client.region, &version),
                                     "ModelDataUrl": model_data, "Environment": env},
            }),
        )
        .await?;
    client
        .sagemaker(
            "CreateEndpointConfig",
            &json!({"EndpointConfigName": name, "ProductionVariants": [{
                "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": args.instance_count,
                "InstanceType": args.instance_type, "InitialVariantWeight": 1}]}),
        )
        .await?;
    client
        .sagemaker(
            "CreateEndpoint",
            &json!({"EndpointName": name, "EndpointConfigName": name}),
        )
        .await?;
    eprintln!("Creating endpoint {name} from {model_data}");
    if args.no_wait {
        println!("{name}");
        return Ok(());
    }
    let bar = ProgressBar::new_spinner().with_message(format!("endpoint {name}: Creating"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let d = loop {
        let d = client
            .sagemaker("DescribeEndpoint", &json!({"EndpointName": name}))
            .await?;
        match d["EndpointStatus"].as_str().unwrap_or_default() {
            "Creating" | "Updating" => tokio::time::sleep(Duration::from_millis(250)).await,
            _ => break d,
        }
    };
    bar.finish_and_clear();
    if d["EndpointStatus"] != "InService" {
        bail!(
            "endpoint {name} is {}: {}",
            d["EndpointStatus"].as_str().unwrap_or_default(),
            d["FailureReason"].as_str().unwrap_or_default()
        );
    }
    eprintln!("Endpoint {name} is InService");
    println!("{name}");
    Ok(())
}

/// The SDK's repack: the model's files plus the inference code under `code/`, uploaded as
/// `s3://<default bucket>/<name>/model.tar.gz`.
async fn repack(
    client: &Client,
    model_data: &str,
    entry: &PathBuf,
    source_dir: Option<&PathBuf>,
    name: &str,
) -> Result<String> {
    let (bucket, key) = split_s3(model_data)?;
    let original = client.get_object(&bucket, &key).await?;
    let work = tempfile::tempdir()?;
    let root = work.path().join("model");
    extract_tar_gz(std::io::Cursor::new(original), &root)
        .with_context(|| format!("{model_data} is not a readable tar.gz"))?;
    let code = root.join("code");
    let _ = std::fs::remove_dir_all(&code);
    std::fs::create_dir_all(&code)?;
    match source_dir {
        Some(dir) => clary_agent::staging::copy_dir(dir, &code)
            .with_context(|| format!("copying {}", dir.display()))?,
        None => {
            let file = entry.file_name().context("--entry-point names no file")?;
            std::fs::copy(entry, code.join(file))
                .with_context(|| format!("reading {}", entry.display()))?;
        }
    }
    let packed = work.path().join("model.tar.gz");
    pack_dir(&root, std::fs::File::create(&packed)?, DEFAULT_GZIP_LEVEL)?;
    let out_bucket = format!("sagemaker-{}-{}", client.region, client.account().await?);
    let out_key = format!("{name}/model.tar.gz");
    client
        .put_file(&out_bucket, &out_key, &packed, |_| {})
        .await?;
    Ok(format!("s3://{out_bucket}/{out_key}"))
}

pub async fn invoke(client: &Client, args: InvokeArgs) -> Result<()> {
    let (body, guessed) = match (&args.json, &args.csv, &args.file) {
        (Some(j), _, _) => (j.clone().into_bytes(), "application/json"),
        (_, Some(c), _) => (c.clone().into_bytes(), "text/csv"),
        (_, _, Some(f)) => {
            let ct = match f.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("csv") => "text/csv",
                Some("npy") => "application/x-npy",
                _ => "application/octet-stream",
            };
            (
                std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
                ct,
            )
        }
        _ => bail!("give the request body with --json, --csv or --file"),
    };
    let ct = args
        .content_type
        .clone()
        .unwrap_or_else(|| guessed.to_string());
    let (status, _, out) = client
        .invoke(&args.endpoint, body, &ct, args.accept.as_deref())
        .await?;
    if !(200..300).contains(&status) {
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        let msg = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out).into_owned());
        bail!("{}: {msg}", v["__type"].as_str().unwrap_or("Error"));
    }
    use std::io::Write;
    let mut stdout = std::io::stdout();
    stdout.write_all(&out)?;
    if !out.ends_with(b"\n") && std::str::from_utf8(&out).is_ok() {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}

pub async fn endpoints(client: &Client, command: EndpointsCommand) -> Result<()> {
    match command {
        EndpointsCommand::List => {
            let out = client
                .sagemaker("ListEndpoints", &json!({"MaxResults": 100}))
                .await?;
            for e in out["Endpoints"].as_array().into_iter().flatten() {
                println!(
                    "{:<50} {}",
                    e["EndpointName"].as_str().unwrap_or_default(),
                    e["EndpointStatus"].as_str().unwrap_or_default()
                );
            }
        }
        EndpointsCommand::Describe { name } => {
            let out = client
                .sagemaker("DescribeEndpoint", &json!({"EndpointName": name}))
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        EndpointsCommand::Delete { name, keep_config } => {
            let d = client
                .sagemaker("DescribeEndpoint", &json!({"EndpointName": name}))
                .await?;
            client
                .sagemaker("DeleteEndpoint", &json!({"EndpointName": name}))
                .await?;
            println!("Deleting endpoint {name}");
            if !keep_config && let Some(cfg) = d["EndpointConfigName"].as_str() {
                client
                    .sagemaker("DeleteEndpointConfig", &json!({"EndpointConfigName": cfg}))
                    .await?;
                println!("Deleted endpoint config {cfg}");
            }
        }
    }
    Ok(())
}

pub async fn models(client: &Client, command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List => {
            let out = client
                .sagemaker("ListModels", &json!({"MaxResults": 100}))
                .await?;
            for m in out["Models"].as_array().into_iter().flatten() {
                println!("{}", m["ModelName"].as_str().unwrap_or_default());
            }
        }
        ModelsCommand::Describe { name } => {
            let out = client
                .sagemaker("DescribeModel", &json!({"ModelName": name}))
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ModelsCommand::Delete { name } => {
            client
                .sagemaker("DeleteModel", &json!({"ModelName": name}))
                .await?;
            println!("Deleted model {name}");
        }
    }
    Ok(())
}
