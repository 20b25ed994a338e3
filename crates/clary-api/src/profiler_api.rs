//! SageMaker Debugger's part of the training job wire: `ProfilerConfig`,
//! `ProfilerRuleConfigurations`, `DebugRuleConfigurations` read into the domain's settings with
//! the botocore model's constraints, `UpdateTrainingJob`, and the describe's profiler fields
//! (`ProfilerConfig` with its defaults, `ProfilingStatus`, the rules and their evaluation).

use crate::ApiState;
use crate::validate::fail;
use crate::wire::required;
use clary_control::ControlError;
use clary_control::domain::profiler::{
    ConfiguredRule, ProfilerRequest, ProfilerSettings, RuleConfig, evaluations,
};
use clary_control::domain::training::TrainingJob;
use serde_json::{Map, Value, json};

/// `S3Uri`: `^(https|s3)://([^/]+)/?(.*)$`, at most 1024 characters.
fn s3_uri(v: &Value, at: &str) -> Result<String, ControlError> {
    let s = v
        .as_str()
        .ok_or_else(|| fail(&v.to_string(), at, "Member must be a string"))?;
    let host = s
        .strip_prefix("s3://")
        .or_else(|| s.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or_default());
    if s.len() > 1024 {
        return Err(fail(
            s,
            at,
            "Member must have length less than or equal to 1024",
        ));
    }
    if host.is_none_or(str::is_empty) {
        return Err(fail(
            s,
            at,
            "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
        ));
    }
    Ok(s.to_string())
}

/// A `ConfigKey -> ConfigValue` map (keys 1..=256, values up to 256 characters).
fn config_map(v: &Value, at: &str, max: usize) -> Result<Vec<(String, String)>, ControlError> {
    let map = v
        .as_object()
        .ok_or_else(|| fail(&v.to_string(), at, "Member must be a map of strings"))?;
    if map.len() > max {
        return Err(fail(
            &format!("{} entries", map.len()),
            at,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    map.iter()
        .map(|(k, val)| {
            let val = val
                .as_str()
                .ok_or_else(|| fail(&val.to_string(), at, "Member must be a string"))?;
            if k.is_empty() || k.chars().count() > 256 || val.chars().count() > 256 {
                return Err(fail(
                    &format!("{k}={val}"),
                    at,
                    "Member must have keys of 1 to 256 and values of at most 256 characters",
                ));
            }
            Ok((k.clone(), val.to_string()))
        })
        .collect()
}

/// `ProfilerConfig` (or `ProfilerConfigForUpdate`) as asked.
pub fn profiler_request(v: &Value) -> Result<ProfilerRequest, ControlError> {
    let at = "profilerConfig";
    if !v.is_object() {
        return Err(fail(&v.to_string(), at, "Member must be a structure"));
    }
    let disable = match v.get("DisableProfiler") {
        None | Some(Value::Null) => None,
        Some(b) => Some(b.as_bool().ok_or_else(|| {
            fail(
                &b.to_string(),
                "profilerConfig.disableProfiler",
                "Member must be a boolean",
            )
        })?),
    };
    let interval_ms = match v.get("ProfilingIntervalInMilliseconds") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64().ok_or_else(|| {
            fail(
                &n.to_string(),
                "profilerConfig.profilingIntervalInMilliseconds",
                "Member must be a positive integer",
            )
        })?),
    };
    let output_path = v
        .get("S3OutputPath")
        .filter(|p| !p.is_null())
        .map(|p| s3_uri(p, "profilerConfig.s3OutputPath"))
        .transpose()?;
    let parameters = v
        .get("ProfilingParameters")
        .filter(|p| !p.is_null())
        .map(|p| config_map(p, "profilerConfig.profilingParameters", 20))
        .transpose()?;
    Ok(ProfilerRequest {
        disable,
        interval_ms,
        output_path,
        parameters,
    })
}

/// `ProfilerRuleConfigurations` or `DebugRuleConfigurations` (`field`, `at` its wire name).
pub fn rule_configs(body: &Value, field: &str, at: &str) -> Result<Vec<RuleConfig>, ControlError> {
    let Some(list) = body.get(field).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| fail(&list.to_string(), at, "Member must be a list"))?;
    if list.len() > 20 {
        return Err(fail(
            &format!("{} rules", list.len()),
            at,
            "Member must have length less than or equal to 20",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("{at}.{}", i + 1);
            let name = r
                .get("RuleConfigurationName")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    fail(
                        "null",
                        &format!("{at}.ruleConfigurationName"),
                        "Member must not be null",
                    )
                })?;
            if name.is_empty() || name.chars().count() > 256 {
                return Err(fail(
                    name,
                    &format!("{at}.ruleConfigurationName"),
                    "Member must have length between 1 and 256",
                ));
            }
            let image = r
                .get("RuleEvaluatorImage")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    fail(
                        "null",
                        &format!("{at}.ruleEvaluatorImage"),
                        "Member must not be null",
                    )
                })?;
            if image.len() > 255 {
                return Err(fail(
                    image,
                    &format!("{at}.ruleEvaluatorImage"),
                    "Member must have length less than or equal to 255",
                ));
            }
            if let Some(out) = r.get("S3OutputPath").filter(|v| !v.is_null()) {
                s3_uri(out, &format!("{at}.s3OutputPath"))?;
            }
            if let Some(p) = r.get("RuleParameters").filter(|v| !v.is_null()) {
                config_map(p, &format!("{at}.ruleParameters"), 100)?;
            }
            Ok(RuleConfig {
                name: name.to_string(),
                image: image.to_string(),
                document: r.to_string(),
            })
        })
        .collect()
}

