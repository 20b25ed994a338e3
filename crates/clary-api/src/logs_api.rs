//! CloudWatch Logs (`Logs_20140328.<Op>`): requests read into the control plane's queries,
//! answers shaped from its typed records into the botocore `logs` model's responses.

use crate::ApiState;
use crate::errors::ApiError;
use crate::wire::str_field;
use clary_control::ControlError;
use clary_control::domain::logs::{Direction, LogEvent, LogGroup, LogStream};
use clary_control::logs::{FilterEvents, GetEvents};
use clary_control::store::logs::StreamOrder;
use serde_json::{Value, json};

fn group_arn(state: &ApiState, group: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{group}",
        state.control.config.region, state.control.config.account
    )
}

fn group_json(state: &ApiState, g: &LogGroup) -> Value {
    let arn = group_arn(state, &g.name);
    json!({"logGroupName": g.name, "creationTime": g.creation_time, "arn": format!("{arn}:*"),
           "logGroupArn": arn, "storedBytes": 0, "metricFilterCount": 0})
}

fn stream_json(state: &ApiState, group: &str, s: &LogStream) -> Value {
    let mut v = json!({
        "logStreamName": s.name,
        "creationTime": s.creation_time,
        "arn": format!("{}:log-stream:{}", group_arn(state, group), s.name),
        "storedBytes": s.stored_bytes,
    });
    if let Some((first, last, ingested)) = s.events {
        v["firstEventTimestamp"] = json!(first);
        v["lastEventTimestamp"] = json!(last);
        v["lastIngestionTime"] = json!(ingested);
    }
    v
}

fn event_json(e: &LogEvent) -> Value {
    json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time})
}

fn filtered_json(e: &LogEvent) -> Value {
    json!({"logStreamName": e.stream, "timestamp": e.timestamp, "message": e.message,
           "ingestionTime": e.ingestion_time, "eventId": e.id.to_string()})
}

/// `key: items`, with `nextToken` when more follow.
fn page(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = json!({ key: items });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    out
}

pub fn handle(state: &ApiState, op: &str, body: Value) -> Result<Value, ApiError> {
    let logs = &state.control.logs;
    let group = || -> Result<&str, ApiError> {
        str_field(&body, "logGroupName")
            .or_else(|| str_field(&body, "logGroupIdentifier"))
            .ok_or_else(|| ControlError::InvalidParameter("logGroupName is required".into()).into())
    };
    // CloudWatch Logs' own ranges for each operation's `limit`.
    let max_limit = match op {
        "DescribeLogGroups" | "DescribeLogStreams" => 50,
        _ => 10_000,
    };
    let limit = crate::validate::page_size(&body, "limit", "limit", max_limit)?;
    let time = |k: &str| body.get(k).and_then(Value::as_i64);
    Ok(match op {
        "DescribeLogGroups" => {
            let (groups, next) = logs.describe_log_groups(
                str_field(&body, "logGroupNamePrefix").unwrap_or(""),
                limit,
                str_field(&body, "nextToken"),
            )?;
            let items = groups.iter().map(|g| group_json(state, g)).collect();
            page("logGroups", items, next)
        }
        "DescribeLogStreams" => {
            let group = group()?;
            let order = StreamOrder {
                by_last_event: str_field(&body, "orderBy") == Some("LastEventTime"),
                descending: body
                    .get("descending")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            let (streams, next) = logs.describe_log_streams(
                group,
                str_field(&body, "logStreamNamePrefix"),
                order,
                limit,
                str_field(&body, "nextToken"),
            )?;
            let items = streams
                .iter()
                .map(|s| stream_json(state, group, s))
                .collect();
            page("logStreams", items, next)
        }
        "GetLogEvents" => {
            let p = logs.get_log_events(GetEvents {
                group: group()?,
                stream: str_field(&body, "logStreamName").ok_or_else(|| {
                    ControlError::InvalidParameter("logStreamName is required".into())
                })?,
                start_time: time("startTime"),
                end_time: time("endTime"),
                next_token: str_field(&body, "nextToken"),
                limit,
                start_from_head: body
                    .get("startFromHead")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })?;
            json!({
                "events": p.events.iter().map(event_json).collect::<Vec<_>>(),
                "nextForwardToken": p.forward.encode(Direction::Forward),
                "nextBackwardToken": p.backward.encode(Direction::Backward),
            })
        }
        "FilterLogEvents" => {
            let names: Option<Vec<String>> = body
                .get("logStreamNames")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                });
            let (events, next) = logs.filter_log_events(FilterEvents {
                group: group()?,
                stream_names: names.as_deref(),
                stream_prefix: str_field(&body, "logStreamNamePrefix"),
                start_time: time("startTime"),
                end_time: time("endTime"),
                pattern: str_field(&body, "filterPattern"),
                limit,
                next_token: str_field(&body, "nextToken"),
            })?;
            let mut out = json!({
                "events": events.iter().map(filtered_json).collect::<Vec<_>>(),
                "searchedLogStreams": [],
            });
            if let Some(c) = next {
                out["nextToken"] = json!(c.encode(Direction::Forward));
            }
            out
        }
        other => {
            return Err(ApiError::UnknownOperation {
                service: "CloudWatch Logs",
                operation: other.to_string(),
                served: "DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents",
            });
        }
    })
}
