//! Small readers of JSON request bodies shared by the services' handlers.

use clary_control::ControlError;
use serde_json::{Value, json};

pub(crate) fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub(crate) fn required<'a>(v: &'a Value, k: &str) -> Result<&'a str, ControlError> {
    str_field(v, k).ok_or_else(|| ControlError::Validation(format!("1 validation error detected: Value null at '{k}' failed to satisfy constraint: Member must not be null")))
}

/// Timestamps arrive as epoch seconds (numbers) from botocore.
pub(crate) fn time_field(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// `Tags: [{Key, Value}]` as pairs; a missing value is empty.
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

/// Pairs as `[{Key, Value}]`.
pub(crate) fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}
