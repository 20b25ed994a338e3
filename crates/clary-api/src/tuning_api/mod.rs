//! The hyperparameter tuning operations: `CreateHyperParameterTuningJob` (in [`create`]),
//! `DescribeHyperParameterTuningJob`, `ListHyperParameterTuningJobs`,
//! `ListTrainingJobsForHyperParameterTuningJob` and `StopHyperParameterTuningJob`.

mod create;

pub use create::trial_echo;

use crate::ApiState;
use crate::validate;
use crate::wire::{required, str_field, time_field};
use clary_control::ControlError;
use clary_control::domain::job::JobStatus;
use clary_control::domain::tuning::ObjectiveType;
use clary_control::domain::tuning_job::{OBJECTIVE_HYPERPARAMETER, Trial, TuningJob, TuningStatus};
use create::{invalid, request_from_definition};
use serde_json::{Value, json};

fn counters(trials: &[Trial]) -> (Value, Value) {
    let mut t = [0u32; 5]; // Completed, InProgress, RetryableError, NonRetryableError, Stopped
    let mut o = [0u32; 3]; // Succeeded, Pending, Failed
    for trial in trials {
        match trial.status {
            Some(JobStatus::Completed) => t[0] += 1,
            None | Some(JobStatus::InProgress | JobStatus::Stopping) => t[1] += 1,
            Some(JobStatus::Failed) => t[3] += 1,
            Some(JobStatus::Stopped) => t[4] += 1,
        }
        if trial.objective().is_some() {
            o[0] += 1;
        } else if trial.running() {
            o[1] += 1;
        } else {
            o[2] += 1;
        }
    }
    (
        json!({"Completed": t[0], "InProgress": t[1], "RetryableError": t[2], "NonRetryableError": t[3], "Stopped": t[4]}),
        json!({"Succeeded": o[0], "Pending": o[1], "Failed": o[2]}),
    )
}

fn objective_status(t: &Trial) -> &'static str {
    if t.objective().is_some() {
        "Succeeded"
    } else if t.running() {
        "Pending"
    } else {
        "Failed"
    }
}

fn trial_summary(state: &ApiState, job: &TuningJob, t: &Trial) -> Value {
    let training = state.control.training.get(&t.name).ok();
    let mut v = json!({
        "TrainingJobName": t.name,
        "TrainingJobArn": state.control.training.arn(&t.name),
        "TuningJobName": job.name,
        "TrainingJobStatus": t.status.unwrap_or(JobStatus::InProgress).as_str(),
        "TunedHyperParameters": t.values,
        "ObjectiveStatus": objective_status(t),
        "CreationTime": training.as_ref().map_or(job.creation_time, |j| j.state.creation_time),
    });
    if let Some(j) = &training {
        if let Some(s) = j.state.start_time {
            v["TrainingStartTime"] = json!(s);
        }
        if let Some(e) = j.state.end_time {
            v["TrainingEndTime"] = json!(e);
        }
        if let Some(r) = &j.state.failure_reason {
            v["FailureReason"] = json!(r);
        }
    }
    if let Some(d) = &t.definition {
        v["TrainingJobDefinitionName"] = json!(d);
    }
    if let Some(value) = t.objective() {
        v["FinalHyperParameterTuningJobObjectiveMetric"] = json!({
            "Type": match job.spec.objective_type { ObjectiveType::Maximize => "Maximize", ObjectiveType::Minimize => "Minimize" },
            "MetricName": job.spec.trial_parts(t.definition.as_deref()).0, "Value": value,
        });
    }
    v
}

