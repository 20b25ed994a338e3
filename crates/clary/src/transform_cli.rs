//! `clary transform MODEL --input s3://… --output s3://…`: `CreateTransformJob` as the SDK's
//! `Transformer.transform` makes it, then a progress bar over the job's objects (from its
//! hosts' log lines) until it ends.

use crate::client::Client;
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const LOG_GROUP: &str = "/aws/sagemaker/TransformJobs";

#[derive(clap::Args, Debug)]
pub struct TransformArgs {
    /// The model (CreateModel, `clary deploy`'s or the SDK's) to run the records through.
    pub model: String,
    /// The input: an S3 prefix (every object under it), or with --manifest a manifest file.
    #[arg(long)]
    pub input: String,
    /// Where `<input key>.out` objects go.
    #[arg(long)]
    pub output: String,
    /// `--input` is a manifest file (`ManifestFile`).
    #[arg(long)]
    pub manifest: bool,
    /// How objects split into records: none, line or recordio.
    #[arg(long, default_value = "none", value_parser = ["none", "line", "recordio"])]
    pub split: String,
    /// The records' content type (`text/csv`, `application/json`, …).
    #[arg(long)]
    pub content_type: Option<String>,
    /// The answers' content type.
    #[arg(long)]
    pub accept: Option<String>,
    /// The input objects are gzip-compressed.
    #[arg(long)]
    pub gzip: bool,
    /// single (one record per request) or multi (as many as fit in --max-payload).
    #[arg(long, value_parser = ["single", "multi"])]
    pub strategy: Option<String>,
    /// MaxPayloadInMB (default 6).
    #[arg(long)]
    pub max_payload: Option<u32>,
    /// Requests in flight per instance [default: what the model server recommends].
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// One answer per line in the output (`AssembleWith: Line`).
    #[arg(long)]
    pub assemble_lines: bool,
    #[arg(long)]
    pub input_filter: Option<String>,
    #[arg(long)]
    pub output_filter: Option<String>,
    /// Join each answer to its input record (`JoinSource: Input`).
    #[arg(long)]
    pub join: bool,
    #[arg(long, default_value_t = 1)]
    pub instance_count: u32,
    #[arg(long, default_value = "ml.m5.large")]
    pub instance_type: String,
    /// Extra environment for the model server (K=V).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The job's name [default: the model's with a timestamp].
    #[arg(long)]
    pub name: Option<String>,
    /// Create the job and print its name without waiting.
    #[arg(long)]
    pub no_wait: bool,
}

fn request(args: &TransformArgs, name: &str) -> Result<Value> {
    let mut env = serde_json::Map::new();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?} is not K=V");
        };
        env.insert(k.into(), json!(v));
    }
    let mut input = json!({
        "DataSource": {"S3DataSource": {
            "S3DataType": if args.manifest { "ManifestFile" } else { "S3Prefix" },
            "S3Uri": args.input,
        }},
        "SplitType": match args.split.as_str() { "line" => "Line", "recordio" => "RecordIO", _ => "None" },
        "CompressionType": if args.gzip { "Gzip" } else { "None" },
    });
    if let Some(ct) = &args.content_type {
        input["ContentType"] = json!(ct);
    }
    let mut output = json!({
        "S3OutputPath": args.output,
        "AssembleWith": if args.assemble_lines { "Line" } else { "None" },
    });
    if let Some(a) = &args.accept {
        output["Accept"] = json!(a);
    }
    let mut req = json!({
        "TransformJobName": name,
        "ModelName": args.model,
        "TransformInput": input,
        "TransformOutput": output,
        "TransformResources": {"InstanceType": args.instance_type, "InstanceCount": args.instance_count},
        "Environment": env,
    });
    if let Some(s) = &args.strategy {
        req["BatchStrategy"] = json!(if s == "single" {
            "SingleRecord"
        } else {
            "MultiRecord"
        });
    }
    if let Some(mb) = args.max_payload {
        req["MaxPayloadInMB"] = json!(mb);
    }
    if let Some(n) = args.max_concurrent {
        req["MaxConcurrentTransforms"] = json!(n);
    }
    if args.input_filter.is_some() || args.output_filter.is_some() || args.join {
        req["DataProcessing"] = json!({
            "InputFilter": args.input_filter.as_deref().unwrap_or("$"),
            "OutputFilter": args.output_filter.as_deref().unwrap_or("$"),
            "JoinSource": if args.join { "Input" } else { "None" },
        });
    }
    Ok(req)
}

