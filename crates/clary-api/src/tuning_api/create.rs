//! `CreateHyperParameterTuningJob`: the request read into the domain's tuning spec. A
//! training job definition is read as the `CreateTrainingJob` request its trials are, so the
//! trials get the same validation and spec as any training job.

use crate::ApiState;
use crate::training_api::CreateTrainingJobRequest;
use crate::validate;
use crate::wire::{required, str_field, tag_pairs};
use clary_control::ControlError;
use clary_control::domain::training::TrainingJobSpec;
use clary_control::domain::tuning::{
    ObjectiveType, ParameterRange, Scaling, StopRule, StrategyKind,
};
use clary_control::domain::tuning_job::{Definition, TuningJobSpec};
use clary_control::tuning::NewTuningJob;
use serde_json::{Map, Value, json};

pub(super) fn invalid(message: String) -> ControlError {
    ControlError::Validation(message)
}

pub(super) fn field<'a>(v: &'a Value, k: &str, at: &str) -> Result<&'a Value, ControlError> {
    v.get(k).filter(|x| !x.is_null()).ok_or_else(|| {
        invalid(format!(
            "1 validation error detected: Value null at '{at}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn scaling(v: &Value) -> Result<Scaling, ControlError> {
    Ok(match str_field(v, "ScalingType").unwrap_or("Auto") {
        "Auto" => Scaling::Auto,
        "Linear" => Scaling::Linear,
        "Logarithmic" => Scaling::Logarithmic,
        "ReverseLogarithmic" => Scaling::ReverseLogarithmic,
        other => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [Auto, Linear, Logarithmic, ReverseLogarithmic]"
            )));
        }
    })
}

fn bound<T: std::str::FromStr>(v: &Value, k: &str, name: &str) -> Result<T, ControlError> {
    let text =
        str_field(v, k).ok_or_else(|| invalid(format!("Parameter range {name} needs {k}")))?;
    text.parse().map_err(|_| {
        invalid(format!(
            "{k} {text:?} of parameter range {name} is not a number"
        ))
    })
}

/// `ParameterRanges` in the domain's terms, checked as SageMaker checks them.
fn ranges_of(r: Option<&Value>) -> Result<Vec<ParameterRange>, ControlError> {
    let r = r.cloned().unwrap_or(json!({}));
    let list = |k: &str| {
        r.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in list("IntegerParameterRanges") {
        let name = str_field(&v, "Name").unwrap_or_default().to_string();
        let (min, max): (i64, i64) = (bound(&v, "MinValue", &name)?, bound(&v, "MaxValue", &name)?);
        if min > max {
            return Err(invalid(format!(
                "The MinValue of parameter range {name} is greater than its MaxValue"
            )));
        }
        let scaling = scaling(&v)?;
        if scaling == Scaling::Logarithmic && min <= 0 {
            return Err(invalid(format!(
                "Parameter range {name}: Logarithmic scaling needs MinValue above 0"
            )));
        }
        out.push(ParameterRange::Integer {
            name,
            min,
            max,
            scaling,
        });
    }
    for v in list("ContinuousParameterRanges") {
        let name = str_field(&v, "Name").unwrap_or_default().to_string();
        let (min, max): (f64, f64) = (bound(&v, "MinValue", &name)?, bound(&v, "MaxValue", &name)?);
        if min > max {
            return Err(invalid(format!(
                "The MinValue of parameter range {name} is greater than its MaxValue"
            )));
        }
        let scaling = scaling(&v)?;
        if scaling == Scaling::Logarithmic && min <= 0.0 {
            return Err(invalid(format!(
                "Parameter range {name}: Logarithmic scaling needs MinValue above 0"
            )));
        }
        if scaling == Scaling::ReverseLogarithmic && (!(0.0..1.0).contains(&min) || max >= 1.0) {
            return Err(invalid(format!(
                "Parameter range {name}: ReverseLogarithmic scaling needs values in [0, 1)"
            )));
        }
        out.push(ParameterRange::Continuous {
            name,
            min,
            max,
            scaling,
        });
    }
    for v in list("CategoricalParameterRanges") {
        let name = str_field(&v, "Name").unwrap_or_default().to_string();
        let values: Vec<String> = v
            .get("Values")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if values.is_empty() {
            return Err(invalid(format!(
                "Categorical parameter range {name} needs at least one value"
            )));
        }
        out.push(ParameterRange::Categorical { name, values });
    }
    let mut names = std::collections::HashSet::new();
    for r in &out {
        if r.name().is_empty() || !names.insert(r.name().to_string()) {
            return Err(invalid(format!(
                "Parameter range names must be given and distinct; {:?} is not",
                r.name()
            )));
        }
    }
    Ok(out)
}

/// The training job definition `definition` names (the one `TrainingJobDefinition` when
/// `None`).
fn definition_of(tuning: &Value, definition: Option<&str>) -> Value {
    match definition {
        Some(d) => tuning
            .get("TrainingJobDefinitions")
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|x| str_field(x, "DefinitionName") == Some(d)))
            .cloned()
            .unwrap_or(json!({})),
        None => tuning
            .get("TrainingJobDefinition")
            .cloned()
            .unwrap_or(json!({})),
    }
}

