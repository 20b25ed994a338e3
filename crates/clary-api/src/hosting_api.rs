//! The SageMaker hosting operations: models, endpoint configurations and endpoints. Requests
//! are validated against the botocore service model's constraints and decoded into the
//! domain's types; answers are shaped from the domain's values into botocore's responses.

use crate::ApiState;
use crate::validate::{resource_name, role_arn};
use crate::wire::{str_field, time_field};
use clary_control::ControlError;
use clary_control::domain::endpoint::{Endpoint, EndpointStatus};
use clary_control::domain::hosting::{
    Container, EndpointConfig, ListHostingResources, Model, ProductionVariant, ResourceSummary,
};
use clary_control::domain::training::Page;
use serde_json::{Map, Value, json};

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

/// The filters, order and page of a hosting `List*` request.
fn list_query(body: &Value) -> Result<ListHostingResources, ControlError> {
    let max_results =
        crate::validate::page_size(body, "MaxResults", "maxResults", 100)?.unwrap_or(10) as u32;
    let offset = match str_field(body, "NextToken") {
        Some(t) => t.parse().map_err(|_| {
            invalid(format!(
                "Invalid pagination token {t:?}; pass the NextToken of the previous response"
            ))
        })?,
        None => 0,
    };
    Ok(ListHostingResources {
        name_contains: str_field(body, "NameContains").map(str::to_string),
        creation_time_after: time_field(body, "CreationTimeAfter"),
        creation_time_before: time_field(body, "CreationTimeBefore"),
        sort_by_name: str_field(body, "SortBy") == Some("Name"),
        ascending: str_field(body, "SortOrder") == Some("Ascending"),
        max_results,
        offset,
    })
}

/// The one container of a `CreateModel` request (validated), in the domain's terms.
pub fn container_from_request(request: &str) -> Result<Container, String> {
    let body: Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
    let c = body
        .get("PrimaryContainer")
        .or_else(|| body.get("Containers").and_then(|c| c.get(0)))
        .ok_or("the model has no container")?;
    let environment = c
        .get("Environment")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Container {
        image: str_field(c, "Image")
            .ok_or("the container has no Image")?
            .to_string(),
        model_data_url: str_field(c, "ModelDataUrl").map(str::to_string),
        environment,
    })
}

/// The production variants of a `CreateEndpointConfig` request (validated).
pub fn variants_from_request(request: &str) -> Result<Vec<ProductionVariant>, String> {
    let body: Value = serde_json::from_str(request).map_err(|e| e.to_string())?;
    body.get("ProductionVariants")
        .and_then(Value::as_array)
        .ok_or("the configuration has no ProductionVariants")?
        .iter()
        .map(|v| {
            Ok(ProductionVariant {
                name: str_field(v, "VariantName")
                    .ok_or("a variant has no VariantName")?
                    .into(),
                model_name: str_field(v, "ModelName")
                    .ok_or("a variant has no ModelName")?
                    .into(),
                instance_type: str_field(v, "InstanceType").unwrap_or_default().into(),
                instance_count: v
                    .get("InitialInstanceCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1) as u32,
                weight: v
                    .get("InitialVariantWeight")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0),
                accelerator_type: str_field(v, "AcceleratorType").map(str::to_string),
            })
        })
        .collect()
}

fn echo(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn describe_model(m: &Model) -> Value {
    let req = echo(&m.echo);
    let mut out = json!({
        "ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.creation_time,
        "ExecutionRoleArn": req.get("ExecutionRoleArn"),
        "EnableNetworkIsolation": req.get("EnableNetworkIsolation").cloned().unwrap_or(json!(false)),
    });
    for k in [
        "PrimaryContainer",
        "Containers",
        "InferenceExecutionConfig",
        "VpcConfig",
    ] {
        if let Some(v) = req.get(k) {
            out[k] = v.clone();
        }
    }
    out
}

fn describe_endpoint_config(c: &EndpointConfig) -> Value {
    let req = echo(&c.echo);
    let variants: Vec<Value> = req
        .get("ProductionVariants")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut v| {
            let w = v
                .get("InitialVariantWeight")
                .and_then(Value::as_f64)
                .unwrap_or(1.0);
            v["InitialVariantWeight"] = json!(w);
            v
        })
        .collect();
    let mut out = json!({
        "EndpointConfigName": c.name, "EndpointConfigArn": c.arn,
        "ProductionVariants": variants, "CreationTime": c.creation_time,
    });
    for k in ["DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig"] {
        if let Some(v) = req.get(k) {
            out[k] = v.clone();
        }
    }
    out
}

fn describe_endpoint(ep: &Endpoint) -> Value {
    let variants: Vec<Value> = ep
        .routable()
        .into_iter()
        .map(|(v, healthy)| {
            json!({
                "VariantName": v.name, "CurrentWeight": v.weight, "DesiredWeight": v.weight,
                "CurrentInstanceCount": healthy.len(), "DesiredInstanceCount": v.count,
                "DeployedImages": [{"SpecifiedImage": v.image, "ResolvedImage": v.image, "ResolutionTime": ep.creation_time}],
            })
        })
        .collect();
    let mut out = json!({
        "EndpointName": ep.name, "EndpointArn": ep.arn, "EndpointConfigName": ep.live.config_name,
        "ProductionVariants": variants, "EndpointStatus": ep.status.as_str(),
        "CreationTime": ep.creation_time, "LastModifiedTime": ep.last_modified_time,
    });
    if let Some(r) = &ep.failure_reason {
        out["FailureReason"] = json!(r);
    }
    out
}