fn describe(state: &ApiState, name: &str) -> Result<Value, ControlError> {
    let job = state.control.tuning.get(name)?;
    let trials = state.control.tuning.trials(&job)?;
    let req: Value = serde_json::from_str(&job.echo).unwrap_or(json!({}));
    let (training_counters, objective_counters) = counters(&trials);
    let mut out = json!({
        "HyperParameterTuningJobName": job.name,
        "HyperParameterTuningJobArn": job.arn,
        "HyperParameterTuningJobConfig": req["HyperParameterTuningJobConfig"],
        "HyperParameterTuningJobStatus": job.status.as_str(),
        "CreationTime": job.creation_time,
        "LastModifiedTime": job.last_modified_time,
        "TrainingJobStatusCounters": training_counters,
        "ObjectiveStatusCounters": objective_counters,
    });
    // Each definition as sent, with the objective's name among its static hyperparameters as
    // SageMaker adds it (the SDK's attach removes it, and fails when it is missing), and its
    // instances as ResourceConfig too when they came as HyperParameterTuningResourceConfig (the
    // SDK's attach reads ResourceConfig).
    let shown = |d: &Value, metric: &str| {
        let mut d = d.clone();
        if let Some(statics) = d
            .get_mut("StaticHyperParameters")
            .and_then(Value::as_object_mut)
        {
            statics.insert(OBJECTIVE_HYPERPARAMETER.into(), json!(metric));
        }
        if d.get("ResourceConfig").is_none()
            && let Some(rc) =
                request_from_definition(&d, &job.name, json!({})).get("ResourceConfig")
        {
            d["ResourceConfig"] = rc.clone();
        }
        d
    };
    if let Some(d) = req.get("TrainingJobDefinition") {
        out["TrainingJobDefinition"] = shown(d, &job.spec.objective_metric);
    }
    if let Some(list) = req.get("TrainingJobDefinitions").and_then(Value::as_array) {
        out["TrainingJobDefinitions"] = list
            .iter()
            .map(|d| {
                let name = str_field(d, "DefinitionName");
                shown(d, job.spec.trial_parts(name).0)
            })
            .collect();
    }
    if let Some(t) = job.end_time {
        out["HyperParameterTuningEndTime"] = json!(t);
    }
    if let Some(r) = &job.failure_reason {
        out["FailureReason"] = json!(r);
    }
    if let Some(best) = job.best(&trials) {
        out["BestTrainingJob"] = trial_summary(state, &job, best);
    }
    if job.spec.max_not_improving.is_some() {
        out["TuningJobCompletionDetails"] =
            json!({"NumberOfTrainingJobsObjectiveNotImproving": job.not_improving(&trials)});
    }
    if let Some(autotune) = req.get("Autotune") {
        out["Autotune"] = autotune.clone();
        // What Autotune chose.
        out["HyperParameterTuningJobConfig"]["ParameterRanges"] =
            create::ranges_json(&job.spec.ranges);
    }
    if let Some(warm) = req.get("WarmStartConfig") {
        out["WarmStartConfig"] = warm.clone();
        if let Some((owner, best)) = state.control.tuning.overall_best(&job)? {
            out["OverallBestTrainingJob"] = trial_summary(state, &owner, &best);
        }
    }
    Ok(out)
}

