//! The SageMaker hosting operations: models, endpoint configurations and endpoints, validated
//! against the botocore service model's constraints before they reach the control plane.

use crate::ApiState;
use crate::validate::{resource_name, role_arn};
use clary_control::ControlError;
use clary_control::hosting::ListQuery;
use clary_exec::runtimes::Runtimes;
use serde_json::{Value, json};

fn invalid(message: String) -> ControlError {
    ControlError::Validation(message)
}

fn required_str<'a>(v: &'a Value, k: &str) -> Result<&'a str, ControlError> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(k)
        ))
    })
}

fn lower_first(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn list_query(body: &Value) -> ListQuery {
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    ListQuery {
        name_contains: s("NameContains"),
        status_equals: s("StatusEquals"),
        creation_time_after: body.get("CreationTimeAfter").and_then(Value::as_f64),
        creation_time_before: body.get("CreationTimeBefore").and_then(Value::as_f64),
        sort_by: s("SortBy"),
        sort_order: s("SortOrder"),
        max_results: body.get("MaxResults").and_then(Value::as_i64),
        next_token: s("NextToken"),
    }
}

fn validate_model(state: &ApiState, body: &Value) -> Result<(), ControlError> {
    resource_name(required_str(body, "ModelName")?, "modelName")?;
    let role = required_str(body, "ExecutionRoleArn")?;
    if !role_arn(role) {
        return Err(invalid(format!(
            "1 validation error detected: Value '{role}' at 'executionRoleArn' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$"
        )));
    }
    let containers: Vec<&Value> = match (body.get("PrimaryContainer"), body.get("Containers")) {
        (Some(p), None) => vec![p],
        (None, Some(Value::Array(c))) if !c.is_empty() => c.iter().collect(),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Specify either PrimaryContainer or Containers, not both".into(),
            ));
        }
        _ => {
            return Err(invalid(
                "Either PrimaryContainer or Containers must be given: the inference image, ModelDataUrl and Environment".into(),
            ));
        }
    };
    if containers.len() > 1 {
        return Err(invalid(
            "Clary serves one container per model (inference pipelines of several containers are not supported); give PrimaryContainer".into(),
        ));
    }
    let c = containers[0];
    if c.get("Mode").and_then(Value::as_str) == Some("MultiModel") {
        return Err(invalid(
            "Multi-model endpoints (Mode MultiModel) are not supported by Clary; create one model per model.tar.gz".into(),
        ));
    }
    let image = c.get("Image").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            "PrimaryContainer.Image is required: the MXNet inference image URI the SDK chose"
                .into(),
        )
    })?;
    Runtimes::new(state.control.config.runtimes_dir.clone())
        .serving_image(image)
        .map_err(invalid)?;
    if let Some(url) = c.get("ModelDataUrl").and_then(Value::as_str) {
        let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
            return Err(invalid(format!(
                "ModelDataUrl {url:?} is not an s3://bucket/key URI of a model.tar.gz"
            )));
        };
        if state.store.head(bucket, key).is_err() {
            return Err(invalid(format!(
                "Could not access model data at {url}. Please ensure that the object exists (upload model.tar.gz there first) and try again."
            )));
        }
    }
    if let Some(env) = c.get("Environment")
        && !env
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    {
        return Err(invalid(
            "PrimaryContainer.Environment must map names to string values".into(),
        ));
    }
    Ok(())
}