/// The `CreateTrainingJob` request a trial named `name` is, from its training job definition.
pub(super) fn request_from_definition(def: &Value, name: &str, hyperparameters: Value) -> Value {
    let mut req = Map::new();
    req.insert("TrainingJobName".into(), json!(name));
    req.insert("HyperParameters".into(), hyperparameters);
    for (k, v) in def.as_object().into_iter().flatten() {
        match k.as_str() {
            "StaticHyperParameters"
            | "DefinitionName"
            | "TuningObjective"
            | "HyperParameterRanges"
            | "HyperParameterTuningResourceConfig" => {}
            _ => {
                req.insert(k.clone(), v.clone());
            }
        }
    }
    // The SDK sends the trials' instances as HyperParameterTuningResourceConfig (with
    // InstanceConfigs when several instance types are allowed; the first is used).
    if let Some(hpo) = def.get("HyperParameterTuningResourceConfig")
        && !req.contains_key("ResourceConfig")
    {
        let first = hpo
            .get("InstanceConfigs")
            .and_then(|c| c.get(0))
            .unwrap_or(hpo);
        let mut rc = Map::new();
        for k in ["InstanceType", "InstanceCount", "VolumeSizeInGB"] {
            if let Some(v) = first.get(k).or_else(|| hpo.get(k)) {
                rc.insert(k.into(), v.clone());
            }
        }
        req.insert("ResourceConfig".into(), Value::Object(rc));
    }
    Value::Object(req)
}

/// A trial's request as `DescribeTrainingJob` echoes it (the control plane calls this).
pub fn trial_echo(
    tuning_echo: &str,
    definition: Option<&str>,
    trial: &str,
    tuning_arn: &str,
    hps: &[(String, String)],
) -> String {
    let tuning: Value = serde_json::from_str(tuning_echo).unwrap_or(json!({}));
    let map: Map<String, Value> = hps.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut req = request_from_definition(
        &definition_of(&tuning, definition),
        trial,
        Value::Object(map),
    );
    req["TuningJobArn"] = json!(tuning_arn);
    req.to_string()
}