/// The page `MaxResults`/`NextToken` ask for, and the next token.
fn page<T>(items: Vec<T>, body: &Value) -> Result<(Vec<T>, Option<String>), ControlError> {
    let max = validate::page_size(body, "MaxResults", "maxResults", 100)?.unwrap_or(10) as usize;
    let offset: usize = match str_field(body, "NextToken") {
        Some(t) => t.parse().map_err(|_| {
            invalid(format!(
                "Invalid pagination token {t:?}; pass the NextToken of the previous response"
            ))
        })?,
        None => 0,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(max).collect();
    Ok((
        items,
        (total > offset + max).then(|| (offset + max).to_string()),
    ))
}

fn list(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let status = match str_field(body, "StatusEquals") {
        None => None,
        Some(s) => Some(TuningStatus::parse(s).ok_or_else(|| invalid(format!(
            "1 validation error detected: Value '{s}' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: [Completed, InProgress, Failed, Stopped, Stopping, Deleting, DeleteFailed]"
        )))?),
    };
    let contains = str_field(body, "NameContains").map(str::to_lowercase);
    let mut jobs: Vec<TuningJob> = state
        .control
        .tuning
        .all()?
        .into_iter()
        .filter(|j| {
            status.is_none_or(|s| j.status == s)
                && contains
                    .as_deref()
                    .is_none_or(|c| j.name.to_lowercase().contains(c))
                && time_field(body, "CreationTimeAfter").is_none_or(|t| j.creation_time > t)
                && time_field(body, "CreationTimeBefore").is_none_or(|t| j.creation_time < t)
        })
        .collect();
    let ascending = str_field(body, "SortOrder") == Some("Ascending");
    jobs.sort_by(|a, b| {
        let by = match str_field(body, "SortBy") {
            Some("Name") => a.name.cmp(&b.name),
            Some("Status") => a.status.as_str().cmp(b.status.as_str()),
            _ => a.creation_time.total_cmp(&b.creation_time),
        };
        if ascending { by } else { by.reverse() }
    });
    let (jobs, next) = page(jobs, body)?;
    let mut summaries = Vec::new();
    for j in &jobs {
        let trials = state.control.tuning.trials(j)?;
        let (t, o) = counters(&trials);
        let req: Value = serde_json::from_str(&j.echo).unwrap_or(json!({}));
        let mut s = json!({
            "HyperParameterTuningJobName": j.name, "HyperParameterTuningJobArn": j.arn,
            "HyperParameterTuningJobStatus": j.status.as_str(),
            "Strategy": req["HyperParameterTuningJobConfig"]["Strategy"],
            "CreationTime": j.creation_time, "LastModifiedTime": j.last_modified_time,
            "TrainingJobStatusCounters": t, "ObjectiveStatusCounters": o,
            "ResourceLimits": req["HyperParameterTuningJobConfig"]["ResourceLimits"],
        });
        if let Some(e) = j.end_time {
            s["HyperParameterTuningEndTime"] = json!(e);
        }
        summaries.push(s);
    }
    let mut out = json!({"HyperParameterTuningJobSummaries": summaries});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

fn list_trials(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let job = state
        .control
        .tuning
        .get(required(body, "HyperParameterTuningJobName")?)?;
    let status = str_field(body, "StatusEquals");
    let mut trials: Vec<Trial> = state
        .control
        .tuning
        .trials(&job)?
        .into_iter()
        .filter(|t| status.is_none_or(|s| t.status.unwrap_or(JobStatus::InProgress).as_str() == s))
        .collect();
    let ascending = str_field(body, "SortOrder") == Some("Ascending");
    let kind = job.spec.objective_type;
    trials.sort_by(|a, b| {
        let by = match str_field(body, "SortBy") {
            Some("Name") => a.name.cmp(&b.name),
            Some("Status") => a
                .status
                .map(JobStatus::as_str)
                .cmp(&b.status.map(JobStatus::as_str)),
            Some("FinalObjectiveMetricValue") => {
                // Best first when descending; trials without an objective last either way.
                match (a.objective(), b.objective()) {
                    (Some(x), Some(y)) => {
                        let ord = x.total_cmp(&y);
                        if kind == ObjectiveType::Minimize {
                            ord.reverse()
                        } else {
                            ord
                        }
                    }
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (None, None) => std::cmp::Ordering::Equal,
                }
            }
            _ => a.index.cmp(&b.index),
        };
        if ascending { by } else { by.reverse() }
    });
    let (trials, next) = page(trials, body)?;
    let mut out = json!({
        "TrainingJobSummaries": trials.iter().map(|t| trial_summary(state, &job, t)).collect::<Vec<_>>()
    });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// The tuning operations; `None` for any other.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ControlError>> {
    Some(match op {
        "CreateHyperParameterTuningJob" => create::create(state, body),
        "DescribeHyperParameterTuningJob" => {
            required(body, "HyperParameterTuningJobName").and_then(|n| describe(state, n))
        }
        "ListHyperParameterTuningJobs" => list(state, body),
        "ListTrainingJobsForHyperParameterTuningJob" => list_trials(state, body),
        "StopHyperParameterTuningJob" => required(body, "HyperParameterTuningJobName")
            .and_then(|n| state.control.tuning.stop(n))
            .map(|()| json!({})),
        _ => return None,
    })
}
