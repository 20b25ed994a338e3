//! `clary train`: package code and data like the SageMaker SDK, create the job, and optionally
//! follow it to the end.

use crate::client::Client;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The entry point (a .py or .sh file), inside --source-dir when that is given.
    pub entry_point: PathBuf,
    /// Directory packed as sourcedir.tar.gz (its requirements.txt is installed for the job).
    #[arg(long)]
    pub source_dir: Option<PathBuf>,
    /// A channel: NAME=LOCAL_DIR (uploaded) or NAME=s3://bucket/prefix. Repeatable.
    #[arg(long = "channel", value_name = "NAME=PATH")]
    pub channels: Vec<String>,
    /// A hyperparameter: KEY=VALUE, VALUE read as JSON when it parses (2, 0.1, true, [1,2]) and
    /// as a string otherwise. Repeatable.
    #[arg(long = "hp", value_name = "KEY=VALUE")]
    pub hyperparameters: Vec<String>,
    #[arg(long, default_value = "1.9.0")]
    pub framework_version: String,
    #[arg(long, default_value = "py38")]
    pub py_version: String,
    #[arg(long, default_value = "ml.c5.xlarge")]
    pub instance_type: String,
    #[arg(long, default_value_t = 1)]
    pub instance_count: u32,
    #[arg(long)]
    pub job_name: Option<String>,
    /// Bucket for code, data and output [default: the server's default bucket].
    #[arg(long)]
    pub bucket: Option<String>,
    /// Where model.tar.gz goes [default: s3://BUCKET/output].
    #[arg(long)]
    pub output_path: Option<String>,
    /// MaxRuntimeInSeconds.
    #[arg(long, default_value_t = 86_400)]
    pub max_run: u64,
    #[arg(long, default_value = "SageMakerRole")]
    pub role: String,
    /// Stream the job's log and wait until it ends (exit status 1 if it does not complete).
    #[arg(long)]
    pub wait: bool,
}

