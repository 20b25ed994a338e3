//! The JSON 1.1 services on the one port: SageMaker (`X-Amz-Target: SageMaker.<Op>`),
//! CloudWatch Logs (`Logs_20140328.<Op>`) and the host agents' reports (`ClaryAgent.<Op>`).

use crate::ApiState;
use crate::validate;
use clary_control::ControlError;
use clary_control::ListJobs;
use clary_control::logs::GetEvents;
use clary_exec::protocol::{LogBatch, ResultReport, StatusReport};
use serde_json::{Value, json};

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn required<'a>(v: &'a Value, k: &str) -> Result<&'a str, ControlError> {
    str_field(v, k).ok_or_else(|| ControlError::Validation(format!("1 validation error detected: Value null at '{k}' failed to satisfy constraint: Member must not be null")))
}

/// Timestamps arrive as epoch seconds (numbers) from botocore.
fn time_field(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

pub(crate) fn tag_pairs(v: &Value) -> Vec<(String, String)> {
    v.get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("Key")?.as_str()?.to_string(),
                        t.get("Value")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn sagemaker(state: &ApiState, op: &str, body: Value) -> Result<Value, ControlError> {
    let cp = &state.control;
    match op {
        "CreateTrainingJob" => {
            let store = state.store.clone();
            validate::create_training_job(&body, &|b| store.head_bucket(b).is_ok())?;
            let arn = cp.create_training_job(body)?;
            Ok(json!({"TrainingJobArn": arn}))
        }
        "DescribeTrainingJob" => {
            let name = required(&body, "TrainingJobName")?;
            validate::resource_name(name, "trainingJobName")?;
            cp.describe_training_job(name)
        }
        "ListTrainingJobs" => {
            let q = ListJobs {
                name_contains: str_field(&body, "NameContains").map(str::to_string),
                status_equals: str_field(&body, "StatusEquals").map(str::to_string),
                creation_time_after: time_field(&body, "CreationTimeAfter"),
                creation_time_before: time_field(&body, "CreationTimeBefore"),
                last_modified_time_after: time_field(&body, "LastModifiedTimeAfter"),
                last_modified_time_before: time_field(&body, "LastModifiedTimeBefore"),
                sort_by: str_field(&body, "SortBy").map(str::to_string),
                sort_order: str_field(&body, "SortOrder").map(str::to_string),
                max_results: body.get("MaxResults").and_then(Value::as_i64),
                next_token: str_field(&body, "NextToken").map(str::to_string),
            };
            if let Some(s) = &q.status_equals
                && ![
                    "InProgress",
                    "Completed",
                    "Failed",
                    "Stopping",
                    "Stopped",
                    "Deleting",
                ]
                .contains(&s.as_str())
            {
                return Err(ControlError::Validation(format!(
                    "1 validation error detected: Value '{s}' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: [InProgress, Completed, Failed, Stopping, Stopped, Deleting]"
                )));
            }
            cp.list_training_jobs(&q)
        }
        "StopTrainingJob" => {
            let name = required(&body, "TrainingJobName")?;
            validate::resource_name(name, "trainingJobName")?;
            cp.stop_training_job(name)?;
            Ok(json!({}))
        }
        "ListTags" => cp.list_tags(required(&body, "ResourceArn")?),
        "AddTags" => cp.add_tags(required(&body, "ResourceArn")?, &tag_pairs(&body)),
        "DeleteTags" => {
            let keys: Vec<String> = body
                .get("TagKeys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            cp.delete_tags(required(&body, "ResourceArn")?, &keys)?;
            Ok(json!({}))
        }
        other => crate::hosting_api::handle(state, other, &body).unwrap_or_else(|| {
            Err(ControlError::Validation(format!(
                "SageMaker operation {other} is not implemented by Clary; it serves the training job, tag, model, endpoint configuration and endpoint operations"
            )))
        }),
    }
}

pub fn logs(state: &ApiState, op: &str, body: Value) -> Result<Value, ControlError> {
    let logs = &state.control.logs;
    let group = || -> Result<&str, ControlError> {
        str_field(&body, "logGroupName")
            .or_else(|| str_field(&body, "logGroupIdentifier"))
            .ok_or_else(|| ControlError::InvalidParameter("logGroupName is required".into()))
    };
    let limit = body.get("limit").and_then(Value::as_i64);
    match op {
        "DescribeLogGroups" => logs.describe_log_groups(
            str_field(&body, "logGroupNamePrefix").unwrap_or(""),
            limit,
            str_field(&body, "nextToken"),
        ),
        "DescribeLogStreams" => logs.describe_log_streams(
            group()?,
            str_field(&body, "logStreamNamePrefix"),
            str_field(&body, "orderBy") == Some("LastEventTime"),
            body.get("descending")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            limit,
            str_field(&body, "nextToken"),
        ),
        "GetLogEvents" => logs.get_log_events(GetEvents {
            group: group()?,
            stream: str_field(&body, "logStreamName").ok_or_else(|| {
                ControlError::InvalidParameter("logStreamName is required".into())
            })?,
            start_time: body.get("startTime").and_then(Value::as_i64),
            end_time: body.get("endTime").and_then(Value::as_i64),
            next_token: str_field(&body, "nextToken"),
            limit,
            start_from_head: body
                .get("startFromHead")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        "FilterLogEvents" => {
            let names: Option<Vec<String>> = body
                .get("logStreamNames")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                });
            logs.filter_log_events(
                group()?,
                names.as_deref(),
                str_field(&body, "logStreamNamePrefix"),
                body.get("startTime").and_then(Value::as_i64),
                body.get("endTime").and_then(Value::as_i64),
                str_field(&body, "filterPattern"),
                limit,
                str_field(&body, "nextToken"),
            )
        }
        other => Err(ControlError::InvalidParameter(format!(
            "CloudWatch Logs operation {other} is not implemented by Clary; it serves DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents"
        ))),
    }
}

pub fn agent(state: &ApiState, op: &str, body: Value) -> Result<Value, ControlError> {
    let bad =
        |e: serde_json::Error| ControlError::Validation(format!("malformed agent report: {e}"));
    if op == "GetModelServerSpec" {
        let endpoint = body["EndpointName"].as_str().unwrap_or_default();
        let instance = body["InstanceId"].as_str().unwrap_or_default();
        return state.control.model_server_spec(endpoint, instance);
    }
    if op == "ReportInstance" {
        let port = body["Port"]
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                ControlError::Validation("ReportInstance needs a Port between 1 and 65535".into())
            })?;
        state.control.report_instance(
            body["InstanceId"].as_str().unwrap_or_default(),
            body["Address"].as_str().unwrap_or("127.0.0.1"),
            port as u16,
        );
        return Ok(json!({}));
    }
    if op == "GetHostSpec" {
        let job = body["JobName"].as_str().unwrap_or_default();
        let host = body["Host"].as_str().unwrap_or_default();
        return state.control.host_spec(job, host);
    }
    match op {
        "ReportStatus" => state
            .control
            .report_status(&serde_json::from_value::<StatusReport>(body).map_err(bad)?),
        "PutLogLines" => state
            .control
            .report_logs(&serde_json::from_value::<LogBatch>(body).map_err(bad)?),
        "ReportResult" => state
            .control
            .report_result(&serde_json::from_value::<ResultReport>(body).map_err(bad)?),
        other => Err(ControlError::Validation(format!(
            "unknown agent operation {other}"
        ))),
    }?;
    Ok(json!({}))
}