/// The ranges Autotune searches when none are given: around each numeric static
/// hyperparameter (not the toolkit's `sagemaker_*` ones), an integer from half to twice its
/// value, a positive real from a tenth to ten times it on a log scale.
fn autotuned_ranges(statics: Option<&Value>) -> Vec<ParameterRange> {
    let mut out = Vec::new();
    for (name, v) in statics.and_then(Value::as_object).into_iter().flatten() {
        let Some(text) = v.as_str() else { continue };
        if name.starts_with("sagemaker_") || name.starts_with('_') {
            continue;
        }
        // The SDK sends framework hyperparameters JSON-encoded.
        let text = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|j| j.as_f64().map(|_| j.to_string()))
            .unwrap_or_else(|| text.to_string());
        if let Ok(n) = text.parse::<i64>() {
            if n >= 1 {
                out.push(ParameterRange::Integer {
                    name: name.clone(),
                    min: (n / 2).max(1),
                    max: n * 2,
                    scaling: Scaling::Auto,
                });
            }
        } else if let Ok(x) = text.parse::<f64>()
            && x > 0.0
            && x.is_finite()
        {
            out.push(ParameterRange::Continuous {
                name: name.clone(),
                min: x / 10.0,
                max: x * 10.0,
                scaling: Scaling::Logarithmic,
            });
        }
    }
    out
}

/// The ranges as `ParameterRanges` (what Describe shows of an Autotune job's choice).
pub(super) fn ranges_json(ranges: &[ParameterRange]) -> Value {
    let scaling = |s: &Scaling| match s {
        Scaling::Auto => "Auto",
        Scaling::Linear => "Linear",
        Scaling::Logarithmic => "Logarithmic",
        Scaling::ReverseLogarithmic => "ReverseLogarithmic",
    };
    let (mut ints, mut conts, mut cats) = (Vec::new(), Vec::new(), Vec::new());
    for r in ranges {
        match r {
            ParameterRange::Integer { name, min, max, scaling: s } => ints.push(json!({
                "Name": name, "MinValue": min.to_string(), "MaxValue": max.to_string(), "ScalingType": scaling(s)})),
            ParameterRange::Continuous { name, min, max, scaling: s } => conts.push(json!({
                "Name": name, "MinValue": min.to_string(), "MaxValue": max.to_string(), "ScalingType": scaling(s)})),
            ParameterRange::Categorical { name, values } => {
                cats.push(json!({"Name": name, "Values": values}));
            }
        }
    }
    json!({"IntegerParameterRanges": ints, "ContinuousParameterRanges": conts, "CategoricalParameterRanges": cats})
}

/// `(MetricName, Type)` of an objective.
fn objective_of(objective: &Value, at: &str) -> Result<(String, ObjectiveType), ControlError> {
    let metric = required(objective, "MetricName")?.to_string();
    let kind = match str_field(objective, "Type") {
        Some("Maximize") => ObjectiveType::Maximize,
        Some("Minimize") => ObjectiveType::Minimize,
        other => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at '{at}.type' failed to satisfy constraint: Member must satisfy enum value set: [Maximize, Minimize]",
                other.unwrap_or("null")
            )));
        }
    };
    Ok((metric, kind))
}

/// The trials' training spec from one training job definition, checked as `CreateTrainingJob`
/// checks a request; its metric definitions must include `metric`, and no hyperparameter may
/// be both static and tuned.
fn definition_spec(
    state: &ApiState,
    def: &Value,
    name: &str,
    metric: &str,
    ranges: &[ParameterRange],
) -> Result<TrainingJobSpec, ControlError> {
    let statics = def
        .get("StaticHyperParameters")
        .cloned()
        .unwrap_or(json!({}));
    let template = request_from_definition(def, name, statics);
    validate::create_training_job(&template, &|b| state.store.bucket_exists(b))?;
    let req: CreateTrainingJobRequest = serde_json::from_value(template)
        .map_err(|e| invalid(format!("1 validation error detected: {e}")))?;
    let training = req.spec().map_err(invalid)?;
    let defined: Vec<&str> = training
        .metric_definitions
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    if !defined.contains(&metric) {
        return Err(invalid(format!(
            "The objective metric {metric} is not one of the metric definitions of the training job definition ({}); add a MetricDefinition named {metric} whose regex captures it",
            if defined.is_empty() {
                "there are none".to_string()
            } else {
                defined.join(", ")
            }
        )));
    }
    let ranged: Vec<&str> = ranges.iter().map(ParameterRange::name).collect();
    if let Some((k, _)) = training
        .hyperparameters
        .iter()
        .find(|(k, _)| ranged.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "Hyperparameter {k} is both static and tuned; remove it from StaticHyperParameters or from ParameterRanges"
        )));
    }
    Ok(training)
}