/// The profiler settings and debug rules of a `CreateTrainingJob` request, with
/// `default_output` as the profiler's path when it gives none.
pub fn create_settings(
    body: &Value,
    default_output: &str,
    now: f64,
) -> Result<(ProfilerSettings, Vec<ConfiguredRule>), ControlError> {
    let config = body
        .get("ProfilerConfig")
        .filter(|v| !v.is_null())
        .map(profiler_request)
        .transpose()?;
    let rules = rule_configs(
        body,
        "ProfilerRuleConfigurations",
        "profilerRuleConfigurations",
    )?;
    let settings = ProfilerSettings::create(config, rules, default_output, now)
        .map_err(|e| ControlError::Validation(e.to_string()))?;
    let mut debug = Vec::new();
    let debug_rules = rule_configs(body, "DebugRuleConfigurations", "debugRuleConfigurations")?;
    for rule in debug_rules {
        if debug
            .iter()
            .any(|r: &ConfiguredRule| r.rule.name == rule.name)
        {
            return Err(ControlError::Validation(format!(
                "DebugRuleConfigurations: the rule name {:?} is given twice; rule configuration names must be unique",
                rule.name
            )));
        }
        debug.push(ConfiguredRule {
            rule,
            configured_at_ms: (now * 1000.0).round() as i64,
        });
    }
    Ok((settings, debug))
}

/// `UpdateTrainingJob`.
pub fn update(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let name = required(body, "TrainingJobName")?;
    crate::validate::resource_name(name, "trainingJobName")?;
    if body.get("ResourceConfig").is_some_and(|v| !v.is_null()) {
        return Err(ControlError::Validation(
            "ResourceConfig can be updated only for a training job whose warm pool status is Available; Clary keeps no warm pools".into(),
        ));
    }
    if body.get("RemoteDebugConfig").is_some_and(|v| !v.is_null()) {
        return Err(ControlError::Validation(
            "RemoteDebugConfig cannot be updated: Clary does not offer remote debugging of training containers".into(),
        ));
    }
    let config = body
        .get("ProfilerConfig")
        .filter(|v| !v.is_null())
        .map(profiler_request)
        .transpose()?;
    let rules = rule_configs(
        body,
        "ProfilerRuleConfigurations",
        "profilerRuleConfigurations",
    )?;
    let arn = state
        .control
        .training
        .update_profiler(name, config, rules)?;
    Ok(json!({"TrainingJobArn": arn}))
}

fn rules_json(rules: &[ConfiguredRule]) -> Value {
    rules
        .iter()
        .map(|r| serde_json::from_str(&r.rule.document).unwrap_or_else(|_| json!({})))
        .collect()
}

fn evaluations_json(rules: &[ConfiguredRule]) -> Value {
    evaluations(rules)
        .into_iter()
        .map(|e| {
            json!({
                "RuleConfigurationName": e.name,
                "RuleEvaluationStatus": e.status,
                "StatusDetails": e.details,
                "LastModifiedTime": e.last_modified_time,
            })
        })
        .collect()
}

/// Adds the describe's profiler fields of `job` to `out`.
pub fn describe_into(out: &mut Value, job: &TrainingJob) {
    let p = &job.spec.profiler;
    if p.configured {
        let mut config = Map::new();
        config.insert("S3OutputPath".into(), json!(p.output_path));
        config.insert(
            "ProfilingIntervalInMilliseconds".into(),
            json!(p.interval_ms),
        );
        if !p.parameters.is_empty() {
            let params: Map<String, Value> = p
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            config.insert("ProfilingParameters".into(), Value::Object(params));
        }
        config.insert("DisableProfiler".into(), json!(!p.enabled));
        out["ProfilerConfig"] = Value::Object(config);
    }
    out["ProfilingStatus"] = json!(if p.enabled { "Enabled" } else { "Disabled" });
    if !p.rules.is_empty() {
        out["ProfilerRuleConfigurations"] = rules_json(&p.rules);
        out["ProfilerRuleEvaluationStatuses"] = evaluations_json(&p.rules);
    }
    if !job.spec.debug_rules.is_empty() {
        out["DebugRuleConfigurations"] = rules_json(&job.spec.debug_rules);
        out["DebugRuleEvaluationStatuses"] = evaluations_json(&job.spec.debug_rules);
    }
}