pub async fn run(client: &Client, args: TransformArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        let base: String = args.model.chars().take(38).collect();
        format!(
            "{}-{}",
            base.trim_end_matches('-'),
            chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S-%3f")
        )
    });
    client
        .sagemaker("CreateTransformJob", &request(&args, &name)?)
        .await?;
    eprintln!(
        "Transforming {} with model {} into {} (job {name})",
        args.input, args.model, args.output
    );
    if args.no_wait {
        println!("{name}");
        return Ok(());
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} objects")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("{name}: starting"));
    let mut progress = Progress::default();
    let d = loop {
        let d = client
            .sagemaker("DescribeTransformJob", &json!({"TransformJobName": name}))
            .await?;
        progress.read(client, &name, &bar).await?;
        let status = d["TransformJobStatus"].as_str().unwrap_or_default();
        if matches!(status, "Completed" | "Failed" | "Stopped") {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    bar.finish_and_clear();
    match d["TransformJobStatus"].as_str().unwrap_or_default() {
        "Completed" => {
            println!(
                "{name}: Completed: {} objects, {} records -> {}",
                progress.objects, progress.records, args.output
            );
            Ok(())
        }
        status => bail!(
            "transform job {name} {status}: {}",
            d["FailureReason"].as_str().unwrap_or("stopped on request")
        ),
    }
}

/// What the job's hosts have logged about their progress so far.
#[derive(Default)]
struct Progress {
    tokens: BTreeMap<String, String>,
    objects: u64,
    records: u64,
}

impl Progress {
    /// Reads new log lines: each host's share sets the bar's length, each stored object moves it.
    async fn read(&mut self, client: &Client, job: &str, bar: &ProgressBar) -> Result<()> {
        let streams = match client
            .logs(
                "DescribeLogStreams",
                &json!({"logGroupName": LOG_GROUP, "logStreamNamePrefix": format!("{job}/")}),
            )
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
        for stream in names {
            loop {
                let mut req = json!({"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": true});
                if let Some(t) = self.tokens.get(&stream) {
                    req["nextToken"] = json!(t);
                }
                let page = client.logs("GetLogEvents", &req).await?;
                if let Some(t) = page["nextForwardToken"].as_str() {
                    self.tokens.insert(stream.clone(), t.to_string());
                }
                let events = page["events"].as_array().cloned().unwrap_or_default();
                if events.is_empty() {
                    break;
                }
                for e in events {
                    self.line(e["message"].as_str().unwrap_or_default(), job, bar);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &str, job: &str, bar: &ProgressBar) {
        // "algo-1: 3 input objects in this host's share (host 1 of 2)"
        if let Some(head) = line.split(" input objects in this host's share").next()
            && line.contains("input objects in this host's share")
            && let Some(n) = head.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok())
        {
            bar.inc_length(n);
        }
        // "s3://…: 17 records -> s3://….out (1 of 3 objects done)"
        if line.contains(" objects done)")
            && let Some(n) = line
                .split(" records -> ")
                .next()
                .and_then(|h| h.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        {
            self.objects += 1;
            self.records += n;
            bar.inc(1);
            bar.set_message(format!("{job}: {} records", self.records));
        }
        if line.contains("Failed: ") {
            bar.println(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_follows_the_hosts_lines() {
        let bar = ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
        let mut p = Progress::default();
        p.line("2026-01-01 00:00:00,000 clary-agent  INFO     algo-1: 3 input objects in this host's share (host 1 of 2)", "j", &bar);
        p.line(
            "… algo-2: 2 input objects in this host's share (host 2 of 2)",
            "j",
            &bar,
        );
        p.line(
            "… INFO     s3://b/in/a.csv: 17 records -> s3://b/out/a.csv.out (1 of 3 objects done)",
            "j",
            &bar,
        );
        assert_eq!(bar.length(), Some(5));
        assert_eq!((bar.position(), p.objects, p.records), (1, 1, 17));
    }

    #[test]
    fn the_request_is_the_sdks() {
        let args = TransformArgs {
            model: "m".into(),
            input: "s3://b/in/".into(),
            output: "s3://b/out".into(),
            manifest: false,
            split: "line".into(),
            content_type: Some("text/csv".into()),
            accept: None,
            gzip: false,
            strategy: Some("multi".into()),
            max_payload: Some(2),
            max_concurrent: None,
            assemble_lines: true,
            input_filter: Some("$[1:]".into()),
            output_filter: None,
            join: true,
            instance_count: 2,
            instance_type: "ml.m5.large".into(),
            env: vec!["A=1".into()],
            name: None,
            no_wait: true,
        };
        let r = request(&args, "j").unwrap();
        assert_eq!(r["TransformInput"]["SplitType"], "Line");
        assert_eq!(r["BatchStrategy"], "MultiRecord");
        assert_eq!(r["DataProcessing"]["JoinSource"], "Input");
        assert_eq!(r["DataProcessing"]["OutputFilter"], "$");
        assert_eq!(r["Environment"]["A"], "1");
        assert_eq!(r["TransformOutput"]["AssembleWith"], "Line");
    }
}
