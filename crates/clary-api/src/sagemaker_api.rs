//! The SageMaker service (`X-Amz-Target: SageMaker.<Op>`): each family of operations has its
//! module; this one routes to them and answers the operations Clary does not serve.

use crate::ApiState;
use crate::errors::ApiError;
use crate::wire::{required, tag_pairs, tags_json};
use clary_control::ControlError;
use serde_json::{Value, json};

const SERVED: &str = "the training job, processing job, tuning job, tag, model, endpoint configuration and endpoint operations";

/// Every SageMaker operation Clary answers (the ones `scripts/vendor-botocore.py` vendors the
/// model of).
pub const SERVED_OPERATIONS: &[&str] = &[
    "CreateTrainingJob",
    "DescribeTrainingJob",
    "ListTrainingJobs",
    "StopTrainingJob",
    "UpdateTrainingJob",
    "CreateModel",
    "DescribeModel",
    "ListModels",
    "DeleteModel",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "ListEndpointConfigs",
    "DeleteEndpointConfig",
    "CreateEndpoint",
    "UpdateEndpoint",
    "DescribeEndpoint",
    "ListEndpoints",
    "DeleteEndpoint",
    "AddTags",
    "ListTags",
    "DeleteTags",
    "ListMonitoringSchedules",
    "CreateHyperParameterTuningJob",
    "DescribeHyperParameterTuningJob",
    "ListHyperParameterTuningJobs",
    "ListTrainingJobsForHyperParameterTuningJob",
    "StopHyperParameterTuningJob",
    "CreateProcessingJob",
    "DescribeProcessingJob",
    "ListProcessingJobs",
    "StopProcessingJob",
];

fn tags(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ControlError>> {
    let tags = &state.control.tags;
    let arn = || required(body, "ResourceArn");
    Some(match op {
        "ListTags" => arn()
            .and_then(|a| tags.list(a))
            .map(|t| json!({"Tags": tags_json(&t)})),
        "AddTags" => arn()
            .and_then(|a| tags.add(a, &tag_pairs(body)))
            .map(|t| json!({"Tags": tags_json(&t)})),
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
            arn()
                .and_then(|a| tags.delete(a, &keys))
                .map(|()| json!({}))
        }
        _ => return None,
    })
}

/// Read-only calls the SDK makes on its normal paths about features Clary does not have:
/// answered with what AWS answers for an account that has none of them.
fn empty_listing(op: &str) -> Option<Value> {
    match op {
        // The SDK's endpoint cleanup lists an endpoint's monitoring schedules first.
        "ListMonitoringSchedules" => Some(json!({"MonitoringScheduleSummaries": []})),
        _ => None,
    }
}

pub fn handle(state: &ApiState, op: &str, body: Value) -> Result<Value, ApiError> {
    if let Some(result) = crate::training_api::handle(state, op, &body) {
        return result;
    }
    if let Some(result) = crate::processing_api::handle(state, op, &body) {
        return result;
    }
    if let Some(result) = crate::tuning_api::handle(state, op, &body) {
        return result.map_err(ApiError::from);
    }
    if let Some(result) = tags(state, op, &body) {
        return result.map_err(ApiError::from);
    }
    if let Some(result) = crate::hosting_api::handle(state, op, &body) {
        return result.map_err(ApiError::from);
    }
    if let Some(answer) = empty_listing(op) {
        return Ok(answer);
    }
    Err(ApiError::UnknownOperation {
        service: "SageMaker",
        operation: op.to_string(),
        served: SERVED,
    })
}
