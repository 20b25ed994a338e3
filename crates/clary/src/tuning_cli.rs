//! `clary tuning list|describe|stop`: tuning jobs and their trials, sorted by objective.

use crate::client::Client;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum TuningCommand {
    List {
        #[arg(long, default_value_t = 50)]
        max: u32,
    },
    /// The job's status and counters, then its trials, best objective first.
    Describe {
        name: String,
    },
    Stop {
        name: String,
    },
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub async fn run(client: &Client, command: TuningCommand) -> Result<()> {
    match command {
        TuningCommand::List { max } => {
            let out = client
                .sagemaker(
                    "ListHyperParameterTuningJobs",
                    &json!({"MaxResults": max.clamp(1, 100), "SortBy": "CreationTime", "SortOrder": "Descending"}),
                )
                .await?;
            println!(
                "{:<34} {:<11} {:<10} {:>9} {:>8}",
                "NAME", "STATUS", "STRATEGY", "COMPLETED", "RUNNING"
            );
            for j in out["HyperParameterTuningJobSummaries"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let c = &j["TrainingJobStatusCounters"];
                println!(
                    "{:<34} {:<11} {:<10} {:>9} {:>8}",
                    text(&j["HyperParameterTuningJobName"]),
                    text(&j["HyperParameterTuningJobStatus"]),
                    text(&j["Strategy"]),
                    c["Completed"].as_u64().unwrap_or(0),
                    c["InProgress"].as_u64().unwrap_or(0)
                );
            }
        }
        TuningCommand::Describe { name } => {
            let d = client
                .sagemaker(
                    "DescribeHyperParameterTuningJob",
                    &json!({"HyperParameterTuningJobName": name}),
                )
                .await?;
            let objective = &d["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"];
            println!(
                "{name}: {} ({} {}, strategy {})",
                text(&d["HyperParameterTuningJobStatus"]),
                text(&objective["Type"]),
                text(&objective["MetricName"]),
                text(&d["HyperParameterTuningJobConfig"]["Strategy"])
            );
            if let Some(r) = d["FailureReason"].as_str() {
                println!("failure: {r}");
            }
            let trials = client
                .sagemaker(
                    "ListTrainingJobsForHyperParameterTuningJob",
                    &json!({"HyperParameterTuningJobName": name, "MaxResults": 100,
                            "SortBy": "FinalObjectiveMetricValue", "SortOrder": "Descending"}),
                )
                .await?;
            println!(
                "{:<48} {:<10} {:>12}  HYPERPARAMETERS",
                "TRIAL", "STATUS", "OBJECTIVE"
            );
            for t in trials["TrainingJobSummaries"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let objective = t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.6}"));
                let hps: Vec<String> = t["TunedHyperParameters"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect();
                println!(
                    "{:<48} {:<10} {:>12}  {}",
                    text(&t["TrainingJobName"]),
                    text(&t["TrainingJobStatus"]),
                    objective,
                    hps.join(" ")
                );
            }
        }
        TuningCommand::Stop { name } => {
            client
                .sagemaker(
                    "StopHyperParameterTuningJob",
                    &json!({"HyperParameterTuningJobName": name}),
                )
                .await?;
            println!("Stopping tuning job {name}");
        }
    }
    Ok(())
}