/// What a tuning job searches: one `TrainingJobDefinition` with the config's objective and
/// ranges, or several `TrainingJobDefinitions`, each with its own.
struct Searched {
    metric: String,
    objective_type: ObjectiveType,
    ranges: Vec<ParameterRange>,
    training: TrainingJobSpec,
    definitions: Vec<Definition>,
}

impl Searched {
    fn all_ranges(&self) -> impl Iterator<Item = &ParameterRange> {
        self.ranges
            .iter()
            .chain(self.definitions.iter().flat_map(|d| d.ranges.iter()))
    }
}

fn searched(
    state: &ApiState,
    body: &Value,
    config: &Value,
    name: &str,
) -> Result<Searched, ControlError> {
    let Some(list) = body.get("TrainingJobDefinitions").and_then(Value::as_array) else {
        let (metric, objective_type) = objective_of(
            field(
                config,
                "HyperParameterTuningJobObjective",
                "hyperParameterTuningJobConfig.hyperParameterTuningJobObjective",
            )?,
            "hyperParameterTuningJobConfig.hyperParameterTuningJobObjective",
        )?;
        let mut ranges = ranges_of(config.get("ParameterRanges"))?;
        let def = field(body, "TrainingJobDefinition", "trainingJobDefinition")?;
        let mut def = def.clone();
        if body.get("Autotune").is_some() && ranges.is_empty() {
            // Autotune chooses the ranges: those of the numeric static hyperparameters, which
            // then stop being static.
            ranges = autotuned_ranges(def.get("StaticHyperParameters"));
            if let Some(statics) = def
                .get_mut("StaticHyperParameters")
                .and_then(Value::as_object_mut)
            {
                statics.retain(|k, _| !ranges.iter().any(|r| r.name() == k));
            }
            if ranges.is_empty() {
                return Err(invalid(
                    "Autotune found no numeric static hyperparameter to tune; give ParameterRanges"
                        .into(),
                ));
            }
        }
        let training = definition_spec(state, &def, name, &metric, &ranges)?;
        return Ok(Searched {
            metric,
            objective_type,
            ranges,
            training,
            definitions: Vec::new(),
        });
    };
    if body.get("TrainingJobDefinition").is_some() {
        return Err(invalid(
            "Give either TrainingJobDefinition or TrainingJobDefinitions, not both".into(),
        ));
    }
    if !(1..=10).contains(&list.len()) {
        return Err(invalid(
            "TrainingJobDefinitions must list between 1 and 10 training job definitions".into(),
        ));
    }
    let mut definitions: Vec<Definition> = Vec::new();
    let mut kinds = Vec::new();
    for (i, def) in list.iter().enumerate() {
        let at = format!("trainingJobDefinitions.{}.member", i + 1);
        let def_name = required(def, "DefinitionName")?.to_string();
        let name_ok = (1..=64).contains(&def_name.len())
            && def_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok || definitions.iter().any(|d| d.name == def_name) {
            return Err(invalid(format!(
                "DefinitionName {def_name:?} must be 1 to 64 letters, digits, - or _, and distinct"
            )));
        }
        let (metric, kind) = objective_of(
            field(def, "TuningObjective", &format!("{at}.tuningObjective"))?,
            &format!("{at}.tuningObjective"),
        )?;
        let ranges = ranges_of(def.get("HyperParameterRanges"))?;
        let training = definition_spec(state, def, name, &metric, &ranges)?;
        kinds.push(kind);
        definitions.push(Definition {
            name: def_name,
            objective_metric: metric,
            ranges,
            training,
        });
    }
    if kinds.windows(2).any(|w| w[0] != w[1]) {
        return Err(invalid(
            "Every TuningObjective of TrainingJobDefinitions must have the same Type (Maximize or Minimize), so their trials compare".into(),
        ));
    }
    let first = definitions[0].clone();
    Ok(Searched {
        metric: first.objective_metric,
        objective_type: kinds[0],
        ranges: first.ranges,
        training: first.training,
        definitions,
    })
}

