//! The host agents' and model servers' JSON 1.1 API (`ClaryAgent.<Op>`): the agent wire
//! contract of `clary_exec::protocol`, served.

use crate::ApiState;
use crate::errors::ApiError;
use clary_control::ControlError;
use clary_control::domain::job::{HostResult, Kind, Outcome};
use clary_exec::protocol::{self, LogBatch, ResultReport, StatusReport, SystemMetricsReport};
use serde_json::{Value, json};

fn host_result(r: &ResultReport) -> HostResult {
    HostResult {
        outcome: match r.outcome {
            protocol::Outcome::Completed => Outcome::Completed,
            protocol::Outcome::Failed => Outcome::Failed,
            protocol::Outcome::Stopped => Outcome::Stopped,
            protocol::Outcome::MaxRuntimeExceeded => Outcome::MaxRuntimeExceeded,
        },
        failure_reason: r.failure_reason.clone(),
        exit_code: r.exit_code,
        artifacts: r.model_artifacts.clone(),
        transient: r.transient,
    }
}

/// The control plane's name for a job kind the agents' wire names.
pub fn job_kind(kind: protocol::JobKind) -> Kind {
    match kind {
        protocol::JobKind::TrainingJob => Kind::TrainingJob,
        protocol::JobKind::ProcessingJob => Kind::ProcessingJob,
    }
}

/// The kind an agents' call names in its `Kind` field (a training job's when absent).
pub fn call_kind(body: &Value) -> Result<Kind, ControlError> {
    match body.get("Kind").and_then(Value::as_str) {
        None => Ok(Kind::TrainingJob),
        Some(s) => protocol::JobKind::parse(s)
            .map(job_kind)
            .ok_or_else(|| ControlError::Validation(format!("{s:?} is not a job kind"))),
    }
}

pub fn agent(state: &ApiState, op: &str, body: Value) -> Result<Value, ApiError> {
    let bad =
        |e: serde_json::Error| ControlError::Validation(format!("malformed agent report: {e}"));
    if op == "GetModelServerSpec" {
        let endpoint = body["EndpointName"].as_str().unwrap_or_default();
        let instance = body["InstanceId"].as_str().unwrap_or_default();
        let spec = state
            .control
            .hosting
            .model_server_spec(endpoint, instance)?;
        return Ok(serde_json::to_value(spec).map_err(|e| ControlError::Internal(e.to_string()))?);
    }
    if op == "ReportInstance" {
        let port = body["Port"]
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                ControlError::Validation("ReportInstance needs a Port between 1 and 65535".into())
            })?;
        state.control.hosting.report_instance(
            body["InstanceId"].as_str().unwrap_or_default(),
            body["Address"].as_str().unwrap_or("127.0.0.1"),
            port as u16,
        );
        return Ok(json!({}));
    }
    if op == "GetHostSpec" {
        let job = body["JobName"].as_str().unwrap_or_default();
        let host = body["Host"].as_str().unwrap_or_default();
        let kind = call_kind(&body)?;
        return Ok(state.control.reports(kind).host_spec(job, host)?);
    }
    let training = &state.control.training;
    if op == "ReportSystemMetrics" {
        let r: SystemMetricsReport = serde_json::from_value(body).map_err(bad)?;
        let samples = r
            .samples
            .into_iter()
            .map(|s| (s.metric, s.timestamp, s.value))
            .collect();
        let now = training.report_system_metrics(&r.job_name, &r.host, samples)?;
        let wire = protocol::MonitorSettings {
            interval_ms: now.interval_ms,
            bucket: now.output.as_ref().map(|o| o.bucket.clone()),
            prefix: now.output.map(|o| o.prefix),
        };
        return Ok(serde_json::to_value(wire).map_err(|e| ControlError::Internal(e.to_string()))?);
    }
    let control = &state.control;
    match op {
        "ReportStatus" => {
            let r: StatusReport = serde_json::from_value(body).map_err(bad)?;
            control
                .reports(job_kind(r.kind))
                .report_status(&r.job_name, &r.status, &r.message)
        }
        "PutLogLines" => {
            let b: LogBatch = serde_json::from_value(body).map_err(bad)?;
            let events: Vec<(i64, String)> = b
                .events
                .into_iter()
                .map(|e| (e.timestamp, e.message))
                .collect();
            control
                .reports(job_kind(b.kind))
                .report_logs(&b.job_name, &b.log_stream, &events)
        }
        "ReportResult" => {
            let r: ResultReport = serde_json::from_value(body).map_err(bad)?;
            control.reports(job_kind(r.kind)).report_result(
                &r.job_name,
                &r.host,
                r.attempt,
                host_result(&r),
            )
        }
        other => {
            return Err(ApiError::UnknownOperation {
                service: "ClaryAgent",
                operation: other.to_string(),
                served: "the agents' reports",
            });
        }
    }?;
    Ok(json!({}))
}