fn validate_endpoint_config(body: &Value) -> Result<(), ControlError> {
    resource_name(
        required_str(body, "EndpointConfigName")?,
        "endpointConfigName",
    )?;
    let variants = body
        .get("ProductionVariants")
        .and_then(Value::as_array)
        .filter(|a| (1..=10).contains(&a.len()))
        .ok_or_else(|| invalid("ProductionVariants must list between 1 and 10 variants".into()))?;
    let mut names = std::collections::HashSet::new();
    for (n, v) in variants.iter().enumerate() {
        let at = format!("productionVariants.{}", n + 1);
        let name = required_str(v, "VariantName")?;
        resource_name(name, &format!("{at}.member.variantName"))?;
        if !names.insert(name) {
            return Err(invalid(format!(
                "Variant name {name} appears more than once; each production variant needs its own name"
            )));
        }
        resource_name(
            required_str(v, "ModelName")?,
            &format!("{at}.member.modelName"),
        )?;
        if v.get("ServerlessConfig").is_some() {
            return Err(invalid(format!(
                "Variant {name}: ServerlessConfig is not supported by Clary; give InstanceType and InitialInstanceCount"
            )));
        }
        required_str(v, "InstanceType")?;
        let count = v
            .get("InitialInstanceCount")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if !(1..=20).contains(&count) {
            return Err(invalid(format!(
                "Variant {name}: InitialInstanceCount must be between 1 and 20 (got {})",
                v.get("InitialInstanceCount")
                    .cloned()
                    .unwrap_or(Value::Null)
            )));
        }
        if v.get("InitialVariantWeight")
            .and_then(Value::as_f64)
            .is_some_and(|w| w < 0.0)
        {
            return Err(invalid(format!(
                "Variant {name}: InitialVariantWeight must be 0 or more"
            )));
        }
    }
    Ok(())
}

/// Handles a hosting operation; `None` when `op` is not one.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ControlError>> {
    let cp = &state.control;
    let with_tags = |arn: String| -> Result<String, ControlError> {
        let t = crate::wire::tag_pairs(body);
        if !t.is_empty() {
            cp.tags.add(&arn, &t)?;
        }
        Ok(arn)
    };
    Some(match op {
        "CreateModel" => validate_model(state, body)
            .and_then(|_| cp.create_model(body.clone()))
            .and_then(with_tags)
            .map(|arn| json!({"ModelArn": arn})),
        "DescribeModel" => required_str(body, "ModelName").and_then(|n| cp.describe_model(n)),
        "ListModels" => cp.list_models(&list_query(body)),
        "DeleteModel" => required_str(body, "ModelName")
            .and_then(|n| cp.delete_model(n))
            .map(|_| json!({})),
        "CreateEndpointConfig" => validate_endpoint_config(body)
            .and_then(|_| cp.create_endpoint_config(body.clone()))
            .and_then(with_tags)
            .map(|arn| json!({"EndpointConfigArn": arn})),
        "DescribeEndpointConfig" => {
            required_str(body, "EndpointConfigName").and_then(|n| cp.describe_endpoint_config(n))
        }
        "ListEndpointConfigs" => cp.list_endpoint_configs(&list_query(body)),
        "DeleteEndpointConfig" => required_str(body, "EndpointConfigName")
            .and_then(|n| cp.delete_endpoint_config(n))
            .map(|_| json!({})),
        "CreateEndpoint" => (|| {
            let name = required_str(body, "EndpointName")?;
            resource_name(name, "endpointName")?;
            let config = required_str(body, "EndpointConfigName")?;
            let arn = cp.create_endpoint(name, config)?;
            with_tags(arn)
        })()
        .map(|arn| json!({"EndpointArn": arn})),
        "UpdateEndpoint" => (|| {
            let name = required_str(body, "EndpointName")?;
            let config = required_str(body, "EndpointConfigName")?;
            cp.update_endpoint(name, config)
        })()
        .map(|arn| json!({"EndpointArn": arn})),
        "DescribeEndpoint" => {
            required_str(body, "EndpointName").and_then(|n| cp.describe_endpoint(n))
        }
        "ListEndpoints" => {
            let q = list_query(body);
            if let Some(s) = &q.status_equals {
                const STATUSES: &[&str] = &[
                    "OutOfService",
                    "Creating",
                    "Updating",
                    "SystemUpdating",
                    "RollingBack",
                    "InService",
                    "Deleting",
                    "Failed",
                    "UpdateRollbackFailed",
                ];
                if !STATUSES.contains(&s.as_str()) {
                    return Some(Err(invalid(format!(
                        "1 validation error detected: Value '{s}' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                        STATUSES.join(", ")
                    ))));
                }
            }
            cp.list_endpoints(&q)
        }
        "DeleteEndpoint" => required_str(body, "EndpointName")
            .and_then(|n| cp.delete_endpoint(n))
            .map(|_| json!({})),
        _ => return None,
    })
}