pub(super) fn create(state: &ApiState, body: &Value) -> Result<Value, ControlError> {
    let name = required(body, "HyperParameterTuningJobName")?;
    let name_ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.ends_with('-');
    if !name_ok {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'hyperParameterTuningJobName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,31}}"
        )));
    }
    match body.get("Autotune").map(|a| str_field(a, "Mode")) {
        None | Some(Some("Enabled")) => {}
        Some(other) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'autotune.mode' failed to satisfy constraint: Member must satisfy enum value set: [Enabled]",
                other.unwrap_or("null")
            )));
        }
    }
    let config = field(
        body,
        "HyperParameterTuningJobConfig",
        "hyperParameterTuningJobConfig",
    )?;
    let strategy = match str_field(config, "Strategy").unwrap_or("Bayesian") {
        "Random" => StrategyKind::Random,
        "Grid" => StrategyKind::Grid,
        "Bayesian" => StrategyKind::Bayesian,
        "Hyperband" => StrategyKind::Hyperband,
        other => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'hyperParameterTuningJobConfig.strategy' failed to satisfy constraint: Member must satisfy enum value set: [Bayesian, Random, Hyperband, Grid]"
            )));
        }
    };
    let searched = searched(state, body, config, name)?;
    let metric = searched.metric.clone();
    let limits = field(
        config,
        "ResourceLimits",
        "hyperParameterTuningJobConfig.resourceLimits",
    )?;
    let limit = |k: &str| limits.get(k).and_then(Value::as_u64);
    let max_parallel = limit("MaxParallelTrainingJobs").unwrap_or(0);
    if max_parallel < 1 {
        return Err(invalid(
            "ResourceLimits.MaxParallelTrainingJobs must be 1 or more".into(),
        ));
    }
    let max_trials = match (limit("MaxNumberOfTrainingJobs"), strategy) {
        (Some(n), _) if n >= 1 => n,
        (None, StrategyKind::Grid) => u64::MAX,
        _ => {
            return Err(invalid(
                "ResourceLimits.MaxNumberOfTrainingJobs must be 1 or more".into(),
            ));
        }
    };
    if strategy == StrategyKind::Grid
        && searched
            .all_ranges()
            .any(|r| matches!(r, ParameterRange::Continuous { .. }))
    {
        return Err(invalid(
            "The Grid strategy takes categorical (and integer) parameter ranges only; use Random, Bayesian or Hyperband for continuous ranges".into(),
        ));
    }
    let stop_rule = match (
        strategy,
        str_field(config, "TrainingJobEarlyStoppingType").unwrap_or("Off"),
    ) {
        (StrategyKind::Hyperband, "Auto") => {
            return Err(invalid(
                "TrainingJobEarlyStoppingType Auto cannot be combined with the Hyperband strategy, which stops trials itself".into(),
            ));
        }
        (StrategyKind::Hyperband, _) => StopRule::Hyperband,
        (_, "Auto") => StopRule::Median,
        (_, "Off") => StopRule::Off,
        (_, other) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'hyperParameterTuningJobConfig.trainingJobEarlyStoppingType' failed to satisfy constraint: Member must satisfy enum value set: [Off, Auto]"
            )));
        }
    };
    if let Some(n) = config
        .get("TuningJobCompletionCriteria")
        .and_then(|c| c.get("BestObjectiveNotImproving"))
        .and_then(|b| b.get("MaxNumberOfTrainingJobsNotImproving"))
        .and_then(Value::as_i64)
        .filter(|n| *n < 3)
    {
        return Err(invalid(format!(
            "1 validation error detected: Value '{n}' at 'hyperParameterTuningJobConfig.tuningJobCompletionCriteria.bestObjectiveNotImproving.maxNumberOfTrainingJobsNotImproving' failed to satisfy constraint: Member must have value greater than or equal to 3"
        )));
    }
    // Settings Clary does not act on are refused, never dropped.
    if config
        .get("TuningJobCompletionCriteria")
        .and_then(|c| c.get("ConvergenceDetected"))
        .and_then(|c| str_field(c, "CompleteOnConvergence"))
        == Some("Enabled")
    {
        return Err(invalid(
            "TuningJobCompletionCriteria.ConvergenceDetected with CompleteOnConvergence Enabled is not served by Clary; use BestObjectiveNotImproving or TargetObjectiveMetricValue".into(),
        ));
    }
    if config.get("StrategyConfig").is_some() {
        return Err(invalid(
            "StrategyConfig (HyperbandStrategyConfig MinResource/MaxResource) is not served by Clary: its Hyperband halves at rungs of 1, 3, 9... objective reports; leave StrategyConfig out".into(),
        ));
    }
    let parents = warm_start_parents(state, body, &metric)?;
    let spec = TuningJobSpec {
        strategy,
        objective_metric: metric,
        objective_type: searched.objective_type,
        ranges: searched.ranges,
        max_trials: max_trials.min(u64::from(u32::MAX)) as u32,
        max_parallel: max_parallel.min(100) as u32,
        max_runtime_secs: limit("MaxRuntimeInSeconds"),
        stop_rule,
        seed: config
            .get("RandomSeed")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| {
                // No seed asked for: a fresh one, kept with the job.
                u64::from_le_bytes(
                    uuid::Uuid::new_v4().as_bytes()[..8]
                        .try_into()
                        .expect("8 bytes"),
                )
            }),
        target_objective: config
            .get("TuningJobCompletionCriteria")
            .and_then(|c| c.get("TargetObjectiveMetricValue"))
            .and_then(Value::as_f64),
        max_not_improving: config
            .get("TuningJobCompletionCriteria")
            .and_then(|c| c.get("BestObjectiveNotImproving"))
            .and_then(|b| b.get("MaxNumberOfTrainingJobsNotImproving"))
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32),
        training: searched.training,
        parents,
        definitions: searched.definitions,
    };
    let arn = state.control.tuning.create(NewTuningJob {
        name: name.to_string(),
        spec,
        echo: body.to_string(),
        tags: tag_pairs(body),
    })?;
    Ok(json!({"HyperParameterTuningJobArn": arn}))
}

