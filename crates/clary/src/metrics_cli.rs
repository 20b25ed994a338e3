//! `clary jobs metrics NAME [--follow]`: each of a job's metrics (its `MetricDefinitions`) with
//! its latest value, range, sample count and a small chart, read through CloudWatch's
//! `GetMetricData` as any client would.

use crate::client::Client;
use anyhow::Result;
use serde_json::{Value, json};
use std::time::Duration;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const CHART_WIDTH: usize = 40;

/// A sparkline of `values`, averaged down to at most `CHART_WIDTH` columns.
pub fn chart(values: &[f64]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let columns = values.len().min(CHART_WIDTH);
    let per = values.len() as f64 / columns as f64;
    let cols: Vec<f64> = (0..columns)
        .map(|c| {
            let from = (c as f64 * per) as usize;
            let to = (((c + 1) as f64 * per) as usize)
                .max(from + 1)
                .min(values.len());
            values[from..to].iter().sum::<f64>() / (to - from) as f64
        })
        .collect();
    let (lo, hi) = cols
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    cols.iter()
        .map(|v| {
            let level = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            BARS[((level * 7.0).round() as usize).min(7)]
        })
        .collect()
}

/// What one metric did over `[start, end)`: per-second averages (for the chart), the least
/// and greatest sample, and how many samples there were.
struct Summary {
    averages: Vec<f64>,
    min: Option<f64>,
    max: Option<f64>,
    samples: u64,
}

/// One metric's statistics, read with one `GetMetricData` call, a second per point.
async fn summary(
    client: &Client,
    job: &str,
    metric: &str,
    start: f64,
    end: f64,
) -> Result<Summary> {
    let query = |id: &str, stat: &str| {
        json!({"Id": id, "MetricStat": {
            "Metric": {"Namespace": "/aws/sagemaker/TrainingJobs", "MetricName": metric,
                       "Dimensions": [{"Name": "TrainingJobName", "Value": job}]},
            "Period": 1, "Stat": stat}})
    };
    let out = client
        .cloudwatch(
            "GetMetricData",
            &json!({
                "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending",
                "MetricDataQueries": [query("avg", "Average"), query("min", "Minimum"),
                                      query("max", "Maximum"), query("n", "SampleCount")],
            }),
        )
        .await?;
    let values = |id: &str| -> Vec<f64> {
        out["MetricDataResults"]
            .as_array()
            .and_then(|r| r.iter().find(|q| q["Id"] == id))
            .and_then(|q| q["Values"].as_array())
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Ok(Summary {
        averages: values("avg"),
        min: values("min").into_iter().reduce(f64::min),
        max: values("max").into_iter().reduce(f64::max),
        samples: values("n").iter().sum::<f64>() as u64,
    })
}

async fn print_once(client: &Client, job: &str, d: &Value) -> Result<()> {
    let names: Vec<&str> = d["AlgorithmSpecification"]["MetricDefinitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["Name"].as_str()).collect())
        .unwrap_or_default();
    if names.is_empty() {
        println!("Training job {job} has no MetricDefinitions: it reports no metrics");
        return Ok(());
    }
    let latest = |name: &str| {
        d["FinalMetricDataList"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["MetricName"] == name))
            .and_then(|m| m["Value"].as_f64())
    };
    let start = d["CreationTime"].as_f64().unwrap_or(0.0);
    let end = d["TrainingEndTime"]
        .as_f64()
        .map_or_else(|| chrono::Utc::now().timestamp() as f64 + 1.0, |t| t + 1.0);
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>7}  CHART",
        "METRIC", "LATEST", "MIN", "MAX", "SAMPLES"
    );
    for name in names {
        let s = summary(client, job, name, start, end).await?;
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
        println!(
            "{name:<28} {:>12} {:>12} {:>12} {:>7}  {}",
            fmt(latest(name)),
            fmt(s.min),
            fmt(s.max),
            s.samples,
            chart(&s.averages)
        );
    }
    Ok(())
}

pub async fn show(client: &Client, job: &str, follow: bool) -> Result<()> {
    loop {
        let d = client
            .sagemaker("DescribeTrainingJob", &json!({"TrainingJobName": job}))
            .await?;
        let status = d["TrainingJobStatus"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        print_once(client, job, &d).await?;
        if !follow || !matches!(status.as_str(), "InProgress" | "Stopping") {
            println!("Training job {job}: {status}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_rises_with_its_values_and_fits_its_width() {
        assert_eq!(chart(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), "▁▂▃▄▅▆▇█");
        assert_eq!(chart(&[1.0, 1.0]), "▅▅");
        let long: Vec<f64> = (0..1000).map(f64::from).collect();
        let c = chart(&long);
        assert_eq!(c.chars().count(), CHART_WIDTH);
        assert!(c.starts_with('▁') && c.ends_with('█'));
        assert_eq!(chart(&[]), "");
    }
}