/// A listing under `key`, each item shaped by `item`, with `NextToken` when more follow.
fn listing<T>(key: &str, page: Page<T>, item: impl Fn(&T) -> Value) -> Value {
    let mut out = json!({ key: page.items.iter().map(item).collect::<Vec<_>>() });
    if let Some(next) = page.next_offset {
        out["NextToken"] = json!(next.to_string());
    }
    out
}

fn summary(name_key: &str, arn_key: &str) -> impl Fn(&ResourceSummary) -> Value {
    move |s| json!({name_key: s.name, arn_key: s.arn, "CreationTime": s.creation_time})
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
    state.control.hosting.check_serving_image(image)?;
    if let Some(url) = c.get("ModelDataUrl").and_then(Value::as_str) {
        let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
            return Err(invalid(format!(
                "ModelDataUrl {url:?} is not an s3://bucket/key URI of a model.tar.gz"
            )));
        };
        if !matches!(state.store.objects().object_size(bucket, key), Ok(Some(_))) {
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

/// `EndpointStatus` as the botocore model lists it; the states Clary's endpoints never reach
/// match nothing.
pub(crate) const ENDPOINT_STATUSES: &[&str] = &[
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

fn endpoint_status(body: &Value) -> Result<Option<EndpointStatus>, ControlError> {
    let Some(s) = str_field(body, "StatusEquals") else {
        return Ok(None);
    };
    if !ENDPOINT_STATUSES.contains(&s) {
        return Err(invalid(format!(
            "1 validation error detected: Value '{s}' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            ENDPOINT_STATUSES.join(", ")
        )));
    }
    Ok(EndpointStatus::parse(s))
}

fn list_endpoints(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let q = list_query(body)?;
    let status = endpoint_status(body)?;
    if status.is_none() && str_field(body, "StatusEquals").is_some() {
        return Ok(json!({"Endpoints": []}));
    }
    let page = state.control.hosting.list_endpoints(&q, status)?;
    Ok(listing("Endpoints", page, |e| {
        json!({"EndpointName": e.name, "EndpointArn": e.arn, "CreationTime": e.creation_time,
               "LastModifiedTime": e.last_modified_time, "EndpointStatus": e.status.as_str()})
    }))
}

fn create_model(state: &ApiState, body: &Value) -> Result<String, ControlError> {
    validate_model(state, body)?;
    let request = body.to_string();
    let container = container_from_request(&request).map_err(invalid)?;
    state
        .control
        .hosting
        .create_model(required_str(body, "ModelName")?, container, request)
}

fn create_endpoint_config(state: &ApiState, body: &Value) -> Result<String, ControlError> {
    validate_endpoint_config(body)?;
    let request = body.to_string();
    let variants = variants_from_request(&request).map_err(invalid)?;
    state.control.hosting.create_endpoint_config(
        required_str(body, "EndpointConfigName")?,
        variants,
        request,
    )
}

/// Handles a hosting operation; `None` when `op` is not one.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Option<Result<Value, ControlError>> {
    let cp = &state.control;
    let hosting = &cp.hosting;
    let with_tags = |arn: String| -> Result<String, ControlError> {
        let t = crate::wire::tag_pairs(body);
        if !t.is_empty() {
            cp.tags.add(&arn, &t)?;
        }
        Ok(arn)
    };
    Some(match op {
        "CreateModel" => create_model(state, body)
            .and_then(with_tags)
            .map(|arn| json!({"ModelArn": arn})),
        "DescribeModel" => required_str(body, "ModelName")
            .and_then(|n| hosting.model(n))
            .map(|m| describe_model(&m)),
        "ListModels" => list_query(body)
            .and_then(|q| hosting.list_models(&q))
            .map(|p| listing("Models", p, summary("ModelName", "ModelArn"))),
        "DeleteModel" => required_str(body, "ModelName")
            .and_then(|n| hosting.delete_model(n))
            .map(|_| json!({})),
        "CreateEndpointConfig" => create_endpoint_config(state, body)
            .and_then(with_tags)
            .map(|arn| json!({"EndpointConfigArn": arn})),
        "DescribeEndpointConfig" => required_str(body, "EndpointConfigName")
            .and_then(|n| hosting.endpoint_config(n))
            .map(|c| describe_endpoint_config(&c)),
        "ListEndpointConfigs" => list_query(body)
            .and_then(|q| hosting.list_endpoint_configs(&q))
            .map(|p| {
                listing(
                    "EndpointConfigs",
                    p,
                    summary("EndpointConfigName", "EndpointConfigArn"),
                )
            }),
        "DeleteEndpointConfig" => required_str(body, "EndpointConfigName")
            .and_then(|n| hosting.delete_endpoint_config(n))
            .map(|_| json!({})),
        "CreateEndpoint" => (|| {
            let name = required_str(body, "EndpointName")?;
            resource_name(name, "endpointName")?;
            let config = required_str(body, "EndpointConfigName")?;
            let arn = hosting.create_endpoint(name, config)?;
            with_tags(arn)
        })()
        .map(|arn| json!({"EndpointArn": arn})),
        "UpdateEndpoint" => (|| {
            let name = required_str(body, "EndpointName")?;
            let config = required_str(body, "EndpointConfigName")?;
            hosting.update_endpoint(name, config)
        })()
        .map(|arn| json!({"EndpointArn": arn})),
        "DescribeEndpoint" => required_str(body, "EndpointName")
            .and_then(|n| hosting.endpoint(n))
            .map(|e| describe_endpoint(&e)),
        "ListEndpoints" => list_endpoints(state, body),
        "DeleteEndpoint" => required_str(body, "EndpointName")
            .and_then(|n| hosting.delete_endpoint(n))
            .map(|_| json!({})),
        _ => return None,
    })
}