/// `WarmStartConfig`: one to five parent tuning jobs that have ended, optimising the same
/// objective metric; their trials seed the search.
fn warm_start_parents(
    state: &ApiState,
    body: &Value,
    metric: &str,
) -> Result<Vec<String>, ControlError> {
    let Some(warm) = body.get("WarmStartConfig") else {
        return Ok(Vec::new());
    };
    match str_field(warm, "WarmStartType") {
        Some("IdenticalDataAndAlgorithm" | "TransferLearning") => {}
        other => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'warmStartConfig.warmStartType' failed to satisfy constraint: Member must satisfy enum value set: [IdenticalDataAndAlgorithm, TransferLearning]",
                other.unwrap_or("null")
            )));
        }
    }
    let parents: Vec<String> = warm
        .get("ParentHyperParameterTuningJobs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| str_field(p, "HyperParameterTuningJobName").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !(1..=5).contains(&parents.len()) {
        return Err(invalid(
            "WarmStartConfig.ParentHyperParameterTuningJobs must name between 1 and 5 tuning jobs"
                .into(),
        ));
    }
    for name in &parents {
        let parent = state.control.tuning.get(name)?;
        if !parent.status.is_terminal() {
            return Err(invalid(format!(
                "Parent tuning job {name} is {}: a warm start's parents must have ended (Completed, Stopped or Failed)",
                parent.status.as_str()
            )));
        }
        if parent.spec.objective_metric != metric {
            return Err(invalid(format!(
                "Parent tuning job {name} optimizes {}, not {metric}: a warm start's parents must share its objective metric",
                parent.spec.objective_metric
            )));
        }
    }
    Ok(parents)
}