fn bar(len: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn hp_value(raw: &str) -> String {
    // The SDK sends json.dumps(value); a value that is not JSON is a string.
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => v.to_string(),
        Err(_) => Value::String(raw.to_string()).to_string(),
    }
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn run(client: &Client, args: TrainArgs) -> Result<()> {
    let job = args.job_name.clone().unwrap_or_else(|| {
        format!(
            "mxnet-training-{}",
            chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S-%3f")
        )
    });
    let bucket = match &args.bucket {
        Some(b) => b.clone(),
        None => format!("sagemaker-{}-{}", client.region, client.account().await?),
    };
    if !client.bucket_exists(&bucket).await? {
        bail!(
            "bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket}) or pass --bucket"
        );
    }
    // Code: the contents of --source-dir, or just the entry point (as the SDK packs it).
    let (program, code_dir) = match &args.source_dir {
        Some(dir) => {
            let rel = args
                .entry_point
                .strip_prefix(dir)
                .unwrap_or(&args.entry_point);
            let rel = if dir.join(rel).is_file() {
                rel.to_path_buf()
            } else {
                args.entry_point
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_default()
            };
            if !dir.join(&rel).is_file() {
                bail!(
                    "the entry point {} is not inside --source-dir {}",
                    args.entry_point.display(),
                    dir.display()
                );
            }
            (rel.display().to_string(), dir.clone())
        }
        None => {
            if !args.entry_point.is_file() {
                bail!(
                    "the entry point {} does not exist",
                    args.entry_point.display()
                );
            }
            let staging = std::env::temp_dir().join(format!("clary-src-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging)?;
            let name = args
                .entry_point
                .file_name()
                .context("the entry point has no file name")?;
            std::fs::copy(&args.entry_point, staging.join(name))?;
            (name.to_string_lossy().into_owned(), staging)
        }
    };
    let tarball = std::env::temp_dir().join(format!(
        "clary-sourcedir-{}-{job}.tar.gz",
        std::process::id()
    ));
    let file = std::fs::File::create(&tarball)?;
    clary_store::archive::pack_dir(&code_dir, file, 6)
        .with_context(|| format!("packing {}", code_dir.display()))?;
    let source_key = format!("{job}/source/sourcedir.tar.gz");
    upload(
        client,
        &bucket,
        &source_key,
        &[(tarball.clone(), source_key.clone())],
        "code",
    )
    .await?;
    let _ = std::fs::remove_file(&tarball);

    let mut channels = Vec::new();
    for spec in &args.channels {
        let (name, src) = spec
            .split_once('=')
            .with_context(|| format!("--channel {spec:?} is not NAME=PATH"))?;
        let uri = if src.starts_with("s3://") {
            src.to_string()
        } else {
            let dir = Path::new(src);
            let files = if dir.is_file() {
                vec![dir.to_path_buf()]
            } else {
                files_under(dir)?
            };
            if files.is_empty() {
                bail!("channel {name}: {src} has no files");
            }
            let prefix = format!("{job}/input/{name}");
            let pairs: Vec<(PathBuf, String)> = files
                .iter()
                .map(|f| {
                    let rel = if dir.is_file() {
                        f.file_name().map(PathBuf::from).unwrap_or_default()
                    } else {
                        f.strip_prefix(dir).unwrap_or(f).to_path_buf()
                    };
                    (f.clone(), format!("{prefix}/{}", rel.display()))
                })
                .collect();
            upload(client, &bucket, &prefix, &pairs, &format!("channel {name}")).await?;
            format!("s3://{bucket}/{prefix}")
        };
        channels.push(json!({
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}},
        }));
    }

    let mut hps = serde_json::Map::new();
    for kv in &args.hyperparameters {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--hp {kv:?} is not KEY=VALUE"))?;
        hps.insert(k.to_string(), Value::String(hp_value(v)));
    }
    for (k, v) in [
        ("sagemaker_program", json!(program).to_string()),
        (
            "sagemaker_submit_directory",
            json!(format!("s3://{bucket}/{source_key}")).to_string(),
        ),
        ("sagemaker_container_log_level", "20".to_string()),
        ("sagemaker_job_name", json!(job).to_string()),
        ("sagemaker_region", json!(client.region).to_string()),
    ] {
        hps.insert(k.to_string(), Value::String(v));
    }
    let role = if args.role.starts_with("arn:") {
        args.role.clone()
    } else {
        format!(
            "arn:aws:iam::{}:role/{}",
            client.account().await?,
            args.role
        )
    };
    let output_path = args
        .output_path
        .clone()
        .unwrap_or_else(|| format!("s3://{bucket}/output"));
    let mut request = json!({
        "TrainingJobName": job,
        "AlgorithmSpecification": {
            "TrainingImage": format!("763104351884.dkr.ecr.{}.amazonaws.com/mxnet-training:{}-cpu-{}", client.region, args.framework_version, args.py_version),
            "TrainingInputMode": "File",
        },
        "RoleArn": role,
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {"InstanceType": args.instance_type, "InstanceCount": args.instance_count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": args.max_run},
        "HyperParameters": hps,
    });
    if !channels.is_empty() {
        request["InputDataConfig"] = Value::Array(channels);
    }
    let arn = client.sagemaker("CreateTrainingJob", &request).await?;
    println!(
        "Created training job {job} ({})",
        arn["TrainingJobArn"].as_str().unwrap_or_default()
    );
    if !args.wait {
        return Ok(());
    }
    let desc = follow(client, &job).await?;
    let status = desc["TrainingJobStatus"].as_str().unwrap_or_default();
    match status {
        "Completed" => {
            println!(
                "Training job {job} completed. Model artifacts: {}",
                desc["ModelArtifacts"]["S3ModelArtifacts"]
                    .as_str()
                    .unwrap_or_default()
            );
            Ok(())
        }
        _ => bail!(
            "training job {job} ended with status {status}: {}",
            desc.get("FailureReason")
                .and_then(Value::as_str)
                .unwrap_or("(no failure reason)")
        ),
    }
}

async fn upload(
    client: &Client,
    bucket: &str,
    label_prefix: &str,
    files: &[(PathBuf, String)],
    what: &str,
) -> Result<()> {
    let total: u64 = files
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let pb = Arc::new(bar(total, format!("Uploading {what}")));
    for (path, key) in files {
        let pb2 = pb.clone();
        client
            .put_file(bucket, key, path, move |n| pb2.inc(n))
            .await?;
    }
    pb.finish_with_message(format!("Uploaded {what} to s3://{bucket}/{label_prefix}"));
    Ok(())
}

/// Prints status changes and log lines until the job ends; returns the final description.
pub async fn follow(client: &Client, job: &str) -> Result<Value> {
    let mut tokens: std::collections::BTreeMap<String, String> = Default::default();
    let mut last_status = String::new();
    loop {
        let desc = client
            .sagemaker("DescribeTrainingJob", &json!({"TrainingJobName": job}))
            .await?;
        let secondary = format!(
            "{} - {}",
            desc["SecondaryStatus"].as_str().unwrap_or_default(),
            desc["SecondaryStatusTransitions"]
                .as_array()
                .and_then(|t| t.last())
                .and_then(|t| t["StatusMessage"].as_str())
                .unwrap_or_default()
        );
        if secondary != last_status {
            println!(
                "{} {secondary}",
                chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
            );
            last_status = secondary;
        }
        let done = matches!(
            desc["TrainingJobStatus"].as_str(),
            Some("Completed" | "Failed" | "Stopped")
        );
        print_new_logs(client, job, &mut tokens).await?;
        if done {
            return Ok(desc);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints every event not printed yet from each of the job's streams.
pub async fn print_new_logs(
    client: &Client,
    job: &str,
    tokens: &mut std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let streams = match client
        .logs("DescribeLogStreams", &json!({"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": format!("{job}/")}))
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("ResourceNotFoundException") => return Ok(()),
        Err(e) => return Err(e),
    };
    let names: Vec<String> = streams["logStreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["logStreamName"].as_str().map(str::to_string))
        .collect();
    let many = names.len() > 1;
    for name in names {
        loop {
            let mut req = json!({"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": name, "startFromHead": true});
            if let Some(t) = tokens.get(&name) {
                req["nextToken"] = json!(t);
            }
            let page = client.logs("GetLogEvents", &req).await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if let Some(t) = page["nextForwardToken"].as_str() {
                tokens.insert(name.clone(), t.to_string());
            }
            if events.is_empty() {
                break;
            }
            let host = name
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .rsplit_once('-')
                .map(|(h, _)| h)
                .unwrap_or_default();
            for e in events {
                let msg = e["message"].as_str().unwrap_or_default();
                if many {
                    println!("[{host}] {msg}")
                } else {
                    println!("{msg}")
                }
            }
        }
    }
    Ok(())
}
